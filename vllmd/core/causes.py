"""The known reasons vLLM stops, how to recognise each in its output, and what to advise.

Data more than logic: :mod:`vllmd.core.forensics` finds the telling part of the output and asks
:func:`classify` which cause, if any, it shows. Pure: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from vllmd.core.shm import SHM_ADVICE


@dataclass(frozen=True, slots=True)
class Cause:
    """A known reason for vLLM to stop: its name, how to spot it, what to tell a person."""

    kind: str
    pattern: re.Pattern[str]
    cause: str
    advice: str


_SMALLER = "Pick a smaller preset in Set Model, or lower --gpu-memory-utilization."
_HF_TOKEN = "--env HF_TOKEN=<your token>"

# Order matters: the first cause whose pattern matches wins.
CAUSES = (
    Cause(
        "gpu-memory-in-use",
        re.compile(r"Free memory on device .* is less than desired GPU memory utilization"),
        "There was not enough free GPU memory when vLLM started (other programs use the GPU, "
        "or the share asked for is too high).",
        "Stop other programs that use the GPU, or pick a smaller preset in Set Model, or lower "
        "--gpu-memory-utilization.",
    ),
    Cause(
        "context-too-long",
        re.compile(
            r"No available memory for the cache blocks|KV cache is needed, which is larger than"
            r"|larger than the available KV cache memory|greater than the derived max_model_len"
        ),
        "The model loaded, but there is not enough memory left for its context length "
        "(the KV cache).",
        "Pick a preset with a shorter context, or set a lower --max-model-len in Set Model.",
    ),
    Cause(
        "out-of-memory",
        re.compile(
            r"(?:CUDA|HIP) out of memory|OutOfMemoryError|(?:CUDA|HIP)(?: driver)? error: "
            r"out of memory|hipErrorOutOfMemory|cudaErrorMemoryAllocation",
        ),
        "The GPU ran out of memory.",
        _SMALLER,
    ),
    Cause(
        "out-of-memory",
        re.compile(r"DefaultCPUAllocator: can't allocate memory|\[Errno 12\] Cannot allocate"),
        "The system ran out of memory.",
        "Pick a smaller preset in Set Model.",
    ),
    Cause(
        "shm-too-small",
        re.compile(r"Insufficient space in /dev/shm"),
        "/dev/shm, the shared memory vLLM's engine talks through, is too small (a container "
        "runtime gives it 64 MiB unless told otherwise).",
        SHM_ADVICE,
    ),
    Cause(
        "disk-full",
        re.compile(r"No space left on device|\[Errno 28\]|Not enough free disk space"),
        "The disk is full.",
        'Run the "Delete Model Cache" action to remove models you no longer use, or free space '
        "on the data volume.",
    ),
    Cause(
        "hf-forbidden",
        re.compile(
            r"403 Client Error|403 Forbidden|not in the authorized list|awaiting a review",
        ),
        "HuggingFace refused access to this gated model for the token given (403).",
        "Request access on the model's page at huggingface.co and wait for approval; make sure "
        f"the token in Set Model ({_HF_TOKEN}) belongs to that account and may read gated repos.",
    ),
    Cause(
        "hf-gated",
        re.compile(
            r"GatedRepoError|Cannot access gated repo|trying to access a gated repo"
            r"|Access to model \S+ is restricted"
        ),
        "This model is gated on HuggingFace: downloading it needs an access token (401).",
        "Accept the model's terms on its page at huggingface.co, then run Set Model again with "
        f"{_HF_TOKEN}.",
    ),
    Cause(
        "model-not-found",
        re.compile(
            r"RepositoryNotFoundError|Repository Not Found|RevisionNotFoundError"
            r"|404 Client Error|Invalid repository ID or local directory specified"
            r"|is not a local folder and is not a valid model identifier"
        ),
        "HuggingFace does not know this model id (or the model is private).",
        "Check the model id in Set Model: ORG/NAME exactly as on huggingface.co. If the model "
        f"is private or gated, add {_HF_TOKEN}.",
    ),
    Cause(
        "hf-unauthorized",
        re.compile(r"401 Client Error|Unauthorized for url|Invalid username or password"),
        "HuggingFace refused the download: it needs a valid access token (401).",
        f"Run Set Model again with {_HF_TOKEN} (a read token from huggingface.co).",
    ),
    Cause(
        "offline-missing-file",
        re.compile(
            r"outgoing traffic has been disabled|local_files_only=True' as been set"
            r"|OfflineModeIsEnabled"
        ),
        "vLLM looked for a file that is not in the model cache, and was started without the hub "
        "(HF_HUB_OFFLINE=1) because vllmd had fetched this model.",
        "vllmd starts it once more with the hub reachable, so that vLLM downloads what it misses.",
    ),
    Cause(
        "network",
        re.compile(
            r"couldn't connect to 'https://huggingface\.co'|Failed to resolve 'huggingface\.co'"
            r"|Temporary failure in name resolution|Max retries exceeded with url"
            r"|LocalEntryNotFoundError|Network is unreachable"
        ),
        "vLLM could not reach huggingface.co to download the model.",
        "Check the server's internet connection; the download continues when vLLM restarts.",
    ),
    Cause(
        "gpu-unsupported",
        re.compile(
            r"compute capability|Minimum capability: \d+|no kernel image is available"
            r"|not compatible with the current PyTorch installation"
            r"|only supports Ampere GPUs or newer|not supported on this GPU",
        ),
        "This GPU does not support what the chosen model needs (its compute capability is too "
        "old, or too new for this build).",
        "Pick a preset made for your GPU tier in Set Model (vllmd hardware shows the tier).",
    ),
    Cause(
        "no-gpu",
        re.compile(
            r"No CUDA GPUs are available|No HIP GPUs are available|Found no NVIDIA driver"
            r"|Failed to infer device type|CUDA driver initialization failed"
        ),
        "vLLM found no usable GPU.",
        "Check that the GPU is passed through to this service (StartOS GPU settings and "
        "driver), or use the CPU image.",
    ),
    Cause(
        "port-in-use",
        re.compile(r"[Aa]ddress already in use|\[Errno 98\]"),
        "Another program already listens on vLLM's port.",
        "Stop the program that holds the port (named above when vllmd can see it).",
    ),
    Cause(
        "bad-arguments",
        re.compile(
            r"^(?:vllm(?: serve)?|api_server\.py): error: "
            r"|ValidationError: \d+ validation errors? for \w+",
            re.MULTILINE,
        ),
        "vLLM did not accept its arguments.",
        "Fix the custom arguments in Set Model (see vllm serve --help).",
    ),
)


def classify(text: str) -> Cause | None:
    """The first known cause whose pattern appears in ``text``, if any."""
    for cause in CAUSES:
        if cause.pattern.search(text):
            return cause
    return None
