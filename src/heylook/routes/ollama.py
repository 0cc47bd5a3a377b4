"""The Ollama API beside generation: listing, showing, copying, deleting and pulling models, and the
probes clients make (/, /api/version). /api/chat and /api/generate are in routes.generation."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import anyio.from_thread
import anyio.to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from heylook.errors import HeylookError, InvalidRequest, NotImplementedYet, ServerBusy
from heylook.models.catalog import model_facts
from heylook.models.memory import model_memory
from heylook.models.pull import PullProgress, PullTarget, alias_entry, parse_pull_name, pull_model
from heylook.protocols import ollama
from heylook.protocols.errors import ollama_error_body
from heylook.registry.aliases import Registry, RegistryError, check_alias_name, untagged
from heylook.registry.edits import add_alias, copy_alias, delete_alias
from heylook.registry.watch import registry_problem
from heylook.router import ModelRouter
from heylook.routes.common import json_body, router_of

log = logging.getLogger(__name__)


async def root(request: Request) -> Response:
    """Clients probe this to find an Ollama server."""
    return PlainTextResponse("Ollama is running")


async def version(request: Request) -> Response:
    return JSONResponse({"version": ollama.OLLAMA_API_VERSION})


async def tags(request: Request) -> Response:
    aliases = list(router_of(request).registry.aliases.values())
    facts = await anyio.to_thread.run_sync(lambda: [model_facts(alias) for alias in aliases])
    return JSONResponse(ollama.tags_body(facts))


async def show(request: Request) -> Response:
    name = ollama.read_model_field(await json_body(request))
    alias = router_of(request).registry.get(name)
    return JSONResponse(ollama.show_body(await anyio.to_thread.run_sync(model_facts, alias)))


async def ps(request: Request) -> Response:
    router = router_of(request)
    registry = router.registry
    running = []
    for key, resident in router.residents().items():
        alias = registry.aliases.get(resident.name) or next(
            (a for a in registry.aliases.values() if a.model_key == key), None
        )
        if alias is None:  # its alias was deleted while the model stayed loaded
            continue
        facts = await anyio.to_thread.run_sync(model_facts, alias)
        memory = model_memory(resident.model)
        running.append(
            ollama.Running(
                facts=facts,
                size=memory.total,
                on_gpu=memory.on_gpu,
                expires_at=resident.expires_at,
                context_length=resident.model.context_length,
                quantization_level=resident.model.quantization_level,
                memory=memory.as_dict(),
            )
        )
    return JSONResponse(ollama.ps_body(running, names=registry.aliases))


async def copy(request: Request) -> Response:
    source, destination = ollama.read_copy_request(await json_body(request))
    source = router_of(request).registry.get(source).name
    await _edit_registry(request, copy_alias, source, untagged(destination))
    return Response(status_code=200)


async def delete(request: Request) -> Response:
    name = router_of(request).registry.get(ollama.read_model_field(await json_body(request))).name
    await _edit_registry(request, delete_alias, name)
    return Response(status_code=200)


class RegistryUnusable(HeylookError):
    """models.yaml, as it is now, cannot be read (a broken hand edit): an edit through the API would
    work on something other than what clients see, or overwrite the user's unfinished work, so it
    waits until the file is fixed. An emptied file is an empty registry, which edits apply to."""

    status = 409
    kind = "invalid_request_error"
    code = "registry_unusable"

    def __init__(self, error: RegistryError) -> None:
        super().__init__(
            f"models.yaml cannot be edited until it is fixed (the server still serves its last good "
            f"version): {error}"
        )


class RegistryEdits:
    """Edits of models.yaml from the API, one at a time on a thread of their own, so that however
    many arrive, requests that generate never wait behind them for a worker thread; past
    `max_waiting` waiting, more are refused (503) rather than queued without end."""

    def __init__(self, max_waiting: int = 16) -> None:
        self.max_waiting = max_waiting
        self._thread = anyio.CapacityLimiter(1)
        self._waiting = 0

    async def apply(self, router: ModelRouter, edit: Callable[..., Registry], *args: Any) -> None:
        """Change models.yaml on disk and serve from what was written."""
        if self._waiting >= self.max_waiting:
            raise ServerBusy(f"{self._waiting} edits of models.yaml are waiting already", retry_after=2)
        self._waiting += 1
        try:
            router.registry = await anyio.to_thread.run_sync(
                self._edit, router.registry, edit, *args, limiter=self._thread
            )
        finally:
            self._waiting -= 1

    async def check(self, router: ModelRouter) -> None:
        """Refuse now (before a download, say) an edit that could not be made."""
        await anyio.to_thread.run_sync(self._usable, router.registry, limiter=self._thread)

    @staticmethod
    def _usable(serving: Registry) -> None:
        problem = registry_problem(serving)
        if problem is not None:
            raise RegistryUnusable(problem)

    @classmethod
    def _edit(cls, serving: Registry, edit: Callable[..., Registry], *args: Any) -> Registry:
        cls._usable(serving)
        try:
            return edit(serving.path, *args)
        except RegistryError as error:  # broken between the check and the edit's own read
            raise RegistryUnusable(error) from None


async def _edit_registry(request: Request, edit: Callable[..., Registry], *args: Any) -> None:
    await request.app.state.registry_edits.apply(router_of(request), edit, *args)


async def pull(request: Request) -> Response:
    """Download from the Hub with progress, then add an alias named as the model was asked for."""
    body = await json_body(request)
    name = ollama.read_model_field(body)
    try:
        target = parse_pull_name(name)
    except InvalidRequest:
        if router_of(request).registry.find(name) is None:
            raise
        # An alias that is no repo id (`smollm2`) is here already. Clients pull what they do not
        # find listed under the name they know (Codex's --oss looks for `smollm2`, and the listing
        # says `smollm2:latest`), as Ollama answers a pull of a model it has: success.
        return _pulled(ollama.read_pull_stream(body))
    check_alias_name(target.name, "model")  # before downloading anything
    await request.app.state.registry_edits.check(router_of(request))
    download = PullDownload(request, target)
    if not ollama.read_pull_stream(body):
        await download.run_to_end()
        return JSONResponse(download.last_line())
    return download  # type: ignore[return-value]


def _pulled(stream: bool) -> Response:
    done = {"status": "success"}
    if not stream:
        return JSONResponse(done)
    return Response(json.dumps(done) + "\n", media_type="application/x-ndjson")


class PullDownload:
    """One /api/pull: the download runs in a worker thread and reports progress into a bounded
    stream; as an ASGI response it streams that progress as NDJSON. Whatever happens to the client,
    the download goes on to the end, so the files it finished stay in the cache for the next pull."""

    def __init__(self, request: Request, target: PullTarget) -> None:
        self._request = request
        self._target = target
        self._send, self._receive = anyio.create_memory_object_stream[dict[str, Any]](64)
        self.failure: HeylookError | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with anyio.create_task_group() as group:
            group.start_soon(self._download)
            response = StreamingResponse(self._lines(), media_type="application/x-ndjson")
            await response(scope, receive, send)

    async def run_to_end(self) -> None:
        async with anyio.create_task_group() as group:
            group.start_soon(self._download)
            async with self._receive:
                async for _ in self._receive:
                    pass
        if self.failure is not None:
            raise self.failure

    def last_line(self) -> dict[str, Any]:
        return ollama_error_body(self.failure) if self.failure else {"status": "success"}

    async def _lines(self) -> AsyncIterator[str]:
        async with self._receive:
            async for line in self._receive:
                yield json.dumps(line) + "\n"
        yield json.dumps(self.last_line()) + "\n"

    async def _download(self) -> None:
        async with self._send:
            try:
                source = await anyio.to_thread.run_sync(pull_model, self._target, self._report)
                entry = await anyio.to_thread.run_sync(alias_entry, source)
                await _edit_registry(self._request, add_alias, self._target.name, entry)
                log.info("pulled %s as alias %s", source.describe(), self._target.name)
            except HeylookError as error:
                self.failure = error

    def _report(self, progress: PullProgress) -> None:
        """Called in the download thread. Success is ours to say, once the alias is written."""
        if progress.status == "success":
            return
        fields = {"digest": progress.digest, "total": progress.total, "completed": progress.completed}
        line = {"status": progress.status, **{k: v for k, v in fields.items() if v is not None}}
        anyio.from_thread.run_sync(self._offer, line)

    def _offer(self, line: dict[str, Any]) -> None:
        # Progress lines are cumulative: with nobody reading (client gone, buffer full) one can go.
        with contextlib.suppress(anyio.WouldBlock, anyio.BrokenResourceError, anyio.ClosedResourceError):
            self._send.send_nowait(line)


async def not_implemented(request: Request) -> Response:
    """Ollama routes heylook does not serve yet: a 501 saying so, not a bare 404."""
    await request.body()  # read, so the connection stays usable
    what = {
        "/api/create": "creating models from a Modelfile (make an alias in models.yaml, or `heylook create`)",
        "/api/push": "pushing models to a registry",
    }.get(request.url.path, "uploading blobs")
    raise NotImplementedYet(f"{what} is not supported by heylook yet")


routes = [
    Route("/", root, methods=["GET", "HEAD"]),
    Route("/api/version", version, methods=["GET"]),
    Route("/api/tags", tags, methods=["GET"]),
    Route("/api/show", show, methods=["POST"]),
    Route("/api/ps", ps, methods=["GET"]),
    Route("/api/copy", copy, methods=["POST"]),
    Route("/api/delete", delete, methods=["DELETE"]),
    Route("/api/pull", pull, methods=["POST"]),
    Route("/api/create", not_implemented, methods=["POST"]),
    Route("/api/push", not_implemented, methods=["POST"]),
    Route("/api/blobs/{digest}", not_implemented, methods=["HEAD", "POST"]),
]
