"""Batches on disk: each one's Batch object (`<id>.json`, rewritten atomically at every change) and
the results of the lines answered so far (`<id>.results.jsonl`, appended one whole line at a time,
fsynced before the line is counted), so that a restarted server resumes a batch where it stopped.
Bounded in number: finished batches go first, oldest first.

Ids sort by creation time (a microsecond clock, then random hex), so lists are pages of names:
listing reads only the page's files. What a batch is doing is cached by its file's stat, so the
runner's look for work reads only the files that changed. Every method here does file I/O: the
routes and the runner call the ones that may read many files from a worker thread."""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from pathlib import Path
from typing import Any

from heylook.batches.atomic import write_atomically
from heylook.batches.lines import json_line
from heylook.errors import HeylookError, ServerBusy

# What a batch may still be doing; the runner takes these up, after a restart too.
ACTIVE = ("validating", "in_progress", "finalizing", "cancelling")
COMPLETION_WINDOW = 24 * 3600
# The hex after an id's prefix: ours are 32 long; anything else names nothing (and no path).
_ID_HEX = re.compile(r"[0-9a-f]{32}")


def new_id(prefix: str) -> str:
    """`prefix` and 32 hex digits: the creation time in microseconds, then random ones, so that
    ids sort oldest to newest by name."""
    return f"{prefix}{time.time_ns() // 1000:014x}{secrets.token_hex(9)}"


def is_our_id(value: str, prefix: str) -> bool:
    return value.startswith(prefix) and _ID_HEX.fullmatch(value[len(prefix) :]) is not None


def ids_in(root: Path, prefix: str) -> list[str]:
    """The ids of the records (`<id>.json`) in a folder, newest first, from their names alone."""
    if not root.is_dir():
        return []
    names = (e.name[: -len(".json")] for e in os.scandir(root) if e.name.endswith(".json"))
    return sorted((n for n in names if is_our_id(n, prefix)), reverse=True)


def ids_after(ids: list[str], after: str | None) -> list[str] | None:
    """The ids that follow `after` in a listing (all of them without it); None when it is none of
    them."""
    if after is None:
        return ids
    return ids[ids.index(after) + 1 :] if after in ids else None


class BatchNotFound(HeylookError):
    status = 404

    def __init__(self, batch_id: str) -> None:
        super().__init__(f"no batch {batch_id[:80]!r}", param="batch_id")


class BatchStore:
    def __init__(self, root: Path, max_batches: int) -> None:
        self.root = root
        self.max_batches = max_batches
        # name -> (mtime_ns, size, status, created_at): what each file said when last read.
        self._seen: dict[str, tuple[int, int, str, int]] = {}

    def create(
        self, input_file_id: str, endpoint: str, window: str, metadata: dict[str, str] | None
    ) -> dict[str, Any]:
        self._make_room()
        now = int(time.time())
        batch: dict[str, Any] = {
            "id": new_id("batch_"),
            "object": "batch",
            "endpoint": endpoint,
            "errors": None,
            "input_file_id": input_file_id,
            "completion_window": window,
            "status": "validating",
            "output_file_id": None,
            "error_file_id": None,
            "created_at": now,
            "in_progress_at": None,
            "expires_at": now + COMPLETION_WINDOW,
            "finalizing_at": None,
            "completed_at": None,
            "failed_at": None,
            "expired_at": None,
            "cancelling_at": None,
            "cancelled_at": None,
            "request_counts": {"total": 0, "completed": 0, "failed": 0},
            "metadata": metadata,
        }
        self.save(batch)
        return batch

    def save(self, batch: dict[str, Any]) -> None:
        write_atomically(self._path(batch["id"]), json.dumps(batch).encode())

    def get(self, batch_id: str) -> dict[str, Any]:
        try:
            return json.loads(self._path(batch_id).read_bytes())
        except FileNotFoundError:
            raise BatchNotFound(batch_id) from None

    def ids(self) -> list[str]:
        """Every batch's id, newest first, from the folder's names alone."""
        return ids_in(self.root, "batch_")

    def page(self, limit: int, after: str | None) -> tuple[list[dict[str, Any]], bool] | None:
        """Up to `limit` batches after the one `after` names, newest first, and whether more
        follow; None when `after` names no batch. Only the page's files are read."""
        ids = ids_after(self.ids(), after)
        if ids is None:
            return None
        page: list[dict[str, Any]] = []
        for batch_id in ids:
            if len(page) == limit:
                return page, True
            try:
                page.append(self.get(batch_id))
            except (BatchNotFound, ValueError):  # deleted, or written by no heylook: not listed
                continue
        return page, False

    def active(self) -> list[dict[str, Any]]:
        """The batches not yet finished, oldest first; a file is read only when it changed since
        the last look (or while its batch is active)."""
        found = []
        for batch_id in reversed(self.ids()):
            status = self._status(batch_id)
            if status is None or status[0] not in ACTIVE:
                continue
            try:
                found.append(self.get(batch_id))
            except (BatchNotFound, ValueError):
                continue
        return found

    def _status(self, batch_id: str) -> tuple[str, int] | None:
        """A batch's status and creation time, from the cache while its file is unchanged."""
        path = self._path(batch_id)
        try:
            stat = path.stat()
            seen = self._seen.get(batch_id)
            if seen is not None and seen[:2] == (stat.st_mtime_ns, stat.st_size):
                return seen[2], seen[3]
            batch = json.loads(path.read_bytes())
            status, created = str(batch["status"]), int(batch["created_at"])
        except (OSError, ValueError, KeyError, TypeError):  # gone, or not a batch: skipped
            self._seen.pop(batch_id, None)
            return None
        self._seen[batch_id] = (stat.st_mtime_ns, stat.st_size, status, created)
        return status, created

    def add_result(self, batch_id: str, result: dict[str, Any]) -> None:
        """One answered line, on disk (fsynced) before the caller counts it."""
        with open(self._results(batch_id), "ab") as file:
            file.write(json_line(result))
            file.flush()
            os.fsync(file.fileno())

    def results(self, batch_id: str) -> list[dict[str, Any]]:
        """The lines answered so far, each custom_id once (the first); a line cut short by a crash
        is not one of them (it runs again)."""
        path = self._results(batch_id)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return []
        results, seen = [], set()
        for raw in data.splitlines(keepends=True):
            result = _whole_result(raw)
            if result is not None and result["custom_id"] not in seen:
                seen.add(result["custom_id"])
                results.append(result)
        return results

    def repair_results(self, batch_id: str) -> None:
        """Cut the results file after its last whole line: a crash in the middle of an append
        leaves a torn line, and what is appended after it must start a line of its own."""
        path = self._results(batch_id)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return
        keep = 0
        for raw in data.splitlines(keepends=True):
            if _whole_result(raw) is None:
                break
            keep += len(raw)
        if keep < len(data):
            with open(path, "r+b") as file:
                file.truncate(keep)
                file.flush()
                os.fsync(file.fileno())

    def drop_results(self, batch_id: str) -> None:
        self._results(batch_id).unlink(missing_ok=True)

    def _make_room(self) -> None:
        ids = self.ids()
        if len(ids) < self.max_batches:
            return
        finished = [b for b in reversed(ids) if (self._status(b) or ("",))[0] not in ACTIVE]
        for _ in range(len(ids) - self.max_batches + 1):
            if not finished:
                raise ServerBusy(
                    f"{len(ids)} batches are running, the most kept: wait for one to finish",
                    retry_after=60,
                )
            oldest = finished.pop(0)
            self._path(oldest).unlink(missing_ok=True)
            self.drop_results(oldest)
            self._seen.pop(oldest, None)

    def _path(self, batch_id: str) -> Path:
        if not is_our_id(batch_id, "batch_"):
            raise BatchNotFound(batch_id)
        return self.root / f"{batch_id}.json"

    def _results(self, batch_id: str) -> Path:
        return self.root / f"{batch_id}.results.jsonl"


def _whole_result(raw: bytes) -> dict[str, Any] | None:
    if not raw.endswith(b"\n"):
        return None
    try:
        result = json.loads(raw)
    except ValueError:
        return None
    return result if isinstance(result, dict) and isinstance(result.get("custom_id"), str) else None
