"""The batch runner: one task in the app's lifespan, answering batches' lines, oldest batch first,
so that bulk work never stands in front of someone waiting: generation lines go to the model's
engine at background priority, several at a time (they share its batch while nobody else needs it,
and pause while an interactive request runs or waits); embeddings lines run one at a time, only
while no interactive request holds or awaits a model. Its progress is on disk after every line: a
restarted server takes up where it stopped, and no line is answered twice."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio

from heylook.batches.files import FileNotFound, FileStore
from heylook.batches.lines import Line, is_failure, jsonl, read_lines, result_line
from heylook.batches.store import ACTIVE, BatchStore
from heylook.errors import HeylookError

log = logging.getLogger(__name__)

Answer = Callable[[str, dict[str, Any]], Awaitable[tuple[int, dict[str, Any]]]]
# Generation lines answered at once (each a sequence in the model's batch, at background priority).
LINES_IN_FLIGHT = 8
# How often the runner looks again while interactive requests hold the models (seconds).
_YIELD_INTERVAL = 0.05
# How long the runner sleeps when no batch is waiting, unless woken by a new one.
_IDLE_INTERVAL = 5.0


@dataclass
class _Progress:
    """A batch's lines: how many, which are answered, how many of those failed."""

    total: int
    done: set[str]
    failed: int


class BatchRunner:
    def __init__(
        self, files: FileStore, store: BatchStore, answer: Answer, busy: Callable[[], bool], max_lines: int
    ) -> None:
        self.files = files
        self.store = store
        self._answer = answer
        self._busy = busy  # whether interactive requests hold or await a model now
        self._max_lines = max_lines
        self._wake = anyio.Event()
        self._line: tuple[str, anyio.CancelScope] | None = None  # the batch and line running now

    def wake(self) -> None:
        self._wake.set()

    def cancel(self, batch_id: str) -> None:
        """Stop the batch's running line (its status already says cancelling)."""
        if self._line is not None and self._line[0] == batch_id:
            self._line[1].cancel()
        self.wake()

    async def run_forever(self) -> None:
        while True:
            self._wake = anyio.Event()
            waiting = [b for b in self.store.entries() if b["status"] in ACTIVE]
            if not waiting:
                with anyio.move_on_after(_IDLE_INTERVAL):
                    await self._wake.wait()
                continue
            batch_id = waiting[-1]["id"]  # the oldest
            try:
                await self._run(batch_id)
            except Exception as error:  # one broken batch must not stop the others
                log.exception("batch %s failed", batch_id)
                self._fail(batch_id, "internal_error", f"the batch failed: {type(error).__name__}: {error}")

    async def _run(self, batch_id: str) -> None:
        batch = self.store.get(batch_id)
        if batch["status"] in ("validating", "in_progress"):
            lines = self._lines(batch)
            if lines is None:
                return
            await self._answer_lines(batch_id, batch["endpoint"], lines)
        self._finish(batch_id)

    def _lines(self, batch: dict[str, Any]) -> list[Line] | None:
        """The input file's requests (read again after a restart); None when it failed validation."""
        try:
            data = self.files.content(batch["input_file_id"])
        except FileNotFound:
            self._fail(
                batch["id"], "invalid_input_file", f"the input file {batch['input_file_id']!r} is gone"
            )
            return None
        lines, errors = read_lines(data, batch["endpoint"], self._max_lines)
        if errors:
            self._update(
                batch["id"],
                status="failed",
                failed_at=int(time.time()),
                errors={"object": "list", "data": errors},
            )
            return None
        if batch["status"] == "validating":
            self._update(batch["id"], status="in_progress", in_progress_at=int(time.time()))
        results = self.store.results(batch["id"])
        self._count(batch["id"], len(lines), len(results), sum(1 for r in results if is_failure(r)))
        return lines

    async def _answer_lines(self, batch_id: str, endpoint: str, lines: list[Line]) -> None:
        results = self.store.results(batch_id)
        progress = _Progress(
            len(lines), {r["custom_id"] for r in results}, sum(1 for r in results if is_failure(r))
        )
        # Generation lines run several at once, inside the model's batch at background priority
        # (the engine pauses them while any interactive request runs or waits); an embeddings line
        # has no such priority, so one runs at a time, only while no interactive request holds a model.
        gated = endpoint == "/v1/embeddings"
        limiter = anyio.Semaphore(1 if gated else LINES_IN_FLIGHT)
        with anyio.CancelScope() as scope:
            self._line = (batch_id, scope)
            try:
                async with anyio.create_task_group() as group:
                    for line in lines:
                        if line.custom_id in progress.done:
                            continue
                        await limiter.acquire()
                        while gated and self._busy() and self._still_running(batch_id):
                            await anyio.sleep(_YIELD_INTERVAL)
                        if not self._still_running(batch_id):
                            limiter.release()
                            break
                        group.start_soon(self._answer_line, batch_id, endpoint, line, limiter, progress)
            finally:
                self._line = None

    async def _answer_line(
        self, batch_id: str, endpoint: str, line: Line, limiter: anyio.Semaphore, progress: _Progress
    ) -> None:
        try:
            status, body = await self._answer(endpoint, line.body)
        finally:
            limiter.release()
        result = result_line(line.custom_id, status, body)
        self.store.add_result(batch_id, result)
        progress.done.add(line.custom_id)
        progress.failed += 1 if is_failure(result) else 0
        self._count(batch_id, progress.total, len(progress.done), progress.failed)

    def _still_running(self, batch_id: str) -> bool:
        batch = self.store.get(batch_id)
        if batch["status"] == "in_progress" and time.time() > batch["expires_at"]:
            self._update(batch_id, status="expired", expired_at=int(time.time()))
        return self.store.get(batch_id)["status"] == "in_progress"

    def _finish(self, batch_id: str) -> None:
        """The output and error files of the lines answered; then the batch's last status."""
        batch = self.store.get(batch_id)
        ending = {"in_progress": "completed", "finalizing": "completed", "cancelling": "cancelled"}
        status = ending.get(batch["status"], batch["status"])
        if batch["status"] == "in_progress":
            self._update(batch_id, status="finalizing", finalizing_at=int(time.time()))
        results = self.store.results(batch_id)
        outputs = [r for r in results if not is_failure(r)]
        failures = [r for r in results if is_failure(r)]
        try:
            output = (
                self.files.create(f"{batch_id}_output.jsonl", "batch_output", jsonl(outputs))
                if outputs
                else None
            )
            errors = (
                self.files.create(f"{batch_id}_error.jsonl", "batch_output", jsonl(failures))
                if failures
                else None
            )
        except HeylookError as error:
            self._fail(batch_id, "output_file_error", f"the results could not be stored: {error.message}")
            return
        self._update(
            batch_id,
            status=status,
            output_file_id=output["id"] if output else None,
            error_file_id=errors["id"] if errors else None,
            **{f"{status}_at": int(time.time())},
        )
        self.store.drop_results(batch_id)

    def _count(self, batch_id: str, total: int, answered: int, failed: int) -> None:
        counts = {"total": total, "completed": answered - failed, "failed": failed}
        self._update(batch_id, request_counts=counts)

    def _fail(self, batch_id: str, code: str, message: str) -> None:
        error = {"code": code, "message": message, "param": None, "line": None}
        self._update(
            batch_id, status="failed", failed_at=int(time.time()), errors={"object": "list", "data": [error]}
        )

    def _update(self, batch_id: str, **changes: Any) -> None:
        # Read, change, write with no await between: the routes' changes (cancel) are never lost.
        batch = self.store.get(batch_id)
        batch.update(changes)
        self.store.save(batch)
