"""Crash forensics: the telling line and the cause, from recorded vLLM outputs (fixtures)."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from vllmd.core.forensics import MAX_LINE_CHARS, OutputTail, diagnose, misses_a_file
from vllmd.core.health import Diagnosis
from vllmd.core.masking import MASK, masker

FIXTURES = Path(__file__).parent / "fixtures" / "vllm-logs"


def diagnosed(name: str) -> Diagnosis:
    diagnosis = diagnose((FIXTURES / name).read_text())
    assert diagnosis is not None
    return diagnosis


# -- causes, from the recorded outputs -------------------------------------------------------------


def test_cuda_oom_is_diagnosed_with_advice() -> None:
    diagnosis = diagnosed("cuda-oom.log")

    assert diagnosis.line.startswith(
        "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 192.00 MiB."
    )
    assert diagnosis.kind == "out-of-memory"
    assert diagnosis.cause == "The GPU ran out of memory."
    assert diagnosis.advice is not None
    assert "smaller preset" in diagnosis.advice
    assert "--gpu-memory-utilization" in diagnosis.advice


def test_rocm_hip_oom_is_diagnosed_with_advice() -> None:
    diagnosis = diagnosed("rocm-hip-oom.log")

    assert diagnosis.line.startswith("torch.OutOfMemoryError: HIP out of memory.")
    assert diagnosis.kind == "out-of-memory"
    assert diagnosis.advice is not None and "smaller preset" in diagnosis.advice


def test_too_little_free_gpu_memory_at_startup_is_diagnosed_with_advice() -> None:
    diagnosis = diagnosed("free-memory.log")

    assert diagnosis.line.startswith(
        "ValueError: Free memory on device cuda:0 (7.34/23.55 GiB) on startup is less than "
        "desired GPU memory utilization (0.9, 21.19 GiB)."
    )
    assert diagnosis.kind == "gpu-memory-in-use"
    assert diagnosis.advice is not None
    assert "smaller preset" in diagnosis.advice
    assert "--gpu-memory-utilization" in diagnosis.advice


def test_kv_cache_too_small_for_the_context_advises_a_shorter_context() -> None:
    diagnosis = diagnosed("kv-cache-too-small.log")

    assert diagnosis.line.startswith("ValueError: To serve at least one request")
    assert diagnosis.kind == "context-too-long"
    assert diagnosis.advice is not None and "--max-model-len" in diagnosis.advice


def test_gated_model_401_advises_an_hf_token() -> None:
    diagnosis = diagnosed("hf-gated-oserror.log")

    assert diagnosis.line == "OSError: You are trying to access a gated repo."
    assert diagnosis.kind == "hf-gated"
    assert diagnosis.advice is not None and "--env HF_TOKEN=" in diagnosis.advice


def test_gated_model_wrapped_by_vllm_still_reads_as_gated() -> None:
    # current vLLM re-raises the GatedRepoError as "Invalid repository ID": the chain tells why
    diagnosis = diagnosed("hf-gated-401.log")

    assert diagnosis.line == (
        "ValueError: Invalid repository ID or local directory specified: "
        "'meta-llama/Llama-3.1-8B-Instruct'."
    )
    assert diagnosis.kind == "hf-gated"
    assert diagnosis.advice is not None and "HF_TOKEN" in diagnosis.advice


def test_forbidden_403_is_told_apart_from_a_missing_token() -> None:
    diagnosis = diagnosed("hf-forbidden-403.log")

    assert diagnosis.kind == "hf-forbidden"
    assert diagnosis.cause is not None and "403" in diagnosis.cause
    assert diagnosis.advice is not None and "Request access" in diagnosis.advice


def test_unknown_model_id_404_says_the_id_is_wrong() -> None:
    diagnosis = diagnosed("model-not-found-404.log")

    assert diagnosis.line.startswith(
        "OSError: Qwen/Qwen3-8B-Instructt is not a local folder and is not a valid model identifier"
    )
    assert diagnosis.kind == "model-not-found"
    assert diagnosis.advice is not None and "Check the model id" in diagnosis.advice


def test_invalid_repository_id_without_a_hub_error_is_a_wrong_model_id() -> None:
    diagnosis = diagnosed("model-not-found-invalid-id.log")

    assert diagnosis.line.startswith("ValueError: Invalid repository ID")
    assert diagnosis.kind == "model-not-found"


def test_disk_full_advises_delete_model_cache() -> None:
    diagnosis = diagnosed("disk-full.log")

    assert diagnosis.line == "OSError: [Errno 28] No space left on device"
    assert diagnosis.kind == "disk-full"
    assert diagnosis.advice is not None and "Delete Model Cache" in diagnosis.advice


def test_too_small_dev_shm_advises_the_shm_size_flag() -> None:
    # Recorded from vLLM 0.32 (CPU) in a container started without --shm-size (64 MiB).
    diagnosis = diagnosed("shm-too-small.log")

    assert diagnosis.line.startswith(
        "RuntimeError: Insufficient space in /dev/shm for shared-memory allocation: "
        "160 MiB required, 62 MiB free."
    )
    assert diagnosis.kind == "shm-too-small"
    assert diagnosis.advice is not None and "--shm-size=4g" in diagnosis.advice


def test_unsupported_compute_capability_advises_a_preset_for_the_tier() -> None:
    diagnosis = diagnosed("compute-capability.log")

    assert diagnosis.line.startswith(
        "ValueError: Bfloat16 is only supported on GPUs with compute capability of at least 8.0."
    )
    assert diagnosis.kind == "gpu-unsupported"
    assert diagnosis.advice is not None and "GPU tier" in diagnosis.advice


def test_no_gpu_is_diagnosed() -> None:
    diagnosis = diagnosed("no-gpu.log")

    assert diagnosis.line.startswith("RuntimeError: Failed to infer device type")
    assert diagnosis.kind == "no-gpu"


def test_rejected_arguments_are_diagnosed() -> None:
    diagnosis = diagnosed("bad-arguments.log")

    assert diagnosis.line == "vllm serve: error: unrecognized arguments: --max-modle-len 8192"
    assert diagnosis.kind == "bad-arguments"


def test_an_uninformative_crash_has_no_diagnosis() -> None:
    assert diagnose((FIXTURES / "uninformative.log").read_text()) is None
    assert diagnose("") is None


def test_only_vllm_wrappers_give_the_wrapper_line_without_a_cause() -> None:
    diagnosis = diagnosed("engine-died.log")

    assert diagnosis.line == (
        "RuntimeError: Engine core initialization failed. See root cause above. "
        "Failed core proc(s): {'EngineCore_DP0': -9}"
    )
    assert (diagnosis.cause, diagnosis.advice, diagnosis.kind) == (None, None, None)


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*.log")), ids=lambda p: p.name)
def test_every_fixture_reads_the_same_through_the_tail(path: Path) -> None:
    tail = OutputTail()
    data = path.read_bytes()
    for start in range(0, len(data), 4_096):  # as the log pump feeds it: arbitrary chunks
        tail.feed(data[start : start + 4_096])

    assert diagnose(tail.text()) == diagnose(path.read_text())


# -- the telling line ------------------------------------------------------------------------------


def test_the_last_traceback_wins_over_an_earlier_one() -> None:
    text = (
        "Traceback (most recent call last):\n"
        '  File "a.py", line 1, in <module>\n'
        "ImportError: cannot import name 'x'\n"
        "INFO 10-14 09:00:00 [x.py:1] carrying on\n"
        "Traceback (most recent call last):\n"
        '  File "b.py", line 2, in <module>\n'
        "    boom()\n"
        "KeyError: 'rope_scaling'\n"
    )

    diagnosis = diagnose(text)

    assert diagnosis == Diagnosis("KeyError: 'rope_scaling'")


def test_the_last_error_line_when_there_is_no_traceback() -> None:
    text = (
        "INFO 10-14 09:12:07 [api_server.py:1839] vLLM API server version 0.11.0\n"
        "ERROR 10-14 09:12:08 [registry.py:371] Model architectures ['FooForCausalLM'] failed\n"
        "ERROR 10-14 09:12:08 [registry.py:372] Model architectures ['BarForCausalLM'] are not "
        "supported for now.\n"
        "INFO 10-14 09:12:09 [launcher.py:80] Shutting down FastAPI HTTP server.\n"
    )

    diagnosis = diagnose(text)

    assert diagnosis == Diagnosis(
        "Model architectures ['BarForCausalLM'] are not supported for now."
    )


def test_progress_bars_and_colour_codes_do_not_confuse_it() -> None:
    text = (
        "\x1b[32mINFO\x1b[0m 10-14 09:12:07 [core.py:77] starting\n"
        "Capturing CUDA graphs:  10%|█         | 7/67 [00:00<00:03, 17.6it/s]"
        "\rCapturing CUDA graphs:  12%|█▏        | 8/67 [00:00<00:03, 17.6it/s]"
        "\r\x1b[31mERROR\x1b[0m 10-14 09:12:09 [core.py:708] EngineCore failed to start.\n"
        "\x1b[31mERROR\x1b[0m 10-14 09:12:09 [core.py:708] Traceback (most recent call last):\n"
        '\x1b[31mERROR\x1b[0m 10-14 09:12:09 [core.py:708]   File "x.py", line 3, in f\n'
        "\x1b[31mERROR\x1b[0m 10-14 09:12:09 [core.py:708] RuntimeError: CUDA error: "
        "out of memory\n"
    )

    diagnosis = diagnose(text)

    assert diagnosis is not None
    assert diagnosis.line == "RuntimeError: CUDA error: out of memory"
    assert diagnosis.kind == "out-of-memory"


def test_interleaved_processes_do_not_break_a_traceback_apart() -> None:
    text = (
        "(EngineCore_DP0 pid=7) Traceback (most recent call last):\n"
        '(EngineCore_DP0 pid=7)   File "x.py", line 3, in f\n'
        "(APIServer pid=1) INFO 10-14 09:12:09 [api_server.py:1] Waiting for the engine\n"
        "(EngineCore_DP0 pid=7)     raise ValueError(\n"
        "(EngineCore_DP0 pid=7) ValueError: No available memory for the cache blocks. Try "
        "increasing `gpu_memory_utilization` when initializing the engine.\n"
        "(APIServer pid=1) INFO:     Shutting down\n"
    )

    diagnosis = diagnose(text)

    assert diagnosis is not None
    assert diagnosis.line.startswith("ValueError: No available memory for the cache blocks.")
    assert diagnosis.kind == "context-too-long"


def test_a_cut_off_traceback_does_not_borrow_a_later_log_line() -> None:
    text = (
        "Traceback (most recent call last):\n"
        '  File "x.py", line 3, in f\n'
        "INFO:     Started server process [1]\n"
    )

    assert diagnose(text) is None


def test_the_key_is_masked_in_the_line() -> None:
    key = secrets.token_urlsafe(16)
    masker.add(key)
    text = (
        "Traceback (most recent call last):\n"
        '  File "x.py", line 3, in f\n'
        f"ValueError: bad api key {key}\n"
    )

    diagnosis = diagnose(text)

    assert diagnosis == Diagnosis(f"ValueError: bad api key {MASK}")


def test_very_long_lines_are_shortened() -> None:
    text = "Traceback (most recent call last):\nRuntimeError: " + "x" * 5_000 + "\n"

    diagnosis = diagnose(text)

    assert diagnosis is not None
    assert len(diagnosis.line) == MAX_LINE_CHARS
    assert diagnosis.line.endswith("…")


# -- the output tail -------------------------------------------------------------------------------


def test_the_tail_keeps_only_the_last_bytes() -> None:
    tail = OutputTail(limit=10)

    tail.feed(b"0123456789")
    tail.feed(b"abcd")

    assert len(tail) == 10
    assert tail.text() == "456789abcd"  # no newline seen: nothing to drop


def test_the_tail_drops_the_line_cut_by_the_trim() -> None:
    tail = OutputTail(limit=16)

    tail.feed(b"first line\nsecond\n")
    tail.feed(b"third\n")

    assert tail.text() == "second\nthird\n"


def test_the_tail_takes_a_chunk_larger_than_itself() -> None:
    tail = OutputTail(limit=8)

    tail.feed(b"abc")
    tail.feed(b"0123456789\nXYZ")

    assert len(tail) == 8
    assert tail.text() == "XYZ"


def test_the_tail_is_cleared_for_a_new_vllm() -> None:
    tail = OutputTail()
    tail.feed(b"old output\n")

    tail.clear()
    tail.feed(b"new\n")

    assert tail.text() == "new\n"


def test_the_tail_of_many_small_feeds_stays_within_its_budget() -> None:
    tail = OutputTail()
    line = b"(EngineCore_DP0 pid=7) INFO 10-14 09:12:09 [x.py:1] something happened\n"

    for _ in range(20_000):  # ~1.4 MB through a 256 KiB tail
        tail.feed(line)

    assert len(tail) == 256 * 1024
    assert tail.text().endswith(line.decode())


def test_the_tail_survives_utf8_cut_in_half() -> None:
    tail = OutputTail(limit=5)

    tail.feed("é█x\ny\n".encode())  # the cut falls inside "█"

    assert tail.text() == "y\n"


def test_an_unrecognised_error_is_not_blamed_on_an_earlier_warning() -> None:
    text = (
        "UserWarning: Not enough free disk space to download the file.\n"
        "Traceback (most recent call last):\n"
        '  File "x.py", line 3, in f\n'
        "KeyError: 'rope_scaling'\n"
    )

    assert diagnose(text) == Diagnosis("KeyError: 'rope_scaling'")


def test_a_cause_named_before_a_silent_kill_is_used() -> None:
    text = (
        "(EngineCore_DP0 pid=9) huggingface_hub/file_download.py:801: UserWarning: Not enough "
        "free disk space to download the file.\n"
        "(EngineCore_DP0 pid=9) Loading safetensors checkpoint shards:  0% Completed | 0/4 [..]\n"
    )

    diagnosis = diagnose(text)

    assert diagnosis is not None
    assert diagnosis.kind == "disk-full"
    assert diagnosis.line.endswith("Not enough free disk space to download the file.")


# -- an offline launch that misses a file (vllmd fetched the model, vLLM wants more) ---------------

# (promise, recorded output of vLLM 0.32 with HF_HUB_OFFLINE=1, the telling line starts with)
OFFLINE = [
    ("no snapshot of the model in the cache", "offline-no-snapshot.log",
     "huggingface_hub.errors.LocalEntryNotFoundError: Cannot find an appropriate cached"),
    ("a snapshot without its tokenizer.json", "offline-missing-tokenizer.log",
     "ValueError: Couldn't instantiate the backend tokenizer"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "line"), [row[1:] for row in OFFLINE], ids=[row[0] for row in OFFLINE]
)
def test_an_offline_launch_that_misses_a_file_asks_for_the_hub(name: str, line: str) -> None:
    # given what vLLM printed when it missed a file while started without the hub
    diagnosis = diagnosed(name)
    assert diagnosis.line.startswith(line)
    # then an offline launch asks for one online relaunch, and an online launch does not
    assert misses_a_file(diagnosis, offline=True)
    assert not misses_a_file(diagnosis, offline=False)


def test_the_offline_cause_says_why_and_what_vllmd_does() -> None:
    diagnosis = diagnosed("offline-no-snapshot.log")
    assert diagnosis.kind == "offline-missing-file"
    assert diagnosis.cause is not None and "HF_HUB_OFFLINE=1" in diagnosis.cause
    assert diagnosis.advice is not None and "hub reachable" in diagnosis.advice


def test_other_crashes_of_an_offline_launch_do_not_ask_for_the_hub() -> None:
    for name in ("cuda-oom.log", "shm-too-small.log", "bad-arguments.log"):
        assert not misses_a_file(diagnosed(name), offline=True), name
    assert not misses_a_file(None, offline=True)
