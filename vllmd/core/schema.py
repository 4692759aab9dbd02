"""The typed shape of ``store.json``: what the pure core computes launches from.

Only the schema lives here (msgspec ``Struct`` types, value rules in the types); reading and writing
the file is :mod:`vllmd.state.store`'s job.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
EnvName = Annotated[str, msgspec.Meta(pattern=ENV_NAME_PATTERN)]


class EnvVar(msgspec.Struct, frozen=True):
    """One variable for the vLLM process; ``value`` is a secret and never printed."""

    name: EnvName
    value: str


class ModelSelection(msgspec.Struct, frozen=True):
    """What the Set Model form remembers: the preset id or ``custom``, and the custom text."""

    selection: str | None = None
    customArgs: str | None = None


class Store(msgspec.Struct, frozen=True):
    """The typed view of ``store.json``; unknown keys are ignored here and kept on rewrite."""

    serveArgs: tuple[str, ...] = ()
    serveEnv: tuple[EnvVar, ...] = ()
    modelSelection: ModelSelection | None = None

    @property
    def model_selected(self) -> bool:
        """Whether a model is selected (a non-empty ``serveArgs``)."""
        return bool(self.serveArgs)
