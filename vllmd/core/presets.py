"""The preset catalog: its schema and its validation, without I/O.

The catalog is data (``config/presets.toml``), decoded strictly with msgspec: an unknown field, a
wrong type or a broken rule is a :class:`CatalogError` that names the preset and the field, raised
when the catalog is loaded, never half-way through an action. Pure: reading the file is
:mod:`vllmd.state.catalog`'s job, which preset fits which machine :mod:`vllmd.core.fit`'s.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Annotated, Any

import msgspec

from vllmd.core.choices import TIERS, Tier
from vllmd.core.errors import VllmdError
from vllmd.core.launch import FIXED_FLAGS, flag_name

CUSTOM = "custom"
"""The selection that stands for custom arguments; no preset may take this id."""

ADDED_FLAGS = ("--max-model-len", "--tensor-parallel-size")
"""Flags vllmd adds to a preset's arguments itself; the catalog must not carry them."""

PRESET_ID_PATTERN = r"^[a-z0-9][a-z0-9.-]*$"

_HF_PART = r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?"
_HF_ID = re.compile(rf"^(?:{_HF_PART}/)?{_HF_PART}$")
HF_NAME_MAX = 96

PositiveInt = Annotated[int, msgspec.Meta(gt=0)]


def model_id_problem(model_id: str) -> str | None:
    """Why ``model_id`` is not a HuggingFace repository id, or ``None`` when it is one.

    The rules are huggingface_hub's ``validate_repo_id``: ``NAME`` or ``ORG/NAME``, each made of
    ASCII letters, digits, ``_``, ``-`` and ``.``, neither starting nor ending with ``-`` or ``.``,
    no ``--`` or ``..`` anywhere, not ending in ``.git``, the name at most 96 characters. They
    also keep every id a plain folder name: no ``/`` at either end, no ``..``, no absolute path.
    """
    if not model_id:
        return "the model id is empty"
    if not _HF_ID.match(model_id):
        return (
            "a HuggingFace model id is NAME or ORG/NAME, made of letters, digits, '_', '-' and "
            "'.', each part starting and ending with a letter, digit or '_'"
        )
    if "--" in model_id or ".." in model_id:
        return "a HuggingFace model id cannot contain '--' or '..'"
    if model_id.endswith(".git"):
        return "a HuggingFace model id cannot end in '.git'"
    if len(model_id.rsplit("/", 1)[-1]) > HF_NAME_MAX:
        return f"a HuggingFace model name has at most {HF_NAME_MAX} characters"
    return None


class ContextStep(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """From ``memory_gb`` of budget on, serve with ``--max-model-len max_model_len``."""

    memory_gb: PositiveInt
    max_model_len: PositiveInt


class Build(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """One preset on one tier: the model, its arguments, the memory it needs, its context steps."""

    model: str
    args: tuple[str, ...]
    min_memory_gb: PositiveInt
    context: tuple[ContextStep, ...]


class Tiers(msgspec.Struct, forbid_unknown_fields=True, frozen=True, rename="kebab"):
    """A preset's builds by tier; a missing tier means no build for it."""

    nvidia_blackwell: Build | None = None
    nvidia_hopper: Build | None = None
    nvidia_older: Build | None = None
    amd: Build | None = None
    cpu: Build | None = None

    def get(self, tier: str) -> Build | None:
        """The build for ``tier`` (one of :data:`TIERS`), or ``None``."""
        if tier not in TIERS:
            return None
        build: Build | None = getattr(self, tier.replace("-", "_"))
        return build

    def items(self) -> Iterator[tuple[Tier, Build]]:
        """Each tier that has a build, with it, in :data:`TIERS` order."""
        for tier in TIERS:
            build = self.get(tier)
            if build is not None:
                yield tier, build


class Preset(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """One entry of the Set Model form."""

    id: str
    name: str
    tiers: Tiers


class Catalog(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """The whole catalog, presets in the order the form lists them."""

    preset: tuple[Preset, ...]

    def get(self, preset_id: str) -> Preset | None:
        """The preset called ``preset_id``, or ``None``."""
        return next((p for p in self.preset if p.id == preset_id), None)

    @property
    def ids(self) -> tuple[str, ...]:
        """Every preset id, in catalog order."""
        return tuple(p.id for p in self.preset)


class CatalogError(VllmdError):
    """Raised when the preset catalog cannot be read or breaks a rule; names preset and field."""


_PATH_IN_ERROR = re.compile(r"^(?P<what>.*) - at `\$\.preset\[(?P<index>\d+)\](?P<rest>[^`]*)`$")


def _explain(exc: msgspec.ValidationError, data: bytes, source: str) -> str:
    """msgspec's message, with the preset's id in place of its index in the list."""
    found = _PATH_IN_ERROR.match(str(exc))
    if found is None:
        return f"{source}: {exc}"
    index = int(found["index"])
    try:
        raw: Any = msgspec.toml.decode(data)
        preset_id = raw["preset"][index].get("id")
    except (msgspec.DecodeError, LookupError, TypeError, AttributeError):
        preset_id = None
    who = f"preset {preset_id!r}" if isinstance(preset_id, str) else f"preset number {index + 1}"
    field = found["rest"].lstrip(".")
    where = f"{who}, field {field}" if field else who
    return f"{source}: {where}: {found['what']}"


def _check_build(preset: Preset, tier: Tier, build: Build) -> None:
    where = f"preset {preset.id!r}, field tiers.{tier}"
    problem = model_id_problem(build.model)
    if problem is not None:
        raise CatalogError(f"{where}.model: {build.model!r}: {problem}")
    for arg in build.args:
        name = flag_name(arg)
        if name in FIXED_FLAGS:
            raise CatalogError(f"{where}.args: {name} is set by vllmd itself; remove it")
        if name in ADDED_FLAGS:
            raise CatalogError(
                f"{where}.args: {name} is added by vllmd from the memory budget; remove it "
                "(context lengths go in `context`)"
            )
    if not build.context:
        raise CatalogError(f"{where}.context: needs at least one step")
    first = build.context[0].memory_gb
    if first != build.min_memory_gb:
        raise CatalogError(
            f"{where}.context[0].memory_gb: is {first}, must equal min_memory_gb "
            f"({build.min_memory_gb}) so that every budget that fits has a context length"
        )
    for n, (before, after) in enumerate(zip(build.context, build.context[1:], strict=False), 1):
        if after.memory_gb <= before.memory_gb:
            raise CatalogError(
                f"{where}.context[{n}].memory_gb: steps must grow ({after.memory_gb} after "
                f"{before.memory_gb})"
            )
        if after.max_model_len < before.max_model_len:
            raise CatalogError(
                f"{where}.context[{n}].max_model_len: more memory must not mean a shorter "
                f"context ({after.max_model_len} after {before.max_model_len})"
            )


def _check(catalog: Catalog) -> None:
    """The rules msgspec's types cannot say: ids, tiers, arguments and context steps."""
    if not catalog.preset:
        raise CatalogError("the catalog holds no preset")
    seen: set[str] = set()
    for n, preset in enumerate(catalog.preset, 1):
        if not re.match(PRESET_ID_PATTERN, preset.id) or preset.id == CUSTOM:
            raise CatalogError(
                f"preset number {n}, field id: {preset.id!r} is not a valid preset id "
                f"(lower-case letters, digits, '.' and '-'; not {CUSTOM!r})"
            )
        if preset.id in seen:
            raise CatalogError(f"preset {preset.id!r}, field id: appears twice")
        seen.add(preset.id)
        if not preset.name.strip():
            raise CatalogError(f"preset {preset.id!r}, field name: is empty")
        builds = list(preset.tiers.items())
        if not builds:
            raise CatalogError(f"preset {preset.id!r}, field tiers: has no build for any tier")
        for tier, build in builds:
            _check_build(preset, tier, build)


def parse_catalog(data: bytes, source: str = "presets.toml") -> Catalog:
    """Decode and check the catalog held in ``data`` (read from ``source``)."""
    try:
        catalog = msgspec.toml.decode(data, type=Catalog)
    except msgspec.ValidationError as exc:
        raise CatalogError(_explain(exc, data, source)) from exc
    except msgspec.DecodeError as exc:
        raise CatalogError(f"{source}: not valid TOML: {exc}") from exc
    try:
        _check(catalog)
    except CatalogError as exc:
        raise CatalogError(f"{source}: {exc}") from exc
    return catalog
