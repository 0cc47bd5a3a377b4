"""A scripted OpenAI-compatible upstream for the coding agents' round trips: offered a tool it was told
to call, with no tool result yet in the conversation, it streams that call; once the conversation holds
the tool's result, it streams a text answer quoting it. Anything else (an agent's side requests: a
title, a summary) gets a short text, or a JSON object where a schema is asked for. It records every
chat completion body it is sent."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class ScriptedCall:
    """The call to make when a tool of this name is offered: `arguments` as a JSON object."""

    tool: str
    arguments: dict[str, Any]


@dataclass
class AgentUpstream:
    calls: list[ScriptedCall] = field(default_factory=list)
    answer: str = "The tool said: {result}"
    # (file name, text): answer as aider's `whole` edit format asks, the file's name, then its text
    # fenced.
    answer_whole: tuple[str, str] | None = None
    bodies: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.upstream = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> AgentUpstream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def reply_to(self, body: dict[str, Any]) -> dict[str, Any]:
        """What to answer: {"call": (name, arguments)} or {"text": ...}."""
        messages = body.get("messages") or []
        results = [m for m in messages if m.get("role") == "tool"]
        offered = {(t.get("function") or {}).get("name") for t in body.get("tools") or []}
        if results:
            # The last line of what the tool printed (agents wrap it: exit codes, timings).
            lines = _text(results[-1].get("content")).strip().splitlines() or [""]
            return {"text": self.answer.format(result=lines[-1].strip())}
        if self.answer_whole is not None:
            name, text = self.answer_whole
            return {"text": f"{name}\n```\n{text}\n```\n"}
        for call in self.calls:
            if call.tool in offered:
                return {"call": (call.tool, json.dumps(call.arguments))}
        response_format = body.get("response_format") or {}
        if response_format.get("type") in ("json_schema", "json_object"):
            schema = (response_format.get("json_schema") or {}).get("schema") or {}
            return {"text": json.dumps(_example(schema))}
        return {"text": "Ready."}

    def tool_results(self) -> list[str]:
        """The tool results the agents sent back, in order."""
        return [
            _text(m.get("content"))
            for body in self.bodies
            for m in body.get("messages") or []
            if m.get("role") == "tool"
        ]


def _text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return str(content or "")


def _example(schema: dict[str, Any]) -> Any:
    """A value of a JSON schema's shape: what a side request asking for structured output gets."""
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        properties = schema.get("properties") or {}
        return {name: _example(sub) for name, sub in properties.items()}
    if kind == "array":
        return []
    if kind in ("integer", "number"):
        return 0
    if kind == "boolean":
        return False
    return "Scripted reply"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/v1/models":
            self._send(200, "application/json", json.dumps({"object": "list", "data": []}).encode())
        else:
            self._send(404, "application/json", b'{"error": {"message": "not found"}}')

    def do_POST(self) -> None:
        upstream: AgentUpstream = self.server.upstream  # type: ignore[attr-defined]
        length = int(self.headers.get("content-length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        if not self.path.endswith("/chat/completions"):
            self._send(404, "application/json", b'{"error": {"message": "not found"}}')
            return
        upstream.bodies.append(body)
        reply = upstream.reply_to(body)
        model = body.get("model", "")
        usage = {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16}
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": reply.get("text")}
            finish = "stop"
            if "call" in reply:
                name, arguments = reply["call"]
                message["tool_calls"] = [
                    {
                        "id": "call_scripted",
                        "type": "function",
                        "function": {"name": name, "arguments": arguments},
                    }
                ]
                finish = "tool_calls"
            whole = {
                "id": "scripted",
                "object": "chat.completion",
                "created": 1,
                "model": model,
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": usage,
            }
            self._send(200, "application/json", json.dumps(whole).encode())
            return
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("connection", "close")
        self.end_headers()

        def event(delta: dict[str, Any], finish: str | None = None) -> None:
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
            chunk = {"id": "scripted", "object": "chat.completion.chunk", "created": 1, "model": model}
            self.wfile.write(f"data: {json.dumps(chunk | {'choices': [choice]})}\n\n".encode())

        event({"role": "assistant", "content": ""})
        if "call" in reply:
            name, arguments = reply["call"]
            head = {"index": 0, "id": "call_scripted", "type": "function"}
            event({"tool_calls": [{**head, "function": {"name": name, "arguments": ""}}]})
            event({"tool_calls": [{"index": 0, "function": {"arguments": arguments}}]})
            event({}, "tool_calls")
        else:
            text = reply["text"]
            for start in range(0, len(text), 8):
                event({"content": text[start : start + 8]})
            event({}, "stop")
        if (body.get("stream_options") or {}).get("include_usage"):
            chunk = {"id": "scripted", "object": "chat.completion.chunk", "created": 1, "model": model}
            self.wfile.write(f"data: {json.dumps(chunk | {'choices': [], 'usage': usage})}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()
        self.close_connection = True

    def _send(self, status: int, media: str, data: bytes) -> None:
        self.send_response(status)
        self.send_header("content-type", media)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
