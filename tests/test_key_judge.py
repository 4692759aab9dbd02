"""One judge of the key file (issue 17 item 4): what the guard and the daemon accept is what a
dependent's strict parser reads, ``JSON.parse`` (Open WebUI reads ``credentials.json`` through
start-sdk's ``FileHelper.json``) and Python's ``json``.

The class is checked with generated files: documents with a valid key, then spoiled the ways a
writer or an editor spoils them (a byte-order mark first, ``NaN``, other encodings, bytes
inserted or cut). Whatever ``parse_key`` accepts, both strict parsers read, with the same key; and
every strictly valid document with a valid key is accepted.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from actions_support import run_vllmd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vllmd.apikey import KEY_ALPHABET
from vllmd.guard import parse_key

KEYS = st.text(alphabet=KEY_ALPHABET, min_size=22, max_size=22)
SCALARS = st.none() | st.booleans() | st.integers() | st.text(max_size=8)
EXTRA = st.dictionaries(st.text(max_size=6).filter(lambda k: k != "apiKey"), SCALARS, max_size=3)

NODE_JUDGE = r"""
const readline = require('readline');
const lines = readline.createInterface({ input: process.stdin });
lines.on('line', (line) => {
  // As start-sdk's FileHelper.json reads a file: UTF-8 text, then JSON.parse.
  const text = Buffer.from(line, 'base64').toString('utf8');
  let answer;
  try {
    const doc = JSON.parse(text);
    answer = doc !== null && typeof doc === 'object' && typeof doc.apiKey === 'string'
      ? 'ok ' + doc.apiKey : 'shape';
  } catch (e) {
    answer = 'refused';
  }
  process.stdout.write(answer + '\n');
});
"""


def _strict_python(data: bytes) -> Any:
    """Python's ``json`` as a strict reader: UTF-8 text, and no NaN or Infinity."""

    def refuse(name: str) -> Any:
        raise ValueError(name)

    return json.loads(data.decode("utf-8"), parse_constant=refuse)


@st.composite
def key_files(draw: st.DrawFn) -> bytes:
    """A key file as a writer meant it, often spoiled on the way to the disk."""
    document: dict[str, Any] = {"apiKey": draw(KEYS), **draw(EXTRA)}
    indent = draw(st.sampled_from([None, 2, 4]))
    text = json.dumps(document, indent=indent, ensure_ascii=draw(st.booleans()))
    spoil = draw(
        st.sampled_from(["none", "bom", "constant", "utf16", "insert", "cut", "space", "trail"])
    )
    if spoil == "constant":
        text = text[:-1] + f', "n": {draw(st.sampled_from(["NaN", "Infinity", "-Infinity"]))}}}'
    elif spoil == "space":  # whitespace JSON does not know: \f, \v, NBSP, a BOM inside
        text = draw(st.sampled_from(["\f", "\v", "\u00a0", "\ufeff", "\u2028"])) + text
    elif spoil == "trail":
        text += draw(st.sampled_from(["\n", " ", "\x00", "}", "//", "\n\n"]))
    data = text.encode("utf-16" if spoil == "utf16" else "utf-8")
    if spoil == "bom":
        data = b"\xef\xbb\xbf" + data
    elif spoil == "insert":
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.binary(min_size=1, max_size=3)) + data[at:]
    elif spoil == "cut":
        data = data[: draw(st.integers(0, len(data) - 1))]
    return data


@pytest.fixture(scope="module")
def node_judge() -> Iterator[Any]:
    """``JSON.parse`` in a node process, asked one file per line; skipped without node."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: JSON.parse is checked where it is")
    proc = subprocess.Popen(
        [node, "-e", NODE_JUDGE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdin is not None and proc.stdout is not None

    def ask(data: bytes) -> str:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(base64.b64encode(data).decode() + "\n")
        proc.stdin.flush()
        return proc.stdout.readline().strip()

    yield ask
    proc.stdin.close()
    proc.wait(10)
    proc.stdout.close()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(key_files())
def test_a_key_file_the_guard_accepts_is_one_strict_parsers_read(data: bytes) -> None:
    key, _ = parse_key(data)
    try:
        document = _strict_python(data)
    except ValueError:  # UnicodeDecodeError and JSONDecodeError included
        document = None
    strict_key = document.get("apiKey") if isinstance(document, dict) else None
    if key is not None:
        # accepted: Python's strict reading gives the same key
        assert strict_key == key
    elif isinstance(strict_key, str) and len(strict_key) == 22 and strict_key.isalnum():
        raise AssertionError(f"a strictly valid key file was refused: {data!r}")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=key_files())
def test_a_key_file_the_guard_accepts_is_one_json_parse_reads(node_judge: Any, data: bytes) -> None:
    key, _ = parse_key(data)
    if key is not None:
        assert node_judge(data) == f"ok {key}"


@pytest.mark.parametrize(
    "data",
    [
        b'\xef\xbb\xbf{"apiKey": "q7WbX2mZ9kLpR4tY8vNc3d"}',
        b'{"apiKey": "q7WbX2mZ9kLpR4tY8vNc3d", "n": NaN}',
        '{"apiKey": "q7WbX2mZ9kLpR4tY8vNc3d"}'.encode("utf-16"),
    ],
    ids=["byte-order-mark", "NaN", "utf-16"],
)
def test_python_json_on_bytes_would_take_what_strict_parsers_refuse(data: bytes) -> None:
    # json.loads of bytes skips a BOM and guesses UTF-16, and json takes NaN: the guard does not
    json.loads(data)
    assert parse_key(data)[0] is None


def test_a_key_file_with_a_byte_order_mark_is_moved_aside_and_replaced(tmp_path: Any) -> None:
    # given a key file that JSON.parse refuses: a UTF-8 byte-order mark before valid JSON
    public = tmp_path / "public"
    public.mkdir()
    (public / "credentials.json").write_bytes(b'\xef\xbb\xbf{"apiKey": "q7WbX2mZ9kLpR4tY8vNc3d"}')
    # when get-api-key runs
    flags = (f"--data={tmp_path / 'data'}", f"--public={public}", f"--run-dir={tmp_path / 'run'}")
    done = run_vllmd("action", "get-api-key", *flags)
    # then it was moved aside and a new key written, one a strict parser reads
    assert done.returncode == 0, done.stderr
    key = done.json()["result"]["value"]
    assert key != "q7WbX2mZ9kLpR4tY8vNc3d"
    assert _strict_python((public / "credentials.json").read_bytes())["apiKey"] == key
    aside = [p.name for p in public.iterdir() if p.name.startswith("credentials.json.invalid-")]
    assert len(aside) == 1
