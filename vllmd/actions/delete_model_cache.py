"""``vllmd action delete-model-cache``: list the cached models with their sizes, or delete one.

``--form`` prints the list as the JSON the StartOS package builds its choice from (CONTRACT.md
§4), largest first, each marked when it is the selected model. The compile cache
(``DATA/cache``) is listed beside the models and removed with ``--compile-cache``.

The cache is HuggingFace's (``DATA/models/models--ORG--NAME``). Only valid HuggingFace ids are
accepted, the folder must be a real folder directly inside ``DATA/models`` (no ``..``, no absolute
path, no symbolic link followed out), and the selected model is kept unless ``--force`` is given.
Sizes never count a symbolic link's target (``snapshots/`` links into ``blobs/``) nor a hard-linked
file twice. A folder is first renamed out of the cache's sight, then removed, so nothing ever
sees half a model.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from vllmd.actions.compile_cache import (
    DESCRIPTION,
    TITLE,
    compile_cache_bytes,
    remove_compile_cache,
)
from vllmd.actions.requests import DeleteModelCache
from vllmd.actions.result import (
    FORM_VERSION,
    ActionError,
    ActionResult,
    Form,
    group,
    member,
    single,
)
from vllmd.core.launch import model_of
from vllmd.core.presets import model_id_problem
from vllmd.core.units import human_bytes
from vllmd.settings import Settings
from vllmd.state.disk import tree_size
from vllmd.state.store import StoreError, read_store

PREFIX = "models--"
TRASH_PREFIX = ".vllmd-deleting-"


@dataclass(frozen=True, slots=True)
class CachedModel:
    """One model folder in the cache and its size in bytes."""

    model_id: str
    folder: Path
    size_bytes: int


def cache_folder_name(model_id: str) -> str:
    """``ORG/NAME`` → ``models--ORG--NAME``, as huggingface_hub names it."""
    return PREFIX + model_id.replace("/", "--")


def cached_models(models_dir: Path) -> list[CachedModel]:
    """Every model folder in ``models_dir`` with its size; links and stray files are skipped."""
    try:
        entries = sorted(models_dir.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []
    found = []
    for entry in entries:
        if not entry.name.startswith(PREFIX) or entry.is_symlink() or not entry.is_dir():
            continue
        model_id = "/".join(entry.name[len(PREFIX) :].split("--"))
        found.append(CachedModel(model_id, entry, tree_size(entry)))
    return found


def _selected(settings: Settings) -> tuple[frozenset[str], str | None]:
    """Every id vLLM may use (lower case) and, when ``store.json`` cannot be read, why not.

    Any argument of ``serveArgs`` counts, and any ``--flag=VALUE`` value: a flag before the
    model (``--trust-remote-code org/m``) hides which positional is the model, and a draft
    model (``--speculative-config``) is served too. Refusing one id too many costs a --force;
    deleting what vLLM loads costs a download.
    """
    try:
        store = read_store(settings.store_path)
    except StoreError as exc:
        return frozenset(), exc.problem
    if store is None:
        return frozenset(), None
    ids = {arg.lower() for arg in store.serveArgs}
    ids |= {arg.split("=", 1)[1].lower() for arg in store.serveArgs if "=" in arg}
    model = model_of(store.serveArgs)
    return frozenset(ids | ({model.lower()} if model else set())), None


def _is_selected(model: CachedModel, selected: frozenset[str]) -> bool:
    return model.model_id.lower() in selected


def cache_form(settings: Settings) -> Form:
    """``--form``: the cached models, largest first, with their sizes and which is selected."""
    selected, _ = _selected(settings)
    models = sorted(cached_models(settings.models_dir), key=lambda m: (-m.size_bytes, m.model_id))
    entries = [
        {"id": m.model_id, "bytes": m.size_bytes, "selected": _is_selected(m, selected)}
        for m in models
    ]
    compiled = {"bytes": compile_cache_bytes(settings.cache_dir)}
    return Form({"version": FORM_VERSION, "models": entries, "compileCache": compiled})


def _listing(settings: Settings) -> ActionResult:
    models = cached_models(settings.models_dir)
    selected, _ = _selected(settings)
    compiled = compile_cache_bytes(settings.cache_dir)
    extra = [member(TITLE, single(human_bytes(compiled)), DESCRIPTION)] if compiled else []
    also = f" The compile cache holds {human_bytes(compiled)}." if compiled else ""
    if not models:
        message = f"No cached models in {settings.models_dir}.{also}"
        return ActionResult("Model cache", message, group(*extra))
    total = sum(m.size_bytes for m in models)
    items = [
        member(
            m.model_id,
            single(human_bytes(m.size_bytes)),
            "selected: vLLM serves it" if _is_selected(m, selected) else None,
        )
        for m in models
    ]
    count = f"{len(models)} cached model{'s' * (len(models) != 1)}"
    message = f"{count}, {human_bytes(total)} in all.{also}"
    return ActionResult("Model cache", message, group(*items, *extra))


def _delete_compile_cache(settings: Settings) -> ActionResult:
    freed = remove_compile_cache(settings.cache_dir)
    return ActionResult(
        "Compile cache deleted",
        f"Deleted the compile cache: {human_bytes(freed)} freed. The next start of each model "
        "compiles again.",
        group(member("Freed", single(human_bytes(freed)), f"{freed:,} bytes")),
    )


def _target(models_dir: Path, model_id: str) -> Path:
    """The folder to delete for ``model_id``, checked to be a real folder inside the cache."""
    problem = model_id_problem(model_id)
    if problem is not None:
        raise ActionError(
            f"--model {model_id!r}: {problem}. Nothing was deleted. Give the id as huggingface.co "
            "shows it, for example Qwen/Qwen3-0.6B (run delete-model-cache without --model to "
            "list the cache)"
        )
    target = models_dir / cache_folder_name(model_id)
    if target.is_symlink():
        raise ActionError(
            f"{target} is a symbolic link, not a cache folder; vllmd never deletes through "
            "links. Nothing was deleted; remove the link by hand if you made it"
        )
    if not target.is_dir():
        cached = ", ".join(m.model_id for m in cached_models(models_dir)) or "none"
        raise ActionError(
            f"--model {model_id!r}: not in the cache ({target} does not exist). Nothing was "
            f"deleted. Cached models: {cached}"
        )
    base = models_dir.resolve()
    if target.resolve().parent != base:  # a linked parent, or a race: refuse rather than guess
        raise ActionError(f"{target} resolves outside {base}; nothing was deleted")
    return target


def _remove(models_dir: Path, target: Path) -> None:
    """Rename ``target`` out of the cache's sight, then remove it; never follows links."""
    trash = models_dir / f"{TRASH_PREFIX}{target.name}-{os.getpid()}"
    os.rename(target, trash)
    shutil.rmtree(trash)


def delete_model_cache(request: DeleteModelCache, settings: Settings) -> ActionResult | Form:
    """Run the action: list the cache (as a result or a form), or delete a model and say how
    much was freed."""
    if request.form:
        return cache_form(settings)
    if request.compile_cache:
        return _delete_compile_cache(settings)
    if request.model is None:
        return _listing(settings)
    model_id = request.model
    target = _target(settings.models_dir, model_id)
    selected, problem = _selected(settings)
    if not request.force:
        if problem is not None:
            raise ActionError(
                f"cannot tell which model is selected: {problem} Nothing was deleted; pass "
                "--force to delete anyway"
            )
        if model_id.lower() in selected:
            raise ActionError(
                f"--model {model_id!r} is the selected model: vLLM serves it, and deleting it "
                "makes the next start download it again. Nothing was deleted; choose another "
                "model first (set-model), or pass --force"
            )
    freed = tree_size(target)
    _remove(settings.models_dir, target)
    return ActionResult(
        "Model cache deleted",
        f"Deleted {model_id} from the cache: {human_bytes(freed)} freed.",
        group(
            member("Model", single(model_id)),
            member("Freed", single(human_bytes(freed)), f"{freed:,} bytes"),
        ),
    )
