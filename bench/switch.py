"""``python -m bench --real``: a change of model while the old one serves (issue 19).

The test hub (``tests/hub.py``) serves the prepared CPU models from 127.0.0.1 as :data:`OLD`
(MiniLM, 92 MB) and :data:`NEW` (SmolLM2, 542 MB). A client asks ``/v1/models`` every
:data:`POLL_S` and notes which model answered. Figures, in rounds on one daemon:

- **switch, not cached**: the daemon serves the old model; the new one's files are removed and
  the hub throttled so that its download takes about :data:`DOWNLOAD_S`; Set Model → the API's
  outage (the last answer from the old model → the first from the new), when the fetch was
  complete and how long after it the old model stopped answering, and the daemon's RSS while it
  ran (the fetch is a child process: the daemon's own memory should not move).
- **switch, cached**: back to the old model, to the new one again (now cached), and back: the
  outage of the load alone. Target: the median outage not cached ≤ the median cached one to
  the same model + :data:`OUTAGE_PLUS_S`, whatever the download takes. A first switch (round
  0), before the rounds, warms vLLM's own caches and is shown apart.
- **fetch throughput**: ``python -m vllmd.fetch`` of the new model into an empty cache against a
  plain ``huggingface_hub.snapshot_download`` of the same files (as vLLM downloads), from the same
  unthrottled hub, in alternating rounds: bytes over exec → exit. Target: ≥ :data:`FETCH_X`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from bench.files import BenchError, valid_key, wait_until, write_json_atomic
from bench.procs import usage
from bench.real import LOAD_S, Real
from tests.hub import Hub
from vllmd.core.fetchplan import Target, select_files
from vllmd.state.fetched import is_complete, record_path

OLD, NEW = "bench/minilm", "bench/smollm2"
DOWNLOAD_S = 60.0
POLL_S = 0.02
OUTAGE_PLUS_S = 2.0
FETCH_X = 0.9
FETCH_ROUNDS = 4
RSS_EVERY_S = 0.25
PLAIN_DOWNLOAD = (
    "import sys\n"
    "from huggingface_hub import snapshot_download\n"
    "snapshot_download(sys.argv[1], allow_patterns=sys.argv[2:])\n"
)
"""A plain download of the plan's files, as vLLM itself downloads weights."""


def publish(real: Real, root: Path) -> dict[str, tuple[str, ...]]:
    """Lay the two prepared models out as hub repositories under ``root`` (hard links where the
    file system allows); return the files vLLM reads of each (its fetch plan)."""
    plans = {}
    for repo, folder in ((OLD, real.env.embed_model), (NEW, real.env.chat_model)):
        paths = []
        for source in sorted(p for p in folder.rglob("*") if p.is_file()):
            path = source.relative_to(folder).as_posix()
            target = root / repo / path
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(source, target)
            except OSError:
                shutil.copyfile(source, target)
            paths.append(path)
        plans[repo] = select_files("model", paths)
    return plans


def served_model(port: int, key: str) -> str | None:
    """The model ``/v1/models`` names, or None when the API does not answer with one."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/models", headers={"Authorization": f"Bearer {key}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=2) as answer:
            models = json.loads(answer.read())["data"]
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return None
    return str(models[0]["id"]) if models else None


@dataclass
class Client:
    """Asks ``/v1/models`` every :data:`POLL_S` in a thread while in a ``with`` block; keeps
    (when, which model answered)."""

    port: int
    key: str
    answers: list[tuple[float, str | None]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _run(self) -> None:
        while not self._stop.is_set():
            t = time.monotonic()
            self.answers.append((t, served_model(self.port, self.key)))
            self._stop.wait(max(0.0, t + POLL_S - time.monotonic()))

    def __enter__(self) -> Client:
        self._thread = threading.Thread(target=self._run, name="bench-client", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def first(self, model: str, since: float) -> float | None:
        """When ``model`` first answered at or after ``since``."""
        return next((t for t, m in list(self.answers) if m == model and t >= since), None)

    def wait_for(self, model: str, since: float, timeout_s: float) -> float:
        return wait_until(lambda: self.first(model, since), timeout_s, f"{model} to answer")

    def gap(self, old: str, new: str, since: float) -> tuple[float, float]:
        """The last answer of ``old`` and the first of ``new``, after ``since``: the outage."""
        first_new = self.first(new, since)
        if first_new is None:
            raise BenchError(f"{new} never answered")
        last_old = max(
            (t for t, m in list(self.answers) if m == old and since <= t < first_new), default=None
        )
        if last_old is None:
            raise BenchError(f"{old} did not answer once after the switch began")
        return last_old, first_new


def _serve_args(real: Real, repo: str) -> list[str]:
    """The prepared model's ``vllm serve`` arguments with the hub id in place of its folder."""
    args = real.env.embed_args if repo == OLD else real.env.chat_args
    return [repo, *args[1:]]


SWITCH_KEYS = (
    "uncached_outage_s",
    "uncached_total_s",
    "download_s",
    "old_stopped_after_fetch_s",
    "rss_before_mb",
    "rss_fetching_max_mb",
    "cached_outage_to_new_s",
    "cached_outage_to_old_s",
    "first_outage_s",
)


def switch(real: Real, hub: Hub, sizes: Mapping[str, int], rounds: int) -> dict[str, list[float]]:
    """Rounds of: the switch to :data:`NEW` not cached (its files removed first), back to
    :data:`OLD` and to :data:`NEW` again cached, back to :data:`OLD`; on one daemon. Seconds, MB."""
    v = real.fleet.volumes("switch")
    write_json_atomic(v.store, {"serveArgs": _serve_args(real, OLD)})
    proc, port, _ = real.daemon(v, hub=hub.env())
    real.log(f"real: switch: serving {OLD} (fetched from the hub)")
    v.wait_health("success", timeout_s=LOAD_S)
    real.vllm_pid(v)
    key = valid_key(v.credentials)
    if key is None:
        raise BenchError("no API key after the daemon's start")
    out: dict[str, list[float]] = {k: [] for k in SWITCH_KEYS}
    models = v.data / "models"

    def to(old: str, new: str) -> float:
        t_set = write_json_atomic(v.store, {"serveArgs": _serve_args(real, new)})
        client.wait_for(new, t_set, LOAD_S)
        real.vllm_pid(v)
        last_old, first_new = client.gap(old, new, t_set)
        return round(first_new - last_old, 3)

    with Client(port, key) as client:
        client.wait_for(OLD, 0.0, 60)
        for i in range(rounds + 1):  # round 0 warms vLLM's own caches up (see below)
            _forget(models, NEW)
            hub.rate_bps = sizes[NEW] / DOWNLOAD_S
            real.log(f"real: {i}: to {NEW}, not cached, at {hub.rate_bps / 1e6:.1f} MB/s")
            rss_before = usage(proc.pid).rss_mb
            t_set = write_json_atomic(v.store, {"serveArgs": _serve_args(real, NEW)})
            fetched, rss = _follow(models, proc.pid, client, t_set)
            client.wait_for(NEW, t_set, LOAD_S)
            hub.rate_bps = None
            real.vllm_pid(v)
            last_old, first_new = client.gap(OLD, NEW, t_set)
            if i == 0:
                # vLLM inspects a model architecture it has not seen in a subprocess once
                # (about 14 s here) and keeps the answer in its cache folder: the first load of
                # the new model pays it whether its files were cached or not, so the first
                # switch is shown apart and the rounds compare loads on the same footing.
                out["first_outage_s"] = [round(first_new - last_old, 3)]
                out["cached_outage_to_old_s"].append(to(NEW, OLD))
                continue
            out["uncached_outage_s"].append(round(first_new - last_old, 3))
            out["uncached_total_s"].append(round(first_new - t_set, 3))
            if fetched is not None:
                out["download_s"].append(round(fetched - t_set, 3))
                out["old_stopped_after_fetch_s"].append(round(last_old - fetched, 3))
            out["rss_before_mb"].append(round(rss_before, 2))
            out["rss_fetching_max_mb"].append(round(max(rss, default=rss_before), 2))
            real.log(f"real: {i}: to {OLD} and {NEW}, cached, and back")
            out["cached_outage_to_old_s"].append(to(NEW, OLD))
            out["cached_outage_to_new_s"].append(to(OLD, NEW))
            out["cached_outage_to_old_s"].append(to(NEW, OLD))
    real.fleet.stop(proc, timeout_s=120)
    return out


def _forget(models: Path, repo: str) -> None:
    """Remove ``repo``'s files and fetch record from the cache, as Delete Model Cache does."""
    shutil.rmtree(models / f"models--{repo.replace('/', '--')}", ignore_errors=True)
    record_path(models, Target(repo, None, "model")).unlink(missing_ok=True)


def _follow(
    models: Path, pid: int, client: Client, since: float
) -> tuple[float | None, list[float]]:
    """Until :data:`NEW` answers after ``since``: when its fetch was complete; the daemon's RSS
    meanwhile."""
    fetched: float | None = None
    rss: list[float] = []
    target = Target(NEW, None, "model")
    deadline = time.monotonic() + DOWNLOAD_S * 5 + LOAD_S
    while client.first(NEW, since) is None:
        if time.monotonic() > deadline:
            raise BenchError(f"the switch to {NEW} did not happen within {deadline:.0f} s")
        if fetched is None:
            rss.append(usage(pid).rss_mb)
            if is_complete(models, [target]):
                fetched = time.monotonic()
        time.sleep(RSS_EVERY_S)
    return fetched, rss


def throughput(hub: Hub, plan: tuple[str, ...], bytes_: int, workdir: Path) -> dict[str, Any]:
    """vllmd's fetch worker and a plain download of the same files, each into an empty cache, in
    alternating order; MB/s (10^6 B) from exec to exit, and the worker's exec → its plan line."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    }
    env.update(hub.env())
    commands = {
        "vllmd": [sys.executable, "-m", "vllmd.fetch", "--models", "{cache}", f"model:{NEW}"],
        "plain": [sys.executable, "-c", PLAIN_DOWNLOAD, NEW, *plan],
    }
    out: dict[str, Any] = {"bytes": bytes_, "vllmd": [], "plain": [], "vllmd_plan_s": []}
    for i in range(FETCH_ROUNDS):
        for who in ("vllmd", "plain") if i % 2 == 0 else ("plain", "vllmd"):
            cache = workdir / f"fetch-{who}-{i}"
            argv = [a.replace("{cache}", str(cache)) for a in commands[who]]
            with (workdir / f"fetch-{who}-{i}.stderr").open("w+b") as stderr:
                t0 = time.monotonic()
                proc = subprocess.Popen(
                    argv,
                    env={**env, "HF_HUB_CACHE": str(cache)},
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=stderr,
                )
                assert proc.stdout is not None
                for line in proc.stdout:  # the worker's event lines; the plan comes first
                    if b'"plan"' in line and who == "vllmd":
                        out["vllmd_plan_s"].append(round(time.monotonic() - t0, 3))
                proc.stdout.close()
                returncode = proc.wait(timeout=600)
                took = time.monotonic() - t0
                if returncode != 0:
                    stderr.seek(0)
                    said = stderr.read().decode(errors="replace")[-800:]
                    raise BenchError(f"the {who} download exited {returncode}: {said}")
            out[who].append(round(bytes_ / took / 1e6, 2))
            shutil.rmtree(cache, ignore_errors=True)
    return out


def run_switch(real: Real, rounds: int) -> dict[str, Any]:
    """Every issue-19 figure against one in-process hub serving the prepared models."""
    root = real.fleet.workdir / "hub"
    plans = publish(real, root)
    sizes = {
        repo: sum((root / repo / p).stat().st_size for p in plan) for repo, plan in plans.items()
    }
    hub = Hub(root)
    hub.start()
    try:
        raw: dict[str, Any] = {"sizes": {"old": sizes[OLD], "new": sizes[NEW]}}
        raw["switch"] = switch(real, hub, sizes, rounds)
        real.log("real: fetch throughput, vllmd against a plain huggingface_hub download")
        raw["throughput"] = throughput(hub, plans[NEW], sizes[NEW], real.fleet.workdir)
    finally:
        hub.stop()
    return raw
