"""Ollama wire format: /api/chat and /api/generate bodies into internal requests, internal chunks
into Ollama's NDJSON objects. Pure functions; the clock is passed in."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any, ClassVar, Literal

from heylook import options as settings_table
from heylook.errors import HeylookError, InvalidRequest
from heylook.protocols.errors import ollama_error_body
from heylook.protocols.fields import schema_text
from heylook.protocols.images import image_from_base64
from heylook.protocols.tools import (
    check_tool_turns,
    dropped_tools,
    think_from,
    tool_calls_from,
    tool_choice_from,
    tools_from,
)
from heylook.protocols.writer import Media
from heylook.types import (
    ChatPrompt,
    FinalChunk,
    GenerationRequest,
    ImageInput,
    InfillPrompt,
    JsonFormat,
    LoadRequest,
    Logprobs,
    Message,
    ModelFacts,
    Reply,
    ReplyChunk,
    SamplingOptions,
    TextChunk,
    TextPrompt,
    ThinkingChunk,
    TokenLogprob,
    ToolCall,
    ToolCallChunk,
    ToolCallDone,
)
from heylook.wire import ollama as wire
from heylook.wire.settings import stated_settings
from heylook.wire.validate import validate

# Ollama's API as heylook serves it: each feature with the first Ollama release whose source has
# it (github.com/ollama/ollama at that tag: api/types.go, server/routes.go, openai/, anthropic/).
# tests/test_ollama_version.py asks each one of a live app, and holds OLLAMA_API_VERSION to at
# least the newest of them.
OLLAMA_FEATURES: dict[str, str] = {
    "/api/chat": "0.1.14",
    "images on chat messages": "0.1.15",
    "keep_alive": "0.1.23",
    "/api/ps": "0.1.38",
    "/v1/models": "0.2.0",
    "tools on /api/chat": "0.2.6",
    "/api/embed": "0.2.6",
    "format as a JSON schema": "0.5.0",
    "capabilities in /api/show": "0.6.4",
    "think": "0.9.0",
    "tool_name on tool results": "0.9.6",
    "context_length in /api/ps": "0.10.0",
    "think levels": "0.11.0",
    "dimensions on /api/embed": "0.11.11",
    "logprobs": "0.12.11",
    "/v1/responses (Codex CLI asks for 0.13.4 or newer)": "0.13.4",
    "/v1/messages": "0.14.0",
    'think "max"': "0.22.0",
    "output_config.effort on /v1/messages": "0.23.4",
    "capabilities in /api/tags": "0.30.0",
}

# What /api/version reports: the newest Ollama release whose API heylook serves (not heylook's own
# version). Clients gate features on it: Codex CLI refuses anything before 0.13.4. Ollama 0.32.15
# (its newest release, August 2026) added nothing since 0.30.0 that heylook lacks; what heylook
# does not serve at any version is what Ollama marks experimental (image generation, web search
# and fetch, /api/status, model recommendations), its undocumented /v1/audio/transcriptions (for
# audio models), building and publishing models (/api/create, /api/push: a 501 saying so), and
# the reasoning efforts its OpenAI layer adds to OpenAI's ("max", "ultra": a 400, as OpenAI says).
OLLAMA_API_VERSION = "0.32.15"

# Options heylook maps are the settings table's (heylook.options); the rest of Ollama's
# (num_gpu, num_thread, mirostat, ...) steer llama.cpp and are ignored, as Ollama ignores options
# it does not know.

Kind = Literal["chat", "generate"]
# The tag Ollama gives a name that has none.
LATEST = ":latest"
_EMPTY = Reply()
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def rfc3339(moment: datetime) -> str:
    """Ollama's timestamps: RFC 3339 in UTC with fractional seconds, e.g. 2024-01-01T00:00:00.123456Z."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Translated:
    """An Ollama generation request in internal form, with what its reply needs to be written."""

    request: GenerationRequest | LoadRequest
    writer: OllamaWriter
    ignored_options: tuple[str, ...] = ()


def parse_chat_request(body: dict[str, Any], clock: Clock = utc_now) -> Translated:
    """An /api/chat body, validated whole against its wire type (heylook.wire.ollama)."""
    typed: Any = validate(wire.chat_request(), body)
    if typed.images:
        raise InvalidRequest(
            "/api/chat takes images on a message ('messages[n].images'), not beside them", param="images"
        )
    writer = OllamaWriter(model=typed.model, kind="chat", stream=typed.stream is not False, clock=clock)
    keep_alive = parse_keep_alive(typed.keep_alive)
    messages = _messages(typed.messages or [])
    options, ignored = _options(typed.options)
    options = _with_format(options, typed.format)
    if not messages:  # Ollama: an empty conversation loads the model
        return Translated(LoadRequest(typed.model, keep_alive), writer)
    request = GenerationRequest(
        typed.model, ChatPrompt(messages), options, keep_alive=keep_alive, **_tools_and_think(typed)
    )
    return Translated(request, writer, ignored)


def _tools_and_think(typed: Any) -> dict[str, Any]:
    """tools, think and logprobs; Ollama has no tool_choice, but heylook reads OpenAI's where a
    client sends it. top_logprobs without logprobs true asks for nothing, as in Ollama."""
    tools = tools_from(typed.tools)
    return {
        "tools": tools,
        "tool_choice": tool_choice_from(typed.tool_choice, tools),
        "think": think_from(typed.think),
        "logprobs": (typed.top_logprobs or 0) if typed.logprobs else None,
        "dropped_tools": dropped_tools(typed.tools),
    }


def parse_generate_request(body: dict[str, Any], clock: Clock = utc_now) -> Translated:
    """An /api/generate body, validated whole against its wire type (heylook.wire.ollama)."""
    typed: Any = validate(wire.generate_request(), body)
    if typed.template:
        raise InvalidRequest("'template' is not supported: heylook uses the model's own chat template")
    raw = bool(typed.raw)
    writer = OllamaWriter(
        model=typed.model,
        kind="generate",
        stream=typed.stream is not False,
        clock=clock,
        with_context=not raw,
    )
    keep_alive = parse_keep_alive(typed.keep_alive)
    prompt, suffix, system = typed.prompt or "", typed.suffix, typed.system
    options, ignored = _options(typed.options)
    options = _with_format(options, typed.format)
    context = tuple(typed.context or ())
    images = images_from(typed.images, "images")
    if not prompt and not suffix and not images:  # Ollama: an empty prompt loads the model
        return Translated(LoadRequest(typed.model, keep_alive), writer)
    if images and (suffix or raw):
        # The chat template places the images; a raw prompt or an infill has no place for them.
        what = "a suffix" if suffix else "raw"
        raise InvalidRequest(
            f"images cannot go with {what}: they go through the chat template", param="images"
        )
    if suffix:
        internal_prompt: ChatPrompt | TextPrompt | InfillPrompt = InfillPrompt(prompt, suffix)
    elif raw:
        internal_prompt = TextPrompt(prompt)
    else:
        turns = (Message("system", system),) if system else ()
        # Models without a chat template get the prompt as is, as Ollama's default template does.
        internal_prompt = ChatPrompt((*turns, Message("user", prompt, images=images)), untemplated=prompt)
    request = GenerationRequest(
        typed.model,
        internal_prompt,
        options,
        keep_alive=keep_alive,
        context=context,
        **_tools_and_think(typed),
    )
    return Translated(request, writer, ignored)


def images_from(raw: list[str] | None, where: str) -> tuple[ImageInput, ...]:
    """Ollama's images: base64 text each (decoded here; whether it is an image, heylook.images checks)."""
    return tuple(image_from_base64(text, f"{where}[{index}]") for index, text in enumerate(raw or ()))


def _messages(raw: list[wire.OllamaMessage]) -> tuple[Message, ...]:
    messages = []
    for index, item in enumerate(raw):
        where = f"messages[{index}]"
        is_tool = item.role == "tool"
        calls = tool_calls_from(item.tool_calls, f"{where}.tool_calls") if item.role == "assistant" else ()
        messages.append(
            Message(
                role=item.role,
                content=item.content or "",
                tool_calls=calls,
                tool_call_id=item.tool_call_id if is_tool else None,
                # Ollama names the function a result is for; older clients used "name".
                tool_name=(item.tool_name or item.name) if is_tool else None,
                thinking=item.thinking or "",
                images=images_from(item.images, f"{where}.images"),
            )
        )
    check_tool_turns(tuple(messages))
    return tuple(messages)


def parse_options(options: Any) -> tuple[SamplingOptions, tuple[str, ...]]:
    """Ollama's `options` as SamplingOptions, and the names of those heylook ignores."""
    typed: Any = validate(wire.chat_request(), {"model": "-", "options": options})
    return _options(typed.options)


def _options(typed: Any) -> tuple[SamplingOptions, tuple[str, ...]]:
    if typed is None:
        return SamplingOptions(), ()
    return stated_settings(typed, "ollama"), tuple(sorted(typed.model_extra or ()))


def _with_format(options: SamplingOptions, value: Any) -> SamplingOptions:
    """Ollama's `format`: "json" or a JSON schema object, as the internal JSON constraint."""
    if value in (None, ""):
        return options
    if value == "json":
        return SamplingOptions(response_format=JsonFormat()).over(options)
    if isinstance(value, dict):
        return SamplingOptions(response_format=JsonFormat(schema_text(value, "format"))).over(options)
    raise InvalidRequest(f"'format' must be \"json\" or a JSON schema object, not {json.dumps(value)}")


MAX_KEEP_ALIVE = 10 * 365 * 24 * 3600.0  # ten years, in seconds
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_keep_alive(value: Any) -> float | None:
    """keep_alive in seconds: a number of seconds or a Go duration ("5m", "1h30m", "-1"); negative
    means forever (returned as -1), 0 unload now, None the server's default."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise InvalidRequest("'keep_alive' must be a duration like \"5m\" or a number of seconds")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = _parse_duration(value.strip())
    else:
        raise InvalidRequest("'keep_alive' must be a duration like \"5m\" or a number of seconds")
    if not math.isfinite(seconds):
        raise InvalidRequest("'keep_alive' must be finite")
    # Longer than anyone waits is for ever (and keeps expiry times within what a date can hold).
    return -1.0 if seconds < 0 or seconds > MAX_KEEP_ALIVE else seconds


def _parse_duration(text: str) -> float:
    sign = -1.0 if text.startswith("-") else 1.0
    body = text.lstrip("+-")
    try:
        return sign * float(body)  # a bare number: seconds
    except ValueError:
        pass
    parts = _DURATION_PART.findall(body)
    if not body or "".join(number + unit for number, unit in parts) != body:
        raise InvalidRequest(f'\'keep_alive\' is not a duration: {text!r} (try "5m", "1h", "30s")')
    return sign * sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)


# --- writers ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OllamaWriter:
    """Internal chunks as Ollama's /api/chat or /api/generate objects."""

    model: str
    kind: Kind
    stream: bool = True
    clock: Clock = utc_now
    with_context: bool = True  # /api/generate returns `context`, except in raw mode
    media: ClassVar[Media] = "ndjson"

    def opening(self, prompt_tokens: int | None = None) -> list[dict[str, Any]]:
        return []

    def delta(self, chunk: ReplyChunk) -> list[dict[str, Any]]:
        first_index = 0
        if isinstance(chunk, TextChunk):
            reply = Reply(content=chunk.text)
        elif isinstance(chunk, ThinkingChunk):
            reply = Reply(thinking=chunk.text)
        elif isinstance(chunk, ToolCallDone):
            # Ollama streams a call once it is whole, its arguments as an object.
            reply, first_index = Reply(tool_calls=(chunk.call,)), chunk.index
        elif isinstance(chunk, ToolCallChunk) and chunk.logprobs:
            reply = _EMPTY  # a piece of a call: only its tokens' logprobs go out now
        else:
            return []
        line = {**self._head(), **self._reply(reply, first_index=first_index), "done": False}
        return [{**line, **logprobs_field(chunk.logprobs)}]

    def closing(self, final: FinalChunk) -> list[dict[str, Any]]:
        return [self.final(final)]

    def whole(self, reply: Reply, final: FinalChunk) -> dict[str, Any]:
        return self.final(final, reply)

    def final(self, chunk: FinalChunk, reply: Reply = _EMPTY) -> dict[str, Any]:
        """The last object: the reply is empty when streaming, all of it otherwise."""
        timings, usage = chunk.timings, chunk.usage
        body = {
            **self._head(),
            **self._reply(reply),
            "done": True,
            # Ollama says "stop" when the reply ends in tool calls; only OpenAI says tool_calls.
            "done_reason": "stop" if chunk.finish_reason == "tool_calls" else chunk.finish_reason,
            "total_duration": timings.total_ns,
            "load_duration": timings.load_ns,
            "prompt_eval_count": usage.prompt_tokens,
            "prompt_eval_duration": timings.prompt_eval_ns,
            "eval_count": usage.completion_tokens,
            "eval_duration": timings.eval_ns,
        }
        if self.kind == "generate" and self.with_context:
            body["context"] = list(chunk.context)
        return {**body, **logprobs_field(reply.logprobs)}

    def lifecycle(self, reason: Literal["load", "unload"]) -> dict[str, Any]:
        """The reply to an empty prompt: the model was loaded, or unloaded."""
        return {**self._head(), **self._reply(_EMPTY), "done": True, "done_reason": reason}

    def error(self, error: HeylookError) -> dict[str, Any]:
        return ollama_error_body(error)

    def _head(self) -> dict[str, Any]:
        return {"model": self.model, "created_at": rfc3339(self.clock())}

    def _reply(self, reply: Reply, first_index: int = 0) -> dict[str, Any]:
        """The reply's fields: in `message` for chat, at the top level (`response`) for generate."""
        fields: dict[str, Any] = {"content" if self.kind == "chat" else "response": reply.content}
        if reply.thinking:
            fields["thinking"] = reply.thinking
        calls = [tool_call_body(call, first_index + i) for i, call in enumerate(reply.tool_calls)]
        calls = [call for call in calls if call is not None]
        if calls:
            fields["tool_calls"] = calls
        if self.kind == "chat":
            return {"message": {"role": "assistant", **fields}}
        return fields


def logprobs_field(logprobs: Logprobs) -> dict[str, Any]:
    """`logprobs` as Ollama writes it (left out when there are none): each token with its bytes,
    and its `top_logprobs` when some were asked for."""
    if not logprobs:
        return {}
    entries = []
    for entry in logprobs:
        body = _token_logprob(entry)
        if entry.top:
            body["top_logprobs"] = [_token_logprob(alternative) for alternative in entry.top]
        entries.append(body)
    return {"logprobs": entries}


def _token_logprob(entry: TokenLogprob) -> dict[str, Any]:
    return {"token": entry.token, "logprob": entry.logprob, "bytes": list(entry.raw)}


def tool_call_body(call: ToolCall, index: int) -> dict[str, Any] | None:
    """A call in Ollama's shape, its arguments as an object; None for arguments that never became
    one (a reply cut off in the middle of a call)."""
    try:
        arguments = json.loads(call.arguments)
    except ValueError:
        return None
    if not isinstance(arguments, dict):
        return None
    return {"id": call.id, "function": {"index": index, "name": call.name, "arguments": arguments}}


def read_model_field(body: dict[str, Any], key: str = "model") -> str:
    """The model name of /api/show, /api/delete, /api/pull (which also accept the older "name")."""
    typed = validate(wire.ModelName, body)
    value = typed.model or typed.name
    if not value:
        raise InvalidRequest(f"'{key}' is required", param=key)
    return value


def read_copy_request(body: dict[str, Any]) -> tuple[str, str]:
    typed = validate(wire.CopyRequest, body)
    if not typed.source or not typed.destination:
        raise InvalidRequest("'source' and 'destination' must not be empty")
    return typed.source, typed.destination


def read_pull_stream(body: dict[str, Any]) -> bool:
    """/api/pull streams its progress unless told not to."""
    return validate(wire.PullRequest, body).stream is not False


# --- model listings -------------------------------------------------------------------------------

# Internal option names as Ollama's Modelfile PARAMETERs call them.
# Ollama shows a model kept forever as expiring in about 292 years (Go's largest duration).
_FOREVER = timedelta(days=292 * 365)


@dataclass(frozen=True)
class Running:
    """A loaded model as /api/ps shows it."""

    facts: ModelFacts
    size: int
    on_gpu: bool
    expires_at: float  # epoch seconds; inf: kept forever or in use
    context_length: int
    quantization_level: str = ""  # what the loaded weights run as ("" : what the files say)
    memory: Mapping[str, int] = field(default_factory=dict)  # its parts (models.memory), in bytes


def human_parameters(count: int | None) -> str:
    """Ollama's style: 134.52M, 8.0B."""
    if not count:
        return ""
    if count >= 1_000_000_000:
        return f"{count / 1e9:.1f}B"
    return f"{count / 1e6:.2f}M"


def details_body(facts: ModelFacts) -> dict[str, Any]:
    return {
        "parent_model": "",
        "format": "safetensors",
        "family": facts.family,
        "families": [facts.family] if facts.family else None,
        "parameter_size": human_parameters(facts.parameter_count),
        # What runs, not what the source file held (the GGUF's type is in /api/show's model_info).
        "quantization_level": facts.dtype,
    }


def listed_name(name: str, names: Collection[str] = ()) -> str:
    """A name as Ollama lists it (/api/tags, /api/ps, /v1/models): with its tag, `:latest` where
    it has none (`smollm2` -> `smollm2:latest`; `qwen3:8b` stays), the tag being what follows a
    ':' after the last '/'. Where `names` (every alias) also holds the tagged name, the untagged
    alias keeps its bare name, so no two entries are listed alike."""
    if ":" in name.rsplit("/", 1)[-1]:
        return name
    tagged = f"{name}{LATEST}"
    return name if tagged in names else tagged


def _model_entry(facts: ModelFacts, names: Collection[str]) -> dict[str, Any]:
    name = listed_name(facts.name, names)
    return {
        "name": name,
        "model": name,
        "size": facts.size_bytes,
        "digest": facts.digest,
        "details": details_body(facts),
    }


def tags_body(models: list[ModelFacts]) -> dict[str, Any]:
    """Every alias, as Ollama lists its models (since 0.30.0 with their capabilities, and the
    context and embedding lengths in details)."""
    names = {f.name for f in models}
    return {"models": [_listed(f, names) for f in models]}


def _listed(facts: ModelFacts, names: Collection[str]) -> dict[str, Any]:
    entry = _model_entry(facts, names)
    lengths = {"context_length": facts.context_length, "embedding_length": facts.config.get("hidden_size")}
    entry["details"] |= {key: value for key, value in lengths.items() if value}
    modified = rfc3339(datetime.fromtimestamp(facts.modified, timezone.utc))
    return {**entry, "modified_at": modified, "capabilities": capabilities(facts)}


def ps_body(running: list[Running], clock: Clock = utc_now, names: Collection[str] = ()) -> dict[str, Any]:
    """The loaded models; `names` is every alias (see listed_name)."""
    now = clock()
    return {
        "models": [
            {
                **_model_entry(replace(r.facts, dtype=r.quantization_level or r.facts.dtype), names),
                "size": r.size,
                # Compiled grammars stay in RAM whatever device the model runs on.
                "size_vram": r.size - r.memory.get("grammar_cache_bytes", 0) if r.on_gpu else 0,
                "expires_at": rfc3339(
                    now + _FOREVER
                    if math.isinf(r.expires_at)
                    else datetime.fromtimestamp(r.expires_at, timezone.utc)
                ),
                "context_length": r.context_length,
                **({"memory": dict(r.memory)} if r.memory else {}),
            }
            for r in running
        ]
    }


def parameters_text(options: SamplingOptions) -> str:
    """An alias's default options in Modelfile PARAMETER form: one "name value" per line."""
    lines = []
    for row in settings_table.SETTINGS:  # internal names as Ollama's Modelfile PARAMETERs call them
        if row.ollama is None or row.kind == "stops":
            continue
        internal, name = row.name, row.ollama
        value = getattr(options, internal)
        if value is not None:
            lines.append(f"{name} {value}")
    lines += [f"stop {json.dumps(stop)}" for stop in options.stop or ()]
    return "\n".join(lines)


def show_body(facts: ModelFacts) -> dict[str, Any]:
    parameters = parameters_text(facts.options)
    modelfile = [f"# Modelfile generated by heylook for the alias {facts.name}", f"FROM {facts.source}"]
    modelfile += [f"PARAMETER {line}" for line in parameters.splitlines()]
    body: dict[str, Any] = {
        "modelfile": "\n".join(modelfile) + "\n",
        "parameters": parameters,
        "template": facts.chat_template or "{{ .Prompt }}",
        "details": details_body(facts),
        "model_info": _model_info(facts),
        "capabilities": capabilities(facts),
        "license": "",
    }
    if facts.modified:
        body["modified_at"] = rfc3339(datetime.fromtimestamp(facts.modified, timezone.utc))
    return body


def capabilities(facts: ModelFacts) -> list[str]:
    """What clients may ask of the model here, as Ollama names it: embedding for an embedding
    model (and nothing else); for a model that generates, completion; tools for every model with
    a chat template (heylook's generic format covers templates that know no tools) and every
    remote one; thinking where the template marks reasoning; insert where the tokenizer has
    fill-in-the-middle tokens; vision for a vision-language model (images in)."""
    if facts.kind == "embed":
        return ["embedding"]
    found = ["completion"]
    if facts.chat_template or facts.remote:
        found.append("tools")
    if facts.thinks:
        found.append("thinking")
    if facts.infill:
        found.append("insert")
    if facts.vision:
        found.append("vision")
    return found


def _model_info(facts: ModelFacts) -> dict[str, Any]:
    """GGUF-style keys, as Ollama reports them, from the transformers config."""
    family, config = facts.family, facts.config
    info: dict[str, Any] = {"general.architecture": family, "general.parameter_count": facts.parameter_count}
    # A converted GGUF: the file's own type, as Ollama reports it (an integer), and by name;
    # details.quantization_level says what heylook runs (models/quantization.py).
    info["general.file_type"] = facts.source_file_type
    if facts.source_quantization:
        info["heylook.source_quantization"] = facts.source_quantization
    for key, config_key in (
        ("context_length", "max_position_embeddings"),
        ("embedding_length", "hidden_size"),
        ("feed_forward_length", "intermediate_size"),
        ("block_count", "num_hidden_layers"),
        ("attention.head_count", "num_attention_heads"),
        ("attention.head_count_kv", "num_key_value_heads"),
        ("vocab_size", "vocab_size"),
    ):
        if config.get(config_key) is not None:
            info[f"{family}.{key}"] = config[config_key]
    return {key: value for key, value in info.items() if value is not None}
