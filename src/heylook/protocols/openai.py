"""OpenAI wire format: request bodies into internal requests, internal results into OpenAI bodies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from heylook.errors import HeylookError, InvalidRequest
from heylook.protocols.errors import openai_error_body
from heylook.protocols.fields import schema_text
from heylook.protocols.images import image_from_url
from heylook.protocols.tools import (
    check_tool_turns,
    dropped_tools,
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
    ImageInput,
    JsonFormat,
    Logprob,
    Logprobs,
    Message,
    RemoteModel,
    Reply,
    ReplyChunk,
    SamplingOptions,
    TextChunk,
    TextPrompt,
    ThinkingChunk,
    Timings,
    TokenLogprob,
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
    messages = chat_messages(typed.messages)
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
        logprobs=_chat_logprobs(typed),
        n=typed.n or 1,
        dropped_tools=dropped_tools(typed.tools),
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
    if typed.logprobs is not None and typed.echo:
        raise InvalidRequest(
            "'logprobs' with 'echo' is not supported: heylook scores the tokens it generates, "
            "not the prompt's",
            param="logprobs",
        )
    if typed.echo and (typed.n or 1) > 1:
        raise InvalidRequest("'echo' with 'n' greater than 1 is not supported", param="echo")
    request = GenerationRequest(
        model=typed.model,
        prompt=TextPrompt(prompt),
        options=_sampling(typed),
        logprobs=typed.logprobs,
        n=typed.n or 1,
    )
    extras = CompletionExtras(echo=prompt if typed.echo else "")
    return request, _stream_mode(typed), extras


def chat_messages(raw: list[wire.ChatMessage]) -> tuple[Message, ...]:
    messages = []
    for index, item in enumerate(raw):
        param = f"messages[{index}]"
        role = item.role
        if role == "tool" and not item.tool_call_id:
            raise InvalidRequest(
                f"'{param}.tool_call_id' is required in a tool message", param=f"{param}.tool_call_id"
            )
        calls = tool_calls_from(item.tool_calls, f"{param}.tool_calls") if role == "assistant" else ()
        text, images = _content(item.content, f"{param}.content")
        messages.append(
            Message(
                role=_ROLE_ALIASES.get(role, role),
                content=text,
                images=images,
                tool_calls=calls,
                tool_call_id=item.tool_call_id if role == "tool" else None,
                tool_name=item.name if role == "tool" else None,
                # Earlier reasoning: vLLM and DeepSeek send reasoning_content; Ollama's layer, reasoning.
                thinking=item.reasoning_content or item.reasoning or "",
            )
        )
    check_tool_turns(tuple(messages))
    return tuple(messages)


def _content(content: str | list[wire.ContentPart] | None, param: str) -> tuple[str, tuple[ImageInput, ...]]:
    """Message content: a string, null, or an array of text and image_url parts. The text parts
    join in their order; the images keep theirs, and go before the text when rendered."""
    if content is None or isinstance(content, str):
        return content or "", ()
    texts, images = [], []
    for index, part in enumerate(content):
        where = f"{param}[{index}]"
        if part.type == "image_url":
            if part.image_url is None:
                raise InvalidRequest(f"'{where}.image_url' is required", param=f"{where}.image_url")
            images.append(image_from_url(part.image_url.url, where))
            continue
        if part.type != "text":
            raise InvalidRequest(f"content parts of type {part.type!r} are not supported", param=where)
        if part.text is None:
            raise InvalidRequest(f"'{where}.text' is required", param=f"{where}.text")
        texts.append(part.text)
    return "".join(texts), tuple(images)


def _chat_logprobs(typed: Any) -> int | None:
    """logprobs and top_logprobs as how many alternatives each token reports (None: no logprobs).
    As OpenAI answers, top_logprobs is only for a request that sets logprobs true."""
    if typed.top_logprobs is not None and typed.logprobs is not True:
        raise InvalidRequest("'top_logprobs' needs 'logprobs' set to true", param="top_logprobs")
    return (typed.top_logprobs or 0) if typed.logprobs else None


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
    if typed.logit_bias:
        raise InvalidRequest("'logit_bias' is not supported yet", param="logit_bias")
    if getattr(typed, "functions", None) or getattr(typed, "function_call", None):
        raise InvalidRequest(
            "'functions' is OpenAI's deprecated form of 'tools': send 'tools'", param="functions"
        )


# --- writers ---------------------------------------------------------------------------------------


def usage_body(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        # Of the prompt's, those served from the prefix cache (OpenAI's prompt caching field).
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
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


def _choice(fields: dict[str, Any], finish_reason: FinishReason | None, index: int = 0) -> dict[str, Any]:
    """A choice: its fields, and logprobs (null unless the fields carry some)."""
    return {"index": index, **fields, "logprobs": fields.get("logprobs"), "finish_reason": finish_reason}


def choice_replies(reply: Reply, final: FinalChunk) -> list[tuple[Reply, FinishReason]]:
    """Every choice's reply and finish reason, by index: one, or the request's `n`."""
    if not final.finishes:
        return [(reply, final.finish_reason)]
    replies = reply.choices or (reply,)
    return [
        (replies[index] if index < len(replies) else Reply(), finish)
        for index, finish in enumerate(final.finishes)
    ]


def _token_body(entry: TokenLogprob) -> dict[str, Any]:
    body: dict[str, Any] = {"token": entry.token, "logprob": entry.logprob, "bytes": list(entry.raw)}
    if isinstance(entry, Logprob):
        body["top_logprobs"] = [_token_body(alternative) for alternative in entry.top]
    return body


def chat_logprobs_body(logprobs: Logprobs) -> dict[str, Any]:
    """A chat choice's logprobs: every token of the reply (reasoning and tool calls included)."""
    return {"content": [_token_body(entry) for entry in logprobs], "refusal": None}


def completion_logprobs_body(logprobs: Logprobs, offset: int = 0) -> dict[str, Any]:
    """A text completion's logprobs, in the legacy shape: the tokens, their logprobs, for each a map
    of the most likely tokens to their logprobs (the chosen one always among them, as OpenAI
    does), and where each token starts in the choice's text (after `offset` characters)."""
    top = []
    for entry in logprobs:
        likely = {alternative.token: alternative.logprob for alternative in reversed(entry.top)}
        likely.setdefault(entry.token, entry.logprob)
        top.append(dict(sorted(likely.items(), key=lambda item: -item[1])))
    return {
        "tokens": [entry.token for entry in logprobs],
        "token_logprobs": [entry.logprob for entry in logprobs],
        "top_logprobs": top,
        "text_offset": [offset + entry.offset for entry in logprobs],
    }


def chat_completion_body(
    *, id: str, created: int, model: str, reply: Reply, finish_reason: FinishReason, usage: Usage,
    logprobs: bool = False, finishes: tuple[FinishReason, ...] = (),
) -> dict[str, Any]:  # fmt: skip
    """A chat.completion; with `finishes` (n > 1), a choice for each of `reply.choices`."""
    final = FinalChunk(finish_reason, usage, Timings(), finishes=finishes)
    choices = []
    for index, (one, finish) in enumerate(choice_replies(reply, final)):
        scores = chat_logprobs_body(one.logprobs) if logprobs else None
        choices.append(_choice({"message": _message(one), "logprobs": scores}, finish, index))
    return {**_envelope("chat.completion", id, created, model, choices), "usage": usage_body(usage)}


def _message(reply: Reply) -> dict[str, Any]:
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
    return message


def tool_call_body(call: ToolCall) -> dict[str, Any]:
    return {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}


@dataclass(frozen=True)
class _Writer:
    id: str
    created: int
    model: str
    stream: bool = False
    include_usage: bool = False
    choices: int = 1  # the request's n
    object_name = ""
    media: ClassVar[Media] = "sse"

    def closing(self, final: FinalChunk) -> list[dict[str, Any]]:
        """Each choice's finish chunk, then with include_usage a chunk with no choices and the usage."""
        finishes = final.finishes or (final.finish_reason,)
        chunks = [self._chunk([self._finish_fields()], finish, index=i) for i, finish in enumerate(finishes)]
        if self.include_usage:
            chunks.append(self._chunk([], usage=final.usage))
        return chunks

    def error(self, error: HeylookError) -> dict[str, Any]:
        return openai_error_body(error, "completions" if self.object_name == "text_completion" else "chat")

    def _finish_fields(self) -> dict[str, Any]:
        raise NotImplementedError

    def _chunk(
        self,
        choices: list[dict[str, Any]],
        reason: FinishReason | None = None,
        usage: Usage | None = None,
        index: int = 0,
    ) -> dict[str, Any]:
        choices = [_choice(c, reason, index) for c in choices]
        body = _envelope(self.object_name, self.id, self.created, self.model, choices)
        if self.include_usage:
            body["usage"] = usage_body(usage) if usage is not None else None
        return body


@dataclass(frozen=True)
class ChatWriter(_Writer):
    """Internal chunks as chat.completion.chunk bodies (a role chunk, content, reasoning and tool
    call deltas, a finish chunk), or as one chat.completion."""

    object_name = "chat.completion.chunk"

    def opening(self, prompt_tokens: int | None = None) -> list[dict[str, Any]]:
        """Each choice's first delta, its role, as OpenAI opens every choice."""
        role = {"delta": {"role": "assistant", "content": ""}}
        return [self._chunk([role], index=index) for index in range(self.choices)]

    def delta(self, chunk: ReplyChunk) -> list[dict[str, Any]]:
        delta: dict[str, Any] = {}
        if isinstance(chunk, TextChunk):
            delta = {"content": chunk.text}
        elif isinstance(chunk, ThinkingChunk):
            delta = {"reasoning_content": chunk.text}
        elif isinstance(chunk, ToolCallChunk):
            # A call's first delta has its index, id and name; the ones after, its arguments.
            part: dict[str, Any] = {"index": chunk.index, "function": {"arguments": chunk.arguments}}
            if chunk.name:
                part = {"index": chunk.index, "id": chunk.id, "type": "function"}
                part["function"] = {"name": chunk.name, "arguments": chunk.arguments}
            delta = {"tool_calls": [part]}
        elif not chunk.logprobs:
            return []  # a whole call: its pieces went out already
        # Every token is reported, in order, with the delta its text went into.
        scores = chat_logprobs_body(chunk.logprobs) if chunk.logprobs else None
        return [self._chunk([{"delta": delta, "logprobs": scores}], index=chunk.choice)]

    def whole(self, reply: Reply, final: FinalChunk) -> dict[str, Any]:
        return chat_completion_body(
            id=self.id, created=self.created, model=self.model, reply=reply,
            finish_reason=final.finish_reason, usage=final.usage, logprobs=final.logprobs,
            finishes=final.finishes,
        )  # fmt: skip

    def _finish_fields(self) -> dict[str, Any]:
        return {"delta": {}}


@dataclass(frozen=True)
class CompletionWriter(_Writer):
    """Internal chunks as text_completion bodies; `echo` puts the prompt before the completion."""

    echo: str = ""
    object_name = "text_completion"

    def opening(self, prompt_tokens: int | None = None) -> list[dict[str, Any]]:
        return [self._text(self.echo)] if self.echo else []

    def delta(self, chunk: ReplyChunk) -> list[dict[str, Any]]:
        if not isinstance(chunk, TextChunk):
            return []
        scores = completion_logprobs_body(chunk.logprobs, len(self.echo)) if chunk.logprobs else None
        return [self._text(chunk.text, scores, chunk.choice)]

    def _text(self, text: str, logprobs: dict[str, Any] | None = None, index: int = 0) -> dict[str, Any]:
        return self._chunk([{"text": text, "logprobs": logprobs}], index=index)

    def whole(self, reply: Reply, final: FinalChunk) -> dict[str, Any]:
        choices = [
            _choice({"text": self.echo + one.content, "logprobs": self._scores(one, final)}, finish, index)
            for index, (one, finish) in enumerate(choice_replies(reply, final))
        ]
        body = _envelope("text_completion", self.id, self.created, self.model, choices)
        return {**body, "usage": usage_body(final.usage)}

    def _scores(self, reply: Reply, final: FinalChunk) -> dict[str, Any] | None:
        return completion_logprobs_body(reply.logprobs, len(self.echo)) if final.logprobs else None

    def _finish_fields(self) -> dict[str, Any]:
        return {"text": ""}


def completion_body(
    *, id: str, created: int, model: str, text: str, finish_reason: FinishReason, usage: Usage,
    logprobs: dict[str, Any] | None = None,
) -> dict[str, Any]:  # fmt: skip
    choices = [_choice({"text": text, "logprobs": logprobs}, finish_reason)]
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
