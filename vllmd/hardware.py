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
import re
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, cast

from vllmd.fit import Machine
from vllmd.presets import TIERS

log = logging.getLogger(__name__)

GIB = 1 << 30
NVML_ERROR_NOT_SUPPORTED = 3
"""NVML's answer to a memory query on a unified-memory GPU (GB10): there is no VRAM to count."""
AMD_VENDOR = "0x1002"
IGPU_VRAM_LIMIT_BYTES = GIB
"""AMD GPUs with less VRAM than this are integrated (a BIOS carve-out of system memory): skipped."""
_CARD = re.compile(r"card(\d+)")


class MemoryInfo(Protocol):
    """What ``nvmlDeviceGetMemoryInfo`` returns, as far as detection reads it."""

    @property
    def total(self) -> int: ...

    @property
    def free(self) -> int: ...


class Nvml(Protocol):
    """The part of ``pynvml`` detection uses; the module itself satisfies it, fakes imitate it."""

    def nvmlInit(self) -> None: ...
    def nvmlShutdown(self) -> None: ...
    def nvmlDeviceGetCount(self) -> int: ...
    def nvmlDeviceGetHandleByIndex(self, index: int) -> object: ...
    def nvmlDeviceGetName(self, handle: object) -> str | bytes: ...
    def nvmlDeviceGetCudaComputeCapability(self, handle: object) -> tuple[int, int]: ...
    def nvmlDeviceGetMemoryInfo(self, handle: object) -> MemoryInfo: ...


def load_nvml() -> Nvml:
    """Import ``pynvml`` (nvidia-ml-py) now; ImportError when it is not installed."""
    import pynvml

    return cast(Nvml, pynvml)


@dataclass(frozen=True, slots=True)
class Gpu:
    """One GPU as detected; memory ``None`` means unified memory (it shares the system's)."""

    name: str
    vendor: str
    compute_capability: str | None
    memory_total_bytes: int | None
    memory_free_bytes: int | None


@dataclass(frozen=True, slots=True)
class Hardware:
    """What detection found, and the budget presets are fitted to.

    ``budget_gb`` is one device's memory in GiB; ``identical_gpus`` is how many identical GPUs a
    preset may spread over with tensor parallelism; ``reason`` says why detection fell back to
    the ``cpu`` tier, ``notes`` what else is worth knowing (a cgroup limit, a skipped card).
    """

    tier: str
    budget_gb: float
    identical_gpus: int = 1
    gpus: tuple[Gpu, ...] = ()
    system_memory_bytes: int | None = None
    variant: str = "cpu"
    source: str = "detected"
    reason: str | None = None
    notes: tuple[str, ...] = field(default=())

    @classmethod
    def given(cls, tier: str, memory_gb: float, gpus: int = 1) -> Hardware:
        """The hardware a caller states (``--tier``, ``--memory-gb``, ``--gpus``), not detected."""
        Machine(tier, memory_gb, gpus)  # the same checks as fitting
        return cls(tier=tier, budget_gb=memory_gb, identical_gpus=gpus, source="given")

    def machine(self) -> Machine:
        """The :class:`~vllmd.fit.Machine` to fit presets to."""
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


def whole_gib(n_bytes: int) -> float:
    """``n_bytes`` in GiB, rounded to the nearest whole one (see the module's docstring)."""
    return float(round(n_bytes / GIB))


def nvidia_tier(major: int, minor: int) -> str | None:
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


def weakest(tiers: Sequence[str]) -> str:
    """The weakest of ``tiers``: mixed cards run what the weakest card can."""
    return max(tiers, key=TIERS.index)


def _identical(gpus: Sequence[Gpu]) -> bool:
    first = gpus[0]
    return first.memory_total_bytes is not None and all(
        (g.name, g.memory_total_bytes) == (first.name, first.memory_total_bytes) for g in gpus
    )


def summarize(
    gpus: Sequence[Gpu], tiers: Sequence[str], system_memory_bytes: int | None
) -> tuple[str, float, int, list[str]]:
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


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace").strip()
    except (OSError, ValueError):
        return None


def _cgroup_limits(root: Path) -> list[int]:
    """Every memory limit that applies to this process: cgroup v2 (own and ancestors) and v1."""
    cgroup = root / "sys/fs/cgroup"
    candidates = [cgroup / "memory.max", cgroup / "memory/memory.limit_in_bytes"]
    own = _read(root / "proc/self/cgroup") or ""
    for line in own.splitlines():
        if line.startswith("0::/") and len(line) > 4:
            folder = cgroup / line[4:]
            while folder != cgroup and cgroup in folder.parents:
                candidates.append(folder / "memory.max")
                folder = folder.parent
    limits = []
    for path in candidates:
        text = _read(path)
        if text and text.isdigit():
            limits.append(int(text))
    return limits


def system_memory(root: Path = Path("/")) -> tuple[int | None, list[str]]:
    """The memory this container may use: ``MemTotal``, bounded by the cgroup limit; and notes."""
    total: int | None = None
    for line in (_read(root / "proc/meminfo") or "").splitlines():
        if line.startswith("MemTotal:"):
            with suppress(ValueError, IndexError):
                total = int(line.split()[1]) * 1024
    if total is None:
        return None, ["could not read MemTotal from /proc/meminfo"]
    limit = min(_cgroup_limits(root), default=None)
    if limit is not None and limit < total:
        note = (
            f"the cgroup memory limit ({whole_gib(limit):g} GB) is lower than the machine's "
            f"memory ({whole_gib(total):g} GB): the limit counts"
        )
        return limit, [note]
    return total, []


def probe_nvidia(nvml: Nvml) -> tuple[Gpu, ...]:
    """Every NVIDIA GPU NVML sees; raises what NVML raises, except on unified memory."""
    nvml.nvmlInit()
    try:
        gpus = []
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            name = nvml.nvmlDeviceGetName(handle)
            if isinstance(name, bytes):
                name = name.decode(errors="replace")
            major, minor = nvml.nvmlDeviceGetCudaComputeCapability(handle)
            total: int | None
            free: int | None
            try:
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
                total, free = int(memory.total), int(memory.free)
            except Exception as exc:
                # GB10 and other unified-memory GPUs answer NOT_SUPPORTED; anything else is a fault.
                if getattr(exc, "value", None) != NVML_ERROR_NOT_SUPPORTED:
                    raise
                total = free = None
            if total == 0:  # some drivers answer success with zeros on unified memory
                total = free = None
            gpus.append(Gpu(name, "nvidia", f"{major}.{minor}", total, free))
        return tuple(gpus)
    finally:
        with suppress(Exception):
            nvml.nvmlShutdown()


def probe_amd(root: Path = Path("/")) -> tuple[tuple[Gpu, ...], list[str]]:
    """Every AMD GPU with VRAM under ``root/sys/class/drm``, and notes on the cards skipped."""
    drm = root / "sys/class/drm"
    try:
        cards = sorted(
            (int(m[1]), entry) for entry in drm.iterdir() if (m := _CARD.fullmatch(entry.name))
        )
    except OSError:
        return (), ["no /sys/class/drm to look for AMD GPUs in"]
    gpus: list[Gpu] = []
    notes: list[str] = []
    seen: set[Path] = set()
    for _, card in cards:
        device = card / "device"
        if (_read(device / "vendor") or "").lower() != AMD_VENDOR:
            continue
        with suppress(OSError):
            real = device.resolve()
            if real in seen:
                continue
            seen.add(real)
        total_text = _read(device / "mem_info_vram_total")
        if total_text is None or not total_text.isdigit():
            notes.append(f"{card.name}: AMD GPU without a VRAM size, skipped")
            continue
        total = int(total_text)
        if total < IGPU_VRAM_LIMIT_BYTES:
            notes.append(
                f"{card.name}: integrated AMD GPU ({total // (1 << 20)} MiB VRAM), skipped"
            )
            continue
        used_text = _read(device / "mem_info_vram_used")
        free = total - int(used_text) if used_text and used_text.isdigit() else None
        name = _read(device / "product_name") or f"AMD GPU {_read(device / 'device') or '?'}"
        gpus.append(Gpu(name, "amd", None, total, free))
    return tuple(gpus), notes


# ---- detection ----------------------------------------------------------------------------------


def _fallback(variant: str, reason: str, memory: int | None, notes: list[str]) -> Hardware:
    log.warning("falling back to the cpu tier: %s", reason)
    budget = whole_gib(memory) if memory is not None else 0.0
    return Hardware("cpu", budget, 1, (), memory, variant, reason=reason, notes=tuple(notes))


def _detect(variant: str, root: Path, nvml_loader: Callable[[], Nvml]) -> Hardware:
    memory, notes = system_memory(root)
    if variant == "nvidia":
        try:
            nvml = nvml_loader()
        except ImportError as exc:
            return _fallback(variant, f"nvidia-ml-py is not installed ({exc})", memory, notes)
        try:
            gpus = probe_nvidia(nvml)
        except Exception as exc:
            return _fallback(variant, f"NVML failed: {exc or type(exc).__name__}", memory, notes)
        if not gpus:
            return _fallback(variant, "NVML found no NVIDIA GPU", memory, notes)
        tiers = []
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
        tiers = ["amd"] * len(gpus)
    else:
        notes.append("the cpu image does not look for GPUs")
        budget = whole_gib(memory) if memory is not None else 0.0
        return Hardware("cpu", budget, 1, (), memory, variant, notes=tuple(notes))
    tier, budget, identical, gpu_notes = summarize(gpus, tiers, memory)
    return Hardware(tier, budget, identical, gpus, memory, variant, notes=(*notes, *gpu_notes))


def detect(
    variant: str, root: Path = Path("/"), nvml_loader: Callable[[], Nvml] = load_nvml
) -> Hardware:
    """Detect the hardware the ``variant`` image can use; never raises (falls back to ``cpu``)."""
    try:
        return _detect(variant, root, nvml_loader)
    except Exception as exc:  # detection must never take an action down
        return _fallback(variant, f"hardware detection failed: {exc!r}", None, [])
