"""The end-to-end tier: the real ``vllmd run`` over the real CPU build of vLLM.

The CPU vLLM is prepared once per session, right after collection and outside every test's
timeout (a first install takes minutes): in CI (``CI`` set) a failure to prepare fails every e2e
test loudly; elsewhere they are skipped with the reason. Each test module walks one daemon through
a chain of steps, one test function per promise, in file order; a module-scoped fixture starts the
daemon and kills whatever is left of it and of vLLM at the end, so at most one vLLM runs at a time.
Once a step of a chain fails, the later steps fail at once instead of waiting out their deadlines.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, Daemon, Volumes, free_port, say_uncaptured, wait_for

from vllmd.core.argsplit import join_args
from vllmd.demo import cpuenv

START_TIMEOUT_S = 240.0
"""How long a real vLLM may take to become ready here (31-42 s measured on 2 idle cores)."""
STOP_TIMEOUT_S = "20"
"""The daemon's SIGTERM-to-SIGKILL grace for vLLM (a clean stop takes about half a second)."""

_STARTED = re.compile(r"started vLLM, pid (\d+)")
_PREPARED = pytest.StashKey[cpuenv.CpuEnv | str]()
FIGURES: dict[str, str] = {}
"""Measured figures, printed at the end of the session (start time, memory, rotation time)."""


# --- preparing the CPU vLLM, once, before the first test ------------------------------------------


def pytest_collection_finish(session: pytest.Session) -> None:
    """Prepare the CPU vLLM when e2e tests are selected, before any test's timeout starts."""
    if not any(item.get_closest_marker("e2e") for item in session.items):
        return
    say = say_uncaptured(session)

    started = time.monotonic()
    try:
        prepared: cpuenv.CpuEnv | str = cpuenv.prepare(log=say)
    except cpuenv.PrepareError as exc:
        prepared = f"preparing the CPU vLLM failed: {exc}"
    FIGURES["prepare (cached)"] = f"{time.monotonic() - started:.1f} s"
    session.config.stash[_PREPARED] = prepared


@pytest.fixture(scope="session")
def cpu_env(request: pytest.FixtureRequest) -> cpuenv.CpuEnv:
    """The prepared CPU vLLM; fails loudly in CI when it could not be prepared."""
    prepared = request.config.stash.get(_PREPARED, None)
    if prepared is None:  # collected without the hook (should not happen): prepare now
        try:
            prepared = cpuenv.prepare()
        except cpuenv.PrepareError as exc:
            prepared = f"preparing the CPU vLLM failed: {exc}"
    if isinstance(prepared, str):
        if os.environ.get("CI"):
            pytest.fail(f"{prepared}\nThe e2e tier never skips in CI.", pytrace=False)
        pytest.skip(f"{prepared}\n(run `python tests/e2e/prepare.py` to see it happen)")
    return prepared


# --- chains of steps --------------------------------------------------------------------------


def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> None:
    if call.excinfo is not None and call.when in ("setup", "call") and _in_chain(item):
        item.parent.stash[_BROKEN] = item.name  # type: ignore[union-attr]


def pytest_runtest_setup(item: pytest.Item) -> None:
    if _in_chain(item):
        broken = item.parent.stash.get(_BROKEN, None)  # type: ignore[union-attr]
        if broken is not None:
            pytest.fail(f"an earlier step of this chain failed: {broken}", pytrace=False)


_BROKEN = pytest.StashKey[str]()


def _in_chain(item: pytest.Item) -> bool:
    module = getattr(item, "module", None)
    return bool(getattr(module, "CHAIN", False)) and item.parent is not None


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if len(FIGURES) > 1:
        terminalreporter.section("e2e figures")
        for name, value in FIGURES.items():
            terminalreporter.write_line(f"{name}: {value}")


# --- the real daemon --------------------------------------------------------------------------


@dataclass
class Real:
    """One ``vllmd run`` over the real vLLM, with what the tests need to look at it."""

    daemon: Daemon
    env: cpuenv.CpuEnv
    seen: set[int] = field(default_factory=set)
    """Every vLLM main pid the daemon started (each is its own session and process group)."""
    keys: set[str] = field(default_factory=set)
    """Every API key the tests read: none may appear whole in the daemon's output."""
    started: float = field(default_factory=time.time)
    """When the daemon was started (wall clock, like health's ``since``)."""

    @property
    def volumes(self) -> Volumes:
        return self.daemon.volumes

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.daemon.port}{path}"

    def starts(self) -> list[int]:
        """The pids of the vLLMs started so far, from the daemon's log, in order."""
        pids = [int(m) for m in _STARTED.findall(self.daemon.stderr())]
        self.seen.update(pids)
        return pids

    def vllm_pid(self) -> int:
        """The pid of the vLLM started last."""
        pids = self.starts()
        assert pids, "the daemon has not started vLLM"
        return pids[-1]

    def health(self) -> dict[str, Any]:
        return self.volumes.health_json() or {}

    def wait_ready(self, since: float, timeout: float = START_TIMEOUT_S) -> dict[str, Any]:
        """Wait for a ``success`` health that began at or after the wall-clock time ``since``."""

        def ready() -> dict[str, Any] | None:
            health = self.health()
            if health.get("result") == "success" and health.get("since", 0) >= since - 0.01:
                return health
            if self.daemon.proc.poll() is not None:
                raise AssertionError(f"vllmd exited:\n{self.daemon.stderr()[-3000:]}")
            return None

        try:
            return wait_for(ready, timeout, "vLLM to become ready", interval=0.1)
        except AssertionError as exc:
            raise AssertionError(
                f"{exc}; health: {self.health()}\nlog tail:\n{self.daemon.stderr()[-3000:]}"
            ) from None

    def key(self) -> str:
        key = self.volumes.key()
        self.keys.add(key)
        return key

    def leaked_keys(self) -> list[str]:
        """The keys read so far that appear whole in the daemon's log or vLLM's output."""
        output = self.daemon.output()
        return [key for key in self.keys if key in output]


def start_real(
    env: cpuenv.CpuEnv,
    root: Path,
    *flags: str,
    store: dict[str, Any] | None = None,
    environ: Mapping[str, str | None] | None = None,
) -> Real:
    """Start ``vllmd run`` over the CPU vLLM on volumes under ``root``; return once it is up.

    ``environ`` changes the daemon's environment last (``None`` removes a variable: a daemon
    that fetches from the test hub must not inherit ``HF_HUB_OFFLINE``)."""
    volumes = Volumes(root)
    if store is not None:
        rest = dict(store)
        volumes.set_args(*rest.pop("serveArgs"), **rest)
    port = free_port()
    command = [
        sys.executable, "-m", "vllmd", "run",
        "--data", str(volumes.data), "--public", str(volumes.public),
        "--run-dir", str(volumes.run), "--vllm", str(env.vllm),
        "--host", "127.0.0.1", "--port", str(port), "--no-ldconfig",
        "--stop-timeout", STOP_TIMEOUT_S, *flags,
    ]  # fmt: skip
    # No PYTHONPATH: vllmd is found from the working folder (the repository) by the daemon only,
    # so nothing of this environment leaks into vLLM's Python.
    base = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    full_env = {**base, **cpuenv.run_env(root / "scratch")}
    for name, value in (environ or {}).items():
        if value is None:
            full_env.pop(name, None)
        else:
            full_env[name] = value
    out_path, err_path = root / "daemon.out", root / "daemon.err"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        proc = subprocess.Popen(command, stdout=out, stderr=err, env=full_env, cwd=ROOT)
    daemon = Daemon(volumes, port, proc, out_path, err_path)
    real = Real(daemon, env)
    try:
        daemon.wait_log("vllmd is up", timeout=30)
    except AssertionError:
        stop_real(real)
        raise
    return real


def stop_real(real: Real) -> None:
    """SIGTERM the daemon (then SIGKILL), and kill whatever any vLLM it started left behind."""
    proc = real.daemon.proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    real.starts()
    for pid in tree_of(real.seen):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def real_factory(
    cpu_env: cpuenv.CpuEnv, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., Real]]:
    """Starts real daemons for one module; stops them all when the module is done."""
    started: list[Real] = []

    def start(
        *flags: str,
        store: dict[str, Any] | None = None,
        environ: Mapping[str, str | None] | None = None,
    ) -> Real:
        root = tmp_path_factory.mktemp("vllmd")
        real = start_real(cpu_env, root, *flags, store=store, environ=environ)
        started.append(real)
        return real

    yield start
    for real in started:
        stop_real(real)


# --- processes --------------------------------------------------------------------------------


def _stat(pid: str) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` after the command name (state first), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2 :].split()


def tree_of(sessions: set[int]) -> list[int]:
    """Live processes whose process group or session is one of ``sessions``, from /proc.

    vLLM runs in its own session whose id is its main pid, so this finds the engine, its workers
    and the resource tracker without looking at names (``VLLM::EngineCor`` is truncated).
    """
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat(entry.name)
        if fields is None or fields[0] in "ZX":
            continue
        if int(fields[2]) in sessions or int(fields[3]) in sessions:
            found.append(int(entry.name))
    return found


def pss_bytes(pids: list[int]) -> int:
    """The proportional set size of ``pids`` together (shared pages counted once)."""
    total = 0
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        match = re.search(r"^Pss:\s+(\d+) kB", text, re.MULTILINE)
        total += int(match.group(1)) * 1024 if match else 0
    return total


# --- HTTP -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def http(
    url: str, *, key: str | None = None, body: Any = None, method: str | None = None
) -> Answer:
    """One request; the status and body whatever the status (urllib raises on 4xx)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method or ("POST" if data else "GET"))
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if key is not None:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return Answer(response.status, response.read())
    except urllib.error.HTTPError as exc:
        return Answer(exc.code, exc.read())


def ask_capital(real: Real, key: str | None) -> Answer:
    """Ask the chat model for the capital of France, greedily."""
    return http(
        real.url("/v1/chat/completions"),
        key=key,
        body={
            "model": str(real.env.chat_model),
            "messages": [{"role": "user", "content": "What is the capital of France?"}],
            "temperature": 0,
            "max_tokens": 24,
        },
    )


def embed(real: Real, key: str | None, text: str = "vllmd supervises vLLM") -> Answer:
    return http(
        real.url("/v1/embeddings"),
        key=key,
        body={"model": str(real.env.embed_model), "input": text},
    )


def set_model_custom(real: Real, args: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
    """Run ``vllmd action set-model --custom ARGS`` on the daemon's volumes, as StartOS would."""
    volumes = real.volumes
    done = subprocess.run(
        [sys.executable, "-m", "vllmd", "action", "set-model", "--data", str(volumes.data),
         "--public", str(volumes.public), "--run-dir", str(volumes.run),
         "--custom", join_args(args)],
        capture_output=True, text=True, cwd=ROOT, timeout=60, check=False,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done


# --- a user's program: the official openai client --------------------------------------------


def client(real: Real, key: str) -> Any:
    """An ``openai.OpenAI`` client on the daemon's vLLM, as a user's program would make one.

    No retries: a refused or failed request must show, not be retried into success.
    """
    import openai

    return openai.OpenAI(api_key=key, base_url=real.url("/v1"), max_retries=0, timeout=120)


@dataclass
class Streamed:
    """What a streaming chat request delivered, chunk by chunk."""

    text: str = ""
    chunks: int = 0
    finish_reason: str | None = None
    completion_tokens: int | None = None
    after_mark: int = 0
    """Chunks that arrived after ``mark`` first held (the stop was already under way)."""


def stream_chat(
    real: Real,
    key: str,
    max_tokens: int,
    *,
    model: str | None = None,
    on_first: Callable[[], None] | None = None,
    mark: Callable[[], bool] | None = None,
) -> Streamed:
    """Stream a chat answer of exactly ``max_tokens`` tokens (``ignore_eos``) and collect it.

    ``on_first`` runs once the first token is in (to stop vLLM with the request in flight);
    ``mark`` is asked after every chunk, and the chunks after it first answers true are counted.
    """
    stream = client(real, key).chat.completions.create(
        model=model or str(real.env.chat_model),
        messages=[{"role": "user", "content": "Count from one to one thousand in words."}],
        temperature=0,
        max_tokens=max_tokens,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    )
    got = Streamed()
    marked = False
    for chunk in stream:
        if chunk.usage is not None:
            got.completion_tokens = chunk.usage.completion_tokens
        for choice in chunk.choices:
            got.text += choice.delta.content or ""
            got.finish_reason = choice.finish_reason or got.finish_reason
        got.chunks += 1
        if marked:
            got.after_mark += 1
        elif mark is not None and mark():
            marked = True
        if got.chunks == 1 and on_first is not None:
            on_first()
    return got
