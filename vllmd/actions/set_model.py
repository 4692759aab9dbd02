"""``vllmd action set-model``: choose what vLLM serves, or list the choices (``--list``).

A preset is resolved for the hardware (detected, or stated with ``--tier/--memory-gb/--gpus``)
with its ``--max-model-len`` step and, over several identical GPUs, ``--tensor-parallel-size``; a
preset that does not fit is refused with the reason and the list of what fits. Custom arguments
are split like a POSIX shell and refused when they carry a fixed flag. The action writes
``serveArgs``, ``serveEnv`` (when ``--env`` or ``--clear-env`` is given) and ``modelSelection``
to ``store.json`` atomically, keeping every key it does not set; the daemon notices the change by
itself.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import msgspec

from vllmd.actions.result import ActionError, ActionResult, group, member, single
from vllmd.core.argsplit import join_args, parse_custom, parse_env
from vllmd.core.choices import TIERS, is_tier
from vllmd.core.fit import Fit, default_fit, fit_catalog, fitting
from vllmd.core.launch import model_of
from vllmd.core.presets import CUSTOM, Catalog, load_catalog
from vllmd.hardware.tiers import Hardware, detect
from vllmd.settings import Settings
from vllmd.state.atomicfile import aside_path
from vllmd.state.store import EnvVar, Store, StoreError, read_store, update_store

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


def hardware_for(args: argparse.Namespace, settings: Settings) -> Hardware:
    """The hardware stated with ``--tier/--memory-gb/--gpus``, else the detected one."""
    tier, memory, gpus = args.tier, args.memory_gb, args.gpus
    if tier is None and memory is None and gpus is None:
        return detect(settings.variant)
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
        try:
            raw = msgspec.json.decode(path.read_bytes())
        except (OSError, msgspec.DecodeError):  # replaced since we read it: update_store decides
            raw = None
        if isinstance(raw, dict) and isinstance(raw.get("modelSelection"), dict):
            selection = dict(raw["modelSelection"])
    return store, selection, None


def _env_changes(args: argparse.Namespace) -> tuple[EnvVar, ...] | None:
    if args.env is not None and args.clear_env:
        raise ActionError("--env and --clear-env contradict each other: give one of them")
    if args.clear_env:
        return ()
    return None if args.env is None else parse_env(args.env)


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


def _current(store: Store | None) -> str:
    if store is None or not store.model_selected:
        return "none"
    selected = store.modelSelection.selection if store.modelSelection else None
    return selected or f"{CUSTOM} (serveArgs written by hand)"


def _form(catalog: Catalog, hardware: Hardware, settings: Settings) -> ActionResult:
    """``--list``: the Set Model form as data (every preset, fits or why not, default, current)."""
    fits = fit_catalog(catalog, hardware.machine())
    chosen = default_fit(fits)
    default_id = chosen.preset.id if chosen else CUSTOM
    custom_text: str | None = None
    env_names: list[str] = []
    try:
        store = read_store(settings.store_path)
        current = _current(store)
        if store is not None:
            custom_text = store.modelSelection.customArgs if store.modelSelection else None
            env_names = [var.name for var in store.serveEnv]
    except StoreError as exc:
        current = f"unknown: {exc.problem}"
    how = "stated with --tier/--memory-gb" if hardware.source == "given" else "detected"
    machine = f"{hardware.machine().describe()} ({how})"
    notes = "; ".join(filter(None, (hardware.reason, *hardware.notes))) or None
    presets = [
        member(fit.preset.name, single(fit.preset.id), f"{fit.status}: {fit.reason}")
        for fit in fits
    ]
    presets.append(member("Custom", single(CUSTOM), "always available: any `vllm serve` arguments"))
    result = group(
        member("Hardware", single(machine), notes),
        member("Default", single(default_id)),
        member("Current selection", single(current)),
        member("Custom arguments", single(custom_text or ""), "pre-fills the Custom form"),
        member("Environment", single(", ".join(env_names) or "none"), "names only"),
        member("Presets", group(*presets)),
    )
    width = max(len(fit.preset.id) for fit in fits) + 2
    lines = [f"Hardware: {machine}"]
    lines += [f"  {note}" for note in filter(None, (hardware.reason, *hardware.notes))]
    lines += [f"Current selection: {current}", f"Default: {default_id}", ""]
    for fit in fits:
        mark = (
            "no"
            if not fit.fits
            else "fits" + f" x{fit.tensor_parallel_size}" * (fit.tensor_parallel_size > 1)
        )
        lines.append(f"  {fit.preset.id:<{width}}{mark:<9}{fit.preset.name}: {fit.reason}")
    lines.append(f"  {CUSTOM:<{width}}{'fits':<9}Custom: any `vllm serve` arguments (--custom)")
    message = f"Default: {default_id}. Current selection: {current}."
    return ActionResult("Set Model", message, result, text="\n".join(lines))


def set_model(args: argparse.Namespace, settings: Settings) -> ActionResult:
    """Run the action for the parsed ``args``: list, or write the choice to ``store.json``."""
    given = [args.preset is not None, args.custom is not None, bool(args.list)]
    if sum(given) != 1:
        raise ActionError(
            "give exactly one of --preset ID, --custom ARGS or --list "
            "(run set-model --list to see the presets)"
        )
    if args.list:
        return _form(load_catalog(), hardware_for(args, settings), settings)
    env = _env_changes(args)

    details: list[dict[str, Any]] = []
    if args.preset is not None:
        catalog = load_catalog()
        if catalog.get(args.preset) is None:
            raise _unknown_preset(args.preset, catalog)
        hardware = hardware_for(args, settings)
        fits = fit_catalog(catalog, hardware.machine())
        fit = next(f for f in fits if f.preset.id == args.preset)
        if not fit.fits:
            raise _refusal(fit, fits, hardware)
        serve_args = list(fit.serve_args())
        selection, custom_text, title = fit.preset.id, None, fit.preset.name
        details.append(member("Hardware", single(hardware.machine().describe()), fit.reason))
    else:
        serve_args = parse_custom(args.custom)
        selection, custom_text, title = CUSTOM, args.custom, "custom arguments"

    path = settings.store_path
    _, model_selection, aside = _read_current(path, args.force)
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
        member("Arguments", single(join_args(serve_args), copyable=True)),
        member("Environment", single(", ".join(names) or "none"), "names only; values stay secret"),
        *details,
    )
    return ActionResult("Model set", message, result)
