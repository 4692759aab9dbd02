"""What the daemon writes: one event stays one line, secrets never show, output never blocks.

Issue 11, classes 1 (a newline in a value forged a log line), 5 (a stdout nobody reads froze the
event loop) and 6 (forty serveEnv values pushed the key out of the masker).
"""

from __future__ import annotations

import fcntl
import io
import logging
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import Volumes
from vllmd.core.escape import one_line, safe_output
from vllmd.core.masking import MASK, Masker
from vllmd.logs import JsonFormatter, TextFormatter
from vllmd.process.outstream import OutStream

FAST = settings(max_examples=int(os.environ.get("VLLMD_FUZZ_EXAMPLES", "200")), deadline=None)


def _record(message: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("vllmd.daemon", logging.ERROR, __file__, 1, message, args, None)


@FAST
@given(value=st.text())
def test_one_log_event_is_one_line_whatever_its_values_hold(value: str) -> None:
    # given: a log call whose argument holds anything (newlines, CR, escapes, NEL, U+2028)
    record = _record("bad argument %r in %s", value, value)
    # when: it is formatted in either format
    text = TextFormatter().format(record)
    json_line = JsonFormatter().format(record)
    # then: each is exactly one line, and the text form starts with our own header only once
    assert len(text.splitlines()) == 1
    assert len(json_line.splitlines()) == 1
    assert text.startswith("ERROR daemon: ")


def test_a_newline_in_a_value_cannot_forge_a_line_of_ours() -> None:
    # given: an argument that tries to start a second, critical-looking line
    record = _record("ignoring %s", "x\nCRITICAL daemon: key leaked")
    # when/then: it stays inside the one event, visibly escaped
    assert TextFormatter().format(record) == (
        "ERROR daemon: ignoring x\\nCRITICAL daemon: key leaked"
    )


@FAST
@given(data=st.binary())
def test_passed_through_output_keeps_only_line_ends_as_controls(data: bytes) -> None:
    # given/when: any bytes vLLM prints
    shown = safe_output(data)
    # then: no control byte but \n, \r and \t survives
    assert not {b for b in shown if b < 0x20 or b == 0x7F} - {0x0A, 0x0D, 0x09}
    assert shown.count(b"\n") == data.count(b"\n")


@FAST
@given(value=st.text())
def test_escaping_is_the_identity_on_plain_text(value: str) -> None:
    # given: text without control characters
    plain = "".join(c for c in value if c.isprintable())
    # when/then: it is left alone
    assert one_line(plain) == plain


def test_the_key_is_masked_whatever_else_is_masked() -> None:
    # given: the key, then many more other secrets than the masker keeps
    masker = Masker()
    key = "K3yK3yK3yK3yK3yK3yK3yK"
    masker.add_key(key)
    for n in range(500):
        masker.add(f"secret-value-{n:04d}")
    # when/then: the key is still masked, and so is the newest secret
    assert masker.mask(f"--api-key {key}") == f"--api-key {MASK}"
    assert masker.mask("secret-value-0499") == MASK


def test_every_secret_of_the_launch_is_masked_however_many() -> None:
    # given: a launch with more secrets than the masker keeps from earlier launches
    masker = Masker()
    first = [f"first-launch-secret-{n:04d}" for n in range(500)]
    masker.use(first)
    # when: the next launch has other secrets
    second = [f"second-launch-secret-{n:04d}" for n in range(500)]
    masker.use(second)
    # then: every secret of the current launch is masked, and the newest earlier ones too
    assert all(masker.mask(secret) == MASK for secret in second)
    assert masker.mask(first[0]) == MASK


def test_with_auth_flag_and_many_env_values_the_key_never_reaches_the_output(
    volumes: Volumes, start_daemon
) -> None:
    # given: --auth flag (the key in vLLM's argv), more serveEnv secrets than the masker keeps
    # besides the key, and a vLLM that prints its arguments, key included
    env = [{"name": f"SECRET_{n}", "value": f"value-of-secret-{n:03d}"} for n in range(100)]
    printed = "env value-of-secret-000 and value-of-secret-099"
    args = volumes.standin_args("org/model", "--fake-echo-key", "--fake-print", printed)
    volumes.set_args(*args, serveEnv=env)
    # when: the daemon runs it
    daemon = start_daemon("--auth", "flag")
    daemon.wait_health("success")
    # then: neither the key nor any secret value appears in anything the daemon wrote
    output = daemon.output()
    assert volumes.key() not in output
    assert "value-of-secret-" not in output
    assert MASK in output


@pytest.fixture
def stalled_pipe() -> Iterator[tuple[int, int]]:
    """A pipe nobody reads, with a small buffer."""
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, 1031, 4096)  # F_SETPIPE_SZ: fill it fast
    yield read_end, write_end
    os.close(read_end)
    os.close(write_end)


def test_writing_to_a_stream_nobody_reads_never_blocks(stalled_pipe: tuple[int, int]) -> None:
    # given: an out stream on a pipe nobody reads
    _, write_end = stalled_pipe
    dropped: list[tuple[int, int, bool]] = []
    stream = OutStream(write_end, limit=10_000, on_dropped=lambda *d: dropped.append(d))
    # when: far more is written than the pipe and the buffer hold
    began = time.monotonic()
    line = b"line ................................................\n"
    for _ in range(1_000):
        stream.write(line)
    # then: every write returned at once, and what did not fit was dropped whole and counted
    assert time.monotonic() - began < 1.0
    assert stream.pending <= 10_000
    writes, size = stream.dropped
    assert writes > 0 and size == writes * len(line)
    stream.close(timeout_s=0.05)
    assert os.get_blocking(write_end)  # the descriptor's mode is restored


async def test_a_stalled_stream_catches_up_and_reports_what_was_dropped(
    stalled_pipe: tuple[int, int],
) -> None:
    # given: a stalled out stream that has dropped lines
    read_end, write_end = stalled_pipe
    dropped: list[tuple[int, int, bool]] = []
    stream = OutStream(write_end, limit=8_192, on_dropped=lambda *d: dropped.append(d))
    async with anyio.create_task_group() as tg:
        await tg.start(stream.run)
        lines = [b"%05d\n" % n for n in range(5_000)]
        for line in lines:
            stream.write(line)
        assert stream.dropped[0] > 0
        # when: the reader wakes up and reads everything
        received = io.BytesIO()
        with anyio.fail_after(5):
            while stream.pending or len(dropped) < 2:
                await anyio.wait_readable(read_end)
                received.write(os.read(read_end, 65_536))
        tg.cancel_scope.cancel()
    # then: what arrived is whole lines, in order, and the loss was reported at once and in
    # total when the reader caught up
    got = received.getvalue().splitlines(keepends=True)
    assert got == lines[: len(got)]
    assert dropped == [(1, 6, False), (5_000 - len(got), 6 * (5_000 - len(got)), True)]
    stream.close(timeout_s=0.05)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


pytestmark = pytest.mark.anyio


def test_a_stdout_nobody_reads_never_freezes_the_daemon(volumes: Volumes, tmp_path) -> None:
    # given: a daemon whose stdout is a pipe nobody reads (a stuck log collector), running a
    # vLLM that prints far more than the pipe and the daemon's buffer hold
    import subprocess
    import sys

    from tests.conftest import ROOT, STANDIN, free_port, wait_for

    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, 1031, 4096)  # F_SETPIPE_SZ
    volumes.set_args(*volumes.standin_args("org/model", "--fake-big-line", "3000000"))
    err_path = tmp_path / "daemon.err"
    command = [
        sys.executable, "-m", "vllmd", "run", "--data", str(volumes.data),
        "--public", str(volumes.public), "--run-dir", str(volumes.run), "--vllm", str(STANDIN),
        "--host", "127.0.0.1", "--port", str(free_port()), "--no-ldconfig", "--no-fetch",
        "--stop-timeout", "5",
    ]  # fmt: skip
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(ROOT),
    }
    with err_path.open("wb") as err:
        proc = subprocess.Popen(command, stdout=write_end, stderr=err, env=env, cwd=ROOT)
    os.close(write_end)
    try:
        wait_for(lambda: len(volumes.starts()) == 1, 20, "vLLM started")
        wait_for(lambda: "nobody reads stdout" in err_path.read_text(), 20, "the drop reported")
        # when: the key is deleted
        key = volumes.key()
        volumes.credentials.unlink()
        # then: a new one is written at once, the loop is not frozen
        wait_for(lambda: volumes.credentials.is_file() and volumes.key() != key, 5, "new key")
        # when: the daemon is asked to stop
        proc.send_signal(signal.SIGTERM)
        # then: it stops, as promised, though nobody ever read its stdout
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(read_end)
