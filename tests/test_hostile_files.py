"""Property-based fuzzing of everything vllmd reads that others write (issue 11, class 1).

Any bytes or any JSON value in ``store.json`` or ``health.json``, any ``--custom`` text, any
``--env`` items: the reader gives a valid result or a clear error of vllmd's own kind, never
another exception; and a valid result is one vLLM can actually be launched with. The number of
examples is bounded so that the fast tier stays fast; ``VLLMD_FUZZ_EXAMPLES=N`` runs N each.
"""

from __future__ import annotations

import io
import json
import os
import re
import tempfile
from argparse import Namespace
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vllmd.core.argsplit import ArgsError, parse_custom, parse_env
from vllmd.core.launch import FIXED_FLAGS, flag_name, plan_launch
from vllmd.daemon.healthfile import health_command
from vllmd.settings import Settings
from vllmd.state.store import StoreError, read_store, update_store

FUZZ = settings(
    max_examples=int(os.environ.get("VLLMD_FUZZ_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
_json = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
_pieces = st.sampled_from(
    [*"ab/-_= =\n\r\t\x00'\"\\é", "--host", "--api-k", "--po=1", "org/m", "HF_TOKEN", "\u2028"]
)
_text_with_controls = st.lists(_pieces, max_size=12).map("".join)
_store_like = st.fixed_dictionaries(
    {},
    optional={
        "serveArgs": st.lists(_text_with_controls, max_size=5) | _json,
        "serveEnv": st.lists(
            st.fixed_dictionaries({"name": _text_with_controls, "value": _text_with_controls})
            | _json,
            max_size=4,
        )
        | _json,
        "modelSelection": _json,
        "other": _json,
    },
)
_deep = st.tuples(st.integers(1, 50_000), st.sampled_from([b"[", b'{"a":'])).map(
    lambda t: (
        b'{"serveArgs": ["m"], "x": '
        + t[1] * t[0]
        + b"1"
        + (b"]" if t[1] == b"[" else b"}") * t[0]
        + b"}"
    )
)
_documents = st.one_of(
    st.binary(max_size=200),
    _json.map(lambda v: json.dumps(v).encode()),
    _store_like.map(lambda v: json.dumps(v).encode()),
    _deep,
)


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    """One folder for every example (hypothesis reruns the test body, not its fixtures)."""
    with tempfile.TemporaryDirectory() as folder:
        yield Path(folder)


def _settings(root: Path) -> Settings:
    return Settings(data=root / "data", public=root / "public", run_dir=root / "run")


def _launchable(argv: tuple[str, ...], env: dict[str, str]) -> None:
    """What execve needs: no NUL anywhere, names without ``=``."""
    assert all("\0" not in a for a in argv)
    assert all("\0" not in k and "=" not in k and "\0" not in v for k, v in env.items())


@FUZZ
@given(data=_documents)
def test_any_store_json_gives_a_launchable_store_or_a_clear_error(
    scratch: Path, data: bytes
) -> None:
    # given: any content in store.json
    settings_ = _settings(scratch)
    settings_.data.mkdir(exist_ok=True)
    settings_.store_path.write_bytes(data)
    # when: the daemon reads it
    try:
        store = read_store(settings_.store_path)
    except StoreError as exc:
        # then: an error that names the file
        assert str(settings_.store_path) in exc.problem
        return
    # then: or a store that vLLM can be launched with
    plan = plan_launch(store, "k" * 22, settings_, {"PATH": "/bin"})
    if plan.launch is not None:
        _launchable(plan.launch.argv, plan.launch.environ)
        for var in store.serveEnv:
            assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", var.name)


@FUZZ
@given(data=_documents, changes=_store_like)
def test_rewriting_any_store_json_keeps_it_or_says_why_not(
    scratch: Path, data: bytes, changes: dict[str, object]
) -> None:
    # given: any content in store.json, and any change an action could ask for
    path = scratch / "update" / "store.json"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(data)
    # when: an action rewrites it
    try:
        update_store(path, changes)
    except StoreError:
        # then: a clear refusal, and the file untouched
        assert path.read_bytes() == data
        return
    # then: or a file the daemon reads back
    assert read_store(path) is not None


@FUZZ
@given(data=_documents)
def test_vllmd_health_on_any_file_content_exits_with_a_verdict(scratch: Path, data: bytes) -> None:
    # given: any content in health.json
    settings_ = _settings(scratch)
    settings_.run_dir.mkdir(exist_ok=True)
    settings_.health_path.write_bytes(data)
    # when: `vllmd health` reads it
    out, err = io.StringIO(), io.StringIO()
    code = health_command(Namespace(text=False), settings_, stdout=out, stderr=err)
    # then: an exit code it documents, never a traceback
    assert code in (0, 1, 2)


@FUZZ
@given(text=st.text(max_size=60) | _text_with_controls)
def test_any_custom_text_gives_launchable_arguments_or_a_clear_error(text: str) -> None:
    # given/when: any --custom text
    try:
        args = parse_custom(text)
    except ArgsError as exc:
        assert exc.problem
        return
    # then: arguments without NUL and without any fixed flag, however abbreviated
    assert all("\0" not in a for a in args)
    for arg in args:
        name = flag_name(arg)
        if name.startswith("--") and len(name) > 2:
            assert not any(fixed.startswith(name) for fixed in FIXED_FLAGS), arg


@FUZZ
@given(items=st.lists(st.text(max_size=20) | _text_with_controls, max_size=5))
def test_any_env_items_give_valid_variables_or_a_clear_error(items: list[str]) -> None:
    # given/when: any --env items
    try:
        env = parse_env(items)
    except ArgsError as exc:
        assert exc.problem
        return
    # then: names execve and the schema accept, values without NUL
    for var in env:
        assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", var.name)
        assert "\0" not in var.value
