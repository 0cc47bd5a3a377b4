"""A paced OpenAI-compatible upstream: a stand-in for a GPU box running vLLM, for scripts/bench.py --replicas.

It answers `GET /v1/models`, `GET /health` and `POST /v1/chat/completions`, streamed (SSE chunks
shaped like OpenAI's chat.completion.chunk: the role, one chunk per token, the finish_reason, the
usage when `stream_options.include_usage`, then `data: [DONE]`) or whole. Every reply has
`max_tokens` tokens (default 128), the first `--ttft-ms` after the request and the rest `--token-ms`
apart, on a fixed schedule kept with asyncio sleeps, so a stream's rate does not drift with this
process's own delays. A real upstream would not share the benchmark's CPU: this one is HTTP/1.1 on
raw asyncio streams (keep-alive, chunked replies), with each chunk's bytes made by string
formatting, so that it spends as little of it as it can.

    .venv/bin/python scripts/paced_upstream.py --port 8001 --token-ms 20 --ttft-ms 50
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import time
import uuid
from dataclasses import dataclass

log = logging.getLogger("paced_upstream")

WORDS = [" the", " keeper", " climbed", " stairs", " of", " a", " lighthouse", " while", " storm", " rose"]
MAX_BODY = 16 * 1024 * 1024
REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 411: "Length Required"}


@dataclass(frozen=True)
class Pace:
    token_s: float  # between tokens
    ttft_s: float  # from the request to the first token
    model: str  # what /v1/models lists


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def keep_alive(self) -> bool:
        return self.headers.get("connection", "").lower() != "close"


class BadRequest(Exception):
    pass


# --- HTTP/1.1 ----------------------------------------------------------------------------------


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    """The next request on a connection; None when the client has closed it."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as error:
        if error.partial.strip():
            raise BadRequest("truncated request head") from error
        return None
    except asyncio.LimitOverrunError as error:
        raise BadRequest("request head too large") from error
    request_line, *header_lines = head.decode("latin-1").split("\r\n")
    parts = request_line.split(" ")
    if len(parts) != 3:
        raise BadRequest(f"bad request line {request_line!r}")
    headers = {}
    for line in header_lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = b""
    if "content-length" in headers:
        length = int(headers["content-length"])
        if length > MAX_BODY:
            raise BadRequest("body too large")
        body = await reader.readexactly(length)
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        body = await read_chunked(reader)
    return Request(parts[0], parts[1].split("?", 1)[0], headers, body)


async def read_chunked(reader: asyncio.StreamReader) -> bytes:
    pieces: list[bytes] = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                pass
            return b"".join(pieces)
        pieces.append(await reader.readexactly(size))
        await reader.readexactly(2)


def head(status: int, content_type: str, *, length: int | None, keep_alive: bool) -> bytes:
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}", f"content-type: {content_type}"]
    lines.append(f"content-length: {length}" if length is not None else "transfer-encoding: chunked")
    if content_type == "text/event-stream":
        lines.append("cache-control: no-cache")
    lines.append("connection: keep-alive" if keep_alive else "connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def whole(status: int, payload: object, *, keep_alive: bool) -> bytes:
    body = json.dumps(payload, separators=(",", ":")).encode()
    return head(status, "application/json", length=len(body), keep_alive=keep_alive) + body


def error(status: int, message: str, *, keep_alive: bool = True) -> bytes:
    return whole(
        status, {"error": {"message": message, "type": "invalid_request_error"}}, keep_alive=keep_alive
    )


def sse_chunk(data: str) -> bytes:
    """One SSE event as one chunk of a chunked reply."""
    event = f"data: {data}\n\n".encode()
    return b"%x\r\n%b\r\n" % (len(event), event)


# --- the OpenAI API ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Completion:
    """What one chat completion request asked for."""

    model: str
    tokens: int
    prompt_tokens: int
    stream: bool
    include_usage: bool


def parse_completion(body: bytes, pace: Pace) -> Completion:
    try:
        request = json.loads(body)
    except ValueError as exc:
        raise BadRequest("the body is not JSON") from exc
    if not isinstance(request, dict) or not isinstance(request.get("messages"), list):
        raise BadRequest("'messages' must be a list")
    tokens = request.get("max_completion_tokens") or request.get("max_tokens") or 128
    if not isinstance(tokens, int) or tokens < 1:
        raise BadRequest("'max_tokens' must be a whole number of at least 1")
    stream_options = request.get("stream_options") or {}
    return Completion(
        model=str(request.get("model") or pace.model),
        tokens=tokens,
        prompt_tokens=max(1, len(json.dumps(request["messages"])) // 4),
        stream=bool(request.get("stream")),
        include_usage=bool(stream_options.get("include_usage")),
    )


def usage(completion: Completion) -> dict:
    return {
        "prompt_tokens": completion.prompt_tokens,
        "completion_tokens": completion.tokens,
        "total_tokens": completion.prompt_tokens + completion.tokens,
    }


class ChunkWriter:
    """chat.completion.chunk bodies for one stream; the constant parts are formatted once."""

    def __init__(self, completion: Completion) -> None:
        self.completion = completion
        identity = {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": completion.model,
            "system_fingerprint": None,
        }
        self._prefix = json.dumps(identity, separators=(",", ":"))[:-1]
        self._usage = ',"usage":null' if completion.include_usage else ""

    def _choice(self, delta: str, finish: str) -> bytes:
        choice = f'{{"index":0,"delta":{delta},"logprobs":null,"finish_reason":{finish}}}'
        return sse_chunk(f'{self._prefix},"choices":[{choice}]{self._usage}}}')

    def role(self) -> bytes:
        return self._choice('{"role":"assistant","content":""}', "null")

    def token(self, index: int) -> bytes:
        return self._choice(f'{{"content":"{WORDS[index % len(WORDS)]}"}}', "null")

    def finish(self) -> bytes:
        return self._choice("{}", '"length"')

    def usage(self) -> bytes:
        body = json.dumps(usage(self.completion), separators=(",", ":"))
        return sse_chunk(f'{self._prefix},"choices":[],"usage":{body}}}')


async def pause_until(deadline: float) -> None:
    delay = deadline - time.perf_counter()
    if delay > 0:
        await asyncio.sleep(delay)


async def stream_completion(
    writer: asyncio.StreamWriter, completion: Completion, pace: Pace, started: float, keep_alive: bool
) -> bool:
    """Streams the reply on its schedule; False when the client left part way."""
    chunks = ChunkWriter(completion)
    writer.write(head(200, "text/event-stream", length=None, keep_alive=keep_alive) + chunks.role())
    for index in range(completion.tokens):
        await pause_until(started + pace.ttft_s + index * pace.token_s)
        if writer.is_closing():
            return False
        writer.write(chunks.token(index))
        await writer.drain()
    tail = chunks.finish() + (chunks.usage() if completion.include_usage else b"")
    writer.write(tail + sse_chunk("[DONE]") + b"0\r\n\r\n")
    await writer.drain()
    return True


async def whole_completion(
    writer: asyncio.StreamWriter, completion: Completion, pace: Pace, started: float, keep_alive: bool
) -> None:
    await pause_until(started + pace.ttft_s + (completion.tokens - 1) * pace.token_s)
    text = "".join(WORDS[i % len(WORDS)] for i in range(completion.tokens))
    reply = {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": completion.model,
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": "length",
            }
        ],
        "usage": usage(completion),
    }
    writer.write(whole(200, reply, keep_alive=keep_alive))
    await writer.drain()


def models(pace: Pace) -> dict:
    listed = {"id": pace.model, "object": "model", "created": 0, "owned_by": "paced-upstream"}
    return {"object": "list", "data": [listed]}


async def answer(request: Request, writer: asyncio.StreamWriter, pace: Pace) -> bool:
    """Answers one request; False when the connection is done with."""
    started = time.perf_counter()
    keep = request.keep_alive
    if request.path in ("/v1/models", "/models", "/health") and request.method in ("GET", "HEAD"):
        payload = models(pace) if "models" in request.path else {"status": "ok"}
        writer.write(whole(200, payload, keep_alive=keep))
    elif request.path in ("/v1/chat/completions", "/chat/completions"):
        if request.method != "POST":
            writer.write(error(405, "use POST", keep_alive=keep))
        else:
            completion = parse_completion(request.body, pace)
            if completion.stream:
                return await stream_completion(writer, completion, pace, started, keep) and keep
            await whole_completion(writer, completion, pace, started, keep)
    else:
        writer.write(error(404, f"no route {request.method} {request.path}", keep_alive=keep))
    await writer.drain()
    return keep


async def serve_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pace: Pace) -> None:
    try:
        while (request := await read_request(reader)) is not None:
            try:
                if not await answer(request, writer, pace):
                    break
            except BadRequest as exc:
                writer.write(error(400, str(exc)))
                await writer.drain()
    except BadRequest as exc:
        writer.write(error(400, str(exc), keep_alive=False))
    except (ConnectionError, asyncio.IncompleteReadError):
        pass  # the client left
    finally:
        writer.close()


async def main_async(host: str, port: int, pace: Pace) -> None:
    server = await asyncio.start_server(
        lambda r, w: serve_connection(r, w, pace), host, port, backlog=1024, limit=1 << 20
    )
    log.info("paced upstream on http://%s:%d/v1: %s", host, port, pace)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--token-ms", type=float, default=20.0, help="between tokens (default 20: 50 tok/s)")
    parser.add_argument("--ttft-ms", type=float, default=50.0, help="from the request to the first token")
    parser.add_argument("--model", default="demo", help="the model /v1/models lists (any is served)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    pace = Pace(token_s=args.token_ms / 1e3, ttft_s=args.ttft_ms / 1e3, model=args.model)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main_async(args.host, args.port, pace))


if __name__ == "__main__":
    main()
