"""Hardware detection: the tier, every GPU, and the memory budget presets are fitted to.

NVIDIA cards are read through NVML (``pynvml`` from the nvidia-ml-py distribution, imported only
when the ``nvidia`` variant asks), AMD cards through sysfs, system memory through ``/proc/meminfo``
bounded by the cgroup limit. The variant limits what is looked for: the ``cpu`` image never loads
NVML. Every probe takes its roots as parameters (an NVML-like object, a filesystem root), so tests
feed recorded machines. :func:`detect` never raises: whatever goes wrong falls back to the ``cpu``
tier, with the reason in the result and in the log.

Memory is counted in GiB and rounded to the nearest whole one: NVML reports a few hundred MiB less
than a card's nominal size (an H100 80GB says 79.6 GiB), and the catalog's thresholds are nominal
sizes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vllmd.core.choices import TIERS, Tier, Variant
from vllmd.core.fit import Machine
from vllmd.hardware.linker import Refresh, refresh_linker_cache
from vllmd.hardware.probes import (
    GIB,
    NVML_ERROR_LIBRARY_NOT_FOUND,
    NVML_LIBRARY,
    Gpu,
    Nvml,
    load_nvml,
    probe_amd,
    probe_nvidia,
    system_memory,
    whole_gib,
)

log = logging.getLogger("vllmd.hardware")  # the component name users see in logs


@dataclass(frozen=True, slots=True)
class Hardware:
    """What detection found, and the budget presets are fitted to.

    ``budget_gb`` is one device's memory in GiB; ``identical_gpus`` is how many identical GPUs a
    preset may spread over with tensor parallelism; ``reason`` says why detection fell back to
    the ``cpu`` tier, ``notes`` what else is worth knowing (a cgroup limit, a skipped card).
    """

    tier: Tier
    budget_gb: float
    identical_gpus: int = 1
    gpus: tuple[Gpu, ...] = ()
    system_memory_bytes: int | None = None
    variant: Variant = "cpu"
    source: str = "detected"
    reason: str | None = None
    notes: tuple[str, ...] = field(default=())

    @classmethod
    def given(cls, tier: Tier, memory_gb: float, gpus: int = 1) -> Hardware:
        """The hardware a caller states (``--tier``, ``--memory-gb``, ``--gpus``), not detected."""
        Machine(tier, memory_gb, gpus)  # the same checks as fitting
        return cls(tier=tier, budget_gb=memory_gb, identical_gpus=gpus, source="given")

    def machine(self) -> Machine:
        """The :class:`~vllmd.core.fit.Machine` to fit presets to."""
        return Machine(self.tier, self.budget_gb, self.identical_gpus)

    def to_builtins(self) -> dict[str, object]:
        """A JSON-ready dict; whole budgets print as integers."""
        budget: float = (
            int(self.budget_gb) if self.budget_gb == int(self.budget_gb) else self.budget_gb
        )
        return {
            "tier": self.tier,
            "budget_gb": budget,
            "identical_gpus": self.identical_gpus,
            "gpus": [
                {
                    "name": gpu.name,
                    "vendor": gpu.vendor,
                    "compute_capability": gpu.compute_capability,
                    "memory_total_bytes": gpu.memory_total_bytes,
                    "memory_free_bytes": gpu.memory_free_bytes,
                }
                for gpu in self.gpus
            ],
            "system_memory_bytes": self.system_memory_bytes,
            "variant": self.variant,
            "source": self.source,
            "reason": self.reason,
            "notes": list(self.notes),
        }

    def to_text(self) -> str:
        """A readable form for people (``vllmd hardware --text``)."""
        lines = [f"Tier: {self.machine().describe()}"]
        if self.reason:
            lines.append(f"Fell back to cpu: {self.reason}")
        for n, gpu in enumerate(self.gpus):
            memory = (
                "unified memory"
                if gpu.memory_total_bytes is None
                else f"{gpu.memory_total_bytes / GIB:.1f} GiB"
            )
            capability = f", compute capability {gpu.compute_capability}" * bool(
                gpu.compute_capability
            )
            lines.append(f"GPU {n}: {gpu.name}{capability}, {memory}")
        if self.system_memory_bytes is not None:
            lines.append(f"System memory: {self.system_memory_bytes / GIB:.1f} GiB")
        lines += [f"Note: {note}" for note in self.notes]
        return "\n".join(lines) + "\n"


# ---- pure rules ---------------------------------------------------------------------------------


def nvidia_tier(major: int, minor: int) -> Tier | None:
    """The tier of an NVIDIA compute capability; ``None`` below 8.0 (no preset runs there).

    10.x and 12.x are Blackwell (B200, RTX 50, GB10); 11.x is Blackwell too (Jetson Thor), and
    anything newer is treated as the newest tier known.
    """
    if major >= 10:
        return "nvidia-blackwell"
    if major == 9:
        return "nvidia-hopper"
    if major == 8:
        return "nvidia-older"
    return None


def weakest(tiers: Sequence[Tier]) -> Tier:
    """The weakest of ``tiers``: mixed cards run what the weakest card can."""
    return max(tiers, key=TIERS.index)


def _identical(gpus: Sequence[Gpu]) -> bool:
    first = gpus[0]
    return first.memory_total_bytes is not None and all(
        (g.name, g.memory_total_bytes) == (first.name, first.memory_total_bytes) for g in gpus
    )


def summarize(
    gpus: Sequence[Gpu], tiers: Sequence[Tier], system_memory_bytes: int | None
) -> tuple[Tier, float, int, list[str]]:
    """Tier, budget per device (GiB), identical GPUs and notes for detected ``gpus``.

    A unified-memory GPU counts the system memory; mixed cards take the weakest tier and the
    smallest memory, and offer no tensor parallelism.
    """
    notes: list[str] = []
    sizes: list[int] = []
    for gpu in gpus:
        if gpu.memory_total_bytes is not None:
            sizes.append(gpu.memory_total_bytes)
        elif system_memory_bytes is not None:
            notes.append(f"{gpu.name} has unified memory: the budget is the system memory")
            sizes.append(system_memory_bytes)
        else:
            raise ValueError(f"{gpu.name} has unified memory and the system memory is unknown")
    identical = len(gpus) > 1 and _identical(gpus)
    if len(gpus) > 1 and not identical:
        notes.append(
            "the GPUs differ: presets are fitted to the weakest and smallest one, and tensor "
            "parallelism is offered over identical GPUs only"
        )
    return weakest(tiers), whole_gib(min(sizes)), len(gpus) if identical else 1, notes


# ---- probes -------------------------------------------------------------------------------------


def _fallback(variant: Variant, reason: str, memory: int | None, notes: list[str]) -> Hardware:
    log.warning("falling back to the cpu tier: %s", reason)
    budget = whole_gib(memory) if memory is not None else 0.0
    return Hardware("cpu", budget, 1, (), memory, variant, reason=reason, notes=tuple(notes))


def _nvml_failed(exc: BaseException) -> str:
    return f"NVML failed: {exc or type(exc).__name__}"


def _probe_nvidia(
    nvml: Nvml, refresh_linker: Callable[[], Refresh], notes: list[str]
) -> tuple[Gpu, ...] | str:
    """Every NVIDIA GPU, or why there is none; when NVML's library does not load, the linker
    cache is refreshed once and NVML asked again (what happened goes to ``notes``)."""
    try:
        return probe_nvidia(nvml)
    except Exception as exc:
        if getattr(exc, "value", None) != NVML_ERROR_LIBRARY_NOT_FOUND:
            return _nvml_failed(exc)
        first = exc
    refresh = refresh_linker()
    if not refresh.done:
        notes.append(f"{NVML_LIBRARY} did not load; {refresh.problem}")
        return _nvml_failed(first)
    try:
        gpus = probe_nvidia(nvml)
    except Exception as exc:
        notes.append(
            f"{NVML_LIBRARY} did not load; the linker cache was refreshed (ldconfig) and it "
            "still did not"
        )
        return _nvml_failed(exc)
    notes.append(
        f"{NVML_LIBRARY} did not load until the linker cache was refreshed (ldconfig): this "
        "container's cache did not list the host's NVIDIA libraries"
    )
    return gpus


def _detect(
    variant: Variant,
    root: Path,
    nvml_loader: Callable[[], Nvml],
    refresh_linker: Callable[[], Refresh],
) -> Hardware:
    memory, notes = system_memory(root)
    if variant == "nvidia":
        try:
            nvml = nvml_loader()
        except ImportError as exc:
            return _fallback(variant, f"nvidia-ml-py is not installed ({exc})", memory, notes)
        found = _probe_nvidia(nvml, refresh_linker, notes)
        if isinstance(found, str):
            return _fallback(variant, found, memory, notes)
        gpus = found
        if not gpus:
            return _fallback(variant, "NVML found no NVIDIA GPU", memory, notes)
        tiers: list[Tier] = []
        for gpu in gpus:
            major, minor = (int(p) for p in (gpu.compute_capability or "0.0").split("."))
            tier = nvidia_tier(major, minor)
            if tier is None:
                reason = (
                    f"{gpu.name} has compute capability {gpu.compute_capability}; the presets "
                    "need 8.0 or newer"
                )
                return _fallback(variant, reason, memory, notes)
            tiers.append(tier)
    elif variant == "rocm":
        gpus, amd_notes = probe_amd(root)
        notes += amd_notes
        if not gpus:
            return _fallback(variant, "no AMD GPU with VRAM found in sysfs", memory, notes)
        tiers = ["amd" for _ in gpus]
    else:
        notes.append("the cpu image does not look for GPUs")
        budget = whole_gib(memory) if memory is not None else 0.0
        return Hardware("cpu", budget, 1, (), memory, variant, notes=tuple(notes))
    tier, budget, identical, gpu_notes = summarize(gpus, tiers, memory)
    return Hardware(tier, budget, identical, gpus, memory, variant, notes=(*notes, *gpu_notes))


def detect(
    variant: Variant,
    root: Path = Path("/"),
    nvml_loader: Callable[[], Nvml] = load_nvml,
    refresh_linker: Callable[[], Refresh] = refresh_linker_cache,
) -> Hardware:
    """Detect the hardware the ``variant`` image can use; never raises (falls back to ``cpu``).

    Every command that detects comes here (``hardware``, ``set-model``, its ``--form``): when
    NVML's library does not load, ``refresh_linker`` (``ldconfig``, as root) runs once and NVML
    is asked again, and the notes say so.
    """
    try:
        return _detect(variant, root, nvml_loader, refresh_linker)
    except Exception as exc:  # detection must never take an action down
        return _fallback(variant, f"hardware detection failed: {exc!r}", None, [])
