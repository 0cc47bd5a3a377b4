"""Anthropic's Messages API: /v1/messages and /v1/messages/count_tokens, their bodies and the
events of a streamed message (docs.anthropic.com/en/api/messages)."""

# Field types made at run time (one_of, choice) are types to pydantic, but not to mypy.
# mypy: disable-error-code="valid-type"

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Union

from pydantic import AfterValidator, BaseModel, Discriminator, Field, RootModel, Tag

from heylook.options import MAX_STOP_LENGTH, MAX_STOP_SEQUENCES
from heylook.wire.fields import BRANCH, CLOSED, Body, Integer, JsonObject, Number, example, one_of
from heylook.wire.tools import FUNCTION_NAME, MAX_TOOLS, ObjectSchema

BLOCK_TYPES = ("text", "image", "document", "tool_use", "tool_result", "thinking", "redacted_thinking")
_BLOCK_WORDS = "a block of type " + ", ".join(f'"{kind}"' for kind in BLOCK_TYPES)


def _typed_union(words: str, **members: type[BaseModel]) -> Any:
    """A union chosen by the object's "type": another type is one error naming what it may be."""

    def pick(value: Any) -> str | None:
        kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
        return BRANCH + kind if isinstance(kind, str) and kind in members else None

    tagged = tuple(Annotated[model, Tag(BRANCH + kind)] for kind, model in members.items())
    return Annotated[
        Union[tagged],  # noqa: UP007 (a Union of a tuple made at run time)
        Discriminator(pick, custom_error_type="wrong_value", custom_error_message=f"must be {words}"),
    ]


# --- requests -------------------------------------------------------------------------------------


class TextBlock(Body):
    type: Literal["text"]
    text: str


class Base64Source(Body):
    type: Literal["base64"]
    media_type: Literal["image/jpeg", "image/png", "image/gif", "image/webp"]
    data: str = Field(description="The image's bytes, base64.")


class UrlSource(Body):
    type: Literal["url"]
    url: str = Field(description="An http(s) URL the server fetches (public addresses only, by default).")


ImageSource = _typed_union('a source of type "base64" or "url"', base64=Base64Source, url=UrlSource)


class ImageBlock(Body):
    type: Literal["image"]
    source: ImageSource = Field(description="A user turn's image: base64 bytes or a URL.")


class DocumentBlock(Body):
    type: Literal["document"]
    source: JsonObject = Field(description="Not supported: a document is refused.")


class ToolUseBlock(Body):
    type: Literal["tool_use"]
    id: str = Field(min_length=1)
    name: str
    input: JsonObject


ToolResultContent = one_of("a string or an array of text blocks", string=str, array=list[TextBlock])


class ToolResultBlock(Body):
    type: Literal["tool_result"]
    tool_use_id: str = Field(min_length=1, description="The id of the tool_use block it answers.")
    content: ToolResultContent | None = None
    is_error: bool | None = None


class ThinkingBlock(Body):
    type: Literal["thinking"]
    thinking: str
    signature: str | None = None


class RedactedThinkingBlock(Body):
    type: Literal["redacted_thinking"]
    data: str


Block = _typed_union(
    _BLOCK_WORDS, text=TextBlock, image=ImageBlock, document=DocumentBlock, tool_use=ToolUseBlock,
    tool_result=ToolResultBlock, thinking=ThinkingBlock, redacted_thinking=RedactedThinkingBlock,
)  # fmt: skip
Content = one_of("a string or an array of content blocks", string=str, array=list[Block])


class MessageIn(Body):
    role: Literal["user", "assistant", "system"] = Field(
        description='"system": a mid-conversation system message (text only), an instruction at '
        "that point of the conversation."
    )
    content: Content


def _tool_name(name: str) -> str:
    if not re.fullmatch(FUNCTION_NAME, name):
        raise ValueError(f"must be 1 to 64 letters, digits, '_', '-' or '.', not {name!r}")
    return name


class ToolIn(Body):
    name: Annotated[str, AfterValidator(_tool_name)] | None = Field(
        default=None,
        description="Letters, digits, '_', '-' and '.', up to 64. Required for client tools.",
        json_schema_extra={"pattern": FUNCTION_NAME},
    )
    description: str | None = None
    input_schema: ObjectSchema | None = Field(
        default=None, description='A JSON schema of an object (type "object"). Required for client tools.'
    )
    type: str | None = Field(
        default=None,
        description='"custom" or none: a client tool. Any other type (Anthropic\'s server tools such as '
        "web_search_..., its bash_..., text_editor_..., computer_... tools, mcp_toolset) is dropped "
        "and named in the X-Heylook-Dropped-Tools header.",
    )
    # Taken and ignored: heylook holds every call to its tool's schema anyway (strict), shows every
    # tool (defer_loading), and streams a call's input as it is written.
    cache_control: JsonObject | None = None
    strict: bool | None = None
    defer_loading: bool | None = None
    eager_input_streaming: bool | None = None
    input_examples: list[JsonObject] | None = None


class ToolChoiceIn(Body):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = Field(default=None, description='The tool to call, with type "tool".')
    disable_parallel_tool_use: bool | None = None


class ThinkingIn(Body):
    type: Literal["enabled", "disabled", "adaptive", "between_tools"] = Field(
        description="adaptive: the model's own reasoning, where it reasons (ignored by a model that "
        "cannot); between_tools: as disabled; enabled: refused by a model that cannot reason."
    )
    display: Literal["summarized", "omitted"] | None = Field(
        default=None, description="Taken and ignored: the reasoning comes back whole."
    )
    budget_tokens: Integer | None = Field(
        default=None,
        ge=1,
        description="With enabled (required there): the reasoning ends after this many tokens; below "
        "max_tokens. heylook takes budgets under Anthropic's 1024.",
    )


class JsonOutputFormat(Body):
    type: Literal["json_schema"]
    schema_: JsonObject = Field(alias="schema", description="The JSON schema the reply's text follows.")


class OutputConfig(Body):
    effort: Literal["low", "medium", "high", "xhigh", "max"] | None = Field(
        default=None,
        description="How hard a model that reasons thinks (its think level); ignored by a model that cannot.",
    )
    format: JsonOutputFormat | None = None


System = one_of("a string or an array of text blocks", string=str, array=list[TextBlock])
StopSequence = Annotated[str, Field(max_length=MAX_STOP_LENGTH)]


class CountTokensRequest(Body):
    model_config = example(
        {"model": "smollm2", "messages": [{"role": "user", "content": "Why is the sky blue?"}]}
    )

    model: str = Field(description="An alias from models.yaml.")
    messages: list[MessageIn] = Field(min_length=1)
    system: System | None = None
    tools: Annotated[list[ToolIn], Field(max_length=MAX_TOOLS)] | None = None
    tool_choice: ToolChoiceIn | None = None
    thinking: ThinkingIn | None = None
    output_config: OutputConfig | None = None
    context_management: JsonObject | None = Field(
        default=None, description="Taken and ignored: the conversation is read as it is sent."
    )
    mcp_servers: list[JsonObject] | None = Field(
        default=None,
        description="Dropped (a model here cannot call them), and named in the X-Heylook-Dropped-Tools "
        "header.",
    )


class MessagesRequest(CountTokensRequest):
    model_config = example(
        {
            "model": "smollm2",
            "max_tokens": 64,
            "messages": [{"role": "user", "content": "Why is the sky blue?"}],
        }
    )

    max_tokens: Integer = Field(ge=1, description="The most tokens the reply may take.")
    stop_sequences: Annotated[list[StopSequence], Field(max_length=MAX_STOP_SEQUENCES)] | None = None
    temperature: Number | None = Field(default=None, ge=0.0, le=1.0)
    top_p: Number | None = Field(default=None, ge=0.0, le=1.0)
    top_k: Integer | None = Field(default=None, ge=0, description="0 turns it off.")
    metadata: JsonObject | None = Field(default=None, description="Taken and ignored.")
    stream: bool | None = None


# --- replies --------------------------------------------------------------------------------------


class Reply(BaseModel):
    model_config = CLOSED


class TextOut(Reply):
    type: Literal["text"]
    text: str


class ThinkingOut(Reply):
    type: Literal["thinking"]
    thinking: str
    signature: str = Field(description="Always empty: local reasoning is not signed.")


class ToolUseOut(Reply):
    type: Literal["tool_use"]
    id: str
    name: str
    input: JsonObject


ContentOut = _typed_union(
    'a "text", "thinking" or "tool_use" block', text=TextOut, thinking=ThinkingOut, tool_use=ToolUseOut
)
StopReason = Literal["end_turn", "max_tokens", "stop_sequence", "tool_use"]


class Usage(Reply):
    input_tokens: int = Field(description="Prompt tokens evaluated (those read from the cache apart).")
    output_tokens: int
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = Field(
        default=None, description="Prompt tokens served from heylook's prefix cache."
    )


class Message(Reply):
    id: str
    type: Literal["message"]
    role: Literal["assistant"]
    model: str
    content: list[ContentOut]
    stop_reason: StopReason | None = Field(description="Null only in a stream's message_start.")
    stop_sequence: str | None = Field(description="Which of stop_sequences ended the reply.")
    usage: Usage


class TokenCount(Reply):
    input_tokens: int


class MessageStart(Reply):
    type: Literal["message_start"]
    message: Message


class Ping(Reply):
    type: Literal["ping"]


class BlockStart(Reply):
    type: Literal["content_block_start"]
    index: int
    content_block: ContentOut


class TextDelta(Reply):
    type: Literal["text_delta"]
    text: str


class ThinkingDelta(Reply):
    type: Literal["thinking_delta"]
    thinking: str


class SignatureDelta(Reply):
    type: Literal["signature_delta"]
    signature: str


class InputJsonDelta(Reply):
    type: Literal["input_json_delta"]
    partial_json: str = Field(description="More of the tool's input, as JSON text.")


BlockDeltaBody = _typed_union(
    "a text, thinking, signature or input_json delta", text_delta=TextDelta, thinking_delta=ThinkingDelta,
    signature_delta=SignatureDelta, input_json_delta=InputJsonDelta,
)  # fmt: skip


class BlockDelta(Reply):
    type: Literal["content_block_delta"]
    index: int
    delta: BlockDeltaBody


class BlockStop(Reply):
    type: Literal["content_block_stop"]
    index: int


class MessageDeltaBody(Reply):
    stop_reason: StopReason
    stop_sequence: str | None


class DeltaUsage(Reply):
    input_tokens: int | None = None
    output_tokens: int
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None


class MessageDelta(Reply):
    type: Literal["message_delta"]
    delta: MessageDeltaBody
    usage: DeltaUsage


class MessageStop(Reply):
    type: Literal["message_stop"]


class ErrorDetail(Reply):
    type: str = Field(description="invalid_request_error, authentication_error, not_found_error, ...")
    message: str


class AnthropicError(Reply):
    """An error body, and the `error` event a failed stream ends with."""

    type: Literal["error"]
    error: ErrorDetail


class StreamEvent(RootModel[Any]):
    """One server-sent event of a streamed message, named by its type: message_start, ping, then
    content_block_start / content_block_delta / content_block_stop for each block, message_delta,
    message_stop (or error)."""

    root: _typed_union(
        "a stream event", message_start=MessageStart, ping=Ping, content_block_start=BlockStart,
        content_block_delta=BlockDelta, content_block_stop=BlockStop, message_delta=MessageDelta,
        message_stop=MessageStop, error=AnthropicError,
    )  # fmt: skip
