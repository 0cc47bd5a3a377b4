"""OpenAI wire format: request bodies into internal requests, internal results into OpenAI bodies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from heylook.errors import HeylookError, InvalidRequest
from heylook.protocols.errors import openai_error_body
from heylook.protocols.fields import read_bool, read_int, read_object, read_settings, read_str, schema_text
from heylook.protocols.tools import (
    check_tool_turns,
    read_reasoning_effort,
    read_tool_calls,
    read_tool_choice,
    read_tools,
)
from heylook.protocols.writer import Media
from heylook.types import (
    ChatPrompt,
    FinalChunk,
    FinishReason,
    GenerationRequest,
    JsonFormat,
    Message,
    RemoteModel,
    Reply,
    ReplyChunk,
    SamplingOptions,
    TextChunk,
    TextPrompt,
    ThinkingChunk,
    ToolCall,
    ToolCallChunk,
    Usage,
)

# OpenAI's "developer" role is its newer name for "system".
_ROLE_ALIASES = {"developer": "system"}
_ROLES = ("system", "user", "assistant", "tool", "developer")


@dataclass(frozen=True)
class StreamMode:
    stream: bool = False
    include_usage: bool = False


@dataclass(frozen=True)
class CompletionExtras:
    echo: str = ""  # the prompt, when the request asks for it back before the completion


def parse_chat_request(body: dict[str, Any]) -> tuple[GenerationRequest, StreamMode]:
    """A /v1/chat/completions body as an internal request."""
    model = read_str(body, "model", required=True)
    messages = _read_messages(body)
    _reject_unsupported(body)
    tools = read_tools(body)
    parallel = read_bool(body, "parallel_tool_calls")
    request = GenerationRequest(
        model=model or "",
        prompt=ChatPrompt(messages),
        options=_read_sampling(body),
        tools=tools,
        tool_choice=read_tool_choice(body, tools),
        parallel_tool_calls=parallel is not False,
        think=read_reasoning_effort(body),
    )
    return request, _read_stream_mode(body)


def parse_completion_request(
    body: dict[str, Any],
) -> tuple[GenerationRequest, StreamMode, CompletionExtras]:
    """A /v1/completions body as an internal request: the prompt goes to the model untemplated."""
    model = read_str(body, "model", required=True)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if prompt is None:
        raise InvalidRequest("'prompt' is required", param="prompt")
    if isinstance(prompt, list):
        raise InvalidRequest(
            "'prompt' must be a string; arrays of several prompts or of token ids are not supported",
            param="prompt",
        )
    if not isinstance(prompt, str):
        raise InvalidRequest("'prompt' must be a string", param="prompt")
    _reject_unsupported(body)
    if body.get("suffix") is not None:
        raise InvalidRequest("'suffix' is not supported", param="suffix")
    best_of = read_int(body, "best_of", minimum=1)
    if best_of not in (None, 1):
        raise InvalidRequest("'best_of' greater than 1 is not supported", param="best_of")
    request = GenerationRequest(
        model=model or "",
        prompt=TextPrompt(prompt),
        options=_read_sampling(body),
    )
    extras = CompletionExtras(echo=prompt if read_bool(body, "echo") else "")
    return request, _read_stream_mode(body), extras


def _read_messages(body: dict[str, Any]) -> tuple[Message, ...]:
    raw = body.get("messages")
    if raw is None:
        raise InvalidRequest("'messages' is required", param="messages")
    if not isinstance(raw, list):
        raise InvalidRequest("'messages' must be an array", param="messages")
    if not raw:
        raise InvalidRequest("'messages' must not be empty", param="messages")
    messages = []
    for index, item in enumerate(raw):
        param = f"messages[{index}]"
        if not isinstance(item, dict):
            raise InvalidRequest(f"'{param}' must be an object", param=param)
        role = read_str(item, "role", param=f"{param}.role", required=True)
        if role not in _ROLES:
            raise InvalidRequest(
                f"'{param}.role' must be one of {', '.join(_ROLES)}, not {role!r}", param=f"{param}.role"
            )
        content = _read_content(item.get("content"), f"{param}.content")
        calls = read_tool_calls(item.get("tool_calls"), f"{param}.tool_calls") if role == "assistant" else ()
        call_id = read_str(item, "tool_call_id", param=f"{param}.tool_call_id")
        if role == "tool" and not call_id:
            raise InvalidRequest(
                f"'{param}.tool_call_id' is required in a tool message", param=f"{param}.tool_call_id"
            )
        # vLLM and DeepSeek send earlier reasoning back as reasoning_content; Ollama's layer as reasoning.
        thinking = read_str(item, "reasoning_content", param=f"{param}.reasoning_content")
        thinking = thinking or read_str(item, "reasoning", param=f"{param}.reasoning")
        messages.append(
            Message(
                role=_ROLE_ALIASES.get(role, role),
                content=content,
                tool_calls=calls,
                tool_call_id=call_id if role == "tool" else None,
                tool_name=read_str(item, "name", param=f"{param}.name") if role == "tool" else None,
                thinking=thinking or "",
            )
        )
    check_tool_turns(tuple(messages))
    return tuple(messages)


def _read_content(content: object, param: str) -> str:
    """Message content: a string, null, or an array of text parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise InvalidRequest(f"'{param}' must be a string or an array of content parts", param=param)
    texts = []
    for index, part in enumerate(content):
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise InvalidRequest(f"'{param}[{index}]' must be a content part object with a type", param=param)
        if part["type"] != "text":
            raise InvalidRequest(f"content parts of type {part['type']!r} are not supported", param=param)
        text = read_str(part, "text", param=f"{param}[{index}].text", required=True)
        texts.append(text or "")
    return "".join(texts)


def _read_sampling(body: dict[str, Any]) -> SamplingOptions:
    return SamplingOptions(response_format=_read_response_format(body)).over(read_settings(body, "openai"))


def _read_response_format(body: dict[str, Any]) -> JsonFormat | None:
    response_format = read_object(body, "response_format")
    if response_format is None:
        return None
    kind = response_format.get("type")
    if kind in (None, "text"):
        return None
    if kind == "json_object":
        return JsonFormat()
    if kind == "json_schema":
        spec = read_object(response_format, "json_schema", param="response_format.json_schema") or {}
        schema = read_object(spec, "schema", param="response_format.json_schema.schema")
        if schema is None:
            raise InvalidRequest(
                "'response_format.json_schema.schema' is required", param="response_format.json_schema.schema"
            )
        return JsonFormat(schema_text(schema, "response_format.json_schema.schema"))
    raise InvalidRequest(
        f"response_format type must be text, json_object or json_schema, not {kind!r}",
        param="response_format",
    )


def _read_stream_mode(body: dict[str, Any]) -> StreamMode:
    stream = bool(read_bool(body, "stream"))
    options = read_object(body, "stream_options") or {}
    include_usage = read_bool(options, "include_usage", param="stream_options.include_usage")
    return StreamMode(stream=stream, include_usage=bool(include_usage))


def _reject_unsupported(body: dict[str, Any]) -> None:
    """Refuse what heylook cannot honour yet, rather than silently ignoring it."""
    n = read_int(body, "n", minimum=1)
    if n not in (None, 1):
        raise InvalidRequest("'n' greater than 1 is not supported", param="n")
    if body.get("logprobs") or body.get("top_logprobs"):
        raise InvalidRequest("'logprobs' is not supported yet", param="logprobs")
    if body.get("logit_bias"):
        raise InvalidRequest("'logit_bias' is not supported yet", param="logit_bias")
    if body.get("functions") or body.get("function_call"):
        raise InvalidRequest(
            "'functions' is OpenAI's deprecated form of 'tools': send 'tools'", param="functions"
        )


# --- writers ---------------------------------------------------------------------------------------


def usage_body(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


def _envelope(
    object_name: str, id: str, created: int, model: str, choices: list[dict[str, Any]]
) -> dict[str, Any]:
    """What every OpenAI completion body and stream chunk shares."""
    return {
        "id": id,
        "object": object_name,
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": choices,
    }


def _choice(fields: dict[str, Any], finish_reason: FinishReason | None) -> dict[str, Any]:
    return {"index": 0, **fields, "logprobs": None, "finish_reason": finish_reason}


def chat_completion_body(
    *, id: str, created: int, model: str, reply: Reply, finish_reason: FinishReason, usage: Usage
) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        # OpenAI's content is null when the reply is only calls.
        "content": reply.content if reply.content or not reply.tool_calls else None,
        "refusal": None,
    }
    if reply.thinking:
        message["reasoning_content"] = reply.thinking
    if reply.tool_calls:
        message["tool_calls"] = [tool_call_body(call) for call in reply.tool_calls]
    choices = [_choice({"message": message}, finish_reason)]
    return {**_envelope("chat.completion", id, created, model, choices), "usage": usage_body(usage)}


def tool_call_body(call: ToolCall) -> dict[str, Any]:
    return {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}


@dataclass(frozen=True)
class _Writer:
    id: str
    created: int
    model: str
    stream: bool = False
    include_usage: bool = False
    object_name = ""
    media: ClassVar[Media] = "sse"

    def closing(self, final: FinalChunk) -> list[dict[str, Any]]:
        """The finish chunk, then with include_usage a chunk with no choices and the usage."""
        chunks = [self._chunk([self._finish_fields()], final.finish_reason)]
        if self.include_usage:
            chunks.append(self._chunk([], usage=final.usage))
        return chunks

    def error(self, error: HeylookError) -> dict[str, Any]:
        return openai_error_body(error)

    def _finish_fields(self) -> dict[str, Any]:
        raise NotImplementedError

    def _chunk(
        self, choices: list[dict[str, Any]], reason: FinishReason | None = None, usage: Usage | None = None
    ) -> dict[str, Any]:
        choices = [_choice(c, reason) for c in choices]
        body = _envelope(self.object_name, self.id, self.created, self.model, choices)
        if self.include_usage:
            body["usage"] = usage_body(usage) if usage is not None else None
        return body


@dataclass(frozen=True)
class ChatWriter(_Writer):
    """Internal chunks as chat.completion.chunk bodies (a role chunk, content, reasoning and tool
    call deltas, a finish chunk), or as one chat.completion."""

    object_name = "chat.completion.chunk"

    def opening(self) -> list[dict[str, Any]]:
        return [self._chunk([{"delta": {"role": "assistant", "content": ""}}])]

    def delta(self, chunk: ReplyChunk) -> list[dict[str, Any]]:
        if isinstance(chunk, TextChunk):
            return [self._chunk([{"delta": {"content": chunk.text}}])]
        if isinstance(chunk, ThinkingChunk):
            return [self._chunk([{"delta": {"reasoning_content": chunk.text}}])]
        if isinstance(chunk, ToolCallChunk):
            # A call's first delta has its index, id and name; the ones after, its arguments.
            part: dict[str, Any] = {"index": chunk.index, "function": {"arguments": chunk.arguments}}
            if chunk.name:
                part = {"index": chunk.index, "id": chunk.id, "type": "function"}
                part["function"] = {"name": chunk.name, "arguments": chunk.arguments}
            return [self._chunk([{"delta": {"tool_calls": [part]}}])]
        return []  # a whole call: its pieces went out already

    def whole(self, reply: Reply, final: FinalChunk) -> dict[str, Any]:
        return chat_completion_body(
            id=self.id, created=self.created, model=self.model, reply=reply,
            finish_reason=final.finish_reason, usage=final.usage,
        )  # fmt: skip

    def _finish_fields(self) -> dict[str, Any]:
        return {"delta": {}}


@dataclass(frozen=True)
class CompletionWriter(_Writer):
    """Internal chunks as text_completion bodies; `echo` puts the prompt before the completion."""

    echo: str = ""
    object_name = "text_completion"

    def opening(self) -> list[dict[str, Any]]:
        return [self._text(self.echo)] if self.echo else []

    def delta(self, chunk: ReplyChunk) -> list[dict[str, Any]]:
        return [self._text(chunk.text)] if isinstance(chunk, TextChunk) else []

    def _text(self, text: str) -> dict[str, Any]:
        return self._chunk([{"text": text}])

    def whole(self, reply: Reply, final: FinalChunk) -> dict[str, Any]:
        return completion_body(
            id=self.id, created=self.created, model=self.model, text=self.echo + reply.content,
            finish_reason=final.finish_reason, usage=final.usage,
        )  # fmt: skip

    def _finish_fields(self) -> dict[str, Any]:
        return {"text": ""}


def completion_body(
    *, id: str, created: int, model: str, text: str, finish_reason: FinishReason, usage: Usage
) -> dict[str, Any]:
    choices = [_choice({"text": text}, finish_reason)]
    return {**_envelope("text_completion", id, created, model, choices), "usage": usage_body(usage)}


def model_body(name: str, created: int, owned_by: str = "heylook") -> dict[str, Any]:
    return {"id": name, "object": "model", "created": created, "owned_by": owned_by}


def remote_model_body(model: RemoteModel) -> dict[str, Any]:
    """A model Hugging Face's router offers, with each provider's status, context length, pricing
    and tool support as the router gives them. `curated_fallback` marks heylook's own list."""
    body = model_body(model.id, 0, model.owned_by)
    return {**body, "providers": model.providers, "curated_fallback": model.fallback_list}


def model_list_body(models: list[dict[str, Any]]) -> dict[str, Any]:
    return {"object": "list", "data": models}
