"""The one base of every error a user can hit, with what went wrong and what to do kept apart.

Each layer raises its own kind (:class:`vllmd.state.store.StoreError`,
:class:`vllmd.core.presets.CatalogError`, ...); a command catches :class:`VllmdError` once and
prints it. Code that shows only the problem (an action's listing that already says what to do)
reads :attr:`VllmdError.problem` instead of cutting the hint back out of the text.
"""

from __future__ import annotations


class VllmdError(Exception):
    """Base of every error a user can hit; never raised itself, only its kinds are."""

    problem: str
    """What was wrong, and where (a file, a field, a flag): one or more sentences."""
    hint: str
    """What to do about it; empty when the problem already says it."""

    def __init__(self, problem: str, hint: str = "") -> None:
        super().__init__(problem, hint)
        self.problem = problem
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.problem} {self.hint}" if self.hint else self.problem
