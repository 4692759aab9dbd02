"""Helpers for the hardware, preset and action tests: recorded machines and the vllmd command.

A recorded machine (``tests/fixtures/hardware/*.json``) holds what NVML answers (``nvml``), the
files of a filesystem root (``files``: ``/proc/meminfo``, cgroup limits, sysfs) and its symbolic
links (``links``), and what detection must conclude (``expect``). :func:`machine_root` lays the
files out under a temporary folder; :class:`FakeNvml` answers like ``pynvml`` does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

ROOT = Path(__file__).resolve().parent.parent
MACHINES = ROOT / "tests" / "fixtures" / "hardware"


class FakeNvmlError(Exception):
    """Like ``pynvml.NVMLError``: carries NVML's return code in ``value``."""

    MESSAGES: ClassVar[dict[int, str]] = {
        3: "Not Supported",
        9: "Driver Not Loaded",
        12: "NVML Shared Library Not Found",
    }

    def __init__(self, value: int) -> None:
        super().__init__(self.MESSAGES.get(value, f"NVML Error with code {value}"))
        self.value = value


@dataclass
class FakeMemory:
    total: int
    free: int
    used: int = 0


class FakeNvml:
    """Answers like the ``pynvml`` module for the devices of a recorded machine."""

    def __init__(self, recorded: dict[str, Any]) -> None:
        self.recorded = recorded
        self.initialised = False
        self.shutdowns = 0

    def nvmlInit(self) -> None:
        if "init_error" in self.recorded:
            raise FakeNvmlError(self.recorded["init_error"])
        self.initialised = True

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1

    def nvmlDeviceGetCount(self) -> int:
        assert self.initialised, "NVML used before nvmlInit"
        return len(self.recorded["devices"])

    def nvmlDeviceGetHandleByIndex(self, index: int) -> object:
        return self.recorded["devices"][index]

    def nvmlDeviceGetName(self, handle: Any) -> bytes:
        return str(handle["name"]).encode()  # older nvidia-ml-py answers bytes

    def nvmlDeviceGetCudaComputeCapability(self, handle: Any) -> tuple[int, int]:
        major, minor = handle["compute_capability"]
        return int(major), int(minor)

    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> FakeMemory:
        memory = handle["memory"]
        if "error" in memory:
            raise FakeNvmlError(memory["error"])
        return FakeMemory(memory["total"], memory["free"], memory["total"] - memory["free"])


def load_machine(name: str) -> dict[str, Any]:
    """The recorded machine ``tests/fixtures/hardware/NAME.json``."""
    data: dict[str, Any] = json.loads((MACHINES / f"{name}.json").read_text())
    return data


def machine_names() -> list[str]:
    """Every recorded machine's name."""
    return sorted(p.stem for p in MACHINES.glob("*.json"))


def machine_root(machine: dict[str, Any], root: Path) -> Path:
    """Lay out the machine's files and links under ``root``; return ``root``."""
    for rel, text in machine.get("files", {}).items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for rel, target in machine.get("links", {}).items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.symlink_to(target)
    return root


def nvml_loader(machine: dict[str, Any]) -> Any:
    """A loader for ``detect``: the machine's FakeNvml, or ImportError when NVML is missing."""
    recorded = machine.get("nvml")

    def load() -> FakeNvml:
        if recorded is None or "import_error" in recorded:
            message = (recorded or {}).get("import_error", "No module named 'pynvml'")
            raise ModuleNotFoundError(message)
        return FakeNvml(recorded)

    return load


@dataclass
class Run:
    """One finished ``vllmd`` command."""

    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


def vllmd_env(**extra: str) -> dict[str, str]:
    """The environment for a ``vllmd`` subprocess: ours without VLLMD_*, the checkout first."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VLLMD_")}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def run_vllmd(
    *args: str, env: dict[str, str] | None = None, timeout: float = 30.0, stdin: str = ""
) -> Run:
    """Run ``python -m vllmd ARGS`` to completion, with ``stdin`` on its standard input."""
    done = subprocess.run(
        [sys.executable, "-m", "vllmd", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env or vllmd_env(),
        timeout=timeout,
        cwd=ROOT,
    )
    return Run(done.returncode, done.stdout, done.stderr)


@dataclass
class Vols:
    """Temporary volumes for one action test."""

    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def public(self) -> Path:
        return self.root / "public"

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def store(self) -> Path:
        return self.data / "store.json"

    @property
    def models(self) -> Path:
        return self.data / "models"

    @property
    def credentials(self) -> Path:
        return self.public / "credentials.json"

    def flags(self) -> list[str]:
        return [
            "--data",
            str(self.data),
            "--public",
            str(self.public),
            "--run-dir",
            str(self.run_dir),
        ]

    def action(self, name: str, *args: str, stdin: str = "") -> Run:
        """``vllmd action NAME ARGS`` on these volumes, ``stdin`` on its standard input."""
        return run_vllmd("action", name, *self.flags(), *args, stdin=stdin)

    def write_store(self, value: Any) -> None:
        self.data.mkdir(parents=True, exist_ok=True)
        self.store.write_text(json.dumps(value, indent=2))

    def read_store(self) -> Any:
        return json.loads(self.store.read_text())

    def add_model(self, model_id: str, blob_bytes: int = 4096) -> Path:
        """A cached model laid out like huggingface_hub's: blobs, and snapshots linking to them."""
        folder = self.models / ("models--" + model_id.replace("/", "--"))
        (folder / "blobs").mkdir(parents=True)
        (folder / "refs").mkdir()
        (folder / "refs" / "main").write_text("abc123")
        snapshot = folder / "snapshots" / "abc123"
        snapshot.mkdir(parents=True)
        (folder / "blobs" / "sha-weights").write_bytes(b"w" * blob_bytes)
        (folder / "blobs" / "sha-config").write_bytes(b"c" * 100)
        (snapshot / "model.safetensors").symlink_to("../../blobs/sha-weights")
        (snapshot / "config.json").symlink_to("../../blobs/sha-config")
        return folder


def check_set_model_form(document: Any) -> None:
    """Assert ``document`` has exactly the shape CONTRACT.md §4 pins for ``set-model --form``."""
    assert isinstance(document, dict)
    assert set(document) == {"version", "hardware", "default", "current", "presets"}
    assert document["version"] == 1
    hardware = document["hardware"]
    assert set(hardware) == {"tier", "budget_gb", "gpus", "source", "notes"}
    assert isinstance(hardware["tier"], str)
    assert isinstance(hardware["budget_gb"], int | float) and hardware["budget_gb"] > 0
    assert isinstance(hardware["gpus"], int) and hardware["gpus"] >= 1
    assert hardware["source"] in ("detected", "stated")
    assert all(isinstance(note, str) for note in hardware["notes"])
    current = document["current"]
    assert set(current) == {"selection", "customArgs", "envNames"}
    assert current["selection"] is None or isinstance(current["selection"], str)
    assert isinstance(current["customArgs"], str)
    assert all(isinstance(name, str) for name in current["envNames"])
    ids = []
    for preset in document["presets"]:
        assert set(preset) == {
            "id",
            "name",
            "fits",
            "reason",
            "tensorParallelSize",
            "maxModelLen",
            "minMemoryGb",
        }
        assert isinstance(preset["id"], str) and isinstance(preset["name"], str)
        assert isinstance(preset["fits"], bool) and isinstance(preset["reason"], str)
        assert preset["reason"]
        for key in ("tensorParallelSize", "maxModelLen", "minMemoryGb"):
            assert preset[key] is None or (isinstance(preset[key], int) and preset[key] > 0)
        if preset["fits"]:
            assert preset["tensorParallelSize"] is not None and preset["maxModelLen"] is not None
        ids.append(preset["id"])
    assert "custom" not in ids  # Custom is always possible and is not listed
    fitting = [p["id"] for p in document["presets"] if p["fits"]]
    assert document["default"] == (fitting[0] if fitting else "custom")


def check_cache_form(document: Any) -> None:
    """Assert ``document`` has exactly the shape CONTRACT.md §4 pins for
    ``delete-model-cache --form``, largest model first."""
    assert isinstance(document, dict)
    assert set(document) == {"version", "models", "compileCache"}
    assert document["version"] == 1
    assert set(document["compileCache"]) == {"bytes"}
    assert isinstance(document["compileCache"]["bytes"], int)
    assert document["compileCache"]["bytes"] >= 0
    for model in document["models"]:
        assert set(model) == {"id", "bytes", "selected"}
        assert isinstance(model["id"], str) and model["id"]
        assert isinstance(model["bytes"], int) and model["bytes"] >= 0
        assert isinstance(model["selected"], bool)
    sizes = [model["bytes"] for model in document["models"]]
    assert sizes == sorted(sizes, reverse=True)
