"""Ollama's request and response bodies: /api/chat, /api/generate and the model routes."""

# Field types made at run time (one_of, choice) are types to pydantic, but not to mypy.
# mypy: disable-error-code="valid-type"

from __future__ import annotations

import functools
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, create_model

from heylook.types import MAX_TOP_LOGPROBS
from heylook.wire.fields import CLOSED, Body, Integer, JsonObject, Number, example, one_of
from heylook.wire.settings import with_settings
from heylook.wire.tools import Think, ToolCallIn, ToolChoiceField, Tools

MESSAGE_ROLES = ("system", "user", "assistant", "tool")

KeepAlive = one_of('a duration like "5m" or a number of seconds', string=str, number=Number)
Format = one_of('"json" or a JSON schema object', string=str, object=JsonObject)


class OptionsBase(Body):
    """Ollama's `options`: the settings heylook maps (below); the rest of Ollama's (num_gpu,
    num_thread, mirostat, ...) steer llama.cpp and are ignored, as Ollama ignores options it does
    not know."""


class OllamaMessage(Body):
    role: Literal[MESSAGE_ROLES]
    content: str | None = None
    images: list[str] | None = Field(
        default=None, description="Base64 images, read before the message's text (a vision model's alias)."
    )
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: str | None = None
    tool_name: str | None = Field(default=None, description="The function a tool result is for.")
    name: str | None = Field(default=None, description="Older clients' tool_name.")
    thinking: str | None = None


class _Generation(Body):
    model: str = Field(min_length=1, description="An alias from models.yaml.")
    stream: bool | None = Field(default=None, description="Streams unless false.")
    keep_alive: KeepAlive | None = Field(
        default=None, description='How long the model stays loaded: "5m", seconds, 0 to unload, -1 for ever.'
    )
    format: Format | None = None
    tools: Tools | None = None
    tool_choice: ToolChoiceField | None = Field(
        default=None, description="OpenAI's, where a client sends it."
    )
    think: Think | None = None
    logprobs: bool | None = Field(
        default=None, description="Each token's log probability under the model, in `logprobs`."
    )
    top_logprobs: Integer | None = Field(
        default=None,
        ge=0,
        le=MAX_TOP_LOGPROBS,
        description="How many of the most likely tokens to list at each position, with logprobs true.",
    )
    images: list[str] | None = Field(
        default=None, description="Base64 images for /api/generate's prompt, read before its text."
    )


class ChatRequestBase(_Generation):
    model_config = example(
        {"model": "smollm2", "messages": [{"role": "user", "content": "Why is the sky blue?"}]}
    )

    messages: list[OllamaMessage] | None = Field(default=None, description="None or empty: load the model.")


class GenerateRequestBase(_Generation):
    model_config = example({"model": "smollm2", "prompt": "Why is the sky blue?", "stream": False})

    prompt: str | None = Field(default=None, description="None or empty (and no suffix): load the model.")
    suffix: str | None = Field(default=None, description="Fill in the middle, between prompt and suffix.")
    system: str | None = None
    template: str | None = Field(default=None, description="Not supported: the model's own template is used.")
    raw: bool | None = None
    # Token ids: which ones the model has is checked when it is known (generate._check_context).
    context: list[Annotated[Integer, Field(ge=0)]] | None = Field(
        default=None, description="An earlier reply's context."
    )


def options_model() -> type[BaseModel]:
    return with_settings(OptionsBase, "ollama")


def chat_request() -> type[BaseModel]:
    return _with_options(ChatRequestBase, options_model())


def generate_request() -> type[BaseModel]:
    return _with_options(GenerateRequestBase, options_model())


@functools.cache
def _with_options(base: type[BaseModel], options: type[BaseModel]) -> type[BaseModel]:
    optional: Any = options | None
    made: type[BaseModel] = create_model(
        base.__name__.removesuffix("Base"),
        __base__=base,
        __module__=base.__module__,
        options=(optional, None),
    )
    return made


class ModelName(Body):
    """/api/show, /api/delete: the model, or its older name."""

    model: str | None = None
    name: str | None = Field(default=None, description="The older spelling of model.")


class PullRequest(ModelName):
    stream: bool | None = None
    insecure: bool | None = Field(default=None, description="Ignored.")


class CopyRequest(Body):
    source: str
    destination: str


# --- responses ------------------------------------------------------------------------------------


class Reply(BaseModel):
    model_config = CLOSED


class OllamaCalledFunction(Reply):
    index: int | None = None
    name: str
    arguments: dict[str, Any]


class OllamaToolCall(Reply):
    id: str | None = None
    function: OllamaCalledFunction


class OllamaReplyMessage(Reply):
    role: Literal["assistant"]
    content: str
    thinking: str | None = None
    tool_calls: list[OllamaToolCall] | None = None


class OllamaTokenLogprob(Reply):
    token: str
    logprob: float = Field(description="Natural log of the probability; -9999.0 for one too small to tell.")
    bytes: list[int] | None = Field(default=None, description="The token's UTF-8 bytes.")


class OllamaLogprob(OllamaTokenLogprob):
    top_logprobs: list[OllamaTokenLogprob] | None = Field(
        default=None, description="The most likely tokens at this position, best first (with top_logprobs)."
    )


class _Line(Reply):
    model: str
    created_at: str
    done: bool
    logprobs: list[OllamaLogprob] | None = Field(
        default=None,
        description="With logprobs true: the tokens of this line (of the whole reply, unstreamed), under "
        "the model's own distribution, reasoning and tool calls included.",
    )
    done_reason: str | None = None
    total_duration: int | None = None
    load_duration: int | None = None
    prompt_eval_count: int | None = None
    prompt_eval_duration: int | None = None
    eval_count: int | None = None
    eval_duration: int | None = None


class ChatResponse(_Line):
    """One NDJSON line of /api/chat (or the whole reply with stream false)."""

    message: OllamaReplyMessage


class GenerateResponse(_Line):
    """One NDJSON line of /api/generate (or the whole reply with stream false)."""

    response: str
    thinking: str | None = None
    tool_calls: list[OllamaToolCall] | None = None
    context: list[int] | None = None


class ModelDetails(Reply):
    model_config = {"extra": "allow"}

    format: str
    family: str
    families: list[str] | None
    parameter_size: str
    quantization_level: str
    context_length: int | None = Field(default=None, description="/api/tags: the model's own context.")
    embedding_length: int | None = Field(default=None, description="/api/tags: its hidden size.")


class _ModelEntry(Reply):
    name: str = Field(description="The alias, tagged as Ollama lists names: `smollm2:latest`.")
    model: str
    size: int
    digest: str
    details: ModelDetails


class ListedModel(_ModelEntry):
    modified_at: str
    capabilities: list[str] = Field(description="As /api/show says them.")


class OllamaModelList(Reply):
    models: list[ListedModel]


class RunningMemory(Reply):
    weights_bytes: int
    kv_cache_bytes: int = Field(description="The running sequences' keys and values, now.")
    prefix_cache_bytes: int = Field(description="Earlier prompts' keys and values kept for reuse.")
    grammar_cache_bytes: int = Field(description="Compiled JSON and tool grammars kept for reuse.")
    total_bytes: int


class RunningModel(_ModelEntry):
    size: int = Field(description="All the model holds now: weights, KV cache, prefix cache, grammars.")
    expires_at: str
    size_vram: int
    context_length: int
    memory: RunningMemory | None = Field(default=None, description="heylook's own: `size` part by part.")


class RunningList(Reply):
    models: list[RunningModel]


class ShowResponse(Reply):
    model_config = {"extra": "allow"}

    details: ModelDetails
    capabilities: list[str]


class Version(Reply):
    version: str


class PullProgress(Reply):
    status: str
    digest: str | None = None
    total: int | None = None
    completed: int | None = None


class OllamaError(Reply):
    error: str
