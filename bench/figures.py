"""The vllmd figures: the real ``vllmd run`` as a subprocess, the stand-in as vLLM.

Latencies are taken between two points on CLOCK_MONOTONIC, which every process on the machine
shares: the benchmark's own (just before a rename, a delete, an exec or a signal; or when an
inotify wake-up shows the result on disk) and the stand-in's records (start, listening, exit).
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.files import BenchError, seq_of, valid_key
from bench.procs import Daemon, Fleet, ms, usage, wait_exit
from vllmd.core.decide import COOLDOWN_S as DAEMON_COOLDOWN_S
from vllmd.core.exits import describe_exit
from vllmd.process.proc import group_members
from vllmd.process.proc import is_alive as pid_alive

COOLDOWN_S = DAEMON_COOLDOWN_S + 0.1
"""Space between a start and the next write: vllmd acts on a change at once only when it has not
started vLLM within its cool-down (after that it waits for the files to be quiet, ~50 ms, so a
burst coalesces; CONTRACT §2.3). Reconfigure latency measures the "at once" path."""
GAP_S = 0.15
"""Between two daemons' samples, so that one's restart does not overlap the next one's write."""


def cold_start_and_stop(fleet: Fleet, n: int) -> dict[str, list[float]]:
    """Fresh volumes each time: exec → key on disk, → stand-in started; then SIGTERM → exited."""
    out: dict[str, list[float]] = {
        "key": [],
        "spawn": [],
        "stop": [],
        "relay": [],
        "beyond": [],
        "empty": [],
    }
    for i in range(n):
        v = fleet.volumes(f"cold-{i}")
        v.set_model(0)
        daemon = fleet.daemon(v)

        def key_seen(path: Path = v.credentials) -> float | None:
            return time.monotonic() if valid_key(path) else None

        t_key = v.wait(key_seen, "a key")
        start = v.wait_start(0, timeout_s=15)
        out["key"].append(ms(t_key - daemon.t0))
        out["spawn"].append(ms(start["t_mono"] - daemon.t0))
        v.wait_health("success")
        time.sleep(0.1)
        t0 = time.monotonic()
        daemon.proc.send_signal(signal.SIGTERM)
        t1 = wait_exit(daemon.pid, 15.0)
        if t1 is None:
            raise BenchError(f"vllmd did not exit within 15 s of SIGTERM: see {daemon.log}")
        empty = not group_members(start["pgid"])  # vllmd promises this before it exits
        daemon.proc.wait(5)
        exit_record = v.wait_event(start["pid"], "exit", timeout_s=1)
        term_record = v.wait_event(start["pid"], "sigterm", timeout_s=1)
        out["stop"].append(ms(t1 - t0))
        out["relay"].append(ms(term_record["t_mono"] - t0))  # until vLLM has its SIGTERM
        out["beyond"].append(ms(t1 - exit_record["t_mono"]))
        out["empty"].append(1.0 if empty else 0.0)
    return out


def key_regeneration(fleet: Fleet, n: int) -> list[float]:
    """No model; ``credentials.json`` deleted → a valid new key is on disk (inotify wake-up)."""
    v = fleet.volumes("key")
    daemon = fleet.daemon(v)
    daemon.wait_up()
    v.wait_health("failure")
    out = []
    for _ in range(n):
        time.sleep(0.3)  # the daemon's reaction to its own write of the key is over
        old = valid_key(v.credentials)
        v.watch.read_within(0)  # drain
        t0 = time.monotonic()
        os.unlink(v.credentials)

        def renewed(old: str | None = old) -> float | None:
            key = valid_key(v.credentials)
            return time.monotonic() if key and key != old else None

        out.append(ms(v.wait(renewed, "a new key") - t0))
    return out


def first_key_regeneration(fleet: Fleet, n: int) -> list[float]:
    """Fresh volumes, no model: the key the daemon wrote at start is deleted as soon as it is on
    disk → a valid new key is on disk; ms. The daemon may still be importing and arming its
    watcher then: this is the contract's "within 100 ms" at its hardest."""
    out = []
    for i in range(n):
        v = fleet.volumes(f"first-key-{i}")
        daemon = fleet.daemon(v)
        first = v.wait(lambda path=v.credentials: valid_key(path), "the first key")
        t0 = time.monotonic()
        os.unlink(v.credentials)

        def renewed(old: str = first, path: Path = v.credentials) -> float | None:
            key = valid_key(path)
            return time.monotonic() if key and key != old else None

        out.append(ms(v.wait(renewed, "a new key") - t0))
        fleet.stop(daemon.proc)
    return out


def readiness(fleet: Fleet, n: int, listen_delay_s: float) -> dict[str, list[float]]:
    """The stand-in's ``listening`` record → ``health.json`` says success (inotify wake-up).

    The stand-in listens after ``listen_delay_s`` plus a random part of as much again: a fixed
    delay would keep the same phase against vllmd's periodic probe in every sample (0.5 s
    against a 0.25 s probe measured ~240 ms each time, the worst phase), where a real load
    time falls anywhere in the probe's period.
    """
    v = fleet.volumes("ready")
    jitter = random.Random(5)

    def delay() -> tuple[str, str]:
        return ("--fake-listen-delay", f"{listen_delay_s * (1 + jitter.random()):.3f}")

    v.set_model(0, *delay())
    daemon = fleet.daemon(v)
    start = v.wait_start(0, timeout_s=15)
    v.wait_health("success", after_wall=start["t_wall"])
    out: dict[str, list[float]] = {"ready": []}
    for seq in range(1, n + 1):
        v.set_model(seq, *delay())
        start = v.wait_start(seq)
        listening = v.wait_event(start["pid"], "listening")
        seen = v.wait_health("success", after_wall=start["t_wall"])
        out["ready"].append(ms(seen - listening["t_mono"]))
    _alive(daemon)
    return out


def burst(fleet: Fleet, trials: int, writes: int, window_s: float, settle_s: float) -> list[Any]:
    """``writes`` atomic writes spread over ``window_s`` → how many starts; does the last run?"""
    v = fleet.volumes("burst")
    v.set_model(0)
    daemon = fleet.daemon(v)
    v.wait_start(0, timeout_s=15)
    seq = 0
    results = []
    for _ in range(trials):
        _after_cooldown(v)
        t_begin = time.monotonic()
        for j in range(writes):
            time.sleep(max(0.0, t_begin + j * window_s / writes - time.monotonic()))
            seq += 1
            v.set_model(seq)
        t_last = time.monotonic()

        def settled(t_last: float = t_last) -> bool:
            newest = max([float(s["t_mono"]) for s in v.records.starts()] + [t_last])
            return time.monotonic() - newest >= settle_s

        v.wait(settled, "the burst to settle", timeout_s=settle_s + 10)
        starts = [s for s in v.records.starts() if s["t_mono"] >= t_begin]
        last = starts[-1] if starts else None
        results.append(
            {
                "starts": len(starts),
                "seqs": [seq_of(s) for s in starts],
                "last_written": seq,
                "last_runs": bool(last and seq_of(last) == seq and pid_alive(last["pid"])),
            }
        )
    _alive(daemon)
    return results


def reconfigure(
    fleet: Fleet,
    steps: Sequence[int],
    n: int,
    *,
    polling: bool = False,
    between: Callable[[], None] | None = None,
) -> dict[int, Any]:
    """Per step: rename of ``store.json`` → the new stand-in's start, with its breakdown; ms.

    One daemon per step, sampled in turn (each waits out its own cool-down, so one round costs
    about a second for all steps together); ``between`` runs once a round (a floor sample).
    Returns the daemons too, left running for the idle window.
    """
    runs: dict[int, Any] = {}
    for step in steps:
        v = fleet.volumes(f"reconfigure-{'polling' if polling else 'inotify'}-{step}")
        v.set_model(0)
        runs[step] = {"volumes": v, "daemon": fleet.daemon(v, step_ms=step, polling=polling)}
    for run in runs.values():
        run["prev"] = run["volumes"].wait_start(0, timeout_s=15)
        run.update(total=[], notice=[], stop=[], spawn=[])
    for seq in range(1, n + 1):
        for run in runs.values():
            v, prev = run["volumes"], run["prev"]
            _after_cooldown(v)
            t0 = v.set_model(seq)
            start = v.wait_start(seq)
            term = v.wait_event(prev["pid"], "sigterm", timeout_s=1)
            gone = v.wait_event(prev["pid"], "exit", timeout_s=1)
            run["total"].append(ms(start["t_mono"] - t0))
            run["notice"].append(ms(term["t_mono"] - t0))  # rename → SIGTERM to the old one
            run["stop"].append(ms(gone["t_mono"] - term["t_mono"]))
            run["spawn"].append(ms(start["t_mono"] - gone["t_mono"]))  # old gone → new started
            run["prev"] = start
            time.sleep(GAP_S)
        if between is not None:
            between()
    for run in runs.values():
        _alive(run["daemon"])
    return runs


def _after_cooldown(v: Any) -> None:
    last = max(s["t_mono"] for s in v.records.starts())
    time.sleep(max(0.0, last + COOLDOWN_S - time.monotonic()))


def _alive(daemon: Daemon) -> None:
    if daemon.proc.poll() is not None:
        raise BenchError(f"vllmd {describe_exit(daemon.proc.returncode)}: see {daemon.log}")


def idle(pids: dict[str, int], window_s: float) -> dict[str, dict[str, float]]:
    """CPU, RSS and wake-ups of each process over the same ``window_s`` of doing nothing."""
    before = {name: usage(pid) for name, pid in pids.items()}
    t0 = time.monotonic()
    time.sleep(window_s)
    elapsed = time.monotonic() - t0
    out = {}
    for name, pid in pids.items():
        after, first = usage(pid), before[name]
        out[name] = {
            "cpu_s_per_min": round((after["cpu_s"] - first["cpu_s"]) * 60 / elapsed, 4),
            "rss_mb": round(after["rss_mb"], 2),
            "wakeups_per_s": round((after["voluntary"] - first["voluntary"]) / elapsed, 2),
            "preempted_per_s": round((after["involuntary"] - first["involuntary"]) / elapsed, 2),
            "threads": after["threads"],
            "window_s": round(elapsed, 2),
        }
    return out
