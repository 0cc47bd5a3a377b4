"""Uploaded files (purpose batch) and the files batches write (batch_output): each file's bytes and
its FileObject, kept on disk, written atomically, bounded in number, in size each and in all.

The bounds refuse uploads, never a batch's results: those are answers already computed (and held
in the batch's results file), so a full store takes them and refuses the next upload instead.
Ids sort by creation time (heylook.batches.store.new_id): lists read only the files they show."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from heylook.batches.atomic import write_atomically
from heylook.batches.store import ids_after, ids_in, is_our_id, new_id
from heylook.errors import HeylookError, InvalidRequest, RequestTooLarge

PURPOSES = ("batch", "batch_output")


class FileNotFound(HeylookError):
    status = 404

    def __init__(self, file_id: str) -> None:
        super().__init__(f"no file {file_id[:80]!r}", param="file_id")


@dataclass(frozen=True)
class FileLimits:
    total_bytes: int
    file_bytes: int
    files: int


class FileStore:
    """`<root>/<id>.json` holds a file's FileObject, `<root>/<id>.data` its bytes."""

    def __init__(self, root: Path, limits: FileLimits) -> None:
        self.root = root
        self.limits = limits

    def create(self, filename: str, purpose: str, data: bytes, *, bounded: bool = True) -> dict[str, Any]:
        """A new file; `bounded` False for a batch's results, which the bounds never refuse."""
        if purpose not in PURPOSES:
            raise InvalidRequest(
                f"'purpose' must be one of {', '.join(PURPOSES)}, not {purpose!r}", param="purpose"
            )
        if bounded:
            self._check_room(len(data))
        file_id = new_id("file-")
        body = {
            "id": file_id,
            "object": "file",
            "bytes": len(data),
            "created_at": int(time.time()),
            "filename": filename,
            "purpose": purpose,
            "status": "processed",
            "status_details": None,
        }
        write_atomically(self.root / f"{file_id}.data", data)
        write_atomically(self.root / f"{file_id}.json", json.dumps(body).encode())
        return body

    def _check_room(self, size: int) -> None:
        if size > self.limits.file_bytes:
            raise RequestTooLarge(f"'file' is {size} bytes; a file may hold at most {self.limits.file_bytes}")
        count, used = self._usage()
        if count >= self.limits.files:
            raise InvalidRequest(f"{count} files are stored, the most kept: delete some first", param="file")
        if used + size > self.limits.total_bytes:
            raise RequestTooLarge(
                f"'file' ({size} bytes) does not fit: stored files hold {used} of the "
                f"{self.limits.total_bytes} bytes kept; delete some first"
            )

    def _usage(self) -> tuple[int, int]:
        """Files stored and their bytes, from the folder's names and sizes (no file read)."""
        count = used = 0
        for file_id in self.ids():
            try:
                used += (self.root / f"{file_id}.data").stat().st_size
            except FileNotFoundError:
                continue
            count += 1
        return count, used

    def get(self, file_id: str) -> dict[str, Any]:
        try:
            return json.loads(self._meta(file_id).read_bytes())
        except FileNotFoundError:
            raise FileNotFound(file_id) from None

    def content(self, file_id: str) -> bytes:
        self.get(file_id)
        try:
            return (self.root / f"{file_id}.data").read_bytes()
        except FileNotFoundError:  # deleted in between
            raise FileNotFound(file_id) from None

    def open_content(self, file_id: str) -> BinaryIO:
        """The file's bytes to read as a stream (a batch's input is read a line at a time: a 200 MB
        file read whole held 200 MB while it was checked)."""
        self.get(file_id)
        try:
            return open(self.root / f"{file_id}.data", "rb")  # the caller closes it
        except FileNotFoundError:  # deleted in between
            raise FileNotFound(file_id) from None

    def ids(self) -> list[str]:
        """Every file's id, newest first, from the folder's names alone."""
        return ids_in(self.root, "file-")

    def page(
        self, limit: int, after: str | None, purpose: str | None = None
    ) -> tuple[list[dict[str, Any]], bool] | None:
        """Up to `limit` files after the one `after` names, newest first, and whether more follow;
        None when `after` names no file. Files are read until the page is full."""
        ids = ids_after(self.ids(), after)
        if ids is None:
            return None
        page: list[dict[str, Any]] = []
        for file_id in ids:
            try:
                file = self.get(file_id)
            except (FileNotFound, ValueError):
                continue
            if purpose is None or file.get("purpose") == purpose:
                if len(page) == limit:
                    return page, True
                page.append(file)
        return page, False

    def delete(self, file_id: str) -> None:
        self.get(file_id)
        # The FileObject goes first: a crash in between leaves bytes no listing shows, not a listed
        # file without bytes.
        self._meta(file_id).unlink(missing_ok=True)
        (self.root / f"{file_id}.data").unlink(missing_ok=True)

    def _meta(self, file_id: str) -> Path:
        # Ids are ours ("file-" and 32 hex): anything else names no file (and no path outside root).
        if not is_our_id(file_id, "file-"):
            raise FileNotFound(file_id)
        return self.root / f"{file_id}.json"
