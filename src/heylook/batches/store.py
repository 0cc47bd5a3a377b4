"""Batches on disk: each one's Batch object (`<id>.json`, rewritten atomically at every change) and
the results of the lines answered so far (`<id>.results.jsonl`, appended one whole line at a time),
so that a restarted server resumes a batch where it stopped. Bounded in number: finished batches
go first, oldest first."""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

from heylook.batches.atomic import write_atomically
from heylook.errors import HeylookError, ServerBusy

# What a batch may still be doing; the runner takes these up, after a restart too.
ACTIVE = ("validating", "in_progress", "finalizing", "cancelling")
COMPLETION_WINDOW = 24 * 3600


class BatchNotFound(HeylookError):
    status = 404

    def __init__(self, batch_id: str) -> None:
        super().__init__(f"no batch {batch_id!r}", param="batch_id")


class BatchStore:
    def __init__(self, root: Path, max_batches: int) -> None:
        self.root = root
        self.max_batches = max_batches

    def create(
        self, input_file_id: str, endpoint: str, window: str, metadata: dict[str, str] | None
    ) -> dict[str, Any]:
        self._make_room()
        now = int(time.time())
        batch: dict[str, Any] = {
            "id": f"batch_{uuid.uuid4().hex}",
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
        path = self._path(batch_id)
        if not path.is_file():
            raise BatchNotFound(batch_id)
        return json.loads(path.read_bytes())

    def entries(self) -> list[dict[str, Any]]:
        """Newest first, as OpenAI lists them."""
        batches = [json.loads(p.read_bytes()) for p in self.root.glob("batch_*.json")]
        return sorted(batches, key=lambda b: (b["created_at"], b["id"]), reverse=True)

    def add_result(self, batch_id: str, result: dict[str, Any]) -> None:
        with open(self._results(batch_id), "ab") as file:
            file.write(json.dumps(result, ensure_ascii=False).encode() + b"\n")
            file.flush()
            os.fsync(file.fileno())

    def results(self, batch_id: str) -> list[dict[str, Any]]:
        """The lines answered so far; a line cut short by a crash is not one of them (it runs again)."""
        path = self._results(batch_id)
        if not path.is_file():
            return []
        results = []
        for raw in path.read_bytes().splitlines(keepends=True):
            if not raw.endswith(b"\n"):
                break
            try:
                results.append(json.loads(raw))
            except json.JSONDecodeError:
                break
        return results

    def drop_results(self, batch_id: str) -> None:
        self._results(batch_id).unlink(missing_ok=True)

    def _make_room(self) -> None:
        batches = self.entries()
        finished = [b for b in reversed(batches) if b["status"] not in ACTIVE]
        while len(batches) >= self.max_batches:
            if not finished:
                raise ServerBusy(
                    f"{len(batches)} batches are running, the most kept: wait for one to finish",
                    retry_after=60,
                )
            oldest = finished.pop(0)
            self._path(oldest["id"]).unlink(missing_ok=True)
            self.drop_results(oldest["id"])
            batches.remove(oldest)

    def _path(self, batch_id: str) -> Path:
        if not (batch_id.startswith("batch_") and batch_id[6:].isalnum()):
            raise BatchNotFound(batch_id)
        return self.root / f"{batch_id}.json"

    def _results(self, batch_id: str) -> Path:
        return self.root / f"{batch_id}.results.jsonl"
