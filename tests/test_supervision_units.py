"""Pure pieces of supervision: the back-off schedule, the log pump, process-group reading."""

from __future__ import annotations

import os
import subprocess
import sys

from vllmd.apikey import new_key
from vllmd.core.backoff import Backoff
from vllmd.core.exits import describe_exit, signal_name
from vllmd.core.health import ExitInfo, crash_message
from vllmd.core.masking import MASK, masker
from vllmd.process.logpump import CHUNK, LinePump
from vllmd.process.proc import group_members


def test_backoff_doubles_from_one_second_and_caps_at_sixty() -> None:
    backoff = Backoff()
    delays = [backoff.next_delay(ready_for_s=None) for _ in range(9)]
    assert delays == [1, 2, 4, 8, 16, 32, 60, 60, 60]


def test_backoff_resets_after_ten_minutes_ready() -> None:
    backoff = Backoff()
    for _ in range(5):
        backoff.next_delay(ready_for_s=5)
    assert backoff.next_delay(ready_for_s=599) == 32
    assert backoff.next_delay(ready_for_s=600) == 1
    assert backoff.next_delay(ready_for_s=None) == 2


def test_backoff_reset_on_new_configuration() -> None:
    backoff = Backoff()
    backoff.next_delay(None)
    backoff.next_delay(None)
    backoff.reset()
    assert backoff.next_delay(None) == 1


def _pump() -> tuple[LinePump, list[bytes], list[str]]:
    out: list[bytes] = []
    lines: list[str] = []
    return LinePump(out.append, lines.append), out, lines


def test_log_pump_passes_lines_and_carriage_return_progress_bars() -> None:
    pump, out, lines = _pump()
    pump.feed(b"one\ntw")
    pump.feed(b"o\r 10%\r 20%\nrest")
    pump.close()
    assert b"".join(out) == b"one\ntwo\r 10%\r 20%\nrest"
    assert lines == ["one", "two", " 10%", " 20%", "rest"]


def test_log_pump_survives_a_line_of_any_length() -> None:
    pump, out, _ = _pump()
    big = b"x" * (3 * CHUNK + 17)
    for i in range(0, len(big), 4096):
        pump.feed(big[i : i + 4096])
    pump.feed(b"\n")
    assert b"".join(out) == big + b"\n"
    assert max(len(piece) for piece in out) <= CHUNK + 4096


def test_log_pump_masks_a_key_split_across_reads() -> None:
    key = new_key()
    masker.add(key)
    pump, out, _ = _pump()
    data = b"y" * (CHUNK - 5) + f"key={key} end\n".encode()
    head = CHUNK - 40  # the bulk at once; the key arrives in small reads across the chunk's end
    pump.feed(data[:head])
    for i in range(head, len(data), 7):
        pump.feed(data[i : i + 7])
    pump.close()
    joined = b"".join(out)
    assert key.encode() not in joined
    assert f"key={MASK} end".encode() in joined


def test_live_members_sees_a_group_and_not_its_zombies() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"],
                            start_new_session=True)  # fmt: skip
    try:
        assert group_members(proc.pid) == [proc.pid]
        proc.kill()
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)  # a zombie now, not reaped
        assert group_members(proc.pid) == []
    finally:
        proc.kill()
        proc.wait()


def test_exit_descriptions_name_status_or_signal() -> None:
    assert describe_exit(1) == "exited with status 1"
    assert describe_exit(-9) == "was killed by signal 9 (SIGKILL)"
    assert describe_exit(None) == "still running"


def test_every_return_code_has_one_description_in_the_logs_and_in_health() -> None:
    # Given every kind of return code: a status, a named signal, a signal Python cannot name
    for returncode in (0, 1, 137, -9, -15, -40, -200):
        # When the health message describes the crash
        message = crash_message(ExitInfo(returncode, 1.0))
        # Then it says what the supervisor's log line says, and names the signal iff it can
        assert message.startswith(f"vLLM {describe_exit(returncode)} and will")
        assert (signal_name(returncode) is not None) == (returncode in (-9, -15))
    assert describe_exit(-200) == "was killed by signal 200"


def test_vllm_line_as_json_keeps_its_level_and_masks_the_key() -> None:
    import json

    from vllmd.logs import vllm_line_json

    key = new_key()
    masker.add(key)
    entry = json.loads(vllm_line_json("stderr", f"(APIServer pid=7) WARNING 01-02 [x.py:1] {key}"))
    assert entry["level"] == "WARNING" and entry["component"] == "vllm"
    assert entry["stream"] == "stderr" and key not in entry["message"] and MASK in entry["message"]
    assert json.loads(vllm_line_json("stdout", "no level here"))["level"] == "INFO"
