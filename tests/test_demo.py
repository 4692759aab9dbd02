"""``vllmd demo``'s pure parts: volumes, the store it writes, the curl, the progress it shows.

The real run (prepare, load SmolLM2, answer the printed curl) is proven by hand and by the e2e
tier, which serves the same model with the same arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import wait_for

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
    demo_settings,
    logs_to,
    select_chat_model,
    serve_args,
)
from vllmd.settings import Settings
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


def test_logs_go_to_the_file_and_the_console_to_the_terminal(tmp_path: Path) -> None:
    log = tmp_path / "run" / "demo.log"
    with logs_to(log) as console:
        os.write(1, b"from vLLM\n")
        os.write(2, b"from the daemon\n")
        console.write("for the person\n")
        console.flush()
    os.write(1, b"")  # the descriptors are back and usable
    assert log.read_text() == "from vLLM\nfrom the daemon\n"
