"""Remote models behind an OpenAI-compatible API (Hugging Face's router, vLLM, TGI, llama.cpp's
server, another heylook): requests in heylook's internal form go out as OpenAI requests through
the openai SDK, and the upstream's stream comes back chunk by chunk."""

from __future__ import annotations

import contextlib
import email.utils
import json
import logging
import math
import os
import re
import time
from collections.abc import AsyncGenerator, Iterator
from dataclasses import dataclass, replace
from typing import Any, Literal

import anyio
import httpx
import openai
import orjson

from heylook import options as settings_table
from heylook.errors import ContextLengthExceeded, GenerationFailed, InvalidRequest, UpstreamError
from heylook.generate import TokenClock, with_default_system
from heylook.metrics import Metrics
from heylook.protocols.images import image_url
from heylook.protocols.openai import tool_call_body
from heylook.protocols.tools import tool_body
from heylook.providers.base import ProviderHealth
from heylook.registry.aliases import Alias
from heylook.types import (
    LOGPROB_FLOOR,
    ChatPrompt,
    Chunk,
    Embeddings,
    EmbedRequest,
    FinalChunk,
    FinishReason,
    GenerationRequest,
    InfillPrompt,
    LoadRequest,
    Logprob,
    Logprobs,
    Message,
    RemoteModel,
    ReplyChunk,
    SamplingOptions,
    TextChunk,
    ThinkingChunk,
    Timings,
    TokenLogprob,
    ToolCall,
    ToolCallChunk,
    ToolCallDone,
    Usage,
)

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 120.0  # seconds one upstream request may take
RETRY_BUDGET = 30.0  # seconds a request may spend waiting to retry a 429 or 503
RETRYABLE = (429, 503)
HEALTH_TTL = 30.0
_HEALTH_TIMEOUT = 3.0


class RemoteProvider:
    """One OpenAI-compatible upstream: a base URL and how to find its token."""

    name = "openai"
    retry_budget = RETRY_BUDGET
    health_ttl = HEALTH_TTL

    def __init__(self, base_url: str, token_env: str | None = None, metrics: Metrics | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.token_env = token_env
        self.metrics = metrics
        self._clients: dict[tuple[str | None, float], openai.AsyncOpenAI] = {}
        self._http_clients: dict[float, httpx.AsyncClient] = {}
        self._health: tuple[float, ProviderHealth] | None = None

    # --- what subclasses decide -------------------------------------------------------------------

    def token(self) -> str | None:
        """The token to send, or None to send none. Never logged, never put in a message."""
        return os.environ.get(self.token_env) if self.token_env else None

    def describe(self) -> str:
        return f"{self.name} at {self.base_url}"

    # --- generating -------------------------------------------------------------------------------

    async def start(self, alias: Alias, request: GenerationRequest) -> RemoteGeneration:
        started = time.perf_counter_ns()
        prompt = with_default_system(request.prompt, alias.system)
        if isinstance(prompt, InfillPrompt):
            raise InvalidRequest(
                "fill in the middle (suffix) is not available for remote models", param="suffix"
            )
        if request.context:
            raise InvalidRequest("an earlier reply's context (token ids) cannot be sent to a remote model")
        if request.n > 1:
            raise InvalidRequest(
                f"'n' greater than 1 is not supported for remote models ({alias.name!r} is one)", param="n"
            )
        options = request.options.over(alias.options)
        body = {"model": alias.source.model, **openai_fields(options)}
        if isinstance(prompt, ChatPrompt):
            body["messages"] = [openai_message(m) for m in prompt.messages]
            body.update(tool_fields(request))
            kind: Literal["chat", "completion"] = "chat"
        else:
            if request.tools and request.tool_choice.mode != "none":
                raise InvalidRequest("tools need messages, not a raw prompt", param="tools")
            body["prompt"] = prompt.text
            kind = "completion"
        body.update(logprobs_fields(request, kind))
        stream = await self._open(kind, body, alias)
        return RemoteGeneration(request, alias.name, kind, stream, started, self.metrics)

    async def load(self, alias: Alias, request: LoadRequest) -> Literal["load", "unload"]:
        # Nothing to load here: the upstream holds the model.
        return "unload" if request.keep_alive == 0 else "load"

    async def _open(self, kind: str, body: dict[str, Any], alias: Alias) -> httpx.Response:
        """The upstream's stream, once its response has started; 429 and 503 are retried, honouring
        Retry-After, for up to `retry_budget` seconds in all. Sent with httpx itself, its events
        read as they come (upstream_events): the SDK's request building and typed chunks cost a
        front door half a millisecond a request and a third of its time a token."""
        client = self._http(alias.timeout or DEFAULT_TIMEOUT)
        url = f"{self.base_url}/{'chat/completions' if kind == 'chat' else 'completions'}"
        payload = orjson.dumps({**body, "stream": True, "stream_options": {"include_usage": True}})
        headers = {"content-type": "application/json", "authorization": f"Bearer {self.token() or 'none'}"}
        deadline = time.monotonic() + self.retry_budget
        attempt = 0
        while True:
            try:
                response = await client.send(
                    client.build_request("POST", url, content=payload, headers=headers), stream=True
                )
            except httpx.TimeoutException:
                raise self._timed_out(alias) from None
            except httpx.TransportError as error:
                raise self._unreachable(alias, error) from None
            if response.status_code < 400:
                return response
            try:
                await response.aread()
            finally:
                await response.aclose()
            status = response.status_code
            wait = _retry_after(response.headers) or min(8.0, 0.5 * 2**attempt)
            if status not in RETRYABLE or time.monotonic() + wait >= deadline:
                raise self._status_error(status, response.headers, _error_body(response), alias)
            log.info("%s answered %s for %s; retrying in %.1f s", self.describe(), status, alias.name, wait)
            attempt += 1
            await anyio.sleep(wait)

    async def embed(self, alias: Alias, request: EmbedRequest) -> Embeddings:
        """The upstream's embeddings (OpenAI's /embeddings), in the order of the inputs. The
        upstream cuts inputs that are too long as it does: `truncate` cannot be said to it."""
        started = time.perf_counter_ns()
        inputs: Any = [list(item) if isinstance(item, tuple) else item for item in request.inputs]
        client = self._client(alias.timeout or DEFAULT_TIMEOUT)
        with self._upstream_errors(alias):
            reply = await client.embeddings.create(
                model=alias.source.model,
                input=inputs,
                encoding_format="float",
                dimensions=request.dimensions if request.dimensions is not None else openai.omit,
            )
        prompt_tokens = getattr(getattr(reply, "usage", None), "prompt_tokens", None)
        return Embeddings(
            self._vectors(reply, len(inputs)),
            prompt_tokens if isinstance(prompt_tokens, int) else 0,
            total_ns=time.perf_counter_ns() - started,
        )

    def _vectors(self, reply: Any, count: int) -> list[list[float]]:
        """The reply's vectors in the inputs' order (by `index`, where every item has one); an
        UpstreamError (502) unless it is `count` lists of numbers. The SDK checks none of it: a
        reply that is not JSON comes as its text, a wrong field as it is."""
        data = getattr(reply, "data", None)
        if not isinstance(data, list):
            raise UpstreamError(f"{self.describe()} answered without a list of embeddings", status=502)
        if all(isinstance(getattr(item, "index", None), int) for item in data):
            data = sorted(data, key=lambda item: item.index)
        if len(data) != count:
            raise UpstreamError(
                f"{self.describe()} gave {len(data)} embeddings for {count} inputs", status=502
            )
        vectors: list[Any] = [getattr(item, "embedding", None) for item in data]
        try:
            if all(isinstance(vector, list) for vector in vectors):
                return [list(map(float, vector)) for vector in vectors]
        except (TypeError, ValueError):  # a value that is not a number
            pass
        raise UpstreamError(f"{self.describe()} gave embeddings that are not lists of numbers", status=502)

    @contextlib.contextmanager
    def _upstream_errors(self, alias: Alias) -> Iterator[None]:
        """The SDK's errors as heylook's: what the upstream answered, a timeout, no answer at all."""
        try:
            yield
        except openai.APIStatusError as error:
            raise self._status_error(error.status_code, error.response.headers, error.body, alias) from None
        except openai.APITimeoutError:
            raise self._timed_out(alias) from None
        except openai.APIConnectionError as error:
            raise self._unreachable(alias, error.__cause__ or error) from None
        except ValueError:  # a reply that says it is JSON, and is not
            raise UpstreamError(
                f"{self.describe()} answered {alias.name!r} with broken JSON", status=502
            ) from None

    def _timed_out(self, alias: Alias) -> UpstreamError:
        return UpstreamError(f"{self.describe()} did not answer for {alias.name!r} in time", status=504)

    def _unreachable(self, alias: Alias, cause: BaseException) -> UpstreamError:
        return UpstreamError(
            f"cannot reach {self.describe()} for {alias.name!r}: {type(cause).__name__}", status=502
        )

    def _status_error(self, status: int, headers: Any, body: Any, alias: Alias) -> HeylookErrorLike:
        """What the upstream answered (`body`: its error object, as the SDK gives it), as heylook's error."""
        upstream = self.describe()
        said = _upstream_message(body)
        if status in (401, 403):
            return UpstreamError(
                f"{upstream} refused heylook's token ({status}): {self._token_hint()}", status=502
            )
        if status == 404:
            return UpstreamError(f"{upstream} has no model {alias.source.model!r}{said}", status=404)
        if status == 429:
            retry = _retry_after(headers)
            return UpstreamError(
                f"{upstream} is rate-limiting requests for {alias.name!r}{said}",
                status=429,
                retry_after=math.ceil(retry) if retry else 5,
            )
        if status in (400, 413, 422) and (overflow := context_overflow(body)) is not None:
            # The same error as a local model's: each API then says it in its own words.
            prompt_tokens, context_length = overflow
            refused = f"{upstream} refused the request for {alias.name!r}{said}"
            return ContextLengthExceeded(prompt_tokens, context_length, alias.name, message=refused)
        if status in (400, 422):
            return InvalidRequest(f"{upstream} refused the request for {alias.name!r}{said}")
        if status == 503:
            retry = _retry_after(headers)
            return UpstreamError(
                f"{upstream} is unavailable for {alias.name!r}{said}",
                status=503,
                retry_after=math.ceil(retry) if retry else None,
            )
        return UpstreamError(f"{upstream} failed for {alias.name!r} ({status}){said}", status=502)

    def _token_hint(self) -> str:
        return f"set {self.token_env} to a token it accepts" if self.token_env else "it needs a token"

    def _http(self, timeout: float) -> httpx.AsyncClient:
        """The connections generation requests go out on (the SDK's pool limits: a stream holds one)."""
        if timeout not in self._http_clients:
            limits = httpx.Limits(max_connections=1000, max_keepalive_connections=100)
            self._http_clients[timeout] = httpx.AsyncClient(timeout=timeout, limits=limits)
        return self._http_clients[timeout]

    def _client(self, timeout: float) -> openai.AsyncOpenAI:
        token = self.token()
        key = (token, timeout)
        if key not in self._clients:
            # Retries are ours (which statuses, how long in all): the SDK's own are turned off.
            self._clients[key] = openai.AsyncOpenAI(
                base_url=self.base_url, api_key=token or "none", timeout=timeout, max_retries=0
            )
        return self._clients[key]

    # --- listing and health -----------------------------------------------------------------------

    async def list_models(self) -> list[RemoteModel]:
        page = await self._client(_HEALTH_TIMEOUT * 3).models.list()
        return [RemoteModel(m.id, getattr(m, "owned_by", None) or self.name) async for m in page]

    async def health(self) -> ProviderHealth:
        """Whether the upstream answers (its model list), checked at most every health_ttl seconds."""
        now = time.monotonic()
        if self._health and now - self._health[0] < self.health_ttl:
            return self._health[1]
        try:
            await self._client(_HEALTH_TIMEOUT).models.list()
            health = ProviderHealth(self.name, "ok", base_url=self.base_url)
        except openai.APIStatusError as error:
            status: Any = "missing token" if error.status_code in (401, 403) else "unreachable"
            health = ProviderHealth(self.name, status, f"answered {error.status_code}", self.base_url)
        except openai.APIError as error:
            health = ProviderHealth(self.name, "unreachable", type(error).__name__, self.base_url)
        self._health = (now, health)
        return health

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.close()
        for connections in self._http_clients.values():
            await connections.aclose()


HeylookErrorLike = UpstreamError | InvalidRequest


@dataclass
class RemoteGeneration:
    """An upstream's stream, as the internal chunks every route writes."""

    request: GenerationRequest
    served_by: str
    kind: Literal["chat", "completion"]
    stream: Any  # the upstream's streamed HTTP response (an httpx Response)
    started_ns: int
    metrics: Metrics | None = None
    prompt_tokens: int | None = None  # the upstream says it with the usage, at the end
    _closed: bool = False

    async def chunks(self) -> AsyncGenerator[Chunk, None]:
        """Closing this iterator closes the upstream response: the upstream stops generating."""
        clock = TokenClock(self.metrics, self.served_by, self.started_ns)
        usage: Any = None
        finish: str | None = None
        pieces = 0
        first_ns = 0
        calls = UpstreamCalls()
        try:
            async for chunk in upstream_events(self.stream):
                usage = chunk.usage or usage
                for choice in chunk.choices:
                    finish = choice.finish_reason or finish
                    parts = _delta_parts(choice.delta, pieces + 1, calls) if self.kind == "chat" else []
                    if self.kind != "chat" and choice.text:
                        parts = [TextChunk(choice.text, pieces + 1)]
                    parts = _with_logprobs(parts, upstream_logprobs(choice, self.kind), pieces + 1)
                    if parts:
                        pieces += 1
                        first_ns = first_ns or time.perf_counter_ns()
                        clock.arrived(pieces)
                    for part in parts:
                        yield part
        except GenerationFailed:
            raise
        except Exception as error:  # the connection's (httpx's) errors, or the upstream's JSON
            raise GenerationFailed(f"the upstream stream broke off: {type(error).__name__}") from None
        finally:
            await self.stream.aclose()
        if finish is None:  # the connection ended without the upstream saying the reply was done
            raise GenerationFailed("the upstream stream broke off before the reply was finished")
        for whole in calls.finished(pieces):
            yield whole
        done = time.perf_counter_ns()
        first_ns = first_ns or done
        final = FinalChunk(
            finish_reason=_finish_reason(finish),
            # Upstreams that report no usage get the count of pieces they sent (about one a token).
            usage=Usage(usage.prompt_tokens, usage.completion_tokens) if usage else Usage(0, pieces),
            timings=Timings(
                prompt_eval_ns=first_ns - self.started_ns,
                eval_ns=done - first_ns,
                total_ns=done - self.started_ns,
            ),
            logprobs=self.request.logprobs is not None,
        )
        clock.finished(final)
        yield final

    def close(self) -> None:
        # The upstream response is closed by the chunks iterator, which every route closes.
        self._closed = True


def openai_fields(options: SamplingOptions) -> dict[str, Any]:
    """Internal options as OpenAI request fields, by the settings table (heylook.options): every
    row with an OpenAI name that may go upstream; the extras vLLM and TGI accept go as they are."""
    stated = options.stated()
    fields: dict[str, Any] = {
        row.openai: list(value) if isinstance(value, tuple) else value
        for row in settings_table.SETTINGS
        if row.openai and row.forward and (value := stated.get(row.name)) is not None
    }
    if options.response_format is not None:
        schema = options.response_format.schema
        fields["response_format"] = (
            {"type": "json_schema", "json_schema": {"name": "output", "schema": json.loads(schema)}}
            if schema
            else {"type": "json_object"}
        )
    return {key: value for key, value in fields.items() if value is not None}


def logprobs_fields(request: GenerationRequest, kind: Literal["chat", "completion"]) -> dict[str, Any]:
    """Logprobs, asked of the upstream as its API spells them: chat's logprobs and top_logprobs,
    completions' logprobs (how many alternatives)."""
    if request.logprobs is None:
        return {}
    if kind == "chat":
        return {"logprobs": True, "top_logprobs": request.logprobs}
    return {"logprobs": request.logprobs}


def upstream_logprobs(choice: Any, kind: Literal["chat", "completion"]) -> Logprobs:
    """An upstream choice's logprobs as internal ones: chat's content entries, or the legacy
    completions lists (tokens, token_logprobs, top_logprobs, text_offset)."""
    given = getattr(choice, "logprobs", None)
    if given is None:
        return ()
    if kind == "chat":
        return tuple(map(_chat_entry, getattr(given, "content", None) or ()))
    tokens = getattr(given, "tokens", None) or []
    values = getattr(given, "token_logprobs", None) or []
    tops = getattr(given, "top_logprobs", None) or []
    offsets = getattr(given, "text_offset", None) or []
    entries = []
    for index, token in enumerate(tokens):
        likely = tops[index] if index < len(tops) and isinstance(tops[index], dict) else {}
        alternatives = sorted(likely.items(), key=lambda item: -_logprob(item[1]))
        entries.append(
            Logprob(
                token,
                _logprob(values[index] if index < len(values) else None),
                token.encode(),
                tuple(TokenLogprob(text, _logprob(value), text.encode()) for text, value in alternatives),
                offset=offsets[index] if index < len(offsets) else 0,
            )
        )
    return tuple(entries)


def _chat_entry(entry: Any) -> Logprob:
    own = _alternative(entry)
    top = tuple(map(_alternative, getattr(entry, "top_logprobs", None) or ()))
    return Logprob(own.token, own.logprob, own.raw, top)


def _alternative(entry: Any) -> TokenLogprob:
    """One of chat's token entries (token, logprob, bytes) as an internal one."""
    return TokenLogprob(
        entry.token, _logprob(entry.logprob), _raw(entry.token, getattr(entry, "bytes", None))
    )


def _logprob(value: Any) -> float:
    number = float(value) if isinstance(value, int | float) else LOGPROB_FLOOR
    return number if math.isfinite(number) else LOGPROB_FLOOR


def _raw(token: str, given: Any) -> bytes:
    if isinstance(given, list) and all(isinstance(b, int) and 0 <= b < 256 for b in given):
        return bytes(given)
    return token.encode()


def _with_logprobs(parts: list[ReplyChunk], logprobs: Logprobs, tokens: int) -> list[ReplyChunk]:
    """The upstream chunk's parts, the first carrying its logprobs (an empty text chunk does when
    the chunk brought no text, a tool call's end say)."""
    if not logprobs:
        return parts
    if not parts:
        return [TextChunk("", tokens, logprobs)]
    return [replace(parts[0], logprobs=logprobs), *parts[1:]]


def _finish_reason(reason: str | None) -> FinishReason:
    return "length" if reason == "length" else "tool_calls" if reason == "tool_calls" else "stop"


def openai_message(message: Message) -> dict[str, Any]:
    """An internal message as the OpenAI API sends it upstream."""
    body: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        body["content"] = message.content or None
        body["tool_calls"] = [tool_call_body(call) for call in message.tool_calls]
    if message.role == "tool":
        body["tool_call_id"] = message.tool_call_id or ""
        if message.tool_name:
            body["name"] = message.tool_name
    if message.images:
        # As OpenAI's content parts: the images first (as heylook renders them), then the text.
        parts: list[dict[str, Any]] = [
            {"type": "image_url", "image_url": {"url": image_url(image)}} for image in message.images
        ]
        body["content"] = [*parts, {"type": "text", "text": message.content}] if message.content else parts
    if message.thinking:
        body["reasoning_content"] = message.thinking
    return body


def tool_fields(request: GenerationRequest) -> dict[str, Any]:
    """tools, tool_choice, parallel_tool_calls and a reasoning effort, for an upstream to honour."""
    fields: dict[str, Any] = {}
    choice = request.tool_choice
    if request.tools:
        fields["tools"] = [tool_body(tool) for tool in request.tools]
        named = {"type": "function", "function": {"name": choice.name}}
        fields["tool_choice"] = named if choice.mode == "function" else choice.mode
        if not request.parallel_tool_calls:
            fields["parallel_tool_calls"] = False
    # A level; on or off is the upstream model's own default. A hint (Anthropic's adaptive thinking
    # and effort) is not passed on: an upstream whose model cannot reason refuses reasoning_effort.
    if isinstance(request.think, str) and not request.think_hint:
        fields["reasoning_effort"] = request.think
    return fields


class UpstreamCalls:
    """Tool calls as an upstream streams them (index, id and name first, then argument pieces),
    kept so that each can be given whole once the reply is done."""

    def __init__(self) -> None:
        self._calls: dict[int, ToolCall] = {}

    def add(self, delta: Any, tokens: int) -> list[ReplyChunk]:
        index = getattr(delta, "index", None) or 0
        function = getattr(delta, "function", None)
        name = getattr(function, "name", None) or ""
        arguments = getattr(function, "arguments", None) or ""
        if index not in self._calls:
            self._calls[index] = ToolCall(name, arguments, getattr(delta, "id", None) or f"call_{index}")
            return [ToolCallChunk(index, arguments, self._calls[index].id, name or "function", tokens)]
        known = self._calls[index]
        self._calls[index] = ToolCall(known.name, known.arguments + arguments, known.id)
        return [ToolCallChunk(index, arguments, tokens=tokens)] if arguments else []

    def finished(self, tokens: int) -> list[ToolCallDone]:
        return [ToolCallDone(index, call, tokens) for index, call in sorted(self._calls.items())]


def _delta_parts(delta: Any, tokens: int, calls: UpstreamCalls) -> list[ReplyChunk]:
    """One upstream delta as internal chunks: reasoning (vLLM's reasoning_content, or reasoning),
    text, and tool call pieces."""
    parts: list[ReplyChunk] = []
    thinking = getattr(delta, "reasoning_content", None) or getattr(delta, "reasoning", None)
    if isinstance(thinking, str) and thinking:
        parts.append(ThinkingChunk(thinking, tokens))
    if delta.content:
        parts.append(TextChunk(delta.content, tokens))
    for call in delta.tool_calls or []:
        parts.extend(calls.add(call, tokens))
    return parts


class Fields(dict[str, Any]):
    """A JSON object of an upstream's stream whose fields read as attributes (None when absent), as
    the SDK's models' do, without building them."""

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        return _fields(self.get(name))


def _fields(value: Any) -> Any:
    if type(value) is dict:
        return Fields(value)
    if type(value) is list:
        return [_fields(item) for item in value]
    return value


async def upstream_events(response: Any) -> AsyncGenerator[Fields, None]:
    """The JSON objects of a server-sent event stream, until `[DONE]`; an event that is an error
    (or says one) ends it with GenerationFailed."""
    data: list[bytes] = []
    async for line in _lines(response):
        if line.startswith(b"data:"):
            data.append(line[6:] if line.startswith(b"data: ") else line[5:])
            continue
        if line or not data:
            continue  # another field (event:, id:, a comment), or a blank line with no event
        text, data = b"\n".join(data), []
        if text == b"[DONE]":
            return
        event = orjson.loads(text)
        if not isinstance(event, dict):
            raise GenerationFailed("the upstream sent an event that is not a JSON object")
        if event.get("error"):
            raise GenerationFailed(f"the upstream failed mid-stream{_said(event['error'])}")
        yield Fields(event)


async def _lines(response: Any) -> AsyncGenerator[bytes, None]:
    """The response's lines as bytes, without their ends (\n, \r\n or \r): split here rather
    than by httpx's text decoders, which cost a front door a tenth of its time."""
    rest = b""
    async for piece in response.aiter_bytes():
        lines = (rest + piece).splitlines(keepends=True)
        rest = lines.pop() if lines and not lines[-1].endswith((b"\n", b"\r")) else b""
        for line in lines:
            yield line.rstrip(b"\r\n")
    if rest:
        yield rest


def _said(error: Any) -> str:
    message = error.get("message") if isinstance(error, dict) else error
    return f": {str(message)[:200]}" if message else ""


def _retry_after(headers: Any) -> float | None:
    """Retry-After in seconds (a number, or an HTTP date), if the upstream gave one."""
    value = headers.get("retry-after") if headers else None
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        moment = email.utils.parsedate_to_datetime(value)
        return max(0.0, moment.timestamp() - time.time()) if moment else None


def _error_body(response: httpx.Response) -> Any:
    """The error object of an upstream's error reply, as the SDK reads it: the JSON's `error` field,
    or the whole JSON, or the text."""
    try:
        data = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return response.text
    return data.get("error", data) if isinstance(data, dict) else data


# How upstreams say a prompt is over the context: OpenAI and vLLM ("This model's maximum context
# length is M tokens. However, your messages resulted in N tokens" / "you requested T tokens (N in
# the messages, ...)" / "your request has N input tokens"), llama.cpp ("request (N tokens) exceeds
# the available context size (M tokens)"), TGI ("`inputs` tokens + `max_new_tokens` must be <= M.
# Given: N `inputs` tokens"), Anthropic ("prompt is too long: N tokens > M maximum").
_CONTEXT_WORDS = re.compile(
    r"maximum context length|context size|context window|context length|prompt is too long"
    r"|`inputs` tokens \+",
    re.IGNORECASE,
)
_OVER = re.compile(r"exceed|too long|too large|reduce|must be <=", re.IGNORECASE)
_PROMPT_TOKENS = re.compile(
    r"(\d+) in the messages|(\d+) in your prompt|(\d+) input tokens|resulted in (\d+) tokens"
    r"|request \((\d+) tokens\)|prompt is too long: (\d+) tokens|Given: (\d+) `inputs` tokens",
    re.IGNORECASE,
)
_CONTEXT_TOKENS = re.compile(
    r"maximum context length is (\d+)|context size \((\d+) tokens\)|> (\d+) maximum"
    r"|must be <= (\d+)",
    re.IGNORECASE,
)


def context_overflow(body: Any) -> tuple[int | None, int | None] | None:
    """Whether an upstream's error object says the prompt is over the context, and the prompt's
    and the context's tokens where it says them; None when it says something else."""
    if isinstance(body, dict):
        code, kind, message = body.get("code"), body.get("type"), body.get("message")
    else:
        code, kind, message = None, None, body
    text = message if isinstance(message, str) else ""
    said_so = code == "context_length_exceeded" or kind == "exceed_context_size_error"
    if not said_so and not (_CONTEXT_WORDS.search(text) and _OVER.search(text)):
        return None
    return _first_number(_PROMPT_TOKENS, text), _first_number(_CONTEXT_TOKENS, text)


def _first_number(pattern: re.Pattern[str], text: str) -> int | None:
    found = pattern.search(text)
    return int(next(group for group in found.groups() if group is not None)) if found else None


def _upstream_message(body: Any) -> str:
    """What the upstream said, briefly (it never holds our token: the token is only in a header)."""
    if isinstance(body, dict):
        body = body.get("message") or body.get("error")
    return f": {str(body)[:200]}" if isinstance(body, str) and body else ""
