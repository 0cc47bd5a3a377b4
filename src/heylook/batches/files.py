"""Uploaded files (purpose batch) and the files batches write (batch_output): each file's bytes and
its FileObject, kept on disk, written atomically, bounded in number, in size each and in all."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from heylook.batches.atomic import write_atomically
from heylook.errors import HeylookError, InvalidRequest, RequestTooLarge

PURPOSES = ("batch", "batch_output")


class FileNotFound(HeylookError):
    status = 404

    def __init__(self, file_id: str) -> None:
        super().__init__(f"no file {file_id!r}", param="file_id")


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

    def create(self, filename: str, purpose: str, data: bytes) -> dict[str, Any]:
        if purpose not in PURPOSES:
            raise InvalidRequest(
                f"'purpose' must be one of {', '.join(PURPOSES)}, not {purpose!r}", param="purpose"
            )
        if len(data) > self.limits.file_bytes:
            raise RequestTooLarge(
                f"'file' is {len(data)} bytes; a file may hold at most {self.limits.file_bytes}"
            )
        files = self.entries()
        if len(files) >= self.limits.files:
            raise InvalidRequest(
                f"{len(files)} files are stored, the most kept: delete some first", param="file"
            )
        used = sum(f["bytes"] for f in files)
        if used + len(data) > self.limits.total_bytes:
            raise RequestTooLarge(
                f"'file' ({len(data)} bytes) does not fit: stored files hold {used} of the "
                f"{self.limits.total_bytes} bytes kept; delete some first"
            )
        file_id = f"file-{uuid.uuid4().hex}"
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

    def get(self, file_id: str) -> dict[str, Any]:
        path = self._meta(file_id)
        if not path.is_file():
            raise FileNotFound(file_id)
        return json.loads(path.read_bytes())

    def content(self, file_id: str) -> bytes:
        self.get(file_id)
        return (self.root / f"{file_id}.data").read_bytes()

    def entries(self, purpose: str | None = None) -> list[dict[str, Any]]:
        """Newest first, as OpenAI lists them."""
        files = [json.loads(p.read_bytes()) for p in self.root.glob("file-*.json")]
        files = [f for f in files if purpose is None or f["purpose"] == purpose]
        return sorted(files, key=lambda f: (f["created_at"], f["id"]), reverse=True)

    def delete(self, file_id: str) -> None:
        self.get(file_id)
        # The FileObject goes first: a crash in between leaves bytes no listing shows, not a listed
        # file without bytes.
        self._meta(file_id).unlink(missing_ok=True)
        (self.root / f"{file_id}.data").unlink(missing_ok=True)

    def _meta(self, file_id: str) -> Path:
        # Ids are ours ("file-" and hex): anything else names no file (and no path outside root).
        if not (file_id.startswith("file-") and file_id[5:].isalnum()):
            raise FileNotFound(file_id)
        return self.root / f"{file_id}.json"
