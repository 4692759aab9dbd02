"""The arrows between the folders hold (docs/architecture.md): read from the source with ``ast``.

Every ``import`` counts, at module level and inside functions (a lazy import is still an arrow),
``if TYPE_CHECKING:`` ones too. Also: every error a user can hit is a kind of ``VllmdError``, and
every choice setting is spelled once, as a ``Literal``.
"""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
import typing
from dataclasses import dataclass, fields
from pathlib import Path

import pytest

import vllmd
from vllmd.core import choices
from vllmd.core.errors import VllmdError
from vllmd.settings import OPTIONS, Settings, SettingsError, settings_from

PACKAGE = Path(vllmd.__file__).parent
ROOT = PACKAGE.parent

LAYERS: dict[str, float] = {
    "vllmd.__main__": 8,
    "vllmd.early": 5.5,
    "vllmd.cli": 7,
    "vllmd.demo": 7,
    "vllmd.daemon": 6,
    "vllmd.process": 5,
    "vllmd.actions": 4,
    "vllmd.hardware": 3,
    "vllmd.fetch": 3,  # a program of its own: the daemon runs it, nothing imports it
    "vllmd.state": 2,
    "vllmd.settings": 1,
    "vllmd.logs": 1,
    "vllmd.core": 0,
    "vllmd.guard": 0,
    "vllmd.options": 0,
    "vllmd.apikey": 0,
    "vllmd": 0,  # the package itself: its version
}
"""Each part of the package and its height: a module imports only parts below its own, or its
own part. ``settings`` and ``logs`` sit just above the core: the one frozen ``Settings`` is built
at the top and passed down, so every layer that takes it imports its type (and nothing but the
core is beneath it); the log formats are used by the daemon for vLLM's lines. ``early`` runs
first, under ``__main__``, and writes through ``state`` with the ``/proc`` reader's help; its
record goes to ``cli`` and the daemon.
``options`` (the spellings, no imports) and ``apikey`` (the key's generator and file name, ``os``
only) are leaves that ``settings``, ``state`` and ``early`` share."""

ALSO_ALLOWED = {
    # core/launch names the guard's key-file variable and its class path (what vLLM's
    # --middleware imports): the guard is copied alone into vLLM's PYTHONPATH and must import
    # nothing of vllmd, so the names live there and the core reads them. The guard is a
    # standard-library leaf whose import does no I/O (test below).
    ("vllmd.core", "vllmd.guard"),
    # state/credentials checks the key with the guard's own parser: one definition of a key.
    ("vllmd.state", "vllmd.guard"),
    # The CLI's `demo` command, the one way into the tooling (lazily: test below).
    ("vllmd.cli", "vllmd.demo"),
}

CORE_MAY_IMPORT = frozenset(
    {
        "__future__",
        "collections",
        "dataclasses",
        "enum",
        "fnmatch",  # glob patterns over names (the hub's file selection), no file system
        "functools",
        "itertools",
        "math",
        "pathlib",  # paths as values (PurePath operations); calls that touch a disk are refused
        "re",
        "shlex",
        "signal",  # signal names and numbers only
        "string",
        "threading",  # the masker's lock
        "typing",
        "msgspec",
    }
)
"""What the pure core may import besides itself and the guard's names: no os, io, subprocess,
socket, shutil, importlib, time (the clock is passed in), anyio or aiohttp."""

DISK_CALLS = frozenset(
    {
        "open",
        "read_text",
        "read_bytes",
        "write_text",
        "write_bytes",
        "exists",
        "is_file",
        "is_dir",
        "iterdir",
        "glob",
        "rglob",
        "stat",
        "lstat",
        "mkdir",
        "unlink",
        "rmdir",
        "resolve",
        "touch",
        "chmod",
        "cwd",
        "home",
        "expanduser",
        "readlink",
        "samefile",
    }
)
"""Path and builtin calls that read or change a file system: the core calls none of them."""


@dataclass(frozen=True)
class Import:
    """One import statement: who imports what, and whether inside a function."""

    source: str
    target: str
    path: Path
    line: int
    in_function: bool


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _imports(path: Path) -> list[Import]:
    module = _module_name(path)
    tree = ast.parse(path.read_text(), str(path))
    found: list[Import] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.Import):
                for alias in child.names:
                    found.append(Import(module, alias.name, path, child.lineno, inside))
            elif isinstance(child, ast.ImportFrom):
                base = _resolve(child, module, path.name == "__init__.py")
                for alias in child.names:
                    # `from vllmd import guard` imports the module vllmd.guard.
                    target = f"{base}.{alias.name}" if base else alias.name
                    found.append(Import(module, target, path, child.lineno, inside))
            visit(child, inside)

    visit(tree, False)
    return found


def _part(name: str) -> str | None:
    """The entry of :data:`LAYERS` that ``name`` belongs to (the longest that matches)."""
    matches = [part for part in LAYERS if name == part or name.startswith(part + ".")]
    return max(matches, key=len, default=None)


def _package_imports() -> list[Import]:
    return [found for path in sorted(PACKAGE.rglob("*.py")) for found in _imports(path)]


def _where(found: Import) -> str:
    return f"{found.path.relative_to(ROOT)}:{found.line}: {found.source} imports {found.target}"


def test_every_module_of_the_package_has_a_layer() -> None:
    missing = [
        _module_name(path) for path in PACKAGE.rglob("*.py") if _part(_module_name(path)) is None
    ]
    assert missing == []


def test_imports_only_go_down_the_layers() -> None:
    # Given every import in the package, module level and inside functions
    wrong = []
    for found in _package_imports():
        if not found.target.startswith("vllmd"):
            continue
        source, target = _part(found.source), _part(found.target)
        assert source is not None and target is not None, _where(found)
        # Then each goes to its own part or to a lower one, or is one of the few named ones
        if source == target or LAYERS[target] < LAYERS[source]:
            continue
        if (source, target) not in ALSO_ALLOWED:
            wrong.append(_where(found))
    assert wrong == []


def test_nothing_in_the_runtime_imports_the_demo_but_the_cli_lazily() -> None:
    into_demo = [
        found
        for found in _package_imports()
        if _part(found.target) == "vllmd.demo" and _part(found.source) != "vllmd.demo"
    ]
    assert [(f.source, f.in_function) for f in into_demo] == [("vllmd.cli", True)]


def test_nothing_in_the_package_imports_the_fetch_worker() -> None:
    # The worker runs as `python -m vllmd.fetch` in its own process: huggingface_hub, its HTTP
    # client and hf-xet never load into the daemon.
    into_fetch = [
        _where(found)
        for found in _package_imports()
        if _part(found.target) == "vllmd.fetch" and _part(found.source) != "vllmd.fetch"
    ]
    assert into_fetch == []


def test_the_core_imports_no_io_and_no_layer_above_it() -> None:
    # Given the imports of the pure core
    wrong = []
    for found in _package_imports():
        if _part(found.source) != "vllmd.core":
            continue
        top = found.target.split(".")[0]
        if top == "vllmd":
            # Then vllmd's own imports stay in the core, but for the guard's names
            if _part(found.target) not in ("vllmd.core", "vllmd.guard"):
                wrong.append(_where(found))
        elif top not in CORE_MAY_IMPORT:
            # and the rest is on the allowlist: nothing that does I/O, no event loop
            wrong.append(_where(found))
    assert wrong == []


def test_the_core_calls_nothing_that_touches_a_disk() -> None:
    # Given every call in the core: neither open() nor a Path method that reaches a file system
    wrong = []
    for path in sorted((PACKAGE / "core").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name in DISK_CALLS:
                wrong.append(f"{path.relative_to(ROOT)}:{node.lineno}: {name}()")
    assert wrong == []


def test_the_guard_imports_only_the_standard_library() -> None:
    # Given the guard, which vLLM imports from a folder that holds it alone
    imports = _imports(PACKAGE / "guard.py")
    # Then nothing it imports is outside the standard library (vllmd included)
    outside = [_where(f) for f in imports if f.target.split(".")[0] not in sys.stdlib_module_names]
    assert outside == []


def test_vllmd_health_loads_none_of_the_daemons_dependencies(tmp_path: Path) -> None:
    # Given a fresh interpreter that runs `vllmd health`, as the container's HEALTHCHECK does
    # every few seconds (here with no report yet)
    volumes = [f"--{name}={tmp_path / name}" for name in ("data", "public", "run-dir")]
    script = (
        "import sys\n"
        "from vllmd.cli import main\n"
        f"code = main(['health', *{volumes!r}])\n"
        "print(code, sorted({m.split('.')[0] for m in sys.modules} & "
        "{'anyio', 'aiohttp', 'watchfiles'}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    # Then it answered (2: no report), and loaded neither the event loop nor the watcher
    assert done.stdout.strip() == "2 []"


def _error_classes() -> list[type[BaseException]]:
    found: list[type[BaseException]] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = __import__(_module_name(path), fromlist=["_"])
        for _, value in inspect.getmembers(module, inspect.isclass):
            if issubclass(value, BaseException) and value.__module__ == module.__name__:
                found.append(value)
    return found


def test_every_error_vllmd_defines_is_a_kind_of_vllmd_error_with_a_one_line_docstring() -> None:
    # Given every exception class the package defines
    classes = _error_classes()
    assert VllmdError in classes and len(classes) > 5
    for cls in classes:
        # Then each is a VllmdError, and says in one line when it is raised
        assert issubclass(cls, VllmdError), cls
        doc = (cls.__doc__ or "").strip()
        assert doc and "\n" not in doc, cls


def test_an_error_keeps_the_problem_and_the_hint_apart() -> None:
    error = VllmdError("store.json: the file is empty.", "Fix the file.")
    assert (error.problem, error.hint) == ("store.json: the file is empty.", "Fix the file.")
    assert str(error) == "store.json: the file is empty. Fix the file."
    assert str(VllmdError("no hint")) == "no hint"


CHOICE_SETTINGS = {
    "variant": choices.Variant,
    "auth": choices.AuthMode,
    "log_format": choices.LogFormat,
}


@pytest.mark.parametrize("name", sorted(CHOICE_SETTINGS))
def test_a_choice_setting_accepts_exactly_its_literal(name: str) -> None:
    # Given a choice setting and the Literal it is typed with
    literal = CHOICE_SETTINGS[name]
    allowed = typing.get_args(literal)
    hints = typing.get_type_hints(Settings)
    assert hints[name] == literal
    option = OPTIONS[name]
    # When each allowed value comes from the environment, then it is taken as it is
    for value in allowed:
        assert getattr(settings_from(None, {option.env: value}), name) == value
    # When another value comes, then the error lists exactly the allowed ones
    with pytest.raises(SettingsError) as caught:
        settings_from(None, {option.env: "other"})
    assert f"expected one of {', '.join(allowed)}" in str(caught.value)
    # And the flag's help shows them
    assert option.metavar == "|".join(allowed)


def test_the_tiers_are_the_tier_literal_in_order() -> None:
    assert typing.get_args(choices.Tier) == choices.TIERS
    assert choices.TIERS[0] == "nvidia-blackwell" and choices.TIERS[-1] == "cpu"
    assert all(choices.is_tier(t) for t in choices.TIERS) and not choices.is_tier("tpu")


def test_every_settings_field_has_one_option() -> None:
    assert sorted(f.name for f in fields(Settings)) == sorted(OPTIONS)
