"""``vllmd action get-api-key``: the one place the API key is printed.

A missing or invalid ``credentials.json`` is dealt with exactly as the daemon does
(:func:`vllmd.state.credentials.ensure_key`): created, or moved aside and replaced, or taken over
from ``store.json`` where an earlier package kept it.
"""

from __future__ import annotations

from vllmd.actions.requests import GetApiKey
from vllmd.actions.result import ActionResult, single
from vllmd.settings import Settings
from vllmd.state.credentials import ensure_key

USE = (
    "Clients send it as a bearer token (Authorization: Bearer KEY) to the OpenAI-compatible API. "
    "Dependent services read it from credentials.json on the public volume."
)


def get_api_key(request: GetApiKey, settings: Settings) -> ActionResult:
    """The API key as a masked, copyable value; created first when missing or invalid."""
    state = ensure_key(settings.credentials_path, settings.store_path)
    message = USE
    replaced = "a new key was created"
    if state.adopted:
        replaced = (
            "the key an earlier version of this service kept in store.json was taken over, so "
            "dependents keep working"
        )
    if state.moved_aside is not None:
        message += (
            f" The key file held no valid key, so it was moved to {state.moved_aside.name} and "
            f"{replaced}."
        )
    elif state.adopted:
        message += f" There was no key file, so {replaced}."
    elif state.created:
        message += " There was no key yet, so a new one was created."
    return ActionResult("API Key", message, single(state.key, copyable=True, masked=True, qr=False))
