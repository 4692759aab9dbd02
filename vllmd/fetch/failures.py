"""Why a fetch failed, from huggingface_hub's public exceptions: a kind and what to do.

The advice is the crash forensics' own (:func:`vllmd.core.fetchstate.advice`), so a person reads
the same sentence whether vLLM or the fetch met the gated model.
"""

from __future__ import annotations

import errno

import httpx2
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from vllmd.core.fetchstate import ErrorKind, advice

__all__ = ["classify"]

MAX_DETAIL = 300
_NETWORK_ADVICE = (
    "Check the server's internet connection, and HF_ENDPOINT or the proxy variables in Set Model "
    "if you set them; the next try resumes where this one stopped."
)


def _detail(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= MAX_DETAIL else text[: MAX_DETAIL - 1] + "…"


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def _kind(exc: BaseException) -> tuple[ErrorKind, str]:
    """The kind of failure and what went wrong, in words, for ``exc``."""
    if isinstance(exc, GatedRepoError):
        return "gated", ""
    if isinstance(exc, RevisionNotFoundError):
        return "not-found", "the revision asked for does not exist."
    if isinstance(exc, RepositoryNotFoundError):
        return "not-found", ""
    if isinstance(exc, LocalEntryNotFoundError | httpx2.TransportError | TimeoutError):
        return "network", f"the hub could not be reached ({_detail(exc)})."
    if isinstance(exc, EntryNotFoundError):
        return "not-found", f"a file the plan names is not on the hub ({_detail(exc)})."
    if isinstance(exc, OfflineModeIsEnabled):
        return "other", "HF_HUB_OFFLINE is set in Set Model's environment: nothing can be fetched."
    if isinstance(exc, HfHubHTTPError):
        status = _status(exc)
        if status == 401:
            return "unauthorized", ""
        if status == 403:
            return "gated", ""
        if status is not None and (status >= 500 or status in (408, 429)):
            return "network", f"the hub answered {status}."
        return "other", f"the hub answered: {_detail(exc)}"
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return "disk-full", ""
    if isinstance(exc, OSError) and "Consistency check failed" in str(exc):
        return "network", "a download ended short."
    return "other", _detail(exc)


def classify(exc: BaseException, repo_id: str) -> tuple[ErrorKind, str]:
    """The kind of ``exc`` and one message for a person: what, for which model, what to do."""
    kind, what = _kind(exc)
    cause = advice(kind, _status(exc))
    if cause is not None and not what:
        return kind, f"Cannot fetch {repo_id}: {cause.cause} {cause.advice}"
    if kind == "network":
        return kind, f"Cannot fetch {repo_id}: {what} {_NETWORK_ADVICE}"
    if cause is not None:
        return kind, f"Cannot fetch {repo_id}: {what} {cause.advice}"
    return kind, f"Cannot fetch {repo_id}: {what}"
