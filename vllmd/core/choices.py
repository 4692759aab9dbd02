"""Every closed choice, spelled once as a ``Literal``; the tuples and CLI choices derive from it.

Pure: no I/O. The settings (``--variant``, ``--auth``, ``--log-format``), the preset catalog and
the hardware detection all import their choices from here, so a new tier or variant is added in
one place and the flags' help, their checks and mypy all follow.
"""

from __future__ import annotations

from typing import Literal, TypeGuard, get_args

Variant = Literal["nvidia", "rocm", "cpu"]
"""Which image vllmd runs in: it limits what hardware detection looks for."""
VARIANTS: tuple[Variant, ...] = get_args(Variant)

AuthMode = Literal["guard", "flag"]
"""How vLLM checks the key: the guard middleware (live key) or ``--api-key`` (restarts)."""
AUTH_MODES: tuple[AuthMode, ...] = get_args(AuthMode)

LogFormat = Literal["text", "json"]
"""How vllmd writes its log lines (and vLLM's passed-through ones)."""
LOG_FORMATS: tuple[LogFormat, ...] = get_args(LogFormat)

Tier = Literal["nvidia-blackwell", "nvidia-hopper", "nvidia-older", "amd", "cpu"]
"""A hardware tier (CONTRACT §5), strongest NVIDIA first: the order :data:`TIERS` keeps."""
TIERS: tuple[Tier, ...] = get_args(Tier)


def is_tier(text: str) -> TypeGuard[Tier]:
    """Whether ``text`` names a tier (so that a caller may use it as one)."""
    return text in TIERS
