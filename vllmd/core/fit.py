"""Which preset fits which machine, and why: pure functions over the catalog and a :class:`Machine`.

The memory budget is one device's memory (CONTRACT §5): one GPU's, or the system's on a CPU or a
unified-memory GPU. A preset that does not fit one GPU fits over N identical GPUs with
``--tensor-parallel-size N`` (N a power of two) when N of them together have the memory it needs.
The ``--max-model-len`` step follows the budget the preset runs on. The form's default is the
first preset that fits.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from vllmd.core.choices import TIERS, Tier
from vllmd.core.presets import Build, Catalog, Preset


def gb_text(value: float) -> str:
    """``140`` → ``"140 GB"``, ``23.5`` → ``"23.5 GB"``."""
    return f"{value:g} GB" if value == int(value) else f"{value:.1f} GB"


@dataclass(frozen=True, slots=True)
class Machine:
    """What fitting needs to know about the hardware: tier, memory per device, identical devices.

    ``memory_gb`` is one device's memory in GiB; ``devices`` is how many identical GPUs
    tensor parallelism may spread a model over (1 on a CPU, a unified-memory GPU or mixed cards).
    """

    tier: Tier
    memory_gb: float
    devices: int = 1

    def __post_init__(self) -> None:
        if self.tier not in TIERS:
            raise ValueError(f"unknown tier {self.tier!r} (tiers: {', '.join(TIERS)})")
        if not self.memory_gb >= 0:
            raise ValueError(f"memory must be 0 or more, not {self.memory_gb!r}")
        if self.devices < 1:
            raise ValueError(f"devices must be 1 or more, not {self.devices!r}")

    def describe(self) -> str:
        """``"nvidia-hopper, 1 GPU with 140 GB"``, ``"cpu, 23 GB of memory"``."""
        if self.tier == "cpu":
            return f"cpu, {gb_text(self.memory_gb)} of memory"
        cards = "1 GPU" if self.devices == 1 else f"{self.devices} identical GPUs"
        return f"{self.tier}, {cards} with {gb_text(self.memory_gb)}" + (
            " each" if self.devices > 1 else ""
        )


@dataclass(frozen=True, slots=True)
class Fit:
    """One preset on one machine: whether it fits, how, with which context, and why."""

    preset: Preset
    build: Build | None
    fits: bool
    reason: str
    tensor_parallel_size: int = 1
    max_model_len: int | None = None

    @property
    def status(self) -> str:
        """``fits``, ``fits over N GPUs`` or ``does not fit``."""
        if not self.fits:
            return "does not fit"
        if self.tensor_parallel_size > 1:
            return f"fits over {self.tensor_parallel_size} GPUs"
        return "fits"

    def serve_args(self) -> tuple[str, ...]:
        """``[model, *args, (--tensor-parallel-size N,) --max-model-len CTX]`` for ``serveArgs``.

        Raises ValueError for a preset that does not fit: there is nothing to serve.
        """
        if not self.fits or self.build is None or self.max_model_len is None:
            raise ValueError(f"preset {self.preset.id!r} does not fit: {self.reason}")
        argv = [self.build.model, *self.build.args]
        if self.tensor_parallel_size > 1:
            argv += ["--tensor-parallel-size", str(self.tensor_parallel_size)]
        argv += ["--max-model-len", str(self.max_model_len)]
        return tuple(argv)


def context_length(build: Build, budget_gb: float) -> int | None:
    """The ``--max-model-len`` of the largest step whose memory is at most ``budget_gb``."""
    chosen: int | None = None
    for step in build.context:
        if step.memory_gb <= budget_gb:
            chosen = step.max_model_len
    return chosen


def tensor_parallel_size(needed_gb: float, per_device_gb: float, devices: int) -> int | None:
    """The fewest devices (1, 2, 4, 8 …, at most ``devices``) whose memory together is enough."""
    size = 1
    while size <= devices:
        if size * per_device_gb >= needed_gb:
            return size
        size *= 2
    return None


def _largest_power_of_two(n: int) -> int:
    return 1 << (n.bit_length() - 1)


def fit_preset(preset: Preset, machine: Machine) -> Fit:
    """Whether ``preset`` fits ``machine``, over how many GPUs, with which context, and why."""
    build = preset.tiers.get(machine.tier)
    if build is None:
        others = [tier for tier, _ in preset.tiers.items()]
        return Fit(
            preset,
            None,
            False,
            f"no build for {machine.tier} (there are builds for {', '.join(others)})",
        )
    needed = build.min_memory_gb
    per = machine.memory_gb
    size = tensor_parallel_size(needed, per, machine.devices)
    if size is None:
        reason = f"needs {gb_text(needed)}, the budget is {gb_text(per)}"
        if machine.devices > 1:
            most = _largest_power_of_two(machine.devices)
            reason += f" per GPU and {gb_text(most * per)} over {most} GPUs"
        return Fit(preset, build, False, reason)
    budget = size * per
    length = context_length(build, budget)
    if length is None:  # the catalog's checks make this unreachable; say so rather than crash
        return Fit(preset, build, False, f"no context step for a budget of {gb_text(budget)}")
    if size == 1:
        reason = f"needs {gb_text(needed)}, the budget is {gb_text(per)}; context {length:,} tokens"
    else:
        reason = (
            f"needs {gb_text(needed)}, one GPU has {gb_text(per)}; {size} GPUs together have "
            f"{gb_text(budget)}; context {length:,} tokens with --tensor-parallel-size {size}"
        )
    return Fit(preset, build, True, reason, size, length)


def fit_catalog(catalog: Catalog, machine: Machine) -> tuple[Fit, ...]:
    """:func:`fit_preset` for every preset, in catalog order."""
    return tuple(fit_preset(preset, machine) for preset in catalog.preset)


def default_fit(fits: Iterable[Fit]) -> Fit | None:
    """The form's default: the first preset that fits, or ``None`` (then Custom is the default)."""
    return next((fit for fit in fits if fit.fits), None)


def fitting(fits: Sequence[Fit]) -> list[str]:
    """The ids of the presets that fit, for error messages that list what would work."""
    return [fit.preset.id for fit in fits if fit.fits]
