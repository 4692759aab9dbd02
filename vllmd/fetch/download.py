"""One planned file into the cache, resuming what an earlier run left.

huggingface_hub 2.x writes each download to a temporary file unique to the process and deletes
it on failure (huggingface_hub PR #4228), so a fetch killed at 90 % of a 20 GB file would start
over. For plain HTTP the worker keeps its own partial file (``blobs/<etag>.incomplete``) and hands
its size to huggingface_hub's ``http_get(resume_size=...)``, which asks for the rest with
``Range`` (and starts over cleanly when a server ignores it); the complete blob is then renamed
into place and ``hf_hub_download`` links it into the snapshot and records the branch, exactly as
for its own downloads. A file the hub serves through Xet goes to ``hf_hub_download`` whole: hf-xet
fetches by content-addressed chunks and keeps its own chunk cache.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit

from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url
from huggingface_hub.file_download import http_get
from huggingface_hub.utils import build_hf_headers

from vllmd.core.errors import VllmdError
from vllmd.fetch.cache import Planned, blob_path, partial_path
from vllmd.state.fetched import snapshot_path

__all__ = ["CommitMoved", "fetch_file"]


class CommitMoved(VllmdError):
    """Raised when the branch moved to another commit between the plan and the download."""


def _origin(url: str) -> tuple[str, str | None, int | None]:
    parts = urlsplit(url)
    return parts.scheme, parts.hostname, parts.port


def _download_blob(models_dir: Path, planned: Planned, url: str) -> None:
    """Fetch the content of ``planned`` over HTTP into its blob, resuming a partial file."""
    blob = blob_path(models_dir, planned)
    if blob.exists():
        return
    blob.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_path(models_dir, planned)
    first = hf_hub_url(planned.file.repo_id, planned.file.path, revision=planned.file.commit)
    headers = build_hf_headers()
    if _origin(url) != _origin(first):
        headers.pop("authorization", None)  # a CDN's signed URL: the token stays with the hub
    with partial.open("ab") as out:
        if out.tell() > planned.file.size:
            out.truncate(0)  # not a prefix of this file: start over
        http_get(
            url,
            out,
            resume_size=out.tell(),
            headers=headers,
            expected_size=planned.file.size,
            displayed_filename=planned.file.path,
        )
        out.flush()
        os.fsync(out.fileno())
    os.replace(partial, blob)


def fetch_file(models_dir: Path, planned: Planned) -> None:
    """Put ``planned`` into the cache, linked from its snapshot, with the branch recorded.

    Raises huggingface_hub's errors, ``OSError`` (``ENOSPC`` included) and :class:`CommitMoved`.
    """
    f = planned.file
    meta = get_hf_file_metadata(hf_hub_url(f.repo_id, f.path, revision=f.commit))
    if meta.etag and meta.etag != planned.etag:
        planned = replace(planned, etag=meta.etag)  # the blob name huggingface_hub will look for
    if meta.xet_file_data is None:
        _download_blob(models_dir, planned, meta.location)
    # With the blob in place this only links it; a Xet file is downloaded here.
    path = hf_hub_download(
        f.repo_id, f.path, revision=planned.target.revision, cache_dir=models_dir
    )
    if Path(path) != snapshot_path(models_dir, f.repo_id, f.commit, f.path):
        raise CommitMoved(
            f"{f.repo_id} changed on the hub while it was fetched.", "The next try fetches it anew."
        )
