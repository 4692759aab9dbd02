"""A reconciler in-process for tests: real files, a scripted fake supervisor, an injected clock."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from conftest import write_json_atomic

from vllmd.core.health import Phase
from vllmd.core.launch import Launch
from vllmd.daemon.reconcile import Bell, Reconciler
from vllmd.daemon.status import Status
from vllmd.process.supervisor import Child
from vllmd.settings import Settings

T0 = 1_000.0


class Clock:
    """Monotonic seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeSupervisor:
    """A scripted backend: starts and stops at once, crashes when the test says."""

    def __init__(self, clock: Callable[[], float], on_exit: Callable[[Child], None]) -> None:
        self.clock = clock
        self.on_exit = on_exit
        self.child: Child | None = None
        self.started: list[Child] = []
        self.stopped: list[Child] = []
        self.drained: list[bool] = []  # per stop: whether vLLM was given its drain
        self.spawn_error: str | None = None

    async def start(self, launch: Launch) -> Child:
        assert self.child is None or self.child.done.is_set(), "start() while a child runs"
        child = Child(pid=100 + len(self.started), launch=launch, started_at=self.clock())
        self.child = child
        self.started.append(child)
        if self.spawn_error is not None:
            child.spawn_error = self.spawn_error
            self._end(child, 127)
            self.on_exit(child)
        return child

    async def stop(self, *, drain: bool = True) -> Child | None:
        child = self.child
        if child is None or child.done.is_set():
            return child
        child.stopping = True
        self.stopped.append(child)
        self.drained.append(drain)
        self._end(child, -15)
        return child

    def crash(self, returncode: int = 1, stuck_pids: tuple[int, ...] = ()) -> Child:
        child = self.child
        assert child is not None and child.alive
        child.stuck_pids = stuck_pids
        self._end(child, returncode)
        self.on_exit(child)
        return child

    def _end(self, child: Child, returncode: int) -> None:
        child.returncode = returncode
        child.exited_at = self.clock()
        child.exited.set()
        child.done.set()

    def models(self) -> list[str | None]:
        return [child.launch.model for child in self.started]


class World:
    """One reconciler with its files, its fake supervisor and its clock."""

    def __init__(self, tmp_path: Path, auth: str = "guard", rescan_s: float = 5.0,
                 clock: Callable[[], float] | None = None) -> None:  # fmt: skip
        self.clock = Clock()
        now = clock or self.clock
        self.settings = Settings(
            data=tmp_path / "data",
            public=tmp_path / "public",
            run_dir=tmp_path / "run",
            vllm="vllm",
            host="127.0.0.1",
            port=8000,
            auth=auth,
        )
        self.settings.data.mkdir(parents=True)
        self.status = Status()
        self.bell = Bell(now)
        self.supervisor = FakeSupervisor(now, self.bell.child_exited)
        self.reconciler = Reconciler(self.settings, self.supervisor, self.status, self.bell,
                                     base_env={}, clock=now, rescan_s=rescan_s)  # fmt: skip

    def select(self, model: str | None, *args: str) -> None:
        """Write store.json the way Set Model does and tell the reconciler (a file event)."""
        serve_args = [model, *args] if model else []
        write_json_atomic(self.settings.store_path, {"serveArgs": serve_args})
        self.bell.file_changed()

    async def reconcile(self) -> float | None:
        return await self.reconciler.reconcile()

    def probe(self, *answers: bool) -> None:
        child = self.supervisor.child
        assert child is not None
        for ok in answers:
            self.reconciler.on_probe(child, ok)
            self.clock.advance(2.0)

    @property
    def phase(self) -> Phase:
        return self.status.phase
