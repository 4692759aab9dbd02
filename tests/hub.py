"""A small HuggingFace-compatible hub on 127.0.0.1, serving repositories from a folder.

What ``huggingface_hub`` (2.x, the version in vLLM 0.32's images) calls, answered the way
huggingface.co answers it:

- ``GET /api/models/ORG/NAME[/revision/REV]``: the model info, ``sha`` and ``siblings``; with
  ``blobs=true`` (``files_metadata=True``) each sibling's ``size``, ``blobId`` and ``lfs``.
- ``GET /api/models/ORG/NAME/tree/REV[/PATH][?recursive=true]`` and ``POST .../paths-info/REV``:
  the listings ``list_repo_tree``, ``list_repo_files`` and ``HfFileSystem`` read.
- ``HEAD``/``GET /ORG/NAME/resolve/REV/PATH``: ``X-Repo-Commit``, ``ETag`` (the git blob id, or
  for a large file the sha256 that ``X-Linked-Etag`` and ``X-Linked-Size`` also carry, as for LFS
  files), ``Content-Length``, ``Accept-Ranges``; ``Range: bytes=N-`` answers 206 with
  ``Content-Range``.
- Errors carry the ``X-Error-Code`` huggingface_hub turns into its exceptions: ``RepoNotFound``,
  ``RevisionNotFound``, ``EntryNotFound``, ``GatedRepo`` (401 without a token, 403 with the
  wrong one); a bad token is 401 ``Invalid credentials in Authorization header``.

A repository is a folder ``ROOT/ORG/NAME`` (its files, subfolders included); its one commit, the
``main`` branch, is a hash of its file names and contents, so changing a file makes a new commit.
Knobs, settable while it serves: :attr:`Hub.rate_bps` (bytes per second per download),
:meth:`Hub.drop_once` (close the connection after N bytes of a file, once), :meth:`Hub.gate`
(a repository that needs a token), :meth:`Hub.refuse` (a fixed error for a repository), and
:attr:`Hub.log`, every request it answered. Run as a program (``python tests/hub.py ROOT``), it
serves until interrupted, for benchmarks and people.

It serves with the standard library's threading HTTP server: one thread per connection makes
throttling a plain sleep and dropping a connection a plain close.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import re
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

LFS_MIN_BYTES = 10 * 1024
"""Files at least this large are served as LFS files (sha256 ETag, ``X-Linked-*`` headers); the
hub makes any file over 10 MB one, and every weight file is one."""
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".model", ".tiktoken")
CHUNK = 64 * 1024

_REPO = r"(?P<repo>[\w.-]+/[\w.-]+)"
_API = re.compile(rf"/api/models/{_REPO}(?:/revision/(?P<rev>[^/]+))?")
_TREE = re.compile(rf"/api/models/{_REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.+))?")
_PATHS_INFO = re.compile(rf"/api/models/{_REPO}/paths-info/(?P<rev>[^/]+)")
_RESOLVE = re.compile(rf"/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)")
_CDN = re.compile(rf"/_cdn/{_REPO}/(?P<path>.+)")
_RANGE = re.compile(r"bytes=(\d+)-(\d*)")


@dataclass(frozen=True)
class Request:
    """One request the hub answered."""

    method: str
    path: str
    status: int
    range: str | None
    token: str | None
    sent: int  # body bytes written


@dataclass(frozen=True)
class Refusal:
    """A fixed error answer: status, ``X-Error-Code`` and ``X-Error-Message``."""

    status: int
    code: str | None
    message: str


NOT_FOUND = Refusal(404, "RepoNotFound", "Repository not found")
BAD_TOKEN = Refusal(401, None, "Invalid credentials in Authorization header")
GATED_NO_TOKEN = Refusal(
    401,
    "GatedRepo",
    "Access to model is restricted. You must have access to it and be authenticated to access it.",
)
GATED_FORBIDDEN = Refusal(
    403, "GatedRepo", "Access to model is restricted and you are not in the authorized list."
)
SERVER_ERROR = Refusal(503, None, "Service unavailable")


@dataclass(frozen=True)
class _File:
    path: str
    size: int
    blob_id: str
    sha256: str | None  # LFS files only

    @property
    def etag(self) -> str:
        return self.sha256 or self.blob_id


@dataclass
class Hub:
    """The hub's state: where the repositories are, the knobs, the log. See the module docstring."""

    root: Path
    rate_bps: float | None = None
    cdn: bool = False
    """Redirect LFS files to another origin (``localhost`` instead of ``127.0.0.1``), as the real
    hub sends them to its CDN: ``302`` with ``X-Linked-Etag``/``X-Linked-Size``/``X-Repo-Commit``;
    a client must not send its token there."""
    log: list[Request] = field(default_factory=list)
    port: int = 0
    _drops: dict[tuple[str, str], int] = field(default_factory=dict)
    _gates: dict[str, str] = field(default_factory=dict)
    _refusals: dict[str, Refusal] = field(default_factory=dict)
    _hashes: dict[tuple[Path, int, int], tuple[str, str | None]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        """The URL to put in ``HF_ENDPOINT``."""
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """The environment that points huggingface_hub here (add ``HF_HOME`` to keep a token
        saved on this machine out of it)."""
        return {
            "HF_ENDPOINT": self.endpoint,
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_ETAG_TIMEOUT": "10",
            "HF_HUB_DOWNLOAD_TIMEOUT": "10",
        }

    def add_repo(self, repo_id: str, files: Mapping[str, bytes]) -> Path:
        """Create (or replace) the repository ``repo_id`` holding ``files``; return its folder."""
        folder = self.root / repo_id
        for path, data in files.items():
            target = folder / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        return folder

    def drop_once(self, repo_id: str, path: str, after_bytes: int) -> None:
        """Close the connection after ``after_bytes`` of the next download of ``path``."""
        with self._lock:
            self._drops[(repo_id, path)] = after_bytes

    def gate(self, repo_id: str, token: str) -> None:
        """Make ``repo_id`` gated: 401 without a token, 403 with another, served with ``token``."""
        self._gates[repo_id] = token

    def refuse(self, repo_id: str, refusal: Refusal | None) -> None:
        """Answer every request about ``repo_id`` with ``refusal`` (``None``: serve it again)."""
        if refusal is None:
            self._refusals.pop(repo_id, None)
        else:
            self._refusals[repo_id] = refusal

    def downloads(self, path: str | None = None) -> list[Request]:
        """GET requests for file bytes, at ``resolve`` or CDN URLs (of ``path`` when given)."""
        return [
            r
            for r in list(self.log)
            if r.method == "GET"
            and ("/resolve/" in r.path or r.path.startswith("/_cdn/"))
            and (path is None or r.path.endswith("/" + path))
        ]

    # -- the repository folder ---------------------------------------------------------------

    def _repo_files(self, repo_id: str) -> list[_File] | None:
        folder = self.root / repo_id
        if not folder.is_dir():
            return None
        files = []
        for item in sorted(folder.rglob("*")):
            if item.is_file():
                files.append(self._file(folder, item))
        return files

    def _file(self, folder: Path, item: Path) -> _File:
        st = item.stat()
        key = (item, st.st_size, st.st_mtime_ns)
        with self._lock:
            known = self._hashes.get(key)
        if known is None:
            data = item.read_bytes()
            blob_id = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
            lfs = st.st_size >= LFS_MIN_BYTES or item.name.endswith(LFS_SUFFIXES)
            known = (blob_id, hashlib.sha256(data).hexdigest() if lfs else None)
            with self._lock:
                self._hashes[key] = known
        return _File(item.relative_to(folder).as_posix(), st.st_size, known[0], known[1])

    @staticmethod
    def commit_of(files: list[_File]) -> str:
        """The repository's commit: a hash of its paths and blob ids."""
        digest = hashlib.sha1()
        for f in files:
            digest.update(f"{f.path}\0{f.blob_id}\n".encode())
        return digest.hexdigest()

    def commit(self, repo_id: str) -> str:
        """The current commit of ``repo_id`` (its ``main``)."""
        files = self._repo_files(repo_id)
        assert files is not None, repo_id
        return self.commit_of(files)

    # -- serving -----------------------------------------------------------------------------

    def start(self) -> None:
        """Serve on a free port of 127.0.0.1 in a thread."""
        hub = self

        class Handler(_Handler):
            pass

        Handler.hub = hub
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the listening socket."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)


class _Handler(BaseHTTPRequestHandler):
    hub: Hub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass  # the hub keeps its own log

    # -- helpers -----------------------------------------------------------------------------

    def _token(self) -> str | None:
        auth = self.headers.get("Authorization", "")
        return auth[7:] if auth.startswith("Bearer ") else None

    def _record(self, status: int, sent: int) -> None:
        with self.hub._lock:
            self.hub.log.append(
                Request(
                    self.command, self.path, status, self.headers.get("Range"), self._token(), sent
                )
            )

    def _send(
        self, status: int, body: bytes = b"", headers: Mapping[str, str] | None = None
    ) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self._record(status, 0 if self.command == "HEAD" else len(body))

    def _json(self, value: object, headers: Mapping[str, str] | None = None) -> None:
        body = json.dumps(value).encode()
        self._send(200, body, {"Content-Type": "application/json", **(headers or {})})

    def _error(self, refusal: Refusal, commit: str | None = None) -> None:
        headers = {"Content-Type": "application/json", "X-Error-Message": refusal.message}
        if refusal.code:
            headers["X-Error-Code"] = refusal.code
        if commit:
            headers["X-Repo-Commit"] = commit
        self._send(refusal.status, json.dumps({"error": refusal.message}).encode(), headers)

    def _repo(self, repo_id: str, rev: str | None) -> tuple[list[_File], str] | None:
        """The files and commit of ``repo_id`` at ``rev``, or None after answering an error."""
        refusal = self.hub._refusals.get(repo_id)
        gate = self.hub._gates.get(repo_id)
        token = self._token()
        if refusal is None and gate is not None and token != gate:
            refusal = GATED_NO_TOKEN if token is None else GATED_FORBIDDEN
        files = self.hub._repo_files(repo_id)
        if refusal is None and files is None:
            refusal = NOT_FOUND
        if refusal is not None:
            self._error(refusal)
            return None
        assert files is not None
        commit = Hub.commit_of(files)
        if rev is not None and unquote(rev) not in ("main", commit):
            self._error(Refusal(404, "RevisionNotFound", f"Invalid rev id: {unquote(rev)}"))
            return None
        return files, commit

    # -- endpoints ---------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode()
        url = urlsplit(self.path)
        match = _PATHS_INFO.fullmatch(url.path)
        if match is None:
            self._error(Refusal(404, None, "Not found"))
            return
        found = self._repo(match["repo"], match["rev"])
        if found is None:
            return
        wanted = set(parse_qs(body).get("paths", []))
        if self.headers.get("Content-Type", "").startswith("application/json"):
            wanted = set(json.loads(body or "{}").get("paths", []))
        files, _ = found
        self._json([_entry(f) for f in files if f.path in wanted])

    def _dispatch(self) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        if match := _TREE.fullmatch(url.path):
            self._tree(match, query)
        elif match := _API.fullmatch(url.path):
            self._info(match, query)
        elif match := _RESOLVE.fullmatch(url.path):
            self._resolve(match)
        elif match := _CDN.fullmatch(url.path):
            self._cdn(match)
        else:
            self._error(Refusal(404, None, "Not found"))

    def _info(self, match: re.Match[str], query: dict[str, list[str]]) -> None:
        found = self._repo(match["repo"], match["rev"])
        if found is None:
            return
        files, commit = found
        blobs = query.get("blobs", ["false"])[0].lower() == "true"
        siblings: list[dict[str, object]] = []
        for f in files:
            sibling: dict[str, object] = {"rfilename": f.path}
            if blobs:
                sibling.update({"size": f.size, "blobId": f.blob_id})
                if f.sha256:
                    sibling["lfs"] = {"size": f.size, "sha256": f.sha256, "pointerSize": 134}
            siblings.append(sibling)
        self._json(
            {
                "_id": commit[:24],
                "id": match["repo"],
                "modelId": match["repo"],
                "sha": commit,
                "private": False,
                "gated": match["repo"] in self.hub._gates and "manual",
                "disabled": False,
                "tags": [],
                "siblings": siblings,
                "lastModified": "2026-01-01T00:00:00.000Z",
                "createdAt": "2026-01-01T00:00:00.000Z",
            }
        )

    def _tree(self, match: re.Match[str], query: dict[str, list[str]]) -> None:
        found = self._repo(match["repo"], match["rev"])
        if found is None:
            return
        files, _ = found
        base = unquote(match["path"] or "").strip("/")
        recursive = query.get("recursive", ["false"])[0].lower() == "true"
        prefix = f"{base}/" if base else ""
        entries: list[dict[str, object]] = []
        folders: set[str] = set()
        for f in files:
            if not f.path.startswith(prefix):
                continue
            rest = f.path[len(prefix) :]
            if "/" in rest and not recursive:
                folders.add(prefix + rest.split("/", 1)[0])
                continue
            if recursive:
                parts = rest.split("/")[:-1]
                folders.update(prefix + "/".join(parts[: i + 1]) for i in range(len(parts)))
            entries.append(_entry(f))
        if base and not entries and not folders:
            self._error(Refusal(404, "EntryNotFound", f"{base} does not exist"))
            return
        dirs = [{"type": "directory", "oid": "0" * 40, "path": p} for p in sorted(folders)]
        self._json(dirs + entries)

    def _resolve(self, match: re.Match[str]) -> None:
        found = self._repo(match["repo"], match["rev"])
        if found is None:
            return
        files, commit = found
        path = unquote(match["path"])
        entry = next((f for f in files if f.path == path), None)
        if entry is None:
            self._error(Refusal(404, "EntryNotFound", f"{path} does not exist"), commit)
            return
        headers = {
            "X-Repo-Commit": commit,
            "ETag": f'"{entry.etag}"',
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        if entry.sha256:
            headers.update({"X-Linked-Etag": f'"{entry.sha256}"', "X-Linked-Size": str(entry.size)})
            if self.hub.cdn:
                location = f"http://localhost:{self.hub.port}/_cdn/{match['repo']}/{path}"
                self._send(302, b"", {**headers, "Location": location})
                return
        self._serve(match["repo"], entry, headers)

    def _cdn(self, match: re.Match[str]) -> None:
        path = unquote(match["path"])
        files = self.hub._repo_files(match["repo"]) or []
        entry = next((f for f in files if f.path == path), None)
        if entry is None:
            self._error(Refusal(404, None, "Not found"))
            return
        self._serve(match["repo"], entry, {"ETag": f'"{entry.etag}"', "Accept-Ranges": "bytes"})

    def _serve(self, repo_id: str, entry: _File, headers: dict[str, str]) -> None:
        """The bytes of ``entry`` (from a ``Range`` start: 206), throttled, maybe dropped."""
        start = 0
        wanted = _RANGE.fullmatch(self.headers.get("Range", "").strip())
        status = 200
        if wanted and int(wanted[1]) < entry.size:
            start, status = int(wanted[1]), 206
            headers["Content-Range"] = f"bytes {start}-{entry.size - 1}/{entry.size}"
        elif wanted:
            headers["Content-Range"] = f"bytes */{entry.size}"
            self._send(416, b"", headers)
            return
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(entry.size - start))
        self.end_headers()
        if self.command == "HEAD":
            self._record(status, 0)
            return
        path = entry.path
        sent = self._stream(self.hub.root / repo_id / path, start, (repo_id, path))
        self._record(status, sent)

    def _stream(self, source: Path, start: int, key: tuple[str, str]) -> int:
        with self.hub._lock:
            drop_after = self.hub._drops.pop(key, None)
        sent = 0
        began = time.monotonic()
        with source.open("rb") as f:
            f.seek(start)
            for chunk in iter(lambda: f.read(CHUNK), b""):
                if drop_after is not None and sent + len(chunk) >= drop_after:
                    chunk = chunk[: max(drop_after - sent, 0)]
                    with contextlib.suppress(OSError):
                        self.wfile.write(chunk)
                        self.wfile.flush()
                    sent += len(chunk)
                    self.close_connection = True
                    with contextlib.suppress(OSError):
                        self.connection.shutdown(socket.SHUT_RDWR)
                    return sent
                try:
                    self.wfile.write(chunk)
                except OSError:
                    self.close_connection = True
                    return sent  # the client went away (a cancelled fetch)
                sent += len(chunk)
                rate = self.hub.rate_bps
                if rate:
                    ahead = sent / rate - (time.monotonic() - began)
                    if ahead > 0:
                        time.sleep(ahead)
        return sent


def _entry(f: _File) -> dict[str, object]:
    entry: dict[str, object] = {"type": "file", "oid": f.blob_id, "size": f.size, "path": f.path}
    if f.sha256:
        entry["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": 134}
    return entry


@contextlib.contextmanager
def serving(root: Path, rate_bps: float | None = None) -> Iterator[Hub]:
    """A :class:`Hub` serving ``root`` for the duration of the ``with`` block."""
    hub = Hub(root, rate_bps=rate_bps)
    hub.start()
    try:
        yield hub
    finally:
        hub.stop()


def main() -> None:
    """Serve a folder of repositories until interrupted (``--rate`` in bytes per second)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--rate", type=float, default=None)
    options = parser.parse_args()
    hub = Hub(options.root, rate_bps=options.rate, port=options.port)
    hub.start()
    print(f"HF_ENDPOINT={hub.endpoint}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        threading.Event().wait()
    hub.stop()


if __name__ == "__main__":
    main()
