"""Ollama's `pull` for Hugging Face repos: choose the files heylook needs, download them through
huggingface_hub into the normal HF cache with Ollama-style progress, and name the ModelSource an alias
should hold.

huggingface_hub lists the repo and names the URLs, headers and cache layout; the transfer itself is
heylook's, because it must survive an interrupted pull (see _Fetcher). Every file is fetched at the
one commit the repo listing gave, and verified against the digest the Hub listed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock
from huggingface_hub import HfApi, constants, hf_hub_url, try_to_load_from_cache
from huggingface_hub.errors import (
    FileMetadataError,
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.file_download import repo_folder_name
from huggingface_hub.hf_api import ModelInfo
from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status, validate_repo_id

from heylook.errors import HeylookError, InvalidRequest
from heylook.registry.model_source import ModelSource

try:  # huggingface_hub 2.x talks through httpx2, 1.x through httpx
    import httpx2 as _http
except ImportError:  # pragma: no cover
    import httpx as _http  # type: ignore[no-redef]

log = logging.getLogger(__name__)

# model_info has no timeout of its own: a Hub that accepts and never answers would hang the pull.
API_TIMEOUT_S = 30.0
# Ollama clients redraw on every line; ten a second per file is smooth without flooding them.
PROGRESS_INTERVAL_S = 0.1
# Tries per file within one pull before a broken connection fails it (its partial file stays).
_ATTEMPTS = 5
_BLOCK_BYTES = 1 << 16
_PARTIAL_SUFFIX = ".heylook-partial"

_HF_PREFIX = re.compile(r"^(?:https?://)?(?:hf\.co|huggingface\.co)/", re.IGNORECASE)
_REVISION = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+/-]*")
_QUANT_DEFAULT = "Q4_K_M"
_QUANT_NAME = re.compile(r"(?:I?Q\d|[BF]F?16|F32)", re.IGNORECASE)
# Besides the weights, what transformers reads to build the model, its tokenizer and chat template.
_SUPPORT_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "spiece.model",
    "chat_template.jinja",
    "chat_template.json",
)
_SAFETENSORS_INDEX = "model.safetensors.index.json"


@dataclass(frozen=True)
class PullTarget:
    name: str  # the name exactly as the user gave it; becomes the alias
    repo_id: str  # "org/name"
    revision: str | None  # None means the default branch
    gguf_tag: str | None  # for GGUF repos: picks the file, e.g. "Q4_K_M"


@dataclass(frozen=True)
class PullProgress:
    """One line of Ollama's /api/pull NDJSON progress."""

    status: str
    digest: str | None = None
    total: int | None = None
    completed: int | None = None


class PullFailed(HeylookError):
    """A pull that could not finish; `status` says whose fault (4xx: the name or access, 5xx: the Hub)."""

    status = 502
    code = "pull_failed"

    def __init__(self, message: str, *, param: str | None = None, status: int | None = None) -> None:
        super().__init__(message, param=param, status=status)
        if self.status < 500:
            self.kind = "invalid_request_error"


def parse_pull_name(name: str) -> PullTarget:
    """Accepts "org/name", "org/name:revision", and Ollama's Hugging Face form
    "hf.co/org/name[:tag]" / "huggingface.co/org/name[:tag]". In the hf.co form the tag names a
    GGUF quantization when the repo holds GGUF files (resolved in pull_model), else a revision.
    Raises heylook.errors.InvalidRequest(param="model") on names that are not a repo id."""
    hf_form = _HF_PREFIX.match(name) is not None
    repo_id, colon, tag = _HF_PREFIX.sub("", name, count=1).partition(":")
    if not _is_repo_id(repo_id) or (colon and not _is_revision(tag)):
        raise InvalidRequest(
            f"{name!r} is not a Hugging Face repo id; pull 'org/name', 'org/name:revision' "
            "or 'hf.co/org/name:QUANT' (for a GGUF repo)",
            param="model",
        )
    # Ollama clients add ":latest" to bare names; it means the default branch or quantization.
    if tag.lower() == "latest":
        tag = ""
    if hf_form:
        return PullTarget(name=name, repo_id=repo_id, revision=None, gguf_tag=tag or None)
    return PullTarget(name=name, repo_id=repo_id, revision=tag or None, gguf_tag=None)


def _is_repo_id(text: str) -> bool:
    if text.count("/") != 1:
        return False
    try:
        validate_repo_id(text)
    except HFValidationError:
        return False
    return True


def _is_revision(text: str) -> bool:
    return _REVISION.fullmatch(text) is not None and ".." not in text and not text.endswith("/")


def pull_model(
    target: PullTarget,
    on_progress: Callable[[PullProgress], None],
    *,
    endpoint: str | None = None,
) -> ModelSource:
    """Blocking (it will be run in a worker thread). Downloads through huggingface_hub into the
    normal HF cache, reporting progress, and returns the ModelSource an alias should hold.

    The source names the exact commit downloaded, so it resolves offline and never drifts.
    `on_progress` is called only on the calling thread. If it raises, the pull stops (the file in
    flight is abandoned) and that exception propagates unchanged.
    """
    hub = (endpoint or constants.ENDPOINT).rstrip("/")
    emit = _Emitter(on_progress)
    log.info("pulling %s from %s", target.name, hub)
    try:
        source = _pull(target, emit, endpoint)
    except PullFailed as error:
        log.warning("pull of %s failed: %s", target.name, error.message)
        raise
    except Exception as error:
        if emit.error is error:
            raise
        if emit.error is not None:  # on_progress failed, and huggingface_hub raised something of its own
            raise emit.error from error
        failure = _failure(error, target, hub)
        log.warning("pull of %s failed: %s", target.name, failure.message, exc_info=failure.status == 500)
        raise failure from error
    log.info("pulled %s as %s", target.name, source.describe())
    return source


def alias_entry(source: ModelSource) -> dict[str, Any]:
    """The models.yaml entry for a pulled model: where it is, and the sampling its
    generation_config.json recommends."""
    from heylook.models.catalog import recommended_options
    from heylook.models.sources import find_local

    entry: dict[str, Any] = {
        "model": source.model,
        "revision": source.revision,
        "gguf_file": source.gguf_file,
    }
    entry = {key: value for key, value in entry.items() if value}
    directory = find_local(source)
    recommended = recommended_options(directory) if directory is not None and directory.is_dir() else {}
    return {**entry, "options": recommended} if recommended else entry


def _pull(target: PullTarget, emit: _Emitter, endpoint: str | None) -> ModelSource:
    emit(PullProgress("pulling manifest"))
    api = HfApi(endpoint=endpoint)
    revision, gguf_tag = target.revision, target.gguf_tag
    info = _model_info(api, target.repo_id, revision)
    files = _remote_files(info)
    if gguf_tag and not _ggufs(files):
        # The hf.co form's tag names a revision when the repo holds no GGUF files.
        revision, gguf_tag = gguf_tag, None
        info = _model_info(api, target.repo_id, revision)
        files = _remote_files(info)
    commit = str(info.sha)
    fetcher = _Fetcher(target.repo_id, commit, endpoint, emit)
    if gguf_tag or not _has_safetensors(files):
        gguf = _choose_gguf(target.repo_id, files, gguf_tag)
        fetcher.fetch(gguf)
        source = ModelSource(target.repo_id, revision=commit, gguf_file=gguf.path)
    else:
        _fetch_safetensors(target.repo_id, files, fetcher)
        source = ModelSource(target.repo_id, revision=commit)
    emit(PullProgress("verifying sha256 digest"))
    fetcher.verify()
    emit(PullProgress("writing manifest"))
    _record_ref(target.repo_id, revision or constants.DEFAULT_REVISION, commit)
    emit(PullProgress("success"))
    return source


# --- what the repo holds, and what to take from it ---


@dataclass(frozen=True)
class _RemoteFile:
    path: str
    size: int | None
    sha256: str | None  # files in LFS only
    blob_id: str | None  # the git object id: the Hub's ETag for a file kept in git

    @property
    def digest(self) -> str | None:
        return f"sha256:{self.sha256}" if self.sha256 else self.blob_id

    @property
    def short_digest(self) -> str:
        full = self.sha256 or self.blob_id or hashlib.sha256(self.path.encode()).hexdigest()
        return full[:12]


def _model_info(api: HfApi, repo_id: str, revision: str | None) -> ModelInfo:
    info = api.model_info(repo_id, revision=revision, files_metadata=True, timeout=API_TIMEOUT_S)
    if not info.sha or info.siblings is None:
        raise PullFailed(f"{api.endpoint} did not list the files of {repo_id}", status=502)
    return info


def _remote_files(info: ModelInfo) -> list[_RemoteFile]:
    return [
        _RemoteFile(
            path=s.rfilename,
            size=s.lfs.size if s.lfs else s.size,
            sha256=s.lfs.sha256 if s.lfs else None,
            blob_id=s.blob_id,
        )
        for s in info.siblings or []
    ]


def _ggufs(files: Iterable[_RemoteFile]) -> list[_RemoteFile]:
    return [f for f in files if f.path.lower().endswith(".gguf")]


def _has_safetensors(files: Iterable[_RemoteFile]) -> bool:
    return any(f.path.endswith(".safetensors") and "/" not in f.path for f in files)


def _choose_gguf(repo_id: str, files: list[_RemoteFile], tag: str | None) -> _RemoteFile:
    ggufs = _ggufs(files)
    if not ggufs:
        raise PullFailed(
            f"{repo_id} holds neither safetensors nor GGUF weights; heylook needs one of them", status=400
        )
    names = ", ".join(f.path for f in ggufs)
    if tag:
        matches = _matching(ggufs, tag)
        if len(matches) == 1:
            return matches[0]
        problem = "matches several" if matches else "matches none of the"
        raise PullFailed(f"{tag!r} {problem} GGUF files in {repo_id}: {names}", status=400)
    # A vision projector (mmproj-*.gguf) is not a model on its own.
    models = [f for f in ggufs if not Path(f.path).name.lower().startswith("mmproj")] or ggufs
    preferred = _matching(models, _QUANT_DEFAULT)
    if len(preferred) == 1:
        return preferred[0]
    if len(models) == 1:
        return models[0]
    raise PullFailed(
        f"{repo_id} holds several GGUF files and none is {_QUANT_DEFAULT}; pull one as "
        f"hf.co/{repo_id}:QUANT, choosing from: {names}",
        status=400,
    )


def _matching(ggufs: list[_RemoteFile], tag: str) -> list[_RemoteFile]:
    """Files whose name holds the tag; when several do, those holding it as a whole word
    ("Q4_K" matches "Q4_K.gguf", not "Q4_K_M.gguf")."""
    found = [f for f in ggufs if tag.lower() in f.path.lower()]
    if len(found) > 1:
        word = re.compile(rf"(?<![a-z0-9]){re.escape(tag.lower())}(?![a-z0-9_])")
        found = [f for f in found if word.search(f.path.lower())] or found
    return found


def _fetch_safetensors(repo_id: str, files: list[_RemoteFile], fetcher: _Fetcher) -> None:
    by_path = {f.path: f for f in files}
    if "config.json" not in by_path:
        raise PullFailed(f"{repo_id} has no config.json; it is not a transformers model", status=400)
    for path in (*_SUPPORT_FILES, _SAFETENSORS_INDEX):
        if path in by_path:
            fetcher.fetch(by_path[path])
    for name in _weight_names(by_path, fetcher):
        if name not in by_path:
            raise PullFailed(
                f"{repo_id}'s {_SAFETENSORS_INDEX} names {name}, which the repo lacks", status=502
            )
        fetcher.fetch(by_path[name])


def _weight_names(by_path: dict[str, _RemoteFile], fetcher: _Fetcher) -> list[str]:
    """The safetensors transformers will load: model.safetensors, else the shards the index names
    (so a Mistral-style consolidated.safetensors beside them is not downloaded twice over)."""
    if "model.safetensors" in by_path:
        return ["model.safetensors"]
    if _SAFETENSORS_INDEX in by_path:
        index = json.loads(fetcher.path_of(_SAFETENSORS_INDEX).read_text())
        return sorted(set(index.get("weight_map", {}).values()))
    return sorted(p for p in by_path if p.endswith(".safetensors") and "/" not in p)


# --- downloading, with progress ---


class _Emitter:
    """Calls on_progress, remembering what it raised: that must reach the caller, not be mapped."""

    def __init__(self, on_progress: Callable[[PullProgress], None]) -> None:
        self._on_progress = on_progress
        self.error: BaseException | None = None

    def __call__(self, event: PullProgress) -> None:
        try:
            self._on_progress(event)
        except BaseException as error:
            self.error = error
            raise


class _Fetcher:
    """Downloads files of one commit into the Hugging Face cache, resumably.

    A file's partial download is kept beside the cache's blobs and continued with a Range request by
    the next attempt, in this pull or a later one: huggingface_hub 2.4 deletes the partial file of a
    download that fails, so a large shard interrupted near its end would start over. A file lands in
    the cache (blobs/<etag>, linked from snapshots/<commit>/, as huggingface_hub lays it out and
    finds it offline) only once its digest matches what the Hub listed.
    """

    def __init__(self, repo_id: str, commit: str, endpoint: str | None, emit: _Emitter) -> None:
        self.repo_id = repo_id
        self.commit = commit
        self.endpoint = endpoint
        self.emit = emit
        self.paths: dict[str, Path] = {}
        self.pending: list[_RemoteFile] = []  # downloaded, not yet verified and placed
        self._storage = Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo_id, repo_type="model")

    def fetch(self, remote: _RemoteFile) -> Path:
        progress = _FileProgress(self.emit, remote)
        cached = try_to_load_from_cache(self.repo_id, remote.path, revision=self.commit)
        if isinstance(cached, str):
            path = Path(cached)
        else:
            progress.begin()
            path = progress.run(lambda: self._download(remote, progress))
            self.pending.append(remote)
        progress.finish()
        self.paths[remote.path] = path
        return path

    def path_of(self, name: str) -> Path:
        return self.paths[name]

    def verify(self) -> None:
        """Check each new file's digest, then move it into the cache and link it from the snapshot."""
        for remote in self.pending:
            partial = self.paths[remote.path]
            _verify(self.repo_id, remote, partial)
            self.paths[remote.path] = self._place(remote, partial)
        self.pending.clear()

    def _download(self, remote: _RemoteFile, progress: _FileProgress) -> Path:
        etag = remote.sha256 or remote.blob_id
        if etag is None:
            raise PullFailed(f"the Hub listed {remote.path} of {self.repo_id} without a digest", status=502)
        partial = self._storage / "blobs" / f"{etag}{_PARTIAL_SUFFIX}"
        partial.parent.mkdir(parents=True, exist_ok=True)
        # The lock file huggingface_hub itself takes for this blob: the two never write it at once.
        lock = Path(constants.HF_HUB_CACHE) / ".locks" / self._storage.name / f"{etag}.lock"
        lock.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(lock)):
            for attempt in range(1, _ATTEMPTS + 1):
                try:
                    self._continue(remote, partial, progress)
                    return partial
                except _http.TransportError as error:  # a dropped connection or a stalled read
                    if attempt == _ATTEMPTS:
                        raise
                    log.info("download of %s broke off (%s); resuming", remote.path, type(error).__name__)
                    time.sleep(0.2 * attempt)
        raise AssertionError("unreachable")

    def _continue(self, remote: _RemoteFile, partial: Path, progress: _FileProgress) -> None:
        """Fetch what the partial file still lacks."""
        have = partial.stat().st_size if partial.exists() else 0
        if remote.size is not None and have > remote.size:
            partial.unlink()
            have = 0
        progress.reach(have)
        if remote.size is not None and have == remote.size:
            return
        url = hf_hub_url(self.repo_id, remote.path, revision=self.commit, endpoint=self.endpoint)
        headers = build_hf_headers()
        if have:
            headers["Range"] = f"bytes={have}-"
        session = get_session()
        with session.stream(
            "GET", url, headers=headers, follow_redirects=True, timeout=API_TIMEOUT_S
        ) as response:
            if response.status_code >= 400:
                response.read()
                hf_raise_for_status(response)
            resumed = response.status_code == 206
            if have and not resumed:
                progress.restart()
            with open(partial, "ab" if resumed else "wb") as file:
                for block in response.iter_bytes(_BLOCK_BYTES):
                    if progress.cancelled:
                        raise _Cancelled
                    file.write(block)
                    progress.advance(len(block))
                file.flush()
                os.fsync(file.fileno())

    def _place(self, remote: _RemoteFile, partial: Path) -> Path:
        blob = partial.with_name(partial.name.removesuffix(_PARTIAL_SUFFIX))
        os.replace(partial, blob)
        pointer = self._storage / "snapshots" / self.commit / remote.path
        pointer.parent.mkdir(parents=True, exist_ok=True)
        pointer.unlink(missing_ok=True)
        pointer.symlink_to(os.path.relpath(blob, pointer.parent))
        return pointer


class _Cancelled(Exception):
    """Raised inside huggingface_hub's download once on_progress has failed: it stops the transfer."""


class _FileProgress:
    """Turns byte counts into `pulling <digest>` lines: throttled, never going back, ending at total.

    Byte counts arrive on whatever thread huggingface_hub reports from (hf_xet uses its own); lines
    are sent only from the thread that called pull_model, so on_progress may rely on that thread.
    """

    def __init__(self, emit: _Emitter, remote: _RemoteFile) -> None:
        self._emit = emit
        self._remote = remote
        self._changed = threading.Condition()
        self._completed = 0  # may step back if a server ignores a Range and resends the file
        self._finished = False
        self.cancelled = False
        self._reported = -1
        self._reported_at = 0.0

    def begin(self) -> None:
        self._send(0)

    def advance(self, count: int) -> None:
        with self._changed:
            self._completed += count

    def reach(self, count: int) -> None:
        with self._changed:
            self._completed = max(self._completed, count)

    def finish(self) -> None:
        total = self._remote.size if self._remote.size is not None else self._completed
        if self._reported < total:
            self._send(total)

    def restart(self) -> None:
        """The server sent the whole file although part of it was asked for: count from zero."""
        with self._changed:
            self._completed = 0

    def run(self, download: Callable[[], Path]) -> Path:
        """Download on a helper thread while this one sends progress; the download's error is raised
        here. If sending fails, the download is told to stop and the sender's error propagates."""
        outcome: dict[str, Any] = {}

        def work() -> None:
            try:
                outcome["path"] = download()
            except BaseException as error:
                outcome["error"] = error
            finally:
                with self._changed:
                    self._finished = True
                    self._changed.notify_all()

        # A daemon, like the worker thread that runs pull_model: a server shutting down does not wait.
        threading.Thread(target=work, name=f"pull {self._remote.path}", daemon=True).start()
        try:
            self._report_until_finished()
        except BaseException:
            self.cancelled = True
            raise
        if "error" in outcome:
            raise outcome["error"]
        return outcome["path"]

    def _report_until_finished(self) -> None:
        while True:
            with self._changed:
                if not self._finished:
                    self._changed.wait(timeout=PROGRESS_INTERVAL_S)
                finished, completed = self._finished, self._completed
            if finished:
                return
            if completed > self._reported and time.monotonic() - self._reported_at >= PROGRESS_INTERVAL_S:
                self._send(completed)

    def _send(self, completed: int) -> None:
        total = self._remote.size
        completed = min(completed, total) if total is not None else completed
        self._reported = completed
        self._reported_at = time.monotonic()
        status = f"pulling {self._remote.short_digest}"
        self._emit(PullProgress(status, digest=self._remote.digest, total=total, completed=completed))


def _verify(repo_id: str, remote: _RemoteFile, path: Path) -> None:
    """huggingface_hub checks only a download's size; compare the digest the Hub listed, and drop a
    damaged blob so the next pull fetches it again."""
    if remote.sha256:
        matches = _file_digest(path, hashlib.sha256()) == remote.sha256
    elif remote.blob_id:
        matches = _file_digest(path, hashlib.sha1(b"blob %d\0" % path.stat().st_size)) == remote.blob_id
    else:
        return
    if not matches:
        blob = path.resolve()
        path.unlink(missing_ok=True)
        blob.unlink(missing_ok=True)
        raise PullFailed(
            f"{remote.path} of {repo_id} arrived damaged (digest mismatch); pull again", status=502
        )


def _file_digest(path: Path, digest: Any) -> str:
    with open(path, "rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _record_ref(repo_id: str, revision: str, commit: str) -> None:
    """Point refs/<revision> at the commit, as `hf download` would, so that tools naming the branch
    (or a models.yaml entry without a revision) find these files offline."""
    if revision == commit:
        return
    storage = Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo_id, repo_type="model")
    ref = storage / "refs" / revision
    ref.parent.mkdir(parents=True, exist_ok=True)
    partial = ref.with_name(f".{ref.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    partial.write_text(commit)
    os.replace(partial, ref)


# --- failures ---


def _failure(error: Exception, target: PullTarget, hub: str) -> PullFailed:
    """A PullFailed for what huggingface_hub or the network raised; messages never carry the token."""
    repo = target.repo_id
    token_hint = "set HF_TOKEN to a token that can read it"
    if isinstance(error, OfflineModeIsEnabled):
        return PullFailed("HF_HUB_OFFLINE is set, so heylook cannot download; unset it to pull", status=503)
    if isinstance(error, GatedRepoError):
        status = _http_status(error) if _http_status(error) in (401, 403) else 403
        return PullFailed(
            f"{repo} is gated: accept its terms at {hub}/{repo}, then {token_hint}", status=status
        )
    if isinstance(error, RevisionNotFoundError):
        if target.gguf_tag and not target.revision:
            tag = target.gguf_tag
            return PullFailed(f"{repo} holds no GGUF files and has no revision {tag!r} on {hub}", status=404)
        hint = (
            f"; for a GGUF quantization pull hf.co/{repo}:{target.revision}" if _looks_quant(target) else ""
        )
        return PullFailed(f"{repo} has no revision {target.revision!r} on {hub}{hint}", status=404)
    if isinstance(error, RepositoryNotFoundError):
        return PullFailed(f"repo {repo} not found on {hub} (if it is private, {token_hint})", status=404)
    if isinstance(error, RemoteEntryNotFoundError):
        return PullFailed(f"{hub} listed a file of {repo} that it then could not serve", status=502)
    if isinstance(error, HfHubHTTPError):
        return _http_failure(_http_status(error), repo, hub, token_hint)
    if isinstance(error, _http.TimeoutException):
        return PullFailed(f"the Hub at {hub} timed out", status=502)
    if isinstance(error, (_http.HTTPError, LocalEntryNotFoundError, FileMetadataError)):
        return PullFailed(f"could not reach the Hub at {hub}: {_reason(error)}", status=502)
    if isinstance(error, OSError):
        return PullFailed(f"could not store {repo} in the Hugging Face cache: {error}", status=500)
    return PullFailed(f"pulling {repo} failed: {_reason(error)}", status=500)


def _looks_quant(target: PullTarget) -> bool:
    return bool(target.revision and _QUANT_NAME.match(target.revision))


def _http_failure(status: int | None, repo: str, hub: str, token_hint: str) -> PullFailed:
    if status in (401, 403):
        return PullFailed(f"{hub} refused access to {repo} ({status}); {token_hint}", status=status)
    if status == 429:
        return PullFailed(f"{hub} is rate-limiting downloads; set HF_TOKEN or try again later", status=429)
    return PullFailed(f"the Hub at {hub} answered {status} for {repo}", status=502)


def _http_status(error: HfHubHTTPError) -> int | None:
    response = getattr(error, "response", None)
    return getattr(response, "status_code", None)


def _reason(error: BaseException) -> str:
    """The underlying network error, not huggingface_hub's paragraph about it."""
    cause = error.__cause__ if isinstance(error, LocalEntryNotFoundError) and error.__cause__ else error
    return f"{type(cause).__name__}: {cause}"
