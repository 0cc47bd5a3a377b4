"""OpenAI's Files and Batch API: /v1/files (upload, list, retrieve, content, delete) and
/v1/batches (create, retrieve, list, cancel). The lines themselves are answered by the runner
(heylook.batches.runner), behind interactive requests. File I/O runs in worker threads, never on
the event loop; lists read only the page they answer.

A server that does not own the batches directory (another server holds its lock) serves the
files routes and reads batches, and answers 503 to creating or cancelling one: the owner runs
them."""

from __future__ import annotations

import time
from typing import Any

import anyio.to_thread
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from heylook.batches.files import FileNotFound, FileStore
from heylook.batches.runner import BatchRunner
from heylook.batches.store import BatchStore
from heylook.errors import InvalidRequest, UnsupportedMediaType
from heylook.routes.common import json_body
from heylook.wire.batches import BatchCreateRequest
from heylook.wire.validate import validate

# Pages of the lists: OpenAI's default and most.
_PAGE, _MAX_PAGE = 20, 100


def _files(request: Request) -> FileStore:
    return request.app.state.batch_files


def _batches(request: Request) -> BatchStore:
    return request.app.state.batch_store


def _runner(request: Request) -> BatchRunner:
    return request.app.state.batch_runner


async def upload_file(request: Request) -> Response:
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise UnsupportedMediaType("send multipart/form-data: a file part and a purpose field")
    store = _files(request)
    parts: dict[str, Any] = {}
    try:
        async with request.form(max_files=1, max_fields=2, max_part_size=1024) as form:
            for name, value in form.multi_items():
                if name not in ("file", "purpose"):
                    raise InvalidRequest(
                        f"unknown form part {name!r}: the parts are file and purpose", param=name
                    )
                if name in parts:
                    raise InvalidRequest(f"the {name!r} part is given twice", param=name)
                if isinstance(value, UploadFile):
                    parts[name] = (
                        value.filename or "upload.jsonl",
                        await value.read(store.limits.file_bytes + 1),
                    )
                else:
                    parts[name] = value
    except HTTPException as error:  # the form parser's own complaint (a malformed body, too many parts)
        raise InvalidRequest(f"the multipart body is malformed: {error.detail}") from None
    purpose = parts.get("purpose")
    if not isinstance(purpose, str):
        raise InvalidRequest("'purpose' is required, as a text field (batch)", param="purpose")
    file = parts.get("file")
    if not isinstance(file, tuple):
        raise InvalidRequest("'file' is required, as a file part", param="file")
    if purpose != "batch":  # batch_output is what batches write, not what clients upload
        raise InvalidRequest(f"'purpose' must be batch, not {purpose!r}", param="purpose")
    filename, data = file
    return JSONResponse(await anyio.to_thread.run_sync(store.create, filename, purpose, data))


async def list_files(request: Request) -> Response:
    limit, after = _page_args(request)
    purpose = request.query_params.get("purpose")
    found = await anyio.to_thread.run_sync(_files(request).page, limit, after, purpose)
    return JSONResponse(_page(found, after))


async def retrieve_file(request: Request) -> Response:
    return JSONResponse(await anyio.to_thread.run_sync(_files(request).get, request.path_params["file_id"]))


async def file_content(request: Request) -> Response:
    data = await anyio.to_thread.run_sync(_files(request).content, request.path_params["file_id"])
    return Response(data, media_type="application/jsonl")


async def delete_file(request: Request) -> Response:
    file_id = request.path_params["file_id"]
    active = await anyio.to_thread.run_sync(_batches(request).active)
    running = [b for b in active if b["input_file_id"] == file_id]
    if running:
        raise InvalidRequest(
            f"{file_id!r} is the input of {running[0]['id']}, which is running", param="file_id"
        )
    await anyio.to_thread.run_sync(_files(request).delete, file_id)
    return JSONResponse({"id": file_id, "object": "file", "deleted": True})


async def create_batch(request: Request) -> Response:
    _runner(request).check_owner()
    typed = validate(BatchCreateRequest, await json_body(request))
    try:
        file = await anyio.to_thread.run_sync(_files(request).get, typed.input_file_id)
        purpose = file["purpose"]
    except FileNotFound:
        raise InvalidRequest(
            f"'input_file_id': no file {typed.input_file_id!r}", param="input_file_id"
        ) from None
    if purpose != "batch":
        raise InvalidRequest(
            "'input_file_id' must name a file uploaded with purpose batch", param="input_file_id"
        )
    batch = await anyio.to_thread.run_sync(
        _batches(request).create, typed.input_file_id, typed.endpoint, typed.completion_window, typed.metadata
    )
    _runner(request).wake()
    return JSONResponse(batch)


async def retrieve_batch(request: Request) -> Response:
    batch_id = request.path_params["batch_id"]
    return JSONResponse(await anyio.to_thread.run_sync(_batches(request).get, batch_id))


async def list_batches(request: Request) -> Response:
    limit, after = _page_args(request)
    return JSONResponse(_page(await anyio.to_thread.run_sync(_batches(request).page, limit, after), after))


async def cancel_batch(request: Request) -> Response:
    _runner(request).check_owner()
    store = _batches(request)
    batch = store.get(request.path_params["batch_id"])
    if batch["status"] in ("validating", "in_progress"):
        batch.update(status="cancelling", cancelling_at=int(time.time()))
        store.save(batch)
        _runner(request).cancel(batch["id"])
    elif batch["status"] not in ("cancelling", "cancelled"):
        raise InvalidRequest(
            f"the batch is {batch['status']}: only a running batch can be cancelled", param="batch_id"
        )
    return JSONResponse(batch)


def _page_args(request: Request) -> tuple[int, str | None]:
    """A list's `limit` (1 to 100, OpenAI's default 20) and `after`."""
    raw = request.query_params.get("limit", str(_PAGE))
    # At most three ASCII digits: int() refuses over 4,300 digits, and takes digits of any script.
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 3 and 1 <= int(raw) <= _MAX_PAGE):
        raise InvalidRequest(f"'limit' must be an integer from 1 to {_MAX_PAGE}", param="limit")
    return int(raw), request.query_params.get("after")


def _page(found: tuple[list[dict[str, Any]], bool] | None, after: str | None) -> dict[str, Any]:
    """OpenAI's cursor page, newest first."""
    if found is None:
        raise InvalidRequest(f"'after': no {str(after)[:80]!r} to list from", param="after")
    page, more = found
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": more,
    }


routes = [
    Route("/v1/files", upload_file, methods=["POST"]),
    Route("/v1/files", list_files, methods=["GET"]),
    Route("/v1/files/{file_id}", retrieve_file, methods=["GET"]),
    Route("/v1/files/{file_id}", delete_file, methods=["DELETE"]),
    Route("/v1/files/{file_id}/content", file_content, methods=["GET"]),
    Route("/v1/batches", create_batch, methods=["POST"]),
    Route("/v1/batches", list_batches, methods=["GET"]),
    Route("/v1/batches/{batch_id}", retrieve_batch, methods=["GET"]),
    Route("/v1/batches/{batch_id}/cancel", cancel_batch, methods=["POST"]),
]
