"""Reading the machine: NVML for NVIDIA cards, sysfs for AMD cards, system memory and cgroups.

The I/O half of hardware detection (:mod:`vllmd.hardware.tiers` holds the rules). Every probe takes
its root as a parameter (an NVML-like object, a filesystem root), so tests feed recorded machines.
"""

from __future__ import annotations

import logging
import re
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, cast

log = logging.getLogger("vllmd.gpuprobe")  # the component name users see in logs

GIB = 1 << 30
NVML_ERROR_NOT_SUPPORTED = 3
"""NVML's answer to a memory query on a unified-memory GPU (GB10): there is no VRAM to count."""
NVML_ERROR_LIBRARY_NOT_FOUND = 12
"""pynvml's answer when ``libnvidia-ml.so.1`` does not load (it tries again on the next init)."""
NVML_LIBRARY = "libnvidia-ml.so.1"
AMD_VENDOR = "0x1002"
IGPU_VRAM_LIMIT_BYTES = GIB
"""AMD GPUs with less VRAM than this are integrated (a BIOS carve-out of system memory): skipped."""
_CARD = re.compile(r"card(\d+)")


def whole_gib(n_bytes: int) -> float:
    """``n_bytes`` in GiB, rounded to the nearest whole one (see the module's docstring)."""
    return float(round(n_bytes / GIB))


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
