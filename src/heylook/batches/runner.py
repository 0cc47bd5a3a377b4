"""The batch runner: one task in the app's lifespan, answering batches' lines, oldest batch first,
so that bulk work never stands in front of someone waiting: generation lines go to the model's
engine at background priority, several at a time (they share its batch while nobody else needs it,
and pause while an interactive request runs or waits); embeddings lines run one at a time, only
while no interactive request holds or awaits a model.

Nothing answered is lost or answered twice:
- a line's result is on disk (fsynced) before it is counted; a restarted server repairs a torn
  last line and takes up where the results file stops;
- a line that fails in any way is that line's error (in the error file, under its custom_id);
- a batch that fails still writes the lines it answered to its output and error files, and a full
  file store takes them (heylook.batches.files);
- storage that fails (disk full) leaves the batch as it is, to be taken up again later;
- one batches directory has one owner (a lock file): a second server sharing it runs no batches;
- the runner itself, if anything escapes, logs it and starts again (its restarts are in /health).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from filelock import FileLock, Timeout

from heylook.batches.atomic import write_atomically
from heylook.batches.files import FileNotFound, FileStore
from heylook.batches.lines import Line, is_failure, jsonl, read_lines, result_line
from heylook.batches.store import BatchNotFound, BatchStore
from heylook.errors import HeylookError, ServerBusy
from heylook.protocols.errors import openai_error_body

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

log = logging.getLogger(__name__)

Answer = Callable[[str, str], Awaitable[tuple[int, dict[str, Any]]]]
# Generation lines answered at once (each a sequence in the model's batch, at background priority).
LINES_IN_FLIGHT = 8
# How often the runner looks again while interactive requests hold the models (seconds).
_YIELD_INTERVAL = 0.05
# How long the runner sleeps when no batch is waiting, unless woken by a new one; how often a
# server that does not own the directory tries to take it over.
_IDLE_INTERVAL = 5.0
# How long a batch whose storage failed (disk full) waits before it is tried again.
_STORAGE_RETRY = 30.0
# How long the runner waits before it starts again after an error escaped it.
_RESTART_DELAY = 1.0
# How often, at most, a running batch's record is rewritten with its counts (seconds). The results
# file is what makes an answer durable (appended and fsynced before it is counted); the record's
# counts follow it, and are made again from it at the end and after a restart. Rewriting the record
# at every line was an fsync and a rename per answer on the event loop.
_COUNTS_INTERVAL = 0.5


@dataclass
class _Progress:
    """A batch's lines: how many, which are answered, how many of those failed."""

    total: int
    done: set[str]
    failed: int
    storage: OSError | None = None  # a result that could not be written: the batch stops there


@dataclass
class RunnerHealth:
    """What /health says of the runner."""

    directory: str
    owner: bool | None = None  # None until the lock was tried
    owner_pid: int | None = None  # the server that owns the directory, when not this one
    running: bool = False
    restarts: int = 0
    last_error: str | None = None
    deferred: dict[str, float] = field(default_factory=dict)  # batch id -> when to try again

    def as_dict(self) -> dict[str, Any]:
        return {
            "directory": self.directory,
            "owner": self.owner,
            "owner_pid": self.owner_pid,
            "running": self.running,
            "restarts": self.restarts,
            "last_error": self.last_error,
            "waiting_for_storage": sorted(self.deferred),
        }


class NotOwner(ServerBusy):
    """This server does not own the batches directory: another one runs its batches."""


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
        self.root = store.root.parent
        self.status = RunnerHealth(str(self.root))
        self._lock = FileLock(self.root / "owner.lock")
        self._appending = anyio.Lock()  # one append to a results file at a time
        self._counted_at: dict[str, float] = {}  # batch id -> when its record's counts were written

    def wake(self) -> None:
        self._wake.set()

    def cancel(self, batch_id: str) -> None:
        """Stop the batch's running line (its status already says cancelling)."""
        if self._line is not None and self._line[0] == batch_id:
            self._line[1].cancel()
        self.wake()

    def check_owner(self) -> None:
        """Refuse what changes batches on a server that does not run them."""
        if self.status.owner is False:
            raise NotOwner(
                f"the batches directory {self.root} belongs to another heylook server "
                f"(pid {self.status.owner_pid}), which runs its batches: send batch requests there",
                retry_after=60,
            )

    async def run_forever(self) -> None:
        try:
            while not self._take_ownership():
                await self._sleep_unless_woken()
            self.status.running = True
            while True:
                try:
                    await self._serve()
                except Exception as error:  # never die silently: say so, and start again
                    self.status.restarts += 1
                    self.status.last_error = f"{type(error).__name__}: {error}"
                    log.exception("the batch runner failed; it starts again (%d)", self.status.restarts)
                    await anyio.sleep(_RESTART_DELAY)
        finally:
            self.status.running = False
            if self.status.owner:
                self._lock.release()
                self.status.owner = None

    def _take_ownership(self) -> bool:
        """The directory's lock, or a warning (once) naming the server that holds it."""
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            if self.status.owner is None:
                self.status.owner_pid = _owner_pid(self.root)
                log.warning(
                    "the batches directory %s belongs to another heylook server (pid %s): this one "
                    "runs no batches, and takes the directory over when that one stops",
                    self.root,
                    self.status.owner_pid,
                )
            self.status.owner = False
            return False
        write_atomically(self.root / "owner.pid", str(os.getpid()).encode())
        if self.status.owner is False:
            log.warning("the batches directory %s is this server's now: it runs its batches", self.root)
        self.status.owner, self.status.owner_pid = True, None
        return True

    async def _sleep_unless_woken(self) -> None:
        self._wake = anyio.Event()
        with anyio.move_on_after(_IDLE_INTERVAL):
            await self._wake.wait()

    async def _serve(self) -> None:
        while True:
            self._wake = anyio.Event()
            active = await anyio.to_thread.run_sync(self.store.active)
            now = time.monotonic()
            waiting = [b for b in active if self.status.deferred.get(b["id"], 0.0) <= now]
            if not waiting:
                with anyio.move_on_after(_IDLE_INTERVAL):
                    await self._wake.wait()
                continue
            await self._run_one(waiting[0]["id"])  # the oldest

    async def _run_one(self, batch_id: str) -> None:
        self.status.deferred.pop(batch_id, None)
        try:
            await self._run(batch_id)
        except BatchNotFound:  # deleted while it ran: nothing left to write to
            log.warning("batch %s vanished while it ran", batch_id)
        except OSError as error:  # storage: the batch stays as it is, and is tried again later
            self.status.deferred[batch_id] = time.monotonic() + _STORAGE_RETRY
            log.error("batch %s waits %.0f s: its storage failed: %s", batch_id, _STORAGE_RETRY, error)
        except Exception as error:  # one broken batch must not stop the others, nor lose its answers
            log.exception("batch %s failed", batch_id)
            self.status.deferred[batch_id] = time.monotonic() + _STORAGE_RETRY
            message = f"the batch failed: {type(error).__name__}: {error}"
            await self._finish(batch_id, failure=("internal_error", message))
            self.status.deferred.pop(batch_id, None)

    async def _run(self, batch_id: str) -> None:
        batch = self.store.get(batch_id)
        if batch["status"] in ("validating", "in_progress"):
            lines = await self._lines(batch)
            if lines is None:
                return
            await self._answer_lines(batch_id, batch["endpoint"], lines)
        await self._finish(batch_id)

    async def _lines(self, batch: dict[str, Any]) -> list[Line] | None:
        """The input file's requests (read again after a restart, off the event loop); None when
        the batch failed instead."""
        try:
            lines, errors = await anyio.to_thread.run_sync(self._read_input, batch)
        except (FileNotFound, FileNotFoundError):
            gone = ("invalid_input_file", f"the input file {batch['input_file_id']!r} is gone")
            await self._finish(batch["id"], failure=gone)
            return None
        if errors:
            await self._finish(batch["id"], failure=errors)
            return None
        if batch["status"] == "validating":
            self._update(batch["id"], status="in_progress", in_progress_at=int(time.time()))
        results = await anyio.to_thread.run_sync(self._repaired_results, batch["id"])
        self._count(batch["id"], len(lines), len(results), sum(1 for r in results if is_failure(r)))
        return lines

    def _read_input(self, batch: dict[str, Any]) -> tuple[list[Line], list[dict[str, Any]]]:
        with self.files.open_content(batch["input_file_id"]) as data:  # a line at a time
            return read_lines(data, batch["endpoint"], self._max_lines)

    def _repaired_results(self, batch_id: str) -> list[dict[str, Any]]:
        self.store.repair_results(batch_id)
        return self.store.results(batch_id)

    async def _answer_lines(self, batch_id: str, endpoint: str, lines: list[Line]) -> None:
        results = await anyio.to_thread.run_sync(self.store.results, batch_id)
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
                with _first_error():
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
        if progress.storage is not None:
            raise progress.storage

    async def _answer_line(
        self, batch_id: str, endpoint: str, line: Line, limiter: anyio.Semaphore, progress: _Progress
    ) -> None:
        try:
            status, body = await self._answer(endpoint, line.body)
        except Exception as error:  # whatever went wrong is this line's, not the batch's
            log.exception("batch %s: line %d (%r) failed", batch_id, line.number, line.custom_id)
            failure = HeylookError(f"internal error: {type(error).__name__}")
            status, body = failure.status, openai_error_body(failure)
        finally:
            limiter.release()
        result = result_line(line.custom_id, status, body)
        try:
            async with self._appending:  # on disk (fsynced, off the loop) before it is counted
                await anyio.to_thread.run_sync(self.store.add_result, batch_id, result)
        except OSError as error:  # not counted: the line runs again when storage is back
            progress.storage = error
            if self._line is not None:
                self._line[1].cancel()
            return
        progress.done.add(line.custom_id)
        progress.failed += 1 if is_failure(result) else 0
        now = time.monotonic()
        if (
            len(progress.done) == progress.total
            or now - self._counted_at.get(batch_id, 0.0) >= _COUNTS_INTERVAL
        ):
            self._count(batch_id, progress.total, len(progress.done), progress.failed)

    def _still_running(self, batch_id: str) -> bool:
        batch = self.store.get(batch_id)
        if batch["status"] == "in_progress" and time.time() > batch["expires_at"]:
            self._update(batch_id, status="expired", expired_at=int(time.time()))
            return False
        return batch["status"] == "in_progress"

    async def _finish(
        self, batch_id: str, failure: tuple[str, str] | list[dict[str, Any]] | None = None
    ) -> None:
        """The output and error files of the lines answered (a failed batch's too); then the
        batch's last status, with counts from what the results file holds."""
        batch = self.store.get(batch_id)
        if failure is not None:
            status = "failed"
        else:
            ending = {"in_progress": "completed", "finalizing": "completed", "cancelling": "cancelled"}
            status = ending.get(batch["status"], batch["status"])
            if batch["status"] == "in_progress":
                self._update(batch_id, status="finalizing", finalizing_at=int(time.time()))
        output, errors, results = await anyio.to_thread.run_sync(self._write_results, batch_id)
        changes: dict[str, Any] = {
            "status": status,
            "output_file_id": output,
            "error_file_id": errors,
            f"{status}_at": int(time.time()),
        }
        if results:
            failed = sum(1 for r in results if is_failure(r))
            total = max(batch["request_counts"]["total"], len(results))
            changes["request_counts"] = {"total": total, "completed": len(results) - failed, "failed": failed}
        if failure is not None:
            data = [_batch_error(*failure)] if isinstance(failure, tuple) else failure
            changes["errors"] = {"object": "list", "data": data}
        self._update(batch_id, **changes)
        self._counted_at.pop(batch_id, None)
        await anyio.to_thread.run_sync(self.store.drop_results, batch_id)

    def _write_results(self, batch_id: str) -> tuple[str | None, str | None, list[dict[str, Any]]]:
        results = self.store.results(batch_id)
        outputs = [r for r in results if not is_failure(r)]
        failures = [r for r in results if is_failure(r)]
        output = self._store_output(f"{batch_id}_output.jsonl", outputs)
        errors = self._store_output(f"{batch_id}_error.jsonl", failures)
        return output, errors, results

    def _store_output(self, name: str, results: list[dict[str, Any]]) -> str | None:
        if not results:
            return None
        return self.files.create(name, "batch_output", jsonl(results), bounded=False)["id"]

    def _count(self, batch_id: str, total: int, answered: int, failed: int) -> None:
        counts = {"total": total, "completed": answered - failed, "failed": failed}
        self._update(batch_id, request_counts=counts)
        self._counted_at[batch_id] = time.monotonic()

    def _update(self, batch_id: str, **changes: Any) -> None:
        # Read, change, write with no await between: the routes' changes (cancel) are never lost.
        batch = self.store.get(batch_id)
        batch.update(changes)
        self.store.save(batch)


@contextlib.contextmanager
def _first_error() -> Iterator[None]:
    """A task group's error as itself, not wrapped in an ExceptionGroup."""
    try:
        yield
    except BaseExceptionGroup as group:
        first = group.exceptions[0]
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise first from None


def _batch_error(code: str, message: str) -> dict[str, Any]:
    return {"code": code, "message": message, "param": None, "line": None}


def _owner_pid(root: Path) -> int | None:
    try:
        return int((root / "owner.pid").read_text())
    except (OSError, ValueError):
        return None
