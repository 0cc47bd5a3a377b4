"""An OpenAI-compatible upstream on 127.0.0.1 that tests can script: replies streamed word by word,
error statuses with Retry-After, slow streams, dropped connections, and Hugging Face router-style
model listings. It records what it was asked and which streams their clients left."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Failure:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


ROUTER_MODELS = [
    {
        "id": "meta-llama/Llama-3.1-8B-Instruct",
        "object": "model",
        "created": 1700000000,
        "owned_by": "meta-llama",
        "providers": [
            {
                "provider": "sambanova",
                "status": "live",
                "context_length": 131072,
                "pricing": {"input": 0.1, "output": 0.2},
                "supports_tools": True,
                "supports_structured_output": False,
            }
        ],
    },
    {
        "id": "Qwen/Qwen2.5-72B-Instruct",
        "object": "model",
        "created": 1700000000,
        "owned_by": "Qwen",
        "providers": [],
    },
]


class FakeUpstream:
    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.failures: dict[str, list[Failure]] = {}  # by model: answered in turn, before any success
        self.token: str | None = None  # when set, requests must bear it
        self.delay = 0.0  # seconds between streamed words
        self.hang = 0.0  # seconds to wait before answering at all
        self.drop_after: int | None = None  # words streamed before the connection is cut
        self.left: list[str] = []  # models whose streams the client closed before the end
        self.reply_words = 40
        self.reasoning: str | None = None  # streamed first, as vLLM's reasoning_content
        self.calls: list[tuple[str, str]] = []  # (name, arguments): streamed as tool call deltas
        self.embeddings_reply: Any = None  # when set, /embeddings answers it (bytes as they are)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.upstream = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def fail(self, model: str, *failures: Failure) -> None:
        self.failures.setdefault(model, []).extend(failures)

    def reset(self) -> None:
        self.requests.clear()
        self.failures.clear()
        self.left.clear()
        self.token, self.delay, self.hang, self.drop_after, self.reply_words = None, 0.0, 0.0, None, 40
        self.reasoning, self.calls, self.embeddings_reply = None, [], None

    def __enter__(self) -> FakeUpstream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def fake_vector(item: str | list[int], size: int = 8) -> list[float]:
    """The fake upstream's embedding of a text or of token ids: the same for the same input."""
    seed = sum((index + 1) * ord(c) for index, c in enumerate(str(item)))
    return [((seed * (k + 3)) % 997) / 997 for k in range(size)]


def reply_words(model: str, count: int) -> Iterator[str]:
    words = f"hello from {model} and".split()
    for index in range(count):
        yield ("" if index == 0 else " ") + words[index % len(words)]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    @property
    def upstream(self) -> FakeUpstream:
        return self.server.upstream  # type: ignore[attr-defined]

    def do_GET(self) -> None:
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.upstream.requests.append(Recorded(self.path, headers, {}))
        if not self._authorised():
            return
        if self.path.rstrip("/") == "/v1/models":
            self._json(200, {"object": "list", "data": ROUTER_MODELS})
        else:
            self._json(404, {"error": "not found"})

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        upstream = self.upstream
        upstream.requests.append(Recorded(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        if not self._authorised():
            return
        if upstream.hang:
            time.sleep(upstream.hang)
        model = body.get("model", "")
        pending = upstream.failures.get(model)
        if pending:
            failure = pending.pop(0)
            self._json(
                failure.status,
                failure.body or {"error": {"message": f"scripted {failure.status}"}},
                failure.headers,
            )
            return
        if self.path.endswith("/embeddings"):
            self._embeddings(model, body)
            return
        chat = self.path.endswith("/chat/completions")
        if not body.get("stream"):
            text = "".join(reply_words(model, upstream.reply_words))
            choice = {"index": 0, "finish_reason": "length"}
            choice |= {"message": {"role": "assistant", "content": text}} if chat else {"text": text}
            usage = {
                "prompt_tokens": 7,
                "completion_tokens": upstream.reply_words,
                "total_tokens": 7 + upstream.reply_words,
            }
            self._json(
                200,
                {
                    "id": "x",
                    "object": "chat.completion",
                    "created": 1,
                    "model": model,
                    "choices": [choice],
                    "usage": usage,
                },
            )
            return
        self._stream(model, chat, body)

    def _embeddings(self, model: str, body: dict[str, Any]) -> None:
        """fake_vector of each input (text, or token ids), listed last first, as `index` allows;
        `dimensions` values each. Usage: a token a word (or a token id)."""
        if self.upstream.embeddings_reply is not None:
            self._json(200, self.upstream.embeddings_reply)
            return
        given = body.get("input")
        inputs = [given] if isinstance(given, str) or (given and isinstance(given[0], int)) else given
        size = body.get("dimensions") or 8
        data = [
            {"object": "embedding", "index": index, "embedding": fake_vector(item, size)}
            for index, item in enumerate(inputs)
        ]
        tokens = sum(len(item) if isinstance(item, list) else len(item.split()) for item in inputs)
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        self._json(200, {"object": "list", "data": data[::-1], "model": model, "usage": usage})

    def _stream(self, model: str, chat: bool, body: dict[str, Any]) -> None:
        upstream = self.upstream
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("connection", "close")
        self.end_headers()
        kind = "chat.completion.chunk" if chat else "text_completion"
        if chat and (upstream.reasoning or upstream.calls):
            self._stream_parts(model, kind)
            return
        try:
            for index, word in enumerate(reply_words(model, upstream.reply_words)):
                if upstream.drop_after is not None and index >= upstream.drop_after:
                    self.wfile.flush()
                    self.connection.shutdown(2)  # cut off mid-stream
                    return
                choice = {"index": 0, "finish_reason": None}
                choice |= {"delta": {"content": word}} if chat else {"text": word}
                self._event({"id": "x", "object": kind, "created": 1, "model": model, "choices": [choice]})
                time.sleep(upstream.delay)
            last = {"index": 0, "finish_reason": "length"} | ({"delta": {}} if chat else {"text": ""})
            self._event({"id": "x", "object": kind, "created": 1, "model": model, "choices": [last]})
            if (body.get("stream_options") or {}).get("include_usage"):
                usage = {
                    "prompt_tokens": 7,
                    "completion_tokens": upstream.reply_words,
                    "total_tokens": 7 + upstream.reply_words,
                }
                self._event(
                    {"id": "x", "object": kind, "created": 1, "model": model, "choices": [], "usage": usage}
                )
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            upstream.left.append(model)
        self.close_connection = True

    def _stream_parts(self, model: str, kind: str) -> None:
        """Reasoning, then each call as OpenAI streams it: index, id and name, then the arguments in
        two pieces."""
        upstream = self.upstream

        def delta(fields: dict[str, Any], finish: str | None = None) -> None:
            choice = {"index": 0, "delta": fields, "finish_reason": finish}
            self._event({"id": "x", "object": kind, "created": 1, "model": model, "choices": [choice]})

        if upstream.reasoning:
            delta({"role": "assistant", "reasoning_content": upstream.reasoning})
        for index, (name, arguments) in enumerate(upstream.calls):
            head = {"index": index, "id": f"call_up{index}", "type": "function"}
            delta({"tool_calls": [{**head, "function": {"name": name, "arguments": ""}}]})
            middle = len(arguments) // 2
            for piece in (arguments[:middle], arguments[middle:]):
                delta({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
        delta({}, "tool_calls" if upstream.calls else "stop")
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()
        self.close_connection = True

    def _event(self, payload: dict[str, Any]) -> None:
        self.wfile.write(f"data: {json.dumps(payload)}\n\n".encode())
        self.wfile.flush()

    def _authorised(self) -> bool:
        token = self.upstream.token
        if token and self.headers.get("authorization") != f"Bearer {token}":
            self._json(401, {"error": "Invalid credentials in Authorization header"})
            return False
        return True

    def _json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)
