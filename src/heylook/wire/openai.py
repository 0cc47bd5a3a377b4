"""OpenAI's request and response bodies: /v1/chat/completions, /v1/completions, /v1/models."""

# Field types made at run time (one_of, choice) are types to pydantic, but not to mypy.
# mypy: disable-error-code="valid-type"

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from heylook.types import MAX_CHOICES, MAX_TOP_LOGPROBS
from heylook.wire.fields import CLOSED, Body, Integer, JsonObject, example, one_of
from heylook.wire.settings import with_settings
from heylook.wire.tools import EFFORTS, Reasoning, ToolCallIn, ToolChoiceField, Tools

MESSAGE_ROLES = ("system", "user", "assistant", "tool", "developer")
# /v1/completions' logprobs: at most 5, as OpenAI allows.
MAX_COMPLETION_LOGPROBS = 5


class ImageUrl(Body):
    url: str = Field(
        description="A data: URL of the image's bytes (data:image/png;base64,...) or an http(s) URL to fetch."
    )
    detail: Literal["auto", "low", "high"] | None = Field(
        default=None, description="Accepted; the model's processor decides the resolution."
    )


class ContentPart(Body):
    type: str = Field(
        description='"text" or "image_url" (a vision model\'s alias); other part types are refused.'
    )
    text: str | None = None
    image_url: ImageUrl | None = Field(default=None, description='With type "image_url".')


Content = one_of("a string or an array of content parts", string=str, array=list[ContentPart])


class ChatMessage(Body):
    role: Literal[MESSAGE_ROLES]
    content: Content | None = None
    name: str | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: str | None = Field(default=None, description="Required in a tool message.")
    reasoning_content: str | None = Field(default=None, description="Earlier reasoning, as vLLM sends it.")
    reasoning: str | None = None


class StreamOptions(Body):
    include_usage: bool | None = None


class JsonSchemaFormat(Body):
    name: str | None = None
    schema_: JsonObject | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(Body):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class _Generation(Body):
    model: str = Field(description="An alias from models.yaml (a tag of :latest is the alias itself).")
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    response_format: ResponseFormat | None = None
    n: Integer | None = Field(
        default=None,
        ge=1,
        le=MAX_CHOICES,
        description=f"How many replies (choices) to generate from the prompt: 1 to {MAX_CHOICES}.",
    )
    logit_bias: Any = Field(default=None, description="Not supported yet.")
    user: str | None = None


class ChatCompletionRequestBase(_Generation):
    model_config = example(
        {"model": "smollm2", "messages": [{"role": "user", "content": "Why is the sky blue?"}]}
    )

    messages: list[ChatMessage] = Field(min_length=1)
    tools: Tools | None = None
    tool_choice: ToolChoiceField | None = None
    parallel_tool_calls: bool | None = None
    reasoning_effort: Literal[EFFORTS] | None = None
    reasoning: Reasoning | None = None
    logprobs: bool | None = Field(
        default=None, description="Each token's log probability under the model, in choices[].logprobs."
    )
    top_logprobs: Integer | None = Field(
        default=None,
        ge=0,
        le=MAX_TOP_LOGPROBS,
        description="How many of the most likely tokens to list at each position; needs logprobs true.",
    )
    functions: Any = Field(default=None, description="OpenAI's deprecated form of tools: send tools.")
    function_call: Any = None


class CompletionRequestBase(_Generation):
    model_config = example({"model": "smollm2", "prompt": "Once upon a time", "max_tokens": 16})

    prompt: one_of("a string", string=str, array=list[Any]) = Field(
        description="One prompt (an array of one string is taken too)."
    )
    suffix: str | None = Field(default=None, description="Not supported.")
    echo: bool | None = None
    logprobs: Integer | None = Field(
        default=None,
        ge=0,
        le=MAX_COMPLETION_LOGPROBS,
        description="Each token's log probability, and this many of the most likely tokens at each "
        "position (the chosen one is always listed too). Not with echo.",
    )
    best_of: Integer | None = Field(default=None, ge=1, description="Only 1.")


def chat_completion_request() -> type[BaseModel]:
    """/v1/chat/completions' body: the fields above and every setting the OpenAI API carries."""
    return with_settings(ChatCompletionRequestBase, "openai")


def completion_request() -> type[BaseModel]:
    return with_settings(CompletionRequestBase, "openai")


# --- responses ------------------------------------------------------------------------------------


class Reply(BaseModel):
    model_config = CLOSED


class PromptTokensDetails(Reply):
    cached_tokens: int = Field(description="Of the prompt's tokens, those served from the prefix cache.")


class Usage(Reply):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = None


class CalledFunctionOut(Reply):
    name: str
    arguments: str = Field(description="The arguments as JSON text.")


class ToolCallOut(Reply):
    id: str
    type: Literal["function"]
    function: CalledFunctionOut


class AssistantMessage(Reply):
    role: Literal["assistant"]
    content: str | None
    refusal: None
    reasoning_content: str | None = None
    tool_calls: list[ToolCallOut] | None = None


FinishReason = Literal["stop", "length", "tool_calls"]


class TopLogprob(Reply):
    token: str
    logprob: float = Field(description="Natural log of the probability; -9999.0 for one too small to tell.")
    bytes: list[int] | None = Field(description="The token's UTF-8 bytes (a piece of a character stays one).")


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob] = Field(description="The most likely tokens at this position, best first.")


class ChoiceLogprobs(Reply):
    """Every token of the reply (reasoning and tool calls included), in order, under the model's
    own distribution (before temperature, penalties, top-k/p and grammar masks)."""

    content: list[TokenLogprob] | None
    refusal: list[TokenLogprob] | None = None


class ChatChoice(Reply):
    index: int
    message: AssistantMessage
    logprobs: ChoiceLogprobs | None = Field(description="With logprobs true.")
    finish_reason: FinishReason


class _Envelope(Reply):
    id: str
    created: int
    model: str
    system_fingerprint: None


class ChatCompletion(_Envelope):
    object: Literal["chat.completion"]
    choices: list[ChatChoice]
    usage: Usage


class CalledFunctionDelta(Reply):
    name: str | None = None
    arguments: str


class ToolCallDelta(Reply):
    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: CalledFunctionDelta


class ChatDelta(Reply):
    role: Literal["assistant"] | None = None
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


class ChatChunkChoice(Reply):
    index: int
    delta: ChatDelta
    logprobs: ChoiceLogprobs | None = Field(description="With logprobs true: this chunk's tokens.")
    finish_reason: FinishReason | None


class ChatCompletionChunk(_Envelope):
    """One server-sent event of a streamed chat completion; the stream ends with `data: [DONE]`."""

    object: Literal["chat.completion.chunk"]
    choices: list[ChatChunkChoice]
    usage: Usage | None = Field(default=None, description="With stream_options.include_usage.")


class CompletionLogprobs(Reply):
    """The legacy shape: one entry per token in each list."""

    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]] = Field(
        description="The most likely tokens at each position, with the chosen one, to their logprobs."
    )
    text_offset: list[int] = Field(description="Where each token's text starts in the choice's text.")


class CompletionChoice(Reply):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = Field(
        description="With logprobs set: this choice's (or chunk's) tokens."
    )
    finish_reason: FinishReason | None


class Completion(_Envelope):
    object: Literal["text_completion"]
    choices: list[CompletionChoice]
    usage: Usage | None = None


class Model(Reply):
    model_config = {"extra": "allow"}  # remote models carry their providers

    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class OpenAIModelList(Reply):
    object: Literal["list"]
    data: list[Model]


class ErrorDetail(Reply):
    message: str
    type: str
    param: str | None
    code: str | int | None


class OpenAIError(Reply):
    error: ErrorDetail
