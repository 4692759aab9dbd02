"""What the API key guard costs per request on the real vLLM (issue 7): not a test, a measurement.

``python -m bench.guard_cost [--requests 500] [--block 50] [--json FILE]``

Starts three CPU vLLMs with the embedding model side by side: ``plain-1``, ``guard`` (behind
``--middleware vllmd.guard.ApiKeyGuard``, the key read live from a key file as the daemon runs it)
and ``plain-2``. Then it sends small ``POST /tokenize`` requests over one keep-alive connection to
each, in blocks whose order rotates every round (so drift of the machine hits all alike), and
prints the medians. Two plain servers, because two instances of the same server differ by tens of
microseconds on a small machine (where each lands, what else runs): ``plain-2`` against
``plain-1`` is that noise, and the guard's figure is against the mean of the two. All are stopped
at the end, by process group, whatever happens. First, the guard alone is timed in this process
(an ASGI call to a do-nothing app, against calling that app directly): the absolute cost that the
end-to-end difference would show if it rose above the noise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from vllmd import guard
from vllmd.core.exits import describe_exit
from vllmd.core.launch import GUARD_MIDDLEWARE
from vllmd.demo import cpuenv

KEY = "GuardCostKey0123456789"
START_TIMEOUT_S = 300.0


@dataclass
class Server:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    key: str | None

    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(env: cpuenv.CpuEnv, tmp: Path, name: str, guarded: bool) -> Server:
    port = free_port()
    argv = [str(env.vllm), "serve", *env.embed_args, "--no-enable-log-requests"]
    argv += ["--host", "127.0.0.1", "--port", str(port)]
    child_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    child_env.update(env.run_env(tmp / name))
    if guarded:
        # As the daemon does: the guard's single file alone on PYTHONPATH, the key in a file.
        folder = tmp / "pythonpath" / "vllmd"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "__init__.py").write_text("")
        (folder / "guard.py").write_text(Path(guard.__file__).read_text())
        key_file = tmp / "credentials.json"
        key_file.write_text(json.dumps({"apiKey": KEY}, indent=2) + "\n")
        argv += ["--middleware", GUARD_MIDDLEWARE]
        child_env[guard.KEY_FILE_ENV] = str(key_file)
        child_env["PYTHONPATH"] = str(folder.parent)
    log = (tmp / f"{name}.log").open("wb")
    proc = subprocess.Popen(
        argv, stdout=log, stderr=subprocess.STDOUT, env=child_env, start_new_session=True
    )
    return Server(name, port, proc, KEY if guarded else None)


def wait_ready(server: Server, deadline: float) -> None:
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"{server.name} vLLM {describe_exit(server.proc.returncode)}")
        with contextlib.suppress(OSError):
            conn = server.connection()
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                conn.close()
                return
            conn.close()
        time.sleep(0.5)
    raise RuntimeError(f"{server.name} vLLM did not become ready in {START_TIMEOUT_S:.0f} s")


def stop(server: Server) -> None:
    """One SIGTERM to the main process, then SIGKILL to its group; the group must be empty."""
    if server.proc.poll() is None:
        server.proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.proc.wait(30)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.proc.pid, signal.SIGKILL)
    server.proc.wait()


def tokenize(conn: http.client.HTTPConnection, body: bytes, key: str | None) -> tuple[int, int]:
    """One ``POST /tokenize``; returns (status, nanoseconds from send to the whole answer)."""
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    began = time.perf_counter_ns()
    conn.request("POST", "/tokenize", body=body, headers=headers)
    response = conn.getresponse()
    response.read()
    return response.status, time.perf_counter_ns() - began


def measure(
    servers: Sequence[Server], body: bytes, requests: int, block: int
) -> dict[str, list[int]]:
    """Latencies per server, in alternating blocks (the order flips every round)."""
    conns = {s.name: s.connection() for s in servers}
    samples: dict[str, list[int]] = {s.name: [] for s in servers}
    for server in servers:  # warm up: connections, caches, the guard's first key read
        for _ in range(block):
            tokenize(conns[server.name], body, server.key)
    rounds = -(-requests // block)
    for i in range(rounds):
        shift = i % len(servers)
        for server in [*servers[shift:], *servers[:shift]]:
            for _ in range(block):
                status, ns = tokenize(conns[server.name], body, server.key)
                if status != 200:
                    raise RuntimeError(f"{server.name}: /tokenize answered {status}")
                samples[server.name].append(ns)
    for conn in conns.values():
        conn.close()
    return samples


def summary(samples: dict[str, list[int]], block: int) -> dict[str, object]:
    """Medians and spreads per server, and the differences that matter, in microseconds."""

    def stats(values: list[int]) -> dict[str, float]:
        cuts = statistics.quantiles(values, n=10)
        return {
            "median_us": statistics.median(values) / 1000,
            "p10_us": cuts[0] / 1000,
            "p90_us": cuts[-1] / 1000,
            "mean_us": statistics.fmean(values) / 1000,
        }

    def per_round(a: list[int], b: list[int]) -> dict[str, float]:
        """The difference of the two servers' block medians, round by round."""
        diffs = [
            (statistics.median(a[i : i + block]) - statistics.median(b[i : i + block])) / 1000
            for i in range(0, len(a), block)
        ]
        return {"median": statistics.median(diffs), "min": min(diffs), "max": max(diffs)}

    median = {name: statistics.median(values) / 1000 for name, values in samples.items()}
    plain = (median["plain-1"] + median["plain-2"]) / 2
    return {
        "requests_each": len(samples["guard"]),
        "block": block,
        **{name: stats(values) for name, values in samples.items()},
        "guard_minus_plain_mean_us": median["guard"] - plain,
        "guard_minus_plain_mean_percent": 100 * (median["guard"] - plain) / plain,
        "plain_2_minus_plain_1_us": median["plain-2"] - median["plain-1"],
        "per_round": {
            "guard_minus_plain_1_us": per_round(samples["guard"], samples["plain-1"]),
            "guard_minus_plain_2_us": per_round(samples["guard"], samples["plain-2"]),
            "plain_2_minus_plain_1_us": per_round(samples["plain-2"], samples["plain-1"]),
        },
    }


def guard_alone(tmp: Path, calls: int = 100_000) -> dict[str, float]:
    """Microseconds per request that the guard adds in-process (steady state: one ``stat``)."""
    key_file = tmp / "micro-credentials.json"
    key_file.write_text(json.dumps({"apiKey": KEY}) + "\n")
    old = time.time() - 60  # out of the guard's "racily clean" window: the steady state
    os.utime(key_file, (old, old))

    async def app(scope: guard.Scope, receive: guard.Receive, send: guard.Send) -> None:
        return None

    guarded = guard.ApiKeyGuard(app, key_file=key_file)
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/tokenize",
        "headers": [(b"authorization", f"Bearer {KEY}".encode())],
    }

    async def receive() -> guard.Message:
        return {"type": "http.request"}

    async def send(message: guard.Message) -> None:
        return None

    async def timed(call: guard.ASGIApp) -> float:
        began = time.perf_counter_ns()
        for _ in range(calls):
            await call(scope, receive, send)
        return (time.perf_counter_ns() - began) / calls / 1000

    async def both() -> tuple[float, float]:
        await timed(guarded)  # warm up
        return await timed(app), await timed(guarded)

    bare, with_guard = asyncio.run(both())
    return {"bare_us": bare, "guarded_us": with_guard, "guard_us": with_guard - bare}


@contextlib.contextmanager
def servers(env: cpuenv.CpuEnv, tmp: Path) -> Iterator[list[Server]]:
    started: list[Server] = []
    try:
        for name, guarded in (("plain-1", False), ("guard", True), ("plain-2", False)):
            server = start(env, tmp, name, guarded)
            started.append(server)
            began = time.monotonic()
            wait_ready(server, began + START_TIMEOUT_S)
            print(f"{name} vLLM ready in {time.monotonic() - began:.1f} s", flush=True)
        yield started
    finally:
        for server in started:
            stop(server)


def measure_servers(
    env: cpuenv.CpuEnv, tmp: Path, body: bytes, requests: int, block: int
) -> dict[str, object]:
    with servers(env, tmp) as both:
        assert both[1].name == "guard"
        unkeyed = both[1].connection()  # the guard
        status, _ = tokenize(unkeyed, body, None)
        unkeyed.close()
        if status != 401:
            raise RuntimeError(f"the guarded vLLM answered {status} without a key, not 401")
        return summary(measure(both, body, requests, block), block)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500, help="requests per server")
    parser.add_argument("--block", type=int, default=50, help="requests per block")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    env = cpuenv.prepare()
    body = json.dumps({"model": str(env.embed_model), "prompt": "hello world"}).encode()
    with tempfile.TemporaryDirectory(prefix="vllmd-guard-cost-") as tmp:
        alone = guard_alone(Path(tmp))
        print(f"the guard alone, in-process: {alone['guard_us']:.2f} µs per request", flush=True)
        figures = measure_servers(env, Path(tmp), body, args.requests, args.block)
    figures["guard_alone_in_process"] = alone
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
