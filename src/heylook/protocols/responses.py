"""OpenAI's Responses API: a /v1/responses body into an internal request (its input items as
messages after a stored conversation's), and internal results into a response object or its
stream of typed events."""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from heylook.errors import HeylookError, InvalidRequest
from heylook.protocols.errors import openai_error_fields
from heylook.protocols.fields import schema_text
from heylook.protocols.images import image_from_url, image_url
from heylook.protocols.tools import check_tools, effort_from, read_call_arguments, tool_choice_from
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
    ThinkingChunk,
    Tool,
    ToolCall,
    ToolCallChunk,
)
from heylook.wire import responses as wire
from heylook.wire.settings import stated_settings
from heylook.wire.tools import ChosenFunction, NamedToolChoice
from heylook.wire.validate import validate

# OpenAI's "developer" role is its newer name for "system".
_ROLES = {"user": "user", "system": "system", "developer": "system"}
# The content part types each side's messages carry as text.
_TEXT_PARTS = {"user": ("input_text",), "system": ("input_text",), "assistant": ("output_text", "input_text")}

log = logging.getLogger(__name__)

# Looks up a stored response's conversation by id: raises ResponseNotFound for one not (or no
# longer) stored.
History = Callable[[str], tuple[Message, ...]]


class ResponseNotFound(HeylookError):
    """A response id no longer (or never) stored: as a request's previous_response_id, OpenAI's
    code for it; as a path's id, a plain 404."""

    status = 404
    kind = "invalid_request_error"

    def __init__(self, id: str, param: str | None = None) -> None:
        super().__init__(f"no response with id {id!r} is stored (it may have expired)", param=param)
        self.code = "previous_response_not_found" if param == "previous_response_id" else "not_found"


@dataclass(frozen=True)
class CalledTool:
    """What a tool the model sees by one name is to the client: a function or a custom tool, by
    its own name, in a namespace or not. The model's call comes back as the client routes it."""

    name: str
    namespace: str | None = None
    custom: bool = False


# The tools the model was offered, by the name it calls them.
ToolNames = Mapping[str, CalledTool]
# A custom tool's one argument: its input text.
CUSTOM_INPUT = "input"


def flat_name(namespace: str | None, name: str) -> str:
    """A namespace's tool as the model sees it: namespace__name (Codex's own flat spelling, where a
    boundary cannot keep the two apart: stray underscores at the joint trimmed)."""
    return name if namespace is None else f"{namespace.rstrip('_')}__{name.lstrip('_')}"


def new_id(prefix: str) -> str:
    """An id as OpenAI's look: rs_..., msg_..., fc_..., call_..., resp_..."""
    return f"{prefix}_{secrets.token_hex(24)}"


@dataclass(frozen=True)
class ParsedResponse:
    request: GenerationRequest
    # What this response continues from and was given: a previous response's conversation, then
    # this input (instructions are not part of it, and are not carried over).
    conversation: tuple[Message, ...]
    input: tuple[Message, ...]
    # The request's fields, as the response object echoes them.
    echo: dict[str, Any]
    stream: bool = False
    store: bool = True
    # The tools the model may call, by the names it sees: what each call is to the client.
    tools: ToolNames = field(default_factory=dict)


def parse_response_request(body: dict[str, Any], history: History) -> ParsedResponse:
    """A /v1/responses body as an internal request: validated whole against its wire type, then
    what no type can say (each item's fields, an output answers a call made, a chosen tool is
    among the tools)."""
    typed: Any = validate(wire.response_request(), body)
    _reject_unsupported(typed)
    earlier = history(typed.previous_response_id) if typed.previous_response_id else ()
    given = input_messages(typed.input, earlier)
    conversation = (*earlier, *given)
    if not conversation:
        raise InvalidRequest("'input' must not be empty", param="input")
    instructions = (Message("system", typed.instructions),) if typed.instructions else ()
    tools, called, dropped = offered_tools(typed.tools)
    chosen = typed.tool_choice
    if isinstance(chosen, wire.FunctionChoice):
        chosen = NamedToolChoice(type="function", function=ChosenFunction(name=_chosen(chosen, called)))
    request = GenerationRequest(
        model=typed.model,
        prompt=ChatPrompt((*instructions, *conversation)),
        options=SamplingOptions(
            response_format=_text_format(typed.text), max_tokens=typed.max_output_tokens
        ).over(stated_settings(typed, "openai")),
        tools=tools,
        tool_choice=tool_choice_from(chosen, tools),
        parallel_tool_calls=typed.parallel_tool_calls is not False,
        think=effort_from(None, typed.reasoning),
        dropped_tools=dropped,
    )
    store = typed.store is not False
    echo = _echo(typed, store)
    return ParsedResponse(request, conversation, given, echo, bool(typed.stream), store, called)


def _reject_unsupported(typed: Any) -> None:
    """Refuse what heylook cannot honour, rather than silently ignoring it."""
    if typed.background:
        raise InvalidRequest(
            "'background' is not supported: a response is answered within its request", param="background"
        )
    if typed.conversation is not None:
        raise InvalidRequest(
            "'conversation' is not supported: continue with 'previous_response_id'", param="conversation"
        )
    if typed.prompt is not None:
        raise InvalidRequest("'prompt' (a stored prompt) is not supported", param="prompt")
    if typed.top_logprobs:
        raise InvalidRequest("'top_logprobs' is not supported yet", param="top_logprobs")


@dataclass
class _Turn:
    """An assistant turn gathered from its items: reasoning, a message, function calls."""

    content: str = ""
    thinking: str = ""
    calls: list[ToolCall] = field(default_factory=list)


def input_messages(raw: str | list[wire.InputItem], earlier: tuple[Message, ...]) -> tuple[Message, ...]:
    """`input` as messages: a string is one user message; items in a row that an assistant wrote
    (reasoning, a message, function calls) are one assistant turn; a function call's output is a
    tool message, answering a call made in this input or in `earlier`."""
    if isinstance(raw, str):
        return (Message("user", raw),)
    names = {call.id: call.name for message in earlier for call in message.tool_calls}
    messages: list[Message] = []
    turn: _Turn | None = None  # the assistant turn being gathered
    for index, item in enumerate(raw):
        param = f"input[{index}]"
        kind = item.type or "message"
        if kind == "message" and _required(item.role, f"{param}.role") != "assistant":
            _flush(turn, messages)
            turn = None
            role = _ROLES[str(item.role)]
            text, images = _content(item.content, f"{param}.content", _TEXT_PARTS[role], role == "user")
            messages.append(Message(role, text, images=images))
        elif kind == "message":
            if turn is not None and (turn.content or turn.calls):
                _flush(turn, messages)
                turn = None
            turn = turn or _Turn()
            turn.content = _text(item.content, f"{param}.content", _TEXT_PARTS["assistant"])
        elif kind == "reasoning":
            if turn is not None and (turn.content or turn.calls or turn.thinking):
                _flush(turn, messages)
                turn = None
            turn = turn or _Turn()
            texts = [part.text for part in _required(item.summary, f"{param}.summary")]
            if not texts and isinstance(item.content, list):  # the reasoning itself, where it came whole
                texts = [part.text or "" for part in item.content if part.type == "reasoning_text"]
            turn.thinking = "\n".join(texts)
        elif kind in ("function_call", "custom_tool_call"):
            turn = turn or _Turn()
            call_id = _required(item.call_id, f"{param}.call_id")
            name = flat_name(item.namespace, _required(item.name, f"{param}.name"))
            if kind == "function_call":
                arguments = read_call_arguments(item.arguments, f"{param}.arguments")
            else:  # a custom tool's text, as the one argument the model gave it
                arguments = _custom_arguments(_required(item.input, f"{param}.input"))
            turn.calls.append(ToolCall(name, arguments, call_id))
            names[call_id] = name
        else:  # function_call_output, custom_tool_call_output
            _flush(turn, messages)
            turn = None
            call_id = _required(item.call_id, f"{param}.call_id")
            if call_id not in names:
                raise InvalidRequest(
                    f"'{param}.call_id' answers the call {call_id!r}, which no call in the conversation made",
                    param=f"{param}.call_id",
                )
            output = _text(_required(item.output, f"{param}.output"), f"{param}.output", ("input_text",))
            messages.append(Message("tool", output, tool_call_id=call_id, tool_name=names[call_id]))
    _flush(turn, messages)
    return tuple(messages)


def _flush(turn: _Turn | None, messages: list[Message]) -> None:
    """The gathered assistant turn, as a message (none left gathering)."""
    if turn is not None:
        messages.append(Message("assistant", turn.content, tuple(turn.calls), thinking=turn.thinking))


def _required(value: Any, param: str) -> Any:
    if value is None:
        raise InvalidRequest(f"'{param}' is required", param=param)
    return value


def _text(content: str | list[wire.ContentPart] | None, param: str, kinds: tuple[str, ...]) -> str:
    """Content: a string, or text parts of the kinds given (images are refused, by name)."""
    return _content(content, param, kinds, images_allowed=False)[0]


def _content(
    content: str | list[wire.ContentPart] | None, param: str, kinds: tuple[str, ...], images_allowed: bool
) -> tuple[str, tuple[ImageInput, ...]]:
    """Content: a string, or parts: text of the kinds given, and images (input_image) where a user
    message carries them; the text parts joined, the images in their order."""
    content = _required(content, param)
    if isinstance(content, str):
        return content, ()
    texts = []
    images = []
    for index, part in enumerate(content):
        where = f"{param}[{index}]"
        if part.type == "input_image":
            if not images_allowed:
                raise InvalidRequest(
                    f"'{where}' is an image (input_image): only user messages carry images", param=where
                )
            images.append(_image(part, where))
            continue
        if part.type == "input_file":
            raise InvalidRequest(
                f"'{where}' is a file (input_file), which heylook does not read in a prompt (its files, "
                f"/v1/files, are batches' input and output); send its text as {kinds[0]}",
                param=where,
            )
        if part.type not in kinds:
            allowed = (*kinds, "input_image") if images_allowed else kinds
            raise InvalidRequest(
                f"'{where}.type' must be {' or '.join(allowed)} here, not {part.type!r}",
                param=f"{where}.type",
            )
        texts.append(_required(part.text, f"{where}.text"))
    return "".join(texts), tuple(images)


def _image(part: wire.ContentPart, where: str) -> ImageInput:
    """An input_image part: its image_url, a data: URL or an http(s) URL. An uploaded file
    (file_id) is not read as an image: heylook's Files API keeps batches' files only."""
    if part.file_id is not None:
        raise InvalidRequest(
            f"'{where}.file_id' names an uploaded file, which heylook does not read as an image (its "
            "files, /v1/files, are batches' input and output); send the image as image_url "
            "(a data: URL or an http(s) URL)",
            param=f"{where}.file_id",
        )
    url = _required(part.image_url, f"{where}.image_url")
    return image_from_url(url, where)


def offered_tools(raw: list[Any] | None) -> tuple[tuple[Tool, ...], dict[str, CalledTool], tuple[str, ...]]:
    """The request's tools as the model is offered them: functions; custom tools as functions of
    one string, `input`; a namespace's tools each as namespace__name. With what each name is to
    the client, and the types of the tools dropped (hosted ones: a model here cannot run them).
    Names unique, all of them within a size."""
    named: list[tuple[str, Tool]] = []
    called: dict[str, CalledTool] = {}
    dropped: list[str] = []
    for index, item in enumerate(raw or ()):
        param = f"tools[{index}]"
        if isinstance(item, wire.NamespaceTool):
            for inner, tool in enumerate(item.tools):
                named.append(_offered(tool, f"{param}.tools[{inner}]", item, called))
        elif isinstance(item, wire.FunctionTool | wire.CustomTool):
            named.append(_offered(item, param, None, called))
        else:
            log.info("dropped %s (%s): a model here cannot run it", param, item.type)
            dropped.append(item.type)
    check_tools(named)
    return tuple(tool for _, tool in named), called, tuple(dropped)


def _offered(
    item: wire.FunctionTool | wire.CustomTool,
    param: str,
    namespace: wire.NamespaceTool | None,
    called: dict[str, CalledTool],
) -> tuple[str, Tool]:
    """One function or custom tool as the model sees it (with the param naming it), recorded in
    `called` under that name."""
    name = flat_name(namespace.name if namespace else None, item.name)
    # The namespace's own description is not repeated in each of its tools' (an MCP server's
    # may have dozens): its name, in theirs, says whose they are.
    description = item.description or ""
    custom = isinstance(item, wire.CustomTool)
    if isinstance(item, wire.CustomTool):
        tool = Tool(name, description, _custom_parameters(item.format))
    elif item.parameters is None:
        tool = Tool(name, description)
    else:
        tool = Tool(name, description, schema_text(item.parameters, f"{param}.parameters"))
    called[name] = CalledTool(item.name, namespace.name if namespace else None, custom)
    return f"{param}.name", tool


def _custom_parameters(format: wire.CustomFormat | None) -> str:
    """A custom tool's input as a function's one argument; a grammar it is written in is shown in
    its description (not enforced)."""
    words = "The tool's input, as text."
    if format is not None and format.type == "grammar" and format.definition:
        words = f"The tool's input: text in this {format.syntax or 'lark'} grammar:\n{format.definition}"
    properties = {CUSTOM_INPUT: {"type": "string", "description": words}}
    return json.dumps({"type": "object", "properties": properties, "required": [CUSTOM_INPUT]})


def _custom_arguments(text: str) -> str:
    return json.dumps({CUSTOM_INPUT: text}, ensure_ascii=False)


def custom_input(arguments: str) -> str:
    """A custom tool call's input text, from the arguments the model gave its function: the
    `input` string (anything else it wrote, as it wrote it)."""
    try:
        parsed = json.loads(arguments)
    except ValueError:
        return arguments
    if isinstance(parsed, dict) and isinstance(parsed.get(CUSTOM_INPUT), str):
        return str(parsed[CUSTOM_INPUT])
    return arguments


def _chosen(choice: wire.FunctionChoice, called: ToolNames) -> str:
    """The tool tool_choice names, by the name the model sees: a namespace's tool is named by its
    own name (the first of that name and kind), or as namespace__name."""
    if choice.name in called:
        return choice.name
    custom = choice.type == "custom"
    found = (seen for seen, tool in called.items() if tool.name == choice.name and tool.custom == custom)
    return next(found, choice.name)


def _text_format(text: wire.TextConfig | None) -> JsonFormat | None:
    """text.format as the JSON output constraint (plain text: none)."""
    chosen = text.format if text is not None else None
    if chosen is None or chosen.type == "text":
        return None
    if chosen.type == "json_object":
        return JsonFormat()
    if chosen.schema_ is None:
        raise InvalidRequest("'text.format.schema' is required", param="text.format.schema")
    return JsonFormat(schema_text(chosen.schema_, "text.format.schema"))


def _echo(typed: Any, store: bool) -> dict[str, Any]:
    """The request's fields as the response object carries them back."""
    chosen = typed.tool_choice
    text: dict[str, Any] = {"format": {"type": "text"}}
    if typed.text is not None and typed.text.format is not None:
        given = typed.text.format
        text["format"] = {"type": given.type}
        fields = {"name": given.name, "schema": given.schema_, "description": given.description}
        for key, value in {**fields, "strict": given.strict}.items():
            if value is not None:
                text["format"][key] = value
    if typed.text is not None and typed.text.verbosity is not None:
        text["verbosity"] = typed.text.verbosity
    reasoning = typed.reasoning
    return {
        "instructions": typed.instructions,
        "max_output_tokens": typed.max_output_tokens,
        "parallel_tool_calls": typed.parallel_tool_calls is not False,
        "previous_response_id": typed.previous_response_id,
        "reasoning": {
            "effort": reasoning.effort if reasoning else None,
            "summary": (reasoning.summary or reasoning.generate_summary) if reasoning else None,
        },
        "store": store,
        "temperature": typed.temperature,
        "text": text,
        "tool_choice": {"type": chosen.type, "name": chosen.name}
        if isinstance(chosen, wire.FunctionChoice)
        else chosen or "auto",
        "tools": [_echo_tool(tool) for tool in typed.tools or ()],
        "top_p": typed.top_p,
        "truncation": typed.truncation or "disabled",
        "user": typed.user,
        "metadata": dict(typed.metadata or {}),
    }


def _echo_tool(tool: Any) -> dict[str, Any]:
    """A tool as the response object carries it back: as given (a dropped hosted tool too)."""
    if isinstance(tool, wire.FunctionTool):
        fields = {"name": tool.name, "description": tool.description, "parameters": tool.parameters}
        return {"type": "function", **fields, "strict": tool.strict}
    if isinstance(tool, wire.CustomTool):
        given = tool.format.model_dump(exclude_none=True) if tool.format else {"type": "text"}
        return {"type": "custom", "name": tool.name, "description": tool.description, "format": given}
    if isinstance(tool, wire.NamespaceTool):
        inner = [_echo_tool(item) for item in tool.tools]
        return {"type": "namespace", "name": tool.name, "description": tool.description, "tools": inner}
    return dict(tool.model_dump(by_alias=True, exclude_none=True))


# --- what a stored response lists ------------------------------------------------------------------


def input_items(
    messages: tuple[Message, ...], make_id: Callable[[str], str] = new_id, tools: ToolNames | None = None
) -> list[dict[str, Any]]:
    """A response's input as the items /v1/responses/{id}/input_items lists, in order (calls to
    the request's `tools` as the client sent them)."""
    tools = tools or {}
    items: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "tool":
            called = tools.get(message.tool_name or "")
            items.append(
                {
                    "type": "custom_tool_call_output" if called and called.custom else "function_call_output",
                    "id": make_id("fco"),
                    "call_id": message.tool_call_id or "",
                    "output": message.content,
                    "status": "completed",
                }
            )
        elif message.role == "assistant":
            reply = Reply(message.content, message.thinking, message.tool_calls)
            items += _output_items(reply, make_id, "completed", tools)
        else:
            items.append(
                {
                    "type": "message",
                    "id": make_id("msg"),
                    "role": message.role,
                    "status": "completed",
                    "content": [
                        *(
                            {"type": "input_image", "image_url": image_url(i), "detail": "auto"}
                            for i in message.images
                        ),
                        {"type": "input_text", "text": message.content},
                    ],
                }
            )
    return items


def assistant_turn(reply: Reply) -> Message:
    """A response's output as the assistant turn a continuation sees."""
    return Message("assistant", reply.content, reply.tool_calls, thinking=reply.thinking)


def _reasoning_item(id: str, text: str) -> dict[str, Any]:
    return {"type": "reasoning", "id": id, "summary": [{"type": "summary_text", "text": text}]}


def _message_item(id: str, text: str, status: str) -> dict[str, Any]:
    content = [{"type": "output_text", "text": text, "annotations": []}]
    return {"type": "message", "id": id, "role": "assistant", "status": status, "content": content}


def _call_item(id: str, call: ToolCall, status: str, tools: ToolNames) -> dict[str, Any]:
    """A call as the client routes it: a function_call, or a custom tool's custom_tool_call (its
    input text), by the tool's own name, with its namespace where it is in one."""
    called = tools.get(call.name) or CalledTool(call.name)
    if called.custom:
        fields = {"input": custom_input(call.arguments) if call.arguments else ""}
        body = {"type": "custom_tool_call", "id": id, "call_id": call.id, "name": called.name, **fields}
    else:
        body = {"type": "function_call", "id": id, "call_id": call.id, "name": called.name}
        body["arguments"] = call.arguments
    body["status"] = status
    if called.namespace is not None:
        body["namespace"] = called.namespace
    return body


def _output_items(
    reply: Reply, make_id: Callable[[str], str], status: str, tools: ToolNames
) -> list[dict[str, Any]]:
    """A reply as output items, in the order a stream opens them: reasoning, the message (always
    one, unless the reply is only calls), the calls."""
    items = [_reasoning_item(make_id("rs"), reply.thinking)] if reply.thinking else []
    if reply.content or not reply.tool_calls:
        items.append(_message_item(make_id("msg"), reply.content, status))
    items += [_call_item(make_id("fc"), call, status, tools) for call in reply.tool_calls]
    return items


# --- the writer ------------------------------------------------------------------------------------


def usage_body(final: FinalChunk, reasoning_tokens: int = 0) -> dict[str, Any]:
    usage = final.usage
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": usage.cached_tokens, "cache_write_tokens": 0},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": reasoning_tokens},
        "total_tokens": usage.total_tokens,
    }


@dataclass
class _OpenItem:
    """The output item a stream is writing: its index, body, and the text it has had so far."""

    index: int
    body: dict[str, Any]
    text: list[str] = field(default_factory=list)


@dataclass
class ResponsesWriter:
    """Internal chunks as the Responses API's typed events (the response created, each output item
    opened, written and done in turn: reasoning, the message, function calls; the response
    completed), or as one response object. `on_done` gets the finished response and its reply (to
    store them). It keeps what the stream has opened, so it is one writer per response."""

    id: str
    created_at: int
    model: str
    stream: bool = False
    echo: Mapping[str, Any] = field(default_factory=dict)
    on_done: Callable[[dict[str, Any], Reply], None] | None = None
    # What each tool the model calls is to the client (ParsedResponse.tools).
    tools: ToolNames = field(default_factory=dict)
    make_id: Callable[[str], str] = new_id
    clock: Callable[[], float] = time.time
    media: ClassVar[Media] = "sse-typed"
    _sequence: int = field(default=0, init=False)
    _output: list[dict[str, Any]] = field(default_factory=list, init=False)
    _open: _OpenItem | None = field(default=None, init=False)
    _content: list[str] = field(default_factory=list, init=False)
    _thinking: list[str] = field(default_factory=list, init=False)
    _calls: list[ToolCall] = field(default_factory=list, init=False)
    # The output tokens that were reasoning: counted as the stream goes (a whole reply has no count).
    _reasoning_tokens: int = field(default=0, init=False)

    # --- streaming ---

    def opening(self, prompt_tokens: int | None = None) -> list[dict[str, Any]]:
        started = self._response("in_progress", usage=None)
        return [
            self._event("response.created", response=started),
            self._event("response.in_progress", response=started),
        ]

    def delta(self, chunk: ReplyChunk) -> list[dict[str, Any]]:
        if chunk.choice:
            return []  # one reply per response
        if isinstance(chunk, ThinkingChunk) and chunk.text:
            self._thinking.append(chunk.text)
            self._reasoning_tokens = chunk.tokens or self._reasoning_tokens
            events, item = self._enter("reasoning")
            item.text.append(chunk.text)
            return [
                *events,
                self._event(
                    "response.reasoning_summary_text.delta",
                    **self._at(item, summary_index=0),
                    delta=chunk.text,
                ),
            ]
        if isinstance(chunk, TextChunk) and chunk.text:
            self._content.append(chunk.text)
            events, item = self._enter("message")
            item.text.append(chunk.text)
            return [
                *events,
                self._event(
                    "response.output_text.delta",
                    **self._at(item, content_index=0),
                    delta=chunk.text,
                    logprobs=[],
                ),
            ]
        if isinstance(chunk, ToolCallChunk):
            return self._call_piece(chunk)
        return []  # a whole call (its pieces went out already), or nothing new

    def closing(self, final: FinalChunk) -> list[dict[str, Any]]:
        incomplete = final.finish_reason == "length"
        events = []
        if self._open is None and not self._output:  # nothing said: an empty message, as whole() has
            events += self._enter_events_only("message")
        events += self._close("incomplete" if incomplete else "completed")
        body = self._finished(final, [dict(item) for item in self._output], self._reasoning_tokens)
        events.append(
            self._event("response.incomplete" if incomplete else "response.completed", response=body)
        )
        self._done(body, Reply("".join(self._content), "".join(self._thinking), tuple(self._calls)))
        return events

    def error(self, error: HeylookError) -> dict[str, Any]:
        """The stream's last event when it fails: response.failed, its response's `error` with
        OpenAI's code (context_length_exceeded: Codex compacts its conversation on it), and what
        the stream had opened so far."""
        return self._event("response.failed", response=self.failed(error))

    def failed(self, error: HeylookError) -> dict[str, Any]:
        """The response as failed with `error`."""
        fields = openai_error_fields(error, "responses")
        body = self._response("failed", None, [dict(item) for item in self._output])
        body["error"] = {"code": fields["code"], "message": fields["message"]}
        return body

    # --- whole ---

    def whole(self, reply: Reply, final: FinalChunk) -> dict[str, Any]:
        whole = reply
        calls = tuple(
            call if call.id else ToolCall(call.name, call.arguments, self.make_id("call"))
            for call in reply.tool_calls
        )
        reply = Reply(reply.content, reply.thinking, calls)
        status = "incomplete" if final.finish_reason == "length" else "completed"
        output = _output_items(reply, self.make_id, status, self.tools)
        body = self._finished(final, output, whole.thinking_tokens)
        self._done(body, reply)
        return body

    # --- the parts ---

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        body = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return body

    def _response(
        self,
        status: str,
        usage: dict[str, Any] | None,
        output: list[dict[str, Any]] | None = None,
        completed_at: int | None = None,
    ) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "completed_at": completed_at,
            "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
            "background": False,
            "model": self.model,
            "output": output or [],
            "usage": usage,
            **_ECHO_DEFAULTS,
            **self.echo,
        }

    def _finished(
        self, final: FinalChunk, output: list[dict[str, Any]], reasoning_tokens: int
    ) -> dict[str, Any]:
        status = "incomplete" if final.finish_reason == "length" else "completed"
        return self._response(status, usage_body(final, reasoning_tokens), output, int(self.clock()))

    def _done(self, body: dict[str, Any], reply: Reply) -> None:
        if self.on_done is not None:
            self.on_done(body, reply)

    def _at(self, item: _OpenItem, **index: int) -> dict[str, Any]:
        return {"item_id": item.body["id"], "output_index": item.index, **index}

    def _enter(self, kind: str) -> tuple[list[dict[str, Any]], _OpenItem]:
        """The open item if it is of `kind`; else the open one closed and one of `kind` opened."""
        if self._open is not None and self._open.body["type"] == kind:
            return [], self._open
        events = self._close("completed")
        events += self._enter_events_only(kind)
        assert self._open is not None
        return events, self._open

    def _enter_events_only(self, kind: str, call: ToolCall | None = None) -> list[dict[str, Any]]:
        """Open an item of `kind` (a function call's, `call`): its added events."""
        index = len(self._output)
        if kind == "reasoning":
            body: dict[str, Any] = {"type": "reasoning", "id": self.make_id("rs"), "summary": []}
        elif kind == "message":
            body = {
                "type": "message",
                "id": self.make_id("msg"),
                "role": "assistant",
                "status": "in_progress",
                "content": [],
            }
        else:
            assert call is not None
            body = _call_item(self.make_id("fc"), call, "in_progress", self.tools)
        self._open = item = _OpenItem(index, body)
        self._output.append(body)
        events = [self._event("response.output_item.added", output_index=index, item=dict(body))]
        if kind == "reasoning":
            part: dict[str, Any] = {"type": "summary_text", "text": ""}
            events.append(
                self._event(
                    "response.reasoning_summary_part.added", **self._at(item, summary_index=0), part=part
                )
            )
        elif kind == "message":
            part = {"type": "output_text", "text": "", "annotations": []}
            events.append(
                self._event("response.content_part.added", **self._at(item, content_index=0), part=part)
            )
        return events

    def _call_piece(self, chunk: ToolCallChunk) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        if chunk.name:  # a new call: its id and name
            events += self._close("completed")
            call = ToolCall(chunk.name, "", chunk.id or self.make_id("call"))
            self._calls.append(call)
            events += self._enter_events_only("function_call", call)
        item = self._open
        if not chunk.arguments or item is None or item.body["type"] not in _CALL_ITEMS:
            return events
        item.text.append(chunk.arguments)
        last = self._calls[-1]
        self._calls[-1] = ToolCall(last.name, last.arguments + chunk.arguments, last.id)
        if item.body["type"] == "function_call":  # a custom tool's input is known once it is whole
            events.append(
                self._event("response.function_call_arguments.delta", **self._at(item), delta=chunk.arguments)
            )
        return events

    def _close(self, status: str) -> list[dict[str, Any]]:
        """The open item's done events, with its body as done."""
        item = self._open
        if item is None:
            return []
        self._open = None
        text = "".join(item.text)
        kind = item.body["type"]
        if kind == "reasoning":
            part: dict[str, Any] = {"type": "summary_text", "text": text}
            at = self._at(item, summary_index=0)
            item.body["summary"] = [part]
            events = [
                self._event("response.reasoning_summary_text.done", **at, text=text),
                self._event("response.reasoning_summary_part.done", **at, part=part),
            ]
        elif kind == "message":
            part = {"type": "output_text", "text": text, "annotations": []}
            at = self._at(item, content_index=0)
            item.body.update(status=status, content=[part])
            events = [
                self._event("response.output_text.done", **at, text=text, logprobs=[]),
                self._event("response.content_part.done", **at, part=part),
            ]
        elif kind == "custom_tool_call":
            given = custom_input(text)
            item.body.update(input=given, status=status)
            events = [self._event("response.custom_tool_call_input.done", **self._at(item), input=given)]
        else:
            arguments = text or "{}"
            item.body.update(arguments=arguments, status=status)
            events = [
                self._event(
                    "response.function_call_arguments.done",
                    **self._at(item),
                    name=item.body["name"],
                    arguments=arguments,
                )
            ]
        events.append(self._event("response.output_item.done", output_index=item.index, item=dict(item.body)))
        return events


_CALL_ITEMS = ("function_call", "custom_tool_call")

# What a response carries when the writer is given no echo (the request's own defaults).
_ECHO_DEFAULTS: dict[str, Any] = {
    "instructions": None,
    "max_output_tokens": None,
    "parallel_tool_calls": True,
    "previous_response_id": None,
    "reasoning": {"effort": None, "summary": None},
    "store": True,
    "temperature": None,
    "text": {"format": {"type": "text"}},
    "tool_choice": "auto",
    "tools": [],
    "top_p": None,
    "truncation": "disabled",
    "user": None,
    "metadata": {},
}


def deleted_body(id: str) -> dict[str, Any]:
    return {"id": id, "object": "response", "deleted": True}


def input_items_body(
    items: list[dict[str, Any]], limit: int, order: str, after: str | None
) -> dict[str, Any]:
    """A page of a stored response's input items: `order` asc (as given) or desc, after the item
    `after` (an id), at most `limit`."""
    ordered = items if order == "asc" else items[::-1]
    ids = [item["id"] for item in ordered]
    if after is not None and after not in ids:
        raise InvalidRequest(f"'after' names no input item of this response: {after!r}", param="after")
    start = ids.index(after) + 1 if after is not None else 0
    page = ordered[start : start + limit]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": start + limit < len(ordered),
    }
