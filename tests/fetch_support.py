"""What the fetch tests share: a model repository for the hub, the worker's clean environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.hub import Hub

ROOT = Path(__file__).resolve().parent.parent

CONFIG = json.dumps({"architectures": ["X"], "model_type": "x"}).encode()
SHARD = 1 << 20  # 1 MiB per shard: big enough to be an LFS file, small enough to be quick


def shard(n: int, size: int = SHARD) -> bytes:
    """Distinct content for shard ``n``."""
    return bytes((n + i) % 251 for i in range(256)) * (size // 256)


def add_model(hub: Hub, repo_id: str, shards: int = 2, size: int = SHARD) -> dict[str, bytes]:
    """A sharded safetensors model in ``hub`` (with files vLLM does not read); its files."""
    names = [f"model-{i + 1:05d}-of-{shards:05d}.safetensors" for i in range(shards)]
    index = {"metadata": {}, "weight_map": {f"w{i}": name for i, name in enumerate(names)}}
    files = {
        "config.json": CONFIG,
        "tokenizer.json": b'{"version": "1.0"}',
        "tokenizer_config.json": b"{}",
        "model.safetensors.index.json": json.dumps(index).encode(),
        "README.md": b"# not read by vLLM",
        "pytorch_model.bin": b"\0" * 4096,  # another format: never fetched
        "original/consolidated.00.pth": b"\0" * 4096,
        **{name: shard(i, size) for i, name in enumerate(names)},
    }
    hub.add_repo(repo_id, files)
    return files


def read_files(files: dict[str, bytes]) -> dict[str, bytes]:
    """The files of ``files`` vLLM reads (what a fetch must bring)."""
    skipped = ("README.md", "pytorch_model.bin", "original/consolidated.00.pth")
    return {k: v for k, v in files.items() if k not in skipped}


def worker_env(hub: Hub, home: Path, **extra: str) -> dict[str, str]:
    """A clean environment for the worker: the hub, a private HF home, no inherited token."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "HF_HOME": str(home / "hf"),
        "PYTHONPATH": str(ROOT),
        **hub.env(),
        **extra,
    }


def worker_argv(models: Path, *targets: str, margin: int = 0) -> list[str]:
    """The worker's command line."""
    return [
        sys.executable,
        "-m",
        "vllmd.fetch",
        "--models",
        str(models),
        "--margin-bytes",
        str(margin),
        *targets,
    ]


def mount_tmpfs(folder: Path, size_bytes: int) -> bool:
    """Mount a tmpfs of ``size_bytes`` on ``folder`` (created); False when this is not allowed."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(folder)],
        capture_output=True,
        check=False,
    )
    return done.returncode == 0


def unmount(folder: Path) -> None:
    """Undo :func:`mount_tmpfs`."""
    subprocess.run(["umount", "-l", str(folder)], capture_output=True, check=False)
