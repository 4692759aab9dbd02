"""The typed shape of ``store.json``: what the pure core computes launches from.

Only the schema lives here (msgspec ``Struct`` types, value rules in the types); reading and writing
the file is :mod:`vllmd.state.store`'s job.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

# \Z, not $: Python's $ also matches before a final newline, and "HF_TOKEN\n" is no name.
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*\Z"
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


def nul_problem(store: Store) -> str | None:
    """Where ``store`` holds a NUL character, which no argument or variable can carry; or None.

    JSON allows ``"\\u0000"`` in a string, but the kernel's argv and environment are
    NUL-terminated: launching would fail (``embedded null byte``) after stopping what runs.
    """
    for n, arg in enumerate(store.serveArgs):
        if "\0" in arg:
            return f"$.serveArgs[{n}] holds a NUL character, which no program argument can carry"
    for n, var in enumerate(store.serveEnv):
        if "\0" in var.value:
            return (
                f"$.serveEnv[{n}].value (of {var.name}) holds a NUL character, which no "
                "environment variable can carry"
            )
    return None
