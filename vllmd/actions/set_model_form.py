"""The Set Model form: every preset on this hardware, whether it fits and why, the default and the
current selection, for people (``set-model --list``) and for the StartOS package (``--form``).

Both read ``store.json`` only to pre-fill (the current selection, the last custom text, the names
of the stored variables, never their values) and write nothing. An unreadable store still gives
the form: the selection is then unknown, and the reason is shown where a person reads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vllmd.actions.result import FORM_VERSION, ActionResult, Form, group, member, single
from vllmd.core.argsplit import shown_custom
from vllmd.core.fit import Fit, default_fit, fit_catalog
from vllmd.core.presets import CUSTOM, Catalog
from vllmd.hardware.tiers import Hardware
from vllmd.settings import Settings
from vllmd.state.store import Store, StoreError, read_store


@dataclass(frozen=True, slots=True)
class Current:
    """What ``store.json`` holds now, as far as the form needs it."""

    selection: str | None  # a preset id, "custom", or None when no model is selected
    label: str  # the selection as a person reads it, or why it is unknown
    custom_args: str
    env_names: tuple[str, ...]


def read_current(settings: Settings) -> Current:
    """The current selection; an unreadable store reads as none selected, with the reason."""
    try:
        store = read_store(settings.store_path)
    except StoreError as exc:
        return Current(None, f"unknown: {exc.problem}", "", ())
    return _current(store)


def _current(store: Store | None) -> Current:
    if store is None:
        return Current(None, "none", "", ())
    # Secret values (--hf-token) are shown as ***: set-model keeps the stored one for ***.
    custom = shown_custom((store.modelSelection.customArgs if store.modelSelection else None) or "")
    names = tuple(var.name for var in store.serveEnv)
    if not store.model_selected:
        return Current(None, "none", custom, names)
    chosen = store.modelSelection.selection if store.modelSelection else None
    if chosen:
        return Current(chosen, chosen, custom, names)
    return Current(CUSTOM, f"{CUSTOM} (serveArgs written by hand)", custom, names)


def _notes(hardware: Hardware) -> list[str]:
    return [note for note in (hardware.reason, *hardware.notes) if note]


def _whole(value: float) -> float | int:
    return int(value) if value == int(value) else value


def _preset_entry(fit: Fit) -> dict[str, Any]:
    return {
        "id": fit.preset.id,
        "name": fit.preset.name,
        "fits": fit.fits,
        "reason": fit.reason,
        "tensorParallelSize": fit.tensor_parallel_size if fit.fits else None,
        "maxModelLen": fit.max_model_len if fit.fits else None,
        "minMemoryGb": fit.build.min_memory_gb if fit.build is not None else None,
    }


def form_document(catalog: Catalog, hardware: Hardware, current: Current) -> Form:
    """``--form``: the JSON the StartOS package builds the Set Model form from."""
    fits = fit_catalog(catalog, hardware.machine())
    chosen = default_fit(fits)
    return Form(
        {
            "version": FORM_VERSION,
            "hardware": {
                "tier": hardware.tier,
                "budget_gb": _whole(hardware.budget_gb),
                "gpus": hardware.identical_gpus,
                "source": "stated" if hardware.source == "given" else "detected",
                "notes": _notes(hardware),
            },
            "default": chosen.preset.id if chosen else CUSTOM,
            "current": {
                "selection": current.selection,
                "customArgs": current.custom_args,
                "envNames": list(current.env_names),
            },
            "presets": [_preset_entry(fit) for fit in fits],
        }
    )


def list_result(catalog: Catalog, hardware: Hardware, current: Current) -> ActionResult:
    """``--list``: the same form as an action result, with a table for ``--text``."""
    fits = fit_catalog(catalog, hardware.machine())
    chosen = default_fit(fits)
    default_id = chosen.preset.id if chosen else CUSTOM
    how = "stated with --tier/--memory-gb" if hardware.source == "given" else "detected"
    machine = f"{hardware.machine().describe()} ({how})"
    notes = _notes(hardware)
    presets = [
        member(fit.preset.name, single(fit.preset.id), f"{fit.status}: {fit.reason}")
        for fit in fits
    ]
    presets.append(member("Custom", single(CUSTOM), "always available: any `vllm serve` arguments"))
    result = group(
        member("Hardware", single(machine), "; ".join(notes) or None),
        member("Default", single(default_id)),
        member("Current selection", single(current.label)),
        member("Custom arguments", single(current.custom_args), "pre-fills the Custom form"),
        member("Environment", single(", ".join(current.env_names) or "none"), "names only"),
        member("Presets", group(*presets)),
    )
    width = max(len(fit.preset.id) for fit in fits) + 2
    lines = [f"Hardware: {machine}", *(f"  {note}" for note in notes)]
    lines += [f"Current selection: {current.label}", f"Default: {default_id}", ""]
    for fit in fits:
        mark = (
            "no"
            if not fit.fits
            else "fits" + f" x{fit.tensor_parallel_size}" * (fit.tensor_parallel_size > 1)
        )
        lines.append(f"  {fit.preset.id:<{width}}{mark:<9}{fit.preset.name}: {fit.reason}")
    lines.append(f"  {CUSTOM:<{width}}{'fits':<9}Custom: any `vllm serve` arguments (--custom)")
    message = f"Default: {default_id}. Current selection: {current.label}."
    return ActionResult("Set Model", message, result, text="\n".join(lines))
