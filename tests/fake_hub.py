"""A real HTTP server on 127.0.0.1 that serves a local folder of model repos the way the Hugging Face
Hub does, for huggingface_hub's `HfApi.model_info` and `hf_hub_download` (plain HTTP, never Xet).

What huggingface_hub 2.4 asks of it:
- `GET /api/models/{org}/{name}[/revision/{rev}]?blobs=true`: repo info with the commit `sha` and
  `siblings` (`rfilename`, `size`, `blobId`, `lfs: {size, sha256, pointerSize}`).
- `HEAD /{org}/{name}/resolve/{rev}/{path}`: `X-Repo-Commit` and `ETag` (a git blob id for a regular
  file); an LFS file answers 302 to the CDN with `X-Linked-Etag` (its sha256) and `X-Linked-Size`.
  The CDN is a second port, so huggingface_hub treats it as another host and stops there, as it does
  for the real Hub's CDN.
- `GET` of the same URL, or of the CDN's `/cdn/{sha256}`, honouring `Range: bytes=N-` with a 206.
- Errors carry `X-Error-Code`: `RepoNotFound`, `RevisionNotFound`, `EntryNotFound`, `GatedRepo`.
No response mentions Xet (`X-Xet-Hash`, a `xet-auth` link), so downloads stay on plain HTTP.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

log = logging.getLogger(__name__)

# Stored in LFS on the real Hub (by .gitattributes); everything else is a plain git blob.
LFS_SUFFIXES = (".safetensors", ".gguf", ".bin", ".pt", ".pth", ".onnx", ".msgpack", ".h5")
LFS_MIN_SIZE = 10 * 1024 * 1024


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    status: int | None = None  # what the fake Hub answered

    @property
    def range(self) -> str | None:
        return self.headers.get("range")


@dataclass(frozen=True)
class FileEntry:
    path: str  # relative to the repo root, with forward slashes
    local: Path
    size: int
    sha256: str
    git_oid: str  # the blob id git gives the file itself, or its LFS pointer
    lfs: bool
    pointer_size: int


@dataclass(frozen=True)
class RepoState:
    repo_id: str
    commit: str
    files: dict[str, FileEntry]


def git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


class FakeHub:
    """Serves `root/{org}/{name}/...` as Hub repos, each at one commit derived from its content.

    Use it as a context manager; `endpoint` is what huggingface_hub takes as `endpoint=`.
    """

    chunk_size = 16 * 1024

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.requests: list[RecordedRequest] = []
        self.chunk_delay = 0.0  # seconds between body chunks: makes progress observable
        self._refs: dict[str, set[str]] = {}
        self._gated: set[str] = set()
        self._drops: dict[str, int] = {}  # sha256 -> bytes to send before dropping the connection
        self._corrupt: set[str] = set()
        self._lock = threading.Lock()
        self._entries: dict[tuple[Path, int, int], FileEntry] = {}
        self._servers: list[ThreadingHTTPServer] = []

    # --- setting up repos ---

    def add_repo(self, repo_id: str, files: Path | Mapping[str, bytes]) -> str:
        """Copy a directory, or write name -> bytes, as a repo; returns its commit."""
        folder = self.root / repo_id
        if isinstance(files, Path):
            shutil.copytree(files, folder, dirs_exist_ok=True)
        else:
            for name, data in files.items():
                (folder / name).parent.mkdir(parents=True, exist_ok=True)
                (folder / name).write_bytes(data)
        return self.state(repo_id).commit

    def add_ref(self, repo_id: str, name: str) -> None:
        """A branch or tag name that points at the repo's commit, besides `main`."""
        self._refs.setdefault(repo_id, set()).add(name)

    def gate(self, repo_id: str) -> None:
        """Files answer 401 without a token and 403 with one, as for a gated repo not yet accepted."""
        self._gated.add(repo_id)

    def drop_once(self, repo_id: str, filename: str, after_bytes: int) -> None:
        """The next GET of this file sends `after_bytes` of the body, then drops the connection."""
        self._drops[self.state(repo_id).files[filename].sha256] = after_bytes

    def corrupt_once(self, repo_id: str, filename: str) -> None:
        """The next GET of this file sends the right length with its first byte changed."""
        self._corrupt.add(self.state(repo_id).files[filename].sha256)

    # --- what the tests look at ---

    @property
    def endpoint(self) -> str:
        return self._url(0)

    @property
    def cdn(self) -> str:
        return self._url(1)

    def file_gets(self) -> list[RecordedRequest]:
        """The GETs that fetched file bodies (from the resolve URL or the CDN), not redirects."""
        with self._lock:
            gets = [r for r in self.requests if r.method == "GET" and r.status in (200, 206)]
        return [r for r in gets if "/resolve/" in r.path or r.path.startswith("/cdn/")]

    def clear_requests(self) -> None:
        with self._lock:
            self.requests.clear()

    # --- lifecycle ---

    def __enter__(self) -> FakeHub:
        for _ in range(2):  # the Hub, then its CDN
            server = _Server(("127.0.0.1", 0), _Handler)
            server.hub = self
            # A short poll interval: shutdown() waits up to one interval.
            serve = lambda server=server: server.serve_forever(poll_interval=0.02)  # noqa: E731
            threading.Thread(target=serve, name="fake-hub", daemon=True).start()
            self._servers.append(server)
        return self

    def __exit__(self, *exc: object) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
        self._servers.clear()

    def _url(self, index: int) -> str:
        host, port = self._servers[index].server_address[:2]
        return f"http://{host}:{port}"

    # --- repo state, computed from the folder on each request ---

    def state(self, repo_id: str) -> RepoState:
        folder = self.root / repo_id
        if repo_id.count("/") != 1 or not folder.is_dir():
            raise KeyError(repo_id)
        files = {}
        for local in sorted(p for p in folder.rglob("*") if p.is_file()):
            entry = self._entry(local, local.relative_to(folder).as_posix())
            files[entry.path] = entry
        listing = "".join(f"{e.path}\0{e.sha256}\n" for e in files.values())
        return RepoState(repo_id, hashlib.sha1(listing.encode()).hexdigest(), files)

    def _entry(self, local: Path, path: str) -> FileEntry:
        """Real digests of the file, hashed once per (size, mtime)."""
        stat = local.stat()
        key = (local, stat.st_size, stat.st_mtime_ns)
        with self._lock:
            cached = self._entries.get(key)
        if cached is not None and cached.path == path:
            return cached
        data = local.read_bytes()
        sha256 = hashlib.sha256(data).hexdigest()
        lfs = path.endswith(LFS_SUFFIXES) or stat.st_size >= LFS_MIN_SIZE
        pointer = lfs_pointer(sha256, stat.st_size)
        entry = FileEntry(
            path=path,
            local=local,
            size=stat.st_size,
            sha256=sha256,
            git_oid=git_blob_oid(pointer if lfs else data),
            lfs=lfs,
            pointer_size=len(pointer),
        )
        with self._lock:
            self._entries[key] = entry
        return entry

    def resolve_revision(self, repo_id: str, revision: str) -> RepoState | None:
        state = self.state(repo_id)
        if revision in {"main", state.commit} | self._refs.get(repo_id, set()):
            return state
        return None

    def is_gated(self, repo_id: str) -> bool:
        return repo_id in self._gated

    def find_blob(self, sha256: str) -> FileEntry | None:
        for folder in self.root.glob("*/*"):
            if folder.is_dir():
                for entry in self.state(f"{folder.parent.name}/{folder.name}").files.values():
                    if entry.sha256 == sha256:
                        return entry
        return None

    def take_drop(self, sha256: str) -> int | None:
        with self._lock:
            return self._drops.pop(sha256, None)

    def take_corrupt(self, sha256: str) -> bool:
        with self._lock:
            found = sha256 in self._corrupt
            self._corrupt.discard(sha256)
            return found

    def record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    hub: FakeHub


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as huggingface_hub's pooled client expects
    server: _Server
    timeout = 10  # idle keep-alive connections end, so threads do not linger

    def do_GET(self) -> None:
        self._handle(body=True)

    def do_HEAD(self) -> None:
        self._handle(body=False)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("fake hub: " + format, *args)

    # --- routing ---

    def _handle(self, *, body: bool) -> None:
        url = urlsplit(self.path)
        self._status: int | None = None
        parts = [unquote(p) for p in url.path.strip("/").split("/")]
        try:
            if parts[:2] == ["api", "models"] and len(parts) in (4, 6):
                self._model_info(parts, parse_qs(url.query), body=body)
            elif len(parts) >= 5 and parts[2] == "resolve":
                self._resolve(f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]), body=body)
            elif len(parts) == 2 and parts[0] == "cdn":
                self._cdn(parts[1], body=body)
            else:
                self._error(404, None, "Not found", body=body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            if self._status is None:  # no response was begun
                self._record(None)

    def send_response(self, code: int, message: str | None = None) -> None:
        # Recorded before the body goes out: the client may act on the last byte before this
        # thread runs again, and a test asserting on requests must already see this one.
        self._status = code
        self._record(code)
        super().send_response(code, message)

    def _record(self, status: int | None) -> None:
        url = urlsplit(self.path)
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.server.hub.record(RecordedRequest(self.command, url.path, parse_qs(url.query), headers, status))

    def _model_info(self, parts: list[str], query: dict[str, list[str]], *, body: bool) -> None:
        repo_id = f"{parts[2]}/{parts[3]}"
        revision = parts[5] if len(parts) == 6 else "main"
        if len(parts) == 6 and parts[4] != "revision":
            return self._error(404, None, "Not found", body=body)
        try:
            state = self.server.hub.resolve_revision(repo_id, revision)
        except KeyError:
            return self._error(404, "RepoNotFound", f"Repository not found: {repo_id}", body=body)
        if state is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}", body=body)
        blobs = query.get("blobs", ["false"])[0].lower() == "true"
        info = {
            "_id": state.commit[:24],
            "id": repo_id,
            "modelId": repo_id,
            "author": repo_id.split("/")[0],
            "sha": state.commit,
            "lastModified": "2025-01-01T00:00:00.000Z",
            "private": False,
            "gated": "manual" if self.server.hub.is_gated(repo_id) else False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": [_sibling(e, blobs=blobs) for e in state.files.values()],
        }
        self._send(200, {"Content-Type": "application/json"}, json.dumps(info).encode(), body=body)

    def _resolve(self, repo_id: str, revision: str, path: str, *, body: bool) -> None:
        hub = self.server.hub
        try:
            state = hub.resolve_revision(repo_id, revision)
        except KeyError:
            return self._error(404, "RepoNotFound", f"Repository not found: {repo_id}", body=body)
        if state is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}", body=body)
        if hub.is_gated(repo_id):
            status = 403 if "authorization" in {k.lower() for k in self.headers} else 401
            message = f"Access to model {repo_id} is restricted. You must have access to it."
            return self._error(status, "GatedRepo", message, body=body)
        entry = state.files.get(path)
        commit = {"X-Repo-Commit": state.commit}
        if entry is None:
            return self._error(404, "EntryNotFound", f"{path} does not exist", body=body, extra=commit)
        if entry.lfs:
            headers = {
                **commit,
                "ETag": f'"{entry.git_oid}"',
                "X-Linked-Etag": f'"{entry.sha256}"',
                "X-Linked-Size": str(entry.size),
                "Location": f"{hub.cdn}/cdn/{entry.sha256}",
            }
            return self._send(302, headers, b"", body=body)
        self._file(entry, {**commit, "ETag": f'"{entry.git_oid}"'}, body=body)

    def _cdn(self, sha256: str, *, body: bool) -> None:
        entry = self.server.hub.find_blob(sha256)
        if entry is None:
            return self._error(404, None, "No such blob", body=body)
        self._file(entry, {"ETag": f'"{sha256}"'}, body=body)

    # --- responses ---

    def _file(self, entry: FileEntry, headers: dict[str, str], *, body: bool) -> None:
        start = _range_start(self.headers.get("Range"))
        if start is not None and start >= entry.size:
            range_headers = {"Content-Range": f"bytes */{entry.size}"}
            return self._send(416, range_headers, b"", body=body)
        status = 200 if start is None else 206
        start = start or 0
        headers = {**headers, "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{entry.size - 1}/{entry.size}"
        self.send_response(status)
        for name, value in {**headers, "Content-Length": str(entry.size - start)}.items():
            self.send_header(name, value)
        self.end_headers()
        if not body:
            return
        drop_after = self.server.hub.take_drop(entry.sha256)
        corrupt = self.server.hub.take_corrupt(entry.sha256)
        with open(entry.local, "rb") as source:
            source.seek(start)
            self._stream(source, entry.size - start, drop_after, corrupt)

    def _stream(self, source: Any, length: int, drop_after: int | None, corrupt: bool) -> None:
        sent = 0
        while sent < length:
            if drop_after is not None and sent >= drop_after:
                self._drop()
                return
            want = self.server.hub.chunk_size
            if drop_after is not None:
                want = min(want, drop_after - sent)
            chunk = source.read(min(want, length - sent))
            if corrupt and sent == 0 and chunk:
                chunk = bytes([chunk[0] ^ 0xFF]) + chunk[1:]
            self.wfile.write(chunk)
            self.wfile.flush()
            sent += len(chunk)
            if self.server.hub.chunk_delay:
                time.sleep(self.server.hub.chunk_delay)

    def _drop(self) -> None:
        log.info("fake hub: dropping the connection mid-body")
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)

    def _error(
        self, status: int, code: str | None, message: str, *, body: bool, extra: dict[str, str] | None = None
    ) -> None:
        headers = {"Content-Type": "application/json", "X-Error-Message": message, **(extra or {})}
        if code:
            headers["X-Error-Code"] = code
        self._send(status, headers, json.dumps({"error": message}).encode(), body=body)

    def _send(self, status: int, headers: dict[str, str], payload: bytes, *, body: bool) -> None:
        self.send_response(status)
        for name, value in {**headers, "Content-Length": str(len(payload))}.items():
            self.send_header(name, value)
        self.end_headers()
        if body:
            self.wfile.write(payload)


def _sibling(entry: FileEntry, *, blobs: bool) -> dict[str, Any]:
    if not blobs:
        return {"rfilename": entry.path}
    sibling: dict[str, Any] = {"rfilename": entry.path, "size": entry.size, "blobId": entry.git_oid}
    if entry.lfs:
        sibling["lfs"] = {"size": entry.size, "sha256": entry.sha256, "pointerSize": entry.pointer_size}
    return sibling


def _range_start(header: str | None) -> int | None:
    """The N of `bytes=N-` (all huggingface_hub sends when resuming); other forms are served whole."""
    if not header or not header.startswith("bytes="):
        return None
    first, _, last = header.removeprefix("bytes=").partition("-")
    if not first.isdigit() or last:
        return None
    return int(first)
