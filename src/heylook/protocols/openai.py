"""OpenAI wire format: request bodies into internal requests, internal results into OpenAI bodies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from heylook.errors import HeylookError, InvalidRequest
from heylook.protocols.errors import openai_error_body
from heylook.protocols.fields import schema_text
from heylook.protocols.tools import (
    check_tool_turns,
    effort_from,
    tool_calls_from,
    tool_choice_from,
    tools_from,
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
from heylook.wire import openai as wire
from heylook.wire.settings import stated_settings
from heylook.wire.validate import validate

# OpenAI's "developer" role is its newer name for "system".
_ROLE_ALIASES = {"developer": "system"}


@dataclass(frozen=True)
class StreamMode:
    stream: bool = False
    include_usage: bool = False


@dataclass(frozen=True)
class CompletionExtras:
    echo: str = ""  # the prompt, when the request asks for it back before the completion


def parse_chat_request(body: dict[str, Any]) -> tuple[GenerationRequest, StreamMode]:
    """A /v1/chat/completions body as an internal request: validated whole against its wire type
    (heylook.wire.openai), then what no type can say (tool turns answer calls, a chosen tool is
    among the tools)."""
    typed: Any = validate(wire.chat_completion_request(), body)
    messages = _messages(typed.messages)
    _reject_unsupported(typed)
    tools = tools_from(typed.tools)
    request = GenerationRequest(
        model=typed.model,
        prompt=ChatPrompt(messages),
        options=_sampling(typed),
        tools=tools,
        tool_choice=tool_choice_from(typed.tool_choice, tools),
        parallel_tool_calls=typed.parallel_tool_calls is not False,
        think=effort_from(typed.reasoning_effort, typed.reasoning),
    )
    return request, _stream_mode(typed)


def parse_completion_request(
    body: dict[str, Any],
) -> tuple[GenerationRequest, StreamMode, CompletionExtras]:
    """A /v1/completions body as an internal request: the prompt goes to the model untemplated."""
    typed: Any = validate(wire.completion_request(), body)
    prompt = typed.prompt
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if isinstance(prompt, list):
        raise InvalidRequest(
            "'prompt' must be a string; arrays of several prompts or of token ids are not supported",
            param="prompt",
        )
    _reject_unsupported(typed)
    if typed.suffix is not None:
        raise InvalidRequest("'suffix' is not supported", param="suffix")
    if typed.best_of not in (None, 1):
        raise InvalidRequest("'best_of' greater than 1 is not supported", param="best_of")
    request = GenerationRequest(model=typed.model, prompt=TextPrompt(prompt), options=_sampling(typed))
    extras = CompletionExtras(echo=prompt if typed.echo else "")
    return request, _stream_mode(typed), extras


def _messages(raw: list[wire.ChatMessage]) -> tuple[Message, ...]:
    messages = []
    for index, item in enumerate(raw):
        param = f"messages[{index}]"
        role = item.role
        if role == "tool" and not item.tool_call_id:
            raise InvalidRequest(
                f"'{param}.tool_call_id' is required in a tool message", param=f"{param}.tool_call_id"
            )
        calls = tool_calls_from(item.tool_calls, f"{param}.tool_calls") if role == "assistant" else ()
        messages.append(
            Message(
                role=_ROLE_ALIASES.get(role, role),
                content=_content(item.content, f"{param}.content"),
                tool_calls=calls,
                tool_call_id=item.tool_call_id if role == "tool" else None,
                tool_name=item.name if role == "tool" else None,
                # Earlier reasoning: vLLM and DeepSeek send reasoning_content; Ollama's layer, reasoning.
                thinking=item.reasoning_content or item.reasoning or "",
            )
        )
    check_tool_turns(tuple(messages))
    return tuple(messages)


def _content(content: str | list[wire.ContentPart] | None, param: str) -> str:
    """Message content: a string, null, or an array of text parts."""
    if content is None or isinstance(content, str):
        return content or ""
    texts = []
    for index, part in enumerate(content):
        if part.type != "text":
            raise InvalidRequest(f"content parts of type {part.type!r} are not supported", param=param)
        if part.text is None:
            raise InvalidRequest(f"'{param}[{index}].text' is required", param=f"{param}[{index}].text")
        texts.append(part.text)
    return "".join(texts)


def _sampling(typed: Any) -> SamplingOptions:
    return SamplingOptions(response_format=_response_format(typed.response_format)).over(
        stated_settings(typed, "openai")
    )


def _response_format(response_format: wire.ResponseFormat | None) -> JsonFormat | None:
    if response_format is None or response_format.type == "text":
        return None
    if response_format.type == "json_object":
        return JsonFormat()
    spec = response_format.json_schema
    if spec is None or spec.schema_ is None:
        raise InvalidRequest(
            "'response_format.json_schema.schema' is required", param="response_format.json_schema.schema"
        )
    return JsonFormat(schema_text(spec.schema_, "response_format.json_schema.schema"))


def _stream_mode(typed: Any) -> StreamMode:
    options = typed.stream_options
    include_usage = bool(options.include_usage) if options is not None else False
    return StreamMode(stream=bool(typed.stream), include_usage=include_usage)


def _reject_unsupported(typed: Any) -> None:
    """Refuse what heylook cannot honour yet, rather than silently ignoring it."""
    if typed.n not in (None, 1):
        raise InvalidRequest("'n' greater than 1 is not supported", param="n")
    if typed.logprobs or getattr(typed, "top_logprobs", None):
        raise InvalidRequest("'logprobs' is not supported yet", param="logprobs")
    if typed.logit_bias:
        raise InvalidRequest("'logit_bias' is not supported yet", param="logit_bias")
    if getattr(typed, "functions", None) or getattr(typed, "function_call", None):
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
