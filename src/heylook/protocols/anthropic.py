"""Anthropic's Messages API as pure functions: a /v1/messages body into the internal request, and
internal chunks into a message or its stream of typed events."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Literal

from heylook.errors import HeylookError, InvalidRequest
from heylook.protocols.errors import anthropic_error_body
from heylook.protocols.fields import schema_text
from heylook.protocols.images import image_from_base64, image_from_url
from heylook.protocols.tools import MAX_TOOLS_BYTES
from heylook.protocols.writer import Media
from heylook.types import (
    ChatPrompt,
    FinalChunk,
    GenerationRequest,
    ImageInput,
    JsonFormat,
    Message,
    Reply,
    ReplyChunk,
    SamplingOptions,
    TextChunk,
    Think,
    ThinkingChunk,
    Tool,
    ToolCall,
    ToolCallChunk,
    ToolChoice,
    Usage,
)
from heylook.wire import anthropic as wire
from heylook.wire.validate import validate

log = logging.getLogger(__name__)

_EMPTY_OBJECT = json.dumps({"type": "object", "properties": {}})
# Anthropic's tool_choice types as heylook's modes ("any": some tool, which one the model picks).
_CHOICES: dict[str, Literal["auto", "none", "required", "function"]] = {
    "auto": "auto", "any": "required", "tool": "function", "none": "none",
}  # fmt: skip
# Anthropic's efforts as heylook's think levels (the most there is, "high", for the two above it).
_EFFORTS: dict[str, Think] = {
    "low": "low",
    "medium": "medium",
    "high": "high",
    "xhigh": "high",
    "max": "high",
}
StopReason = Literal["end_turn", "max_tokens", "stop_sequence", "tool_use"]


def parse_messages_request(body: dict[str, Any]) -> tuple[GenerationRequest, bool]:
    """A /v1/messages body as an internal request, and whether to stream the reply."""
    typed = validate(wire.MessagesRequest, body)
    request = _request(typed)
    budget = request.thinking_budget
    if budget is not None and budget >= typed.max_tokens:
        raise InvalidRequest(
            f"'thinking.budget_tokens' ({budget}) must be less than 'max_tokens' ({typed.max_tokens})",
            param="thinking.budget_tokens",
        )
    stops = tuple(typed.stop_sequences or ()) or None
    output = typed.output_config.format if typed.output_config is not None else None
    json_format = JsonFormat(schema_text(output.schema_, "output_config.format.schema")) if output else None
    options = SamplingOptions(
        max_tokens=typed.max_tokens, temperature=typed.temperature, top_p=typed.top_p, top_k=typed.top_k,
        stop=stops, response_format=json_format,
    )  # fmt: skip
    return replace(request, options=options), bool(typed.stream)


def parse_count_request(body: dict[str, Any]) -> GenerationRequest:
    """A /v1/messages/count_tokens body: the conversation, system, tools and thinking as a reply to
    them would be prompted."""
    return _request(validate(wire.CountTokensRequest, body))


def _request(typed: wire.CountTokensRequest) -> GenerationRequest:
    tools, dropped = _tools(typed.tools or [])
    if typed.mcp_servers:
        # The MCP connector: Anthropic's servers call these; a model here has no way to.
        log.info(
            "dropped the request's %d mcp_servers: a model here cannot call them", len(typed.mcp_servers)
        )
        dropped = (*dropped, "mcp_servers")
    choice = typed.tool_choice
    think, budget = _thinking(typed.thinking)
    effort = typed.output_config.effort if typed.output_config is not None else None
    if effort is not None and think is not False:
        think = _EFFORTS[effort]
    # Only "enabled" asks for thinking outright; adaptive thinking and effort leave it to the model,
    # so a model that cannot think answers without (Anthropic's effort shapes every reply, thinking
    # or not).
    explicit = typed.thinking is not None and typed.thinking.type == "enabled"
    return GenerationRequest(
        model=typed.model,
        prompt=ChatPrompt((*_system(typed.system), *_messages(typed.messages))),
        options=SamplingOptions(),
        tools=tools,
        tool_choice=_tool_choice(choice, tools),
        parallel_tool_calls=not (choice is not None and choice.disable_parallel_tool_use),
        think=think,
        think_hint=think not in (None, False) and not explicit,
        thinking_budget=budget,
        dropped_tools=dropped,
    )


def _system(system: str | list[wire.TextBlock] | None) -> tuple[Message, ...]:
    text = system if isinstance(system, str) else "\n\n".join(block.text for block in system or ())
    return (Message("system", text),) if text else ()


def _messages(raw: list[wire.MessageIn]) -> list[Message]:
    """Anthropic's turns as internal messages: a user turn's tool_result blocks become tool
    messages (before its text, as Anthropic orders them), an assistant turn's tool_use blocks its
    calls and its thinking blocks its reasoning. Every result must answer an earlier call. A
    system turn (Anthropic's mid-conversation system messages, which Claude Code sends) is a
    system message where it stands; chat.render folds it into a user turn for a template that
    cannot take it there."""
    messages: list[Message] = []
    calls: set[str] = set()
    for index, item in enumerate(raw):
        param = f"messages[{index}].content"
        blocks: list[Any] = (
            [wire.TextBlock(type="text", text=item.content)]
            if isinstance(item.content, str)
            else item.content
        )
        texts: list[str] = []
        thinking: list[str] = []
        results: list[Message] = []
        made: list[ToolCall] = []
        images: list[ImageInput] = []
        for number, block in enumerate(blocks):
            where = f"{param}[{number}]"
            _refuse_block(block, where, item.role)
            if isinstance(block, wire.TextBlock):
                texts.append(block.text)
            elif isinstance(block, wire.ImageBlock):
                images.append(_image(block.source, where))
            elif isinstance(block, wire.ThinkingBlock):
                thinking.append(block.thinking)
            elif isinstance(block, wire.ToolUseBlock):
                made.append(ToolCall(block.name, json.dumps(block.input, ensure_ascii=False), block.id))
            elif isinstance(block, wire.ToolResultBlock):
                if block.tool_use_id not in calls:
                    raise InvalidRequest(
                        f"'{where}.tool_use_id' answers {block.tool_use_id!r}, which no earlier tool_use "
                        "block made",
                        param=f"{where}.tool_use_id",
                    )
                results.append(Message("tool", _result_text(block), tool_call_id=block.tool_use_id))
            # A redacted_thinking block is encrypted by Anthropic: nothing a local model can read.
        calls.update(call.id for call in made)
        messages.extend(results)
        if item.role == "system":
            # Text blocks join as the top-level system's do; an empty one says nothing.
            if text := "\n\n".join(texts):
                messages.append(Message("system", text))
        elif item.role == "assistant":
            messages.append(Message("assistant", "".join(texts), tuple(made), thinking="".join(thinking)))
        elif texts or images or not results:
            messages.append(Message("user", "".join(texts), images=tuple(images)))
    if all(item.role == "system" for item in raw):
        raise InvalidRequest("'messages' holds only system messages: it needs a user turn", param="messages")
    if raw[-1].role == "assistant":
        # Anthropic continues a last assistant turn (prefill); a chat template starts a new one.
        last = f"messages[{len(raw) - 1}]"
        message = (
            f"'{last}' is an assistant turn: continuing one (prefill) is not supported; end with a user turn"
        )
        raise InvalidRequest(message, param=last)
    return messages


# The blocks each role's turn may hold besides text.
_ALLOWED_BLOCKS = {
    "assistant": ("tool_use", "thinking", "redacted_thinking"),
    "user": ("tool_result", "image"),
    "system": (),
}


def _refuse_block(block: Any, where: str, role: str) -> None:
    kind = block.type
    if kind == "document":
        raise InvalidRequest(
            f"'{where}' is a document block: heylook takes text, image, tool and thinking blocks only",
            param=where,
        )
    allowed = _ALLOWED_BLOCKS[role]
    if kind != "text" and kind not in allowed:
        turn = "an assistant" if role == "assistant" else f"a {role}"
        raise InvalidRequest(f"'{where}': a {kind} block cannot be in {turn} turn", param=where)


def _image(source: wire.Base64Source | wire.UrlSource, where: str) -> ImageInput:
    """An image block's source: its base64 bytes, or a URL (http(s), or a data: URL)."""
    if isinstance(source, wire.Base64Source):
        return image_from_base64(source.data, where)
    return image_from_url(source.url, where)


def _result_text(block: wire.ToolResultBlock) -> str:
    content: str | list[wire.TextBlock] | None = block.content
    text = content if isinstance(content, str) else "".join(part.text for part in content or ())
    # The internal tool message has no error flag: the model reads it in the text.
    return f"Error: {text}" if block.is_error else text


def _tools(raw: list[wire.ToolIn]) -> tuple[tuple[Tool, ...], tuple[str, ...]]:
    """The client tools, and the types of the tools dropped: Anthropic's server tools
    (web_search_..., web_fetch_..., code_execution_..., tool_search_...), its MCP toolsets, and
    the client tools whose schema only Claude knows (bash_..., text_editor_..., computer_...,
    memory_...: the request names a version, not the input), none of which a model here can call."""
    tools: list[Tool] = []
    dropped: list[str] = []
    for index, item in enumerate(raw):
        param = f"tools[{index}]"
        if item.type not in (None, "custom"):
            log.info("dropped %s (%s): a model here cannot call it", param, item.type)
            dropped.append(item.type)
            continue
        if not item.name:
            raise InvalidRequest(f"'{param}.name' is required", param=f"{param}.name")
        if item.input_schema is None:
            raise InvalidRequest(f"'{param}.input_schema' is required", param=f"{param}.input_schema")
        if any(tool.name == item.name for tool in tools):
            raise InvalidRequest(f"two tools are named {item.name!r}", param=f"{param}.name")
        schema = schema_text(item.input_schema, f"{param}.input_schema")
        tools.append(Tool(item.name, item.description or "", schema or _EMPTY_OBJECT))
    if sum(len(tool.parameters) + len(tool.description) for tool in tools) > MAX_TOOLS_BYTES:
        raise InvalidRequest(f"'tools' are larger than {MAX_TOOLS_BYTES // 1024} KiB in all", param="tools")
    return tuple(tools), tuple(dropped)


def _tool_choice(choice: wire.ToolChoiceIn | None, tools: tuple[Tool, ...]) -> ToolChoice:
    if choice is None:
        return ToolChoice()
    mode = _CHOICES[choice.type]
    if mode == "function":
        if not choice.name:
            raise InvalidRequest(
                "'tool_choice.name' is required with type \"tool\"", param="tool_choice.name"
            )
        if choice.name not in {tool.name for tool in tools}:
            known = ", ".join(tool.name for tool in tools) or "none"
            raise InvalidRequest(
                f"'tool_choice.name' is {choice.name!r}, which is not among the tools ({known})",
                param="tool_choice.name",
            )
    if mode in ("required", "function") and not tools:
        raise InvalidRequest(f"'tool_choice' {choice.type} needs 'tools'", param="tool_choice")
    return ToolChoice(mode=mode, name=choice.name if mode == "function" else None)


def _thinking(thinking: wire.ThinkingIn | None) -> tuple[Think, int | None]:
    """Anthropic's thinking as heylook's think and budget; absent leaves it to the model, as on
    heylook's other APIs. Adaptive is on where the model thinks (the model decides how much);
    between_tools is Anthropic's thinking off (progress notes between tool calls aside)."""
    if thinking is None:
        return None, None
    if thinking.type in ("disabled", "between_tools"):
        return False, None
    if thinking.type == "enabled" and thinking.budget_tokens is None:
        message = "'thinking.budget_tokens' is required with type \"enabled\""
        raise InvalidRequest(message, param="thinking.budget_tokens")
    return True, thinking.budget_tokens


# --- writing --------------------------------------------------------------------------------------


def tool_use_id(call_id: str) -> str:
    """A call's id as Anthropic spells them (toolu_...); clients send it back as it is."""
    return "toolu_" + call_id.removeprefix("call_").removeprefix("toolu_")


def stop_reason(final: FinalChunk) -> StopReason:
    if final.finish_reason == "tool_calls":
        return "tool_use"
    if final.finish_reason == "length":
        return "max_tokens"
    # Only the engine knows which stop sequence matched; a remote upstream's stop reads end_turn.
    return "stop_sequence" if final.stop_sequence is not None else "end_turn"


def _input(arguments: str) -> dict[str, Any]:
    """A call's arguments as the object Anthropic's tool_use carries; local calls are valid by
    grammar, and a remote model's that are no object carry none."""
    try:
        value = json.loads(arguments or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def message_body(
    *, id: str, model: str, reply: Reply, final: FinalChunk
) -> dict[str, Any]:  # fmt: skip
    """A whole message: its thinking, text and tool_use blocks, in the order the model wrote them."""
    content: list[dict[str, Any]] = []
    if reply.thinking:
        content.append({"type": "thinking", "thinking": reply.thinking, "signature": ""})
    if reply.content or not reply.tool_calls:
        content.append({"type": "text", "text": reply.content})
    for call in reply.tool_calls:
        content.append(
            {
                "type": "tool_use",
                "id": tool_use_id(call.id),
                "name": call.name,
                "input": _input(call.arguments),
            }
        )
    return {
        **_envelope(id, model, content, stop_reason(final), final.stop_sequence),
        "usage": usage_body(final.usage),
    }


def usage_body(usage: Usage) -> dict[str, int]:
    """Anthropic counts prompt tokens read from a cache apart from input_tokens (their sum is the
    prompt): heylook's prefix cache is that cache."""
    return {
        "input_tokens": usage.prompt_tokens - usage.cached_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": usage.cached_tokens,
        "output_tokens": usage.completion_tokens,
    }


def _envelope(
    id: str, model: str, content: list[dict[str, Any]], reason: StopReason | None, stop: str | None
) -> dict[str, Any]:
    return {
        "id": id, "type": "message", "role": "assistant", "model": model, "content": content,
        "stop_reason": reason, "stop_sequence": stop,
    }  # fmt: skip


BlockKind = Literal["text", "thinking", "tool_use"]


@dataclass
class MessageWriter:
    """Internal chunks as Anthropic's stream: message_start and a ping, then for each block (a
    thinking, text or tool_use block, opened when the reply turns to it) its start, deltas and
    stop, then message_delta and message_stop; or the whole message. Streaming, it follows which
    block is open, so one writer serves one reply."""

    id: str
    model: str
    stream: bool = False
    media: ClassVar[Media] = "sse-typed"
    _open: BlockKind | None = field(default=None, init=False)
    _index: int = field(default=-1, init=False)

    def opening(self, prompt_tokens: int | None = None) -> list[dict[str, Any]]:
        message = {**_envelope(self.id, self.model, [], None, None)}
        # A remote upstream says the prompt's size only at the end: message_delta's usage then has it.
        message["usage"] = {"input_tokens": prompt_tokens or 0, "output_tokens": 0}
        return [{"type": "message_start", "message": message}, {"type": "ping"}]

    def delta(self, chunk: ReplyChunk) -> list[dict[str, Any]]:
        if isinstance(chunk, TextChunk) and chunk.text:
            return [
                *self._turn("text", {"text": ""}),
                self._delta({"type": "text_delta", "text": chunk.text}),
            ]
        if isinstance(chunk, ThinkingChunk) and chunk.text:
            opened = self._turn("thinking", {"thinking": "", "signature": ""})
            return [*opened, self._delta({"type": "thinking_delta", "thinking": chunk.text})]
        if not isinstance(chunk, ToolCallChunk):
            return []  # empty text, or a whole call: its pieces went out already
        bodies = []
        if chunk.name:  # a new call: a block of its own
            bodies = self._close()
            start = {"type": "tool_use", "id": tool_use_id(chunk.id), "name": chunk.name, "input": {}}
            bodies.append(self._start("tool_use", start))
        if chunk.arguments and self._open == "tool_use":
            bodies.append(self._delta({"type": "input_json_delta", "partial_json": chunk.arguments}))
        return bodies

    def closing(self, final: FinalChunk) -> list[dict[str, Any]]:
        usage = usage_body(final.usage)
        delta = {"stop_reason": stop_reason(final), "stop_sequence": final.stop_sequence}
        return [
            *self._close(),
            {"type": "message_delta", "delta": delta, "usage": usage},
            {"type": "message_stop"},
        ]

    def whole(self, reply: Reply, final: FinalChunk) -> dict[str, Any]:
        return message_body(id=self.id, model=self.model, reply=reply, final=final)

    def error(self, error: HeylookError) -> dict[str, Any]:
        return anthropic_error_body(error)

    def _turn(self, kind: BlockKind, empty: dict[str, Any]) -> list[dict[str, Any]]:
        """Nothing if a block of this kind is open; else the open one's end and this one's start."""
        if self._open == kind:
            return []
        return [*self._close(), self._start(kind, {"type": kind, **empty})]

    def _start(self, kind: BlockKind, block: dict[str, Any]) -> dict[str, Any]:
        self._open, self._index = kind, self._index + 1
        return {"type": "content_block_start", "index": self._index, "content_block": block}

    def _delta(self, delta: dict[str, Any]) -> dict[str, Any]:
        return {"type": "content_block_delta", "index": self._index, "delta": delta}

    def _close(self) -> list[dict[str, Any]]:
        if self._open is None:
            return []
        # A thinking block ends with its signature, as Anthropic's do (local reasoning has none).
        signed = (
            [self._delta({"type": "signature_delta", "signature": ""})] if self._open == "thinking" else []
        )
        self._open = None
        return [*signed, {"type": "content_block_stop", "index": self._index}]


def count_body(tokens: int) -> dict[str, Any]:
    return {"input_tokens": tokens}
