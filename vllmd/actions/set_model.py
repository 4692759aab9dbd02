"""``vllmd action set-model``: choose what vLLM serves, or print the choices (``--list``,
``--form``: see :mod:`vllmd.actions.set_model_form`).

A preset is resolved for the hardware (detected, or stated with ``--tier/--memory-gb/--gpus``)
with its ``--max-model-len`` step and, over several identical GPUs, ``--tensor-parallel-size``; a
preset that does not fit is refused with the reason and the list of what fits. Custom arguments
are split like a POSIX shell and refused when they carry a fixed flag. The action writes
``serveArgs``, ``serveEnv`` (when ``--env``, ``--env-stdin`` or ``--clear-env`` is given) and
``modelSelection``
to ``store.json`` atomically, keeping every key it does not set; the daemon notices the change by
itself.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import msgspec

from vllmd.actions.requests import EnvChange, SetModel, StatedHardware
from vllmd.actions.result import ActionError, ActionResult, Form, group, member, single
from vllmd.actions.set_model_form import form_document, list_result, read_current
from vllmd.core.argsplit import join_args, keep_masked_secrets, parse_custom, parse_env
from vllmd.core.choices import TIERS, is_tier
from vllmd.core.fit import Fit, fit_catalog, fitting
from vllmd.core.launch import hide_secrets, model_of
from vllmd.core.presets import CUSTOM, Catalog
from vllmd.hardware.tiers import Hardware, detect
from vllmd.settings import Settings
from vllmd.state.atomicfile import aside_path
from vllmd.state.catalog import load_catalog
from vllmd.state.readfile import UnreadableFile, read_small_file
from vllmd.state.store import (
    MAX_STORE_BYTES,
    EnvVar,
    Store,
    StoreError,
    read_store,
    update_store,
)

DOWNLOAD_NOTE = (
    "vLLM restarts with it now. A first start downloads the weights, which can take 30 minutes "
    "or more."
)


def _number(text: str, option: str, *, whole: bool) -> float:
    try:
        value = int(text) if whole else float(text)
    except ValueError:
        value = -1
    if not value > 0 or value != value or value == float("inf"):
        kind = "a whole number, 1 or more" if whole else "a number of GB above 0"
        raise ActionError(f"{option} {text!r}: expected {kind}")
    return value


def hardware_for(stated: StatedHardware, settings: Settings) -> Hardware:
    """The hardware stated with ``--tier/--memory-gb/--gpus``, else the detected one."""
    if not stated.given:
        return detect(settings.variant)
    tier, memory, gpus = stated.tier, stated.memory_gb, stated.gpus
    if tier is None or memory is None:
        raise ActionError(
            "--tier and --memory-gb go together (and --gpus needs both): state the tier and the "
            "memory per GPU, e.g. --tier nvidia-hopper --memory-gb 141, or give none to detect"
        )
    if not is_tier(tier):
        raise ActionError(f"--tier {tier!r}: not a tier; the tiers are {', '.join(TIERS)}")
    count = 1 if gpus is None else int(_number(gpus, "--gpus", whole=True))
    if tier == "cpu" and count != 1:
        raise ActionError("--gpus: the cpu tier has no GPUs; leave --gpus out")
    return Hardware.given(tier, _number(memory, "--memory-gb", whole=False), count)


def _read_current(path: Path, force: bool) -> tuple[Store | None, dict[str, Any], Path | None]:
    """The store now, its raw ``modelSelection`` (to keep keys vllmd does not know), and where
    an unreadable file was moved with ``--force``."""
    try:
        store = read_store(path)
    except StoreError as exc:
        if not force:
            raise ActionError(
                f"{exc.problem} Nothing was written: set-model does not replace a file it cannot "
                "read. Fix the file, or run set-model again with --force to move it aside (to "
                f"{path.name}.invalid-<UTC time>) and write a new one."
            ) from exc
        aside = aside_path(path)
        os.rename(path, aside)
        return None, {}, aside
    selection: dict[str, Any] = {}
    if store is not None:
        # Replaced since we read it (even by a FIFO): update_store decides what to do.
        try:
            raw = msgspec.json.decode(read_small_file(path, MAX_STORE_BYTES))
        except (OSError, UnreadableFile, msgspec.DecodeError, RecursionError):
            raw = None
        if isinstance(raw, dict) and isinstance(raw.get("modelSelection"), dict):
            selection = dict(raw["modelSelection"])
    return store, selection, None


def _env_changes(change: EnvChange) -> tuple[EnvVar, ...] | None:
    """The new ``serveEnv`` (checked like ``--env``), or ``None`` to keep the stored one."""
    if change.items is None:
        return None
    if change.source == "--env-stdin":
        return parse_env(change.items, option="--env-stdin", counted="line")
    return parse_env(change.items)


def _unknown_preset(preset_id: str, catalog: Catalog) -> ActionError:
    return ActionError(
        f"--preset {preset_id!r}: no such preset. The presets are {', '.join(catalog.ids)}; "
        "run set-model --list to see which fit, or use --custom for anything else"
    )


def _refusal(fit: Fit, fits: tuple[Fit, ...], hardware: Hardware) -> ActionError:
    ok = fitting(fits)
    what_fits = (
        f"Presets that fit: {', '.join(ok)}."
        if ok
        else "No preset fits; use --custom with arguments for this machine."
    )
    return ActionError(
        f"--preset {fit.preset.id!r} does not fit {hardware.machine().describe()}: {fit.reason}. "
        f"{what_fits}"
    )


def set_model(request: SetModel, settings: Settings) -> ActionResult | Form:
    """Run the action: print the form (``--list``, ``--form``), or write the choice."""
    if request.mode == "list":
        return list_result(
            load_catalog(), hardware_for(request.hardware, settings), read_current(settings)
        )
    if request.mode == "form":
        return form_document(
            load_catalog(), hardware_for(request.hardware, settings), read_current(settings)
        )
    env = _env_changes(request.env)

    details: list[dict[str, Any]] = []
    if request.mode == "preset":
        catalog = load_catalog()
        if catalog.get(request.value) is None:
            raise _unknown_preset(request.value, catalog)
        hardware = hardware_for(request.hardware, settings)
        fits = fit_catalog(catalog, hardware.machine())
        fit = next(f for f in fits if f.preset.id == request.value)
        if not fit.fits:
            raise _refusal(fit, fits, hardware)
        serve_args = list(fit.serve_args())
        selection, custom_text, title = fit.preset.id, None, fit.preset.name
        details.append(member("Hardware", single(hardware.machine().describe()), fit.reason))
    else:
        serve_args = parse_custom(request.value)
        selection, custom_text, title = CUSTOM, request.value, "custom arguments"

    path = settings.store_path
    current, model_selection, aside = _read_current(path, request.force)
    if custom_text is not None:
        # The form shows secret values as ***: submitted unchanged, they keep the stored value.
        kept = keep_masked_secrets(serve_args, current.serveArgs if current else ())
        if kept != serve_args:
            serve_args, custom_text = kept, join_args(kept)
    model_selection["selection"] = selection
    if custom_text is not None:
        model_selection["customArgs"] = custom_text
    changes: dict[str, Any] = {"serveArgs": serve_args, "modelSelection": model_selection}
    if env is not None:
        changes["serveEnv"] = [{"name": var.name, "value": var.value} for var in env]
    written = update_store(path, changes)

    model = model_of(serve_args) or serve_args[0]
    names = [var.name for var in written.serveEnv]
    message = f"Selected {title}: {model}. {DOWNLOAD_NOTE}"
    if aside is not None:
        message += f" The unreadable store.json was moved to {aside.name}."
    result = group(
        member("Model", single(model, copyable=True)),
        # Secret values (--hf-token) never appear in an action's output.
        member("Arguments", single(join_args(hide_secrets(serve_args)), copyable=True)),
        member("Environment", single(", ".join(names) or "none"), "names only; values stay secret"),
        *details,
    )
    return ActionResult("Model set", message, result)
