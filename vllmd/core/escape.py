"""Keep one event on one line: escape the characters that would split or forge a log line.

A value that reaches a log line (a serve argument, a file's content in an error, vLLM's own
output) may hold a newline, a carriage return or a terminal escape; written as is, it splits one
event into two lines, and the second can pass for one of ours (``CRITICAL daemon: ...``). Pure.
"""

from __future__ import annotations

import re

__all__ = ["json_one_line", "one_line", "safe_output"]

# C0 controls, DEL and C1 controls; the line separators Python's str.splitlines() also honours.
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_OUTPUT_CONTROLS = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# What a JSON encoder leaves raw inside strings but a line reader may still break on.
_JSON_RAW = re.compile("[\x7f-\x9f\u2028\u2029]")


def _escaped(match: re.Match[str]) -> str:
    char = match[0]
    return _NAMED.get(char) or (
        f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"
    )


def one_line(text: str) -> str:
    """``text`` with every control character escaped (``\\n``, ``\\r``, ``\\x1b``...): one line."""
    if _CONTROLS.search(text) is None:
        return text
    return _CONTROLS.sub(_escaped, text)


def safe_output(data: bytes) -> bytes:
    """Passed-through output with the control bytes escaped but ``\\n``, ``\\r`` and ``\\t`` kept.

    vLLM's lines end in ``\\n`` and its progress bars redraw with ``\\r``; anything else below
    0x20 (a terminal escape, a NUL) is written as ``\\xNN`` so it cannot rewrite what was shown.
    """
    if _OUTPUT_CONTROLS.search(data) is None:
        return data
    return _OUTPUT_CONTROLS.sub(lambda m: b"\\x%02x" % m[0][0], data)


def json_one_line(encoded: str) -> str:
    """Encoded JSON with the few line-breaking characters JSON allows raw written as ``\\uXXXX``.

    The encoder already escapes ``\\n`` and the other C0 controls; NEL (U+0085) and U+2028/9 pass
    through raw, and readers that split on every line break (Python's ``splitlines``) cut there.
    """
    if _JSON_RAW.search(encoded) is None:
        return encoded
    return _JSON_RAW.sub(lambda m: f"\\u{ord(m[0]):04x}", encoded)
