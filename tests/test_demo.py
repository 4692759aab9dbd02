"""``vllmd demo``: volumes, the store it writes, the curl, the progress, the port, Ctrl-C.

The daemon part runs for real over the stand-in vLLM. The real run (prepare, load SmolLM2,
answer the printed curl) is proven by hand and by the e2e tier, which serves the same model with
the same arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import ROOT, STANDIN, Volumes, free_port, pid_alive, wait_for

from vllmd.core.health import LOADING_MESSAGE, READY_MESSAGE
from vllmd.demo import cpuenv
from vllmd.demo.demo import (
    SERVED_NAME,
    DemoError,
    Progress,
    check_alone,
    check_port,
    clear_scratch,
    curl_command,
    daemon_argv,
    demo_settings,
    program_name,
    select_chat_model,
    serve_args,
    try_lines,
)
from vllmd.settings import Settings, settings_from
from vllmd.state.store import read_store

KEY = "AbCdEfGhIjKlMnOpQrStUv"


def _args(**given: str) -> argparse.Namespace:
    return argparse.Namespace(**{"data": None, "public": None, "run_dir": None, **given})


def _env(tmp_path: Path) -> cpuenv.CpuEnv:
    chat, embed = tmp_path / "models" / "chat", tmp_path / "embed"
    return cpuenv.CpuEnv(
        root=tmp_path,
        vllm=tmp_path / "bin" / "vllm",
        python=tmp_path / "venv" / "bin" / "python",
        chat_model=chat,
        embed_model=embed,
        chat_args=cpuenv.chat_args(chat),
        embed_args=cpuenv.embed_args(embed),
    )


def test_volumes_not_given_go_under_dot_vllmd_in_the_current_folder(tmp_path: Path) -> None:
    settings = demo_settings(_args(), Settings(), {}, tmp_path)
    assert (settings.data, settings.public, settings.run_dir) == (
        tmp_path / ".vllmd" / "data",
        tmp_path / ".vllmd" / "public",
        tmp_path / ".vllmd" / "run",
    )


def test_a_volume_given_by_flag_or_environment_is_kept(tmp_path: Path) -> None:
    given = Settings(data=Path("/d"), public=Path("/p"), run_dir=Path("/r"))
    settings = demo_settings(_args(data="/d"), given, {"VLLMD_RUN_DIR": "/r"}, tmp_path)
    assert settings.data == Path("/d")
    assert settings.run_dir == Path("/r")
    assert settings.public == tmp_path / ".vllmd" / "public"


def test_demo_help_shows_the_defaults_the_demo_applies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from vllmd.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["demo", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    applied = demo_settings(_args(), Settings(), {}, tmp_path)
    for flag, name in (("--data", "data"), ("--public", "public"), ("--run-dir", "run_dir")):
        found = re.search(rf"{flag} DIR [^(]*\(env \S+; default (\S+)\)", shown)
        assert found is not None, shown
        assert tmp_path / found[1] == getattr(applied, name)
    assert "--port PORT vLLM's listen port (env VLLMD_PORT; default 8000)" in shown


def test_the_curl_is_a_command_a_shell_splits_into_the_chat_request() -> None:
    text = curl_command(8123, KEY)
    argv = shlex.split(text.replace("\\\n", " "))
    assert argv[:3] == ["curl", "-s", "http://127.0.0.1:8123/v1/chat/completions"]
    assert argv[argv.index("-H") + 1] == f"Authorization: Bearer {KEY}"
    body = json.loads(argv[argv.index("-d") + 1])
    assert body["model"] == SERVED_NAME
    assert body["messages"] == [{"role": "user", "content": "What is the capital of France?"}]
    assert body["temperature"] == 0


def test_a_question_with_quotes_survives_the_shell() -> None:
    question = 'What\'s "vLLM"? $HOME `x`'
    argv = shlex.split(curl_command(8000, KEY, question).replace("\\\n", " "))
    assert json.loads(argv[-1])["messages"][0]["content"] == question


def test_the_chat_model_is_selected_as_custom_args_with_scratch_under_the_run_dir(
    tmp_path: Path,
) -> None:
    settings = Settings(data=tmp_path / "data", public=tmp_path / "pub", run_dir=tmp_path / "run")
    settings.data.mkdir()
    settings.store_path.write_text('{"somethingElse": 1}')
    env = _env(tmp_path)

    select_chat_model(settings, env)

    store = read_store(settings.store_path)
    assert store is not None
    assert list(store.serveArgs) == serve_args(env)
    assert store.serveArgs[0] == str(env.chat_model)
    assert "--served-model-name" in store.serveArgs
    assert store.modelSelection is not None and store.modelSelection.selection == "custom"
    assert shlex.split(store.modelSelection.customArgs or "") == serve_args(env)
    variables = {var.name: var.value for var in store.serveEnv}
    assert variables["HF_HUB_OFFLINE"] == "1"
    assert Path(variables["TMPDIR"]).is_relative_to(settings.run_dir)
    assert Path(variables["VLLM_CACHE_ROOT"]).is_relative_to(settings.run_dir)
    assert json.loads(settings.store_path.read_text())["somethingElse"] == 1


def test_a_taken_port_is_refused_before_anything_starts() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(DemoError, match=f"port {port} .* --port PORT"):
            check_port("127.0.0.1", port)


def test_a_second_demo_on_volumes_a_live_vllmd_owns_is_refused(tmp_path: Path) -> None:
    settings = Settings(data=tmp_path / "d", public=tmp_path / "p", run_dir=tmp_path / "r")
    settings.run_dir.mkdir()
    owner = subprocess.Popen(  # a process whose command line names vllmd, like the daemon's
        [sys.executable, "-c", "import time; time.sleep(30)", "vllmd", "run"]
    )
    try:
        # Popen returns once exec began: the kernel fills the new command line a moment later.
        cmdline = Path(f"/proc/{owner.pid}/cmdline")
        wait_for(lambda: b"vllmd" in cmdline.read_bytes(), 5, "the owner's command line")
        settings.health_path.write_text(json.dumps({"result": "success", "pid": owner.pid}))
        with pytest.raises(DemoError, match=f"pid {owner.pid}"):
            check_alone(settings)
    finally:
        owner.kill()
        owner.wait()
    check_alone(settings)  # a file left by a dead daemon does not count


def test_scratch_of_earlier_runs_is_cleared(tmp_path: Path) -> None:
    settings = Settings(run_dir=tmp_path / "r")
    left = settings.run_dir / "vllm" / "tmp" / "vllm_dist_0123"
    left.mkdir(parents=True)
    clear_scratch(settings)
    assert not left.exists()
    clear_scratch(settings)  # nothing there: fine


def _health(result: str, message: str, pid: int = 42) -> dict[str, object]:
    return {"result": result, "message": message, "pid": pid}


def _progress(tty: bool) -> Progress:
    return Progress(pid=42, port=8000, read_key=lambda: KEY, tty=tty, started=100.0)


def test_a_health_file_of_another_daemon_shows_nothing() -> None:
    progress = _progress(tty=False)
    assert progress.text(_health("success", READY_MESSAGE, pid=7), 101.0) == ""
    assert progress.text(None, 101.0) == ""


def test_loading_then_ready_prints_one_line_per_change_then_the_curl() -> None:
    progress = _progress(tty=False)
    first = progress.text(_health("loading", LOADING_MESSAGE), 103.0)
    again = progress.text(_health("loading", LOADING_MESSAGE), 104.0)
    more = progress.text(_health("loading", f"{LOADING_MESSAGE} Loading weights: shard 1/1."), 110)
    ready = progress.text(_health("success", READY_MESSAGE), 140.0)
    still = progress.text(_health("success", READY_MESSAGE), 141.0)

    assert first == f"loading {SERVED_NAME} on the CPU: 3 s\n"
    assert again == ""
    assert more == f"loading {SERVED_NAME} on the CPU: 10 s (Loading weights: shard 1/1.)\n"
    assert ready.startswith(f"{SERVED_NAME} is ready (40 s since the start)")
    assert curl_command(8000, KEY) in ready
    assert ready.endswith("Press Ctrl-C to stop.\n")
    assert still == ""


def test_on_a_terminal_the_loading_line_is_rewritten_in_place_and_closed() -> None:
    progress = _progress(tty=True)
    ticks = [progress.text(_health("loading", LOADING_MESSAGE), t) for t in (101.0, 102.0)]
    ready = progress.text(_health("success", READY_MESSAGE), 103.0)

    assert ticks == [
        f"\r\033[Kloading {SERVED_NAME} on the CPU: 1 s",
        f"\r\033[Kloading {SERVED_NAME} on the CPU: 2 s",
    ]
    assert ready.startswith(f"\n{SERVED_NAME} is ready")
    assert progress.end_line() == ""


def test_a_failure_is_shown_with_its_message_and_a_later_ready_says_again() -> None:
    progress = _progress(tty=False)
    progress.text(_health("success", READY_MESSAGE), 101.0)
    crash = "vLLM exited with status 1 and will be restarted in 1 s. Last error: boom."
    assert progress.text(_health("failure", crash), 102.0) == f"failure: {crash}\n"
    assert f"{SERVED_NAME} is ready again" in progress.text(_health("success", READY_MESSAGE), 9)


def test_a_port_left_in_time_wait_by_a_stopped_demo_is_free() -> None:
    # Given a port whose listener is gone but whose closed connection waits in TIME-WAIT: the
    # side that closes first keeps it, as vLLM's server does when the demo stops, and its
    # listener, like vLLM's, set SO_REUSEADDR
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        served, _ = listener.accept()
        served.close()
        client.recv(1)  # the server's FIN has arrived
        client.close()

    def plain_bind_refused() -> bool:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                return True
            return False

    wait_for(plain_bind_refused, 5, "the connection in TIME-WAIT")  # what the old check tripped on
    # When the demo checks the port, then it is free
    check_port("127.0.0.1", port)


def test_the_exports_point_vllmds_commands_at_the_demos_folders(tmp_path: Path) -> None:
    settings = Settings(data=tmp_path / "d x", public=tmp_path / "p", run_dir=tmp_path / "r")
    lines = try_lines(settings, ".venv/bin/vllmd").splitlines()
    assert shlex.split(lines[0]) == [
        "export",
        f"VLLMD_DATA={tmp_path / 'd x'}",
        f"VLLMD_PUBLIC={tmp_path / 'p'}",
        f"VLLMD_RUN_DIR={tmp_path / 'r'}",
    ]
    assert lines[1:] == [
        ".venv/bin/vllmd health --text",
        ".venv/bin/vllmd action set-model --list --text",
        ".venv/bin/vllmd action get-api-key --text",
    ]


def test_the_commands_to_try_call_vllmd_as_the_demo_was_called() -> None:
    assert program_name(".venv/bin/vllmd") == ".venv/bin/vllmd"
    assert program_name("/x/vllmd/__main__.py") == f"{shlex.quote(sys.executable)} -m vllmd"


def test_the_daemon_runs_on_exactly_the_demos_settings(tmp_path: Path) -> None:
    from vllmd.cli import build_parser

    settings = Settings(
        data=tmp_path / "d",
        public=tmp_path / "p",
        run_dir=tmp_path / "r",
        host="127.0.0.1",
        port=8123,
        vllm="/opt/bin/vllm",
        ldconfig=False,
        log_format="json",
    )
    argv = daemon_argv(settings)
    assert argv[:4] == [sys.executable, "-m", "vllmd", "run"]
    assert settings_from(build_parser().parse_args(argv[3:]), {}) == settings


DEMO = """
import sys, time
from pathlib import Path
from vllmd.demo.demo import run_daemon
from vllmd.settings import Settings

root, port, vllm = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
settings = Settings(data=root / "data", public=root / "public", run_dir=root / "run",
                    host="127.0.0.1", port=port, vllm=vllm, ldconfig=False)
# The demo started 1000 s ago: the ready line counts from there, not from the daemon's start.
sys.exit(run_daemon(settings, out=sys.stdout, started=time.monotonic() - 1000, program="vllmd"))
"""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGHUP], ids=["ctrl-c", "hangup"])
def test_ctrl_c_says_stopping_at_once_and_the_demo_ends_with_the_daemon(
    tmp_path: Path, signum: int
) -> None:
    # Given a demo whose model is ready, and whose vLLM takes 3 s to stop
    volumes = Volumes(tmp_path)
    volumes.set_args(*volumes.standin_args("org/model", "--fake-term-delay", "3"))
    path = f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"
    demo = subprocess.Popen(
        [sys.executable, "-c", DEMO, str(tmp_path), str(free_port()), str(STANDIN)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        # The stand-in's "org/model" is on no hub: vLLM, not vllmd, would download it.
        env={**os.environ, "PATH": path, "PYTHONPATH": str(ROOT), "VLLMD_FETCH": "false"},
        start_new_session=True,  # its own group, as a terminal's foreground job
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(demo.stdout or ()), daemon=True)
    reader.start()
    try:
        wait_for(lambda: "Press Ctrl-C to stop.\n" in lines, 30, "the ready message")
        shown = "".join(lines)
        assert re.search(rf"{SERVED_NAME} is ready \(10\d\d s since the start\)", shown)
        assert f"export VLLMD_DATA={volumes.data}" in shown
        assert "vllmd action get-api-key --text\n" in shown
        # When Ctrl-C (or a closed terminal's hangup) reaches the demo's group (the daemon has a
        # group of its own)
        os.killpg(demo.pid, signum)
        # Then it says so at once, while vLLM is still stopping
        wait_for(lambda: "vllmd demo: stopping vLLM and the daemon\n" in lines, 2, "stopping")
        assert demo.poll() is None
        # and ends with the daemon, leaving nothing running
        assert demo.wait(30) == 0
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait()
        _stop_daemon(volumes)  # a test that failed half-way leaves nothing running
    reader.join(5)
    assert demo.stdout is not None
    demo.stdout.close()
    assert lines[-1] == "vllmd demo: stopped; vLLM and its processes are gone.\n"
    assert [r["pid"] for r in volumes.starts() if pid_alive(r["pid"])] == []


def _stop_daemon(volumes: Volumes) -> None:
    """SIGTERM the daemon that ``health.json`` names, if it lives, and wait for it to go."""
    try:
        pid = json.loads(volumes.health.read_text())["pid"]
    except (OSError, ValueError, KeyError):
        return
    if pid_alive(pid):
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not pid_alive(pid), 20, f"the daemon {pid} to stop")
