"""What each action is asked to do: typed requests, built once from the command line.

The command line (:mod:`vllmd.actions.cli`) turns its parsed options, and for
``set-model --env-stdin`` the lines on standard input, into one of these frozen values; the
actions never see an ``argparse.Namespace``. Each field says what the caller asked for, not
yet whether it is valid: an action checks its values and answers a user error naming the option.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

SetModelMode = Literal["preset", "custom", "list", "form"]
"""What ``set-model`` does: write a preset or custom arguments, or print the form (text or JSON)."""

EnvSource = Literal["--env", "--env-stdin"]
"""Where replacement ``serveEnv`` items came from; errors name it."""


@dataclass(frozen=True, slots=True)
class StatedHardware:
    """``--tier/--memory-gb/--gpus`` as given (text: the action checks and explains them)."""

    tier: str | None = None
    memory_gb: str | None = None
    gpus: str | None = None

    @property
    def given(self) -> bool:
        """Whether the caller stated anything (otherwise the hardware is detected)."""
        return not (self.tier is None and self.memory_gb is None and self.gpus is None)


@dataclass(frozen=True, slots=True)
class EnvChange:
    """How ``serveEnv`` changes: kept (``items is None``), or replaced by ``items``.

    ``--clear-env`` is a replacement by nothing; ``source`` names the option the items came from.
    """

    items: tuple[str, ...] | None = None
    source: EnvSource | Literal["--clear-env"] | None = None


@dataclass(frozen=True, slots=True)
class GetApiKey:
    """``get-api-key``: no input."""


@dataclass(frozen=True, slots=True)
class SetModel:
    """``set-model``: what to do, with what, on which hardware.

    ``value`` is the preset id (mode ``preset``) or the custom argument text (mode ``custom``),
    and empty for ``list`` and ``form``.
    """

    mode: SetModelMode
    value: str = ""
    env: EnvChange = EnvChange()
    hardware: StatedHardware = StatedHardware()
    force: bool = False


@dataclass(frozen=True, slots=True)
class DeleteModelCache:
    """``delete-model-cache``: list (``model is None``), print the form, or delete ``model`` (or
    the compile cache)."""

    model: str | None = None
    form: bool = False
    force: bool = False
    compile_cache: bool = False
