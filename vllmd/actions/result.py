"""StartOS action results (``ActionResult`` version 1), as JSON for StartOS or text for people.

A :class:`Form` is the other thing an action prints: the data the StartOS package builds an
action's input form from (``--form``), a plain JSON object rather than an action result.

The shape follows the StartOS SDK: ``{"version": "1", "title": str, "message": str | null,
"result": value | null}``, where a value is ``{"type": "single", "value": str, "copyable": bool,
"qr": bool, "masked": bool}`` or ``{"type": "group", "value": [member, ...]}`` and a member is a
value with a ``name`` and a ``description`` (``str | null``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from vllmd.core.errors import VllmdError

Value = dict[str, Any]
"""One result value: built by :func:`single` or :func:`group`."""

_encoder = msgspec.json.Encoder()


class ActionError(VllmdError):
    """Raised by an action for a user error; the message says what, where, and what to do."""


def single(value: str, *, copyable: bool = False, masked: bool = False, qr: bool = False) -> Value:
    """One string to show; ``masked`` hides it behind dots until revealed."""
    return {"type": "single", "value": value, "copyable": copyable, "qr": qr, "masked": masked}


def group(*members: Value) -> Value:
    """A list of named values (built by :func:`member`), shown as an accordion."""
    return {"type": "group", "value": list(members)}


def member(name: str, value: Value, description: str | None = None) -> Value:
    """``value`` with a ``name`` and a ``description``, to go in a :func:`group`."""
    return {"name": name, "description": description, **value}


def _value_text(value: Mapping[str, Any], indent: str) -> list[str]:
    if value["type"] == "single":
        return [f"{indent}{value['value']}"]
    lines: list[str] = []
    for item in value["value"]:
        if item["type"] == "single":
            lines.append(f"{indent}{item['name']}: {item['value']}")
        else:
            lines.append(f"{indent}{item['name']}:")
            lines += _value_text(item, indent + "  ")
        if item.get("description"):
            lines.append(f"{indent}    {item['description']}")
    return lines


@dataclass(frozen=True, slots=True)
class ActionResult:
    """What an action answers: a title, a message, and a value (or none).

    ``text`` replaces the generic readable form when an action has a better one (a table).
    """

    title: str
    message: str | None
    result: Value | None = None
    text: str | None = None

    def to_builtins(self) -> dict[str, Any]:
        """The StartOS JSON object."""
        return {"version": "1", "title": self.title, "message": self.message, "result": self.result}

    def to_json(self) -> str:
        """The StartOS JSON, one line."""
        return _encoder.encode(self.to_builtins()).decode() + "\n"

    def to_text(self) -> str:
        """A readable form for people (``--text``)."""
        if self.text is not None:
            return self.text if self.text.endswith("\n") else self.text + "\n"
        lines = [self.title]
        if self.message:
            lines.append(self.message)
        if self.result is not None:
            lines.append("")
            lines += _value_text(self.result, "")
        return "\n".join(lines) + "\n"


FORM_VERSION = 1
"""The ``version`` of every ``--form`` document; the shapes only grow (CONTRACT.md §4)."""


@dataclass(frozen=True, slots=True)
class Form:
    """A machine-readable form (``--form``): one JSON object whose shape CONTRACT.md §4 pins."""

    document: dict[str, Any]

    def to_json(self) -> str:
        """The object, one line."""
        return _encoder.encode(self.document).decode() + "\n"

    def to_text(self) -> str:
        """The same object, indented for people."""
        return msgspec.json.format(self.to_json(), indent=2)
