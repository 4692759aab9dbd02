"""The StartOS package (the repository root, TypeScript in ``startos/``) held against vllmd itself.

The layer's node tests of its forms run against what vllmd prints (``--form``) on recorded
machines and on stated ones, and the numbers and words the layer copies from vllmd (its stop
timing, the task's reason, the variable-name rule, the action and health ids) are checked
against vllmd's own. The module first runs ``scripts/check.sh`` (npm ci from the lockfile, tsc,
the SDK's lint, prettier, the bundle, the node tests), then a dependent shaped like Open WebUI's
compiling against the packed package (``scripts/consumer.sh``) and ``make -n`` of every pack
target. Without node (or make) the tests skip, saying why, except in CI (``CI`` set), where they
fail.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from actions_support import (
    ROOT,
    Vols,
    check_cache_form,
    check_set_model_form,
    load_machine,
    machine_root,
    nvml_loader,
    run_vllmd,
)
from test_key_adoption import KEY, RELEASES, Release

from vllmd.actions.set_model_form import Current, form_document
from vllmd.core.fetchstate import FetchError, FetchState
from vllmd.core.health import SET_MODEL_TASK, Fetching, Phase, Snapshot, evaluate
from vllmd.core.schema import ENV_NAME_PATTERN
from vllmd.hardware.tiers import detect
from vllmd.process.supervisor import KILL_WAIT_S
from vllmd.settings import Settings
from vllmd.state.catalog import load_catalog

SCRIPTS = ROOT / "scripts"
# The Makefile's leaf targets and the s9pk each packs (Start9's split: one runner per target).
PACK_TARGETS = {
    "nvidia-x86": ("x86_64", "vllm_nvidia_x86_64.s9pk"),
    "nvidia-arm": ("aarch64", "vllm_nvidia_aarch64.s9pk"),
    "rocm-x86": ("x86_64", "vllm_rocm_x86_64.s9pk"),
    "cpu-x86": ("x86_64", "vllm_cpu_x86_64.s9pk"),
}

# The first test carries the package check (npm ci, tsc, lint, bundle, node tests): minutes on a
# cold machine, where pytest's default is 60 s a test.
pytestmark = [pytest.mark.startos, pytest.mark.timeout(900)]
H200 = ("--tier", "nvidia-hopper", "--memory-gb", "141")
RECORDED = ("h200-141gb", "nvml-missing", "mi300x-x2", "h100-80gb-x8")


def _missing(*tools: str) -> str | None:
    absent = [tool for tool in ("node", "npm", *tools) if shutil.which(tool) is None]
    return f"{' and '.join(absent)} not installed" if absent else None


def _need(*tools: str) -> None:
    """Skip without ``tools`` (node and npm always), saying why; fail instead in CI."""
    missing = _missing(*tools)
    if missing is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI: {missing}")
        pytest.skip(missing)


def _run_script(name: str) -> None:
    done = subprocess.run(
        [str(SCRIPTS / name)], capture_output=True, text=True, timeout=900, cwd=ROOT
    )
    if done.returncode != 0:
        pytest.fail(f"scripts/{name} failed:\n{done.stdout[-6000:]}\n{done.stderr[-6000:]}")


@pytest.fixture(scope="module")
def checked() -> None:
    """Every check of the package: ``scripts/check.sh``, once for this module.

    It installs from the lockfile, type-checks and lints against the real start-sdk, bundles, and
    runs the layer's node tests (each variant's manifest, health, calls, structure, the update
    from Start9's releases), so the README's one test command covers the package too. Skips
    without node, fails in CI.
    """
    _need()
    _run_script("check.sh")


def test_the_package_type_checks_lints_bundles_and_its_manifests_hold(checked: None) -> None:
    """``tsc``, the SDK's lint, prettier, the ncc bundle and the node tests all passed."""
    assert (ROOT / "javascript" / "index.js").is_file()


def test_a_dependent_like_open_webui_compiles_and_bundles_against_the_packed_package(
    checked: None,
) -> None:
    """Given a consumer on TypeScript 6 importing ``vllm-startos/startos/utils``, when it installs
    this repository packed as npm packs a git dependency, compiles (all of our ``startos/`` under
    its TypeScript) and bundles, then the bundle yields ``api-multi`` and 8000 (the script checks
    both, and that the tarball holds the TypeScript but not the Python tree or the tests)."""
    _run_script("consumer.sh")


@pytest.mark.parametrize("target", sorted(PACK_TARGETS))
def test_every_pack_target_reaches_start_cli_with_its_inputs_present(
    checked: None, target: str
) -> None:
    """``make -n TARGET`` gets to ``start-cli s9pk pack`` for the target's own s9pk and
    architecture: every input the Makefile names (icon, LICENSE, instructions, assets, the
    Containerfiles, the bundle) exists, or make would stop with "No rule to make target"."""
    _need("make")
    done = subprocess.run(
        ["make", "-n", target], capture_output=True, text=True, timeout=120, cwd=ROOT
    )

    assert done.returncode == 0, done.stderr[-3000:]
    arch, artifact = PACK_TARGETS[target]
    assert f"start-cli s9pk pack --arch={arch} -o {artifact}" in done.stdout, done.stdout[-3000:]
    for name in ("icon.svg", "LICENSE", "instructions.md", "assets"):
        assert (ROOT / name).exists(), name
    assert "## Documentation" in (ROOT / "instructions.md").read_text()


@pytest.fixture(scope="module")
def layer(checked: None) -> Path:
    """The layer's pure modules compiled for node (``npm run build:test``, done by the check)."""
    return ROOT / "build" / "test" / "layer"


def node_value(layer: Path, module: str, expression: str) -> Any:
    """``expression`` evaluated by node over the compiled ``layer/MODULE``, as JSON."""
    module_path = json.dumps(str(layer / module))
    script = f"const m = require({module_path}); console.log(JSON.stringify({expression}))"
    done = subprocess.run(
        ["node", "-e", script], capture_output=True, text=True, check=True, timeout=60
    )
    return json.loads(done.stdout)


def write_forms(folder: Path, vols: Vols) -> list[str]:
    """What vllmd prints for the forms, on recorded and stated machines, one file each."""
    folder.mkdir()
    written = []

    def put(name: str, document: Any) -> None:
        (folder / name).write_text(json.dumps(document))
        written.append(name)

    for name in RECORDED:  # detection as vllmd runs it there, on the recorded machine's files
        machine = load_machine(name)
        root = machine_root(machine, folder.parent / f"root-{name}")
        hardware = detect(machine["variant"], root=root, nvml_loader=nvml_loader(machine))
        form = form_document(load_catalog(), hardware, Current(None, "none", "", ()))
        put(f"recorded-{name}.set-model.json", json.loads(form.to_json()))

    stated = vols.action("set-model", "--form", *H200)
    assert stated.returncode == 0, stated.stderr
    put("stated-h200.set-model.json", stated.json())

    this_machine = vols.action("set-model", "--form")  # the cpu variant detects this CPU
    assert this_machine.returncode == 0, this_machine.stderr
    put("this-cpu.set-model.json", this_machine.json())

    with_env = vols.action(
        "set-model",
        "--custom",
        "org/model --max-model-len 4096",
        "--env-stdin",
        stdin="HF_TOKEN=x\nOTHER=y\n",
    )
    assert with_env.returncode == 0, with_env.stderr
    prefilled = vols.action("set-model", "--form", "--tier", "cpu", "--memory-gb", "16")
    assert prefilled.json()["current"]["envNames"] == ["HF_TOKEN", "OTHER"]
    put("prefilled-cpu.set-model.json", prefilled.json())

    put("empty.cache.json", vols.action("delete-model-cache", "--form").json())
    vols.add_model("org/model", blob_bytes=20_000)
    vols.add_model("other/model", blob_bytes=1_000)
    put("two-models.cache.json", vols.action("delete-model-cache", "--form").json())

    for name in written:
        document = json.loads((folder / name).read_text())
        (check_cache_form if name.endswith(".cache.json") else check_set_model_form)(document)
    return written


def test_the_forms_are_built_from_what_vllmd_prints(layer: Path, tmp_path: Path) -> None:
    written = write_forms(tmp_path / "forms", Vols(tmp_path / "vols"))

    done = subprocess.run(
        ["node", "--test", "startos/test/forms.test.js"],
        cwd=ROOT,
        env={**os.environ, "VLLMD_FORMS_DIR": str(tmp_path / "forms")},
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    passed = re.search(r"^# pass (\d+)$", done.stdout, re.M)
    skipped = re.search(r"^# skipped (\d+)$", done.stdout, re.M)
    assert passed and skipped, done.stdout[-2000:]
    assert int(skipped.group(1)) == 0
    assert int(passed.group(1)) >= len(written) + 1  # one test per file, and the folder's


def test_startos_waits_longer_than_vllmds_whole_stop(layer: Path) -> None:
    timing = node_value(layer, "timing.js", "m")
    defaults = Settings()

    assert timing["STOP_TIMEOUT_S"] == defaults.stop_timeout_s
    assert timing["DRAIN_S"] == defaults.drain_timeout_s
    assert timing["KILL_WAIT_S"] == KILL_WAIT_S
    needed = defaults.drain_timeout_s + defaults.stop_timeout_s + KILL_WAIT_S
    assert timing["SIGTERM_TIMEOUT_MS"] > needed * 1000


def test_the_layer_uses_vllmds_words_and_rules(layer: Path) -> None:
    reason = node_value(layer, "tasks.js", "m.SET_MODEL_REASON")
    env_name = node_value(layer, "forms.js", "m.ENV_NAME.source")
    custom = node_value(layer, "forms.js", "m.CUSTOM")

    assert reason == SET_MODEL_TASK["reason"]
    assert env_name.removesuffix("$") == ENV_NAME_PATTERN.removesuffix(r"\Z")
    assert custom == "custom"


def test_the_layer_runs_the_actions_vllmd_has(layer: Path) -> None:
    argv = node_value(
        layer,
        "calls.js",
        "[m.getApiKeyCall.argv, m.deleteModelCall('a/b').argv, "
        "m.setModelCall({model: {selection: 'custom', value: {args: 'a/b'}}, "
        "environment: {selection: 'replace', value: {variables: []}}}, null).argv]",
    )

    for call in argv:
        done = run_vllmd(*call[:2], "--help")
        assert done.returncode == 0, (call, done.stderr)
        for flag in (arg for arg in call if arg.startswith("--")):
            assert flag in done.stdout, (flag, call)


@pytest.mark.parametrize("release", RELEASES, ids=lambda r: r.name)
def test_an_update_from_start9s_package_migrates_and_vllmd_keeps_their_key(
    layer: Path, tmp_path: Path, release: Release
) -> None:
    """The two halves of the update together: the version graph's migration (the compiled
    ``layer/start9.js``, which the graph's ``up`` runs on store.json), then vllmd on what it left.
    The migration must leave ``apiKey`` for vllmd, which adopts it."""
    # given the volumes as the release left them
    vols = Vols(tmp_path / "vols")
    release.lay_out(vols, ["org/model", "--max-model-len", "4096"])  # Vols has Volumes' paths
    before = json.loads(vols.store.read_text())
    # when the package's migration runs, then vllmd
    text = json.dumps(vols.store.read_text())
    migrated = node_value(layer, "start9.js", f"m.fromStart9Store({text})")
    if migrated is not None:
        vols.store.write_text(migrated)
    done = vols.action("get-api-key")
    # then vllmd serves the key dependents hold, and the model carried over
    assert done.returncode == 0, done.stderr
    assert done.json()["result"]["value"] == KEY
    store = vols.read_store()
    assert "apiKey" not in store
    expected_args = before.get("serveArgs") or [before["selectedModel"]]
    assert store["serveArgs"] == expected_args
    if "modelSelection" in before:
        assert store["modelSelection"] == before["modelSelection"]


GB = 1_000_000_000
MOVING = FetchState("Org/Model", total=40 * GB, done=12 * GB, rate_bps=48_000_000.0)
FULL = FetchError("disk-full", "The disk is full.", needed=40 * GB, free=2 * GB)


def _printed(snap: Snapshot) -> dict[str, Any]:
    """What ``vllmd health`` prints for ``snap``: its verdict as health.json, and its exit code."""
    settings = Settings()
    verdict = evaluate(snap, 1_060.0, settings.loading_grace_s, settings.loading_cap_s)
    report = {"result": str(verdict.result), "message": verdict.message, "since": 1, "pid": 1}
    report |= {"task": verdict.task, "detail": verdict.detail}
    return {"exitCode": 0 if verdict.result == "success" else 1, "stdout": json.dumps(report)}


@pytest.mark.parametrize(
    ("snap", "api", "download"),
    [
        pytest.param(
            Snapshot(Phase.READY, config_started_at=1_000.0, model="Org/Old"),
            "success",
            "success",
            id="serving, no download",
        ),
        pytest.param(
            Snapshot(Phase.READY, config_started_at=1_000.0, model="Org/Old",
                     fetch=Fetching(MOVING, moved_at=1_050.0)),
            "success",
            "loading",
            id="the old model serves while the new one downloads",
        ),
        pytest.param(
            Snapshot(Phase.STARTING, config_started_at=1_000.0, model="Org/Model",
                     fetch=Fetching(MOVING, moved_at=1_050.0)),
            "loading",
            "loading",
            id="downloading with nothing serving",
        ),
        pytest.param(
            Snapshot(Phase.READY, config_started_at=1_000.0, model="Org/Old",
                     fetch=Fetching(FetchState("Org/Model", error=FULL), retry_in_s=30.0)),
            "success",
            "failure",
            id="the download failed",
        ),
    ],
)  # fmt: skip
def test_the_two_health_checks_show_what_vllmd_reports(
    layer: Path, snap: Snapshot, api: str, download: str
) -> None:
    """The layer's mapping on what vllmd itself prints: the API check keeps vllmd's verdict, the
    Model download check shows ``detail.fetch.message`` (loading, or failure with the reason)."""
    printed = _printed(snap)
    exec_ = json.dumps({**printed, "stderr": ""})

    checks = node_value(layer, "health.js", f"[m.healthOf({exec_}), m.downloadHealthOf({exec_})]")

    report = json.loads(printed["stdout"])
    assert checks[0] == {"result": api, "message": report["message"]}
    fetch = report["detail"].get("fetch")
    message = fetch["message"] if fetch else node_value(layer, "health.js", "m.NO_DOWNLOAD")
    assert checks[1] == {"result": download, "message": message}
