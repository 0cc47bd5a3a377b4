"""OpenAI's Responses API bodies: /v1/responses (its request, the response object, its stream's
events), a stored response's input items, and a deletion's answer."""

# Field types made at run time (one_of, choice) are types to pydantic, but not to mypy.
# mypy: disable-error-code="valid-type"

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Discriminator, Field, RootModel, Tag

from heylook.types import MAX_TOP_LOGPROBS
from heylook.wire.fields import BRANCH, CLOSED, Body, Integer, JsonObject, choice, example, one_of
from heylook.wire.settings import with_settings
from heylook.wire.tools import EFFORTS, FUNCTION_NAME, MAX_TOOLS, TOOL_CHOICES, ObjectSchema

ITEM_TYPES = (
    "message", "function_call", "function_call_output", "custom_tool_call", "custom_tool_call_output",
    "reasoning",
)  # fmt: skip
INPUT_ROLES = ("user", "assistant", "system", "developer")
# At most 16 pairs, keys of 64 characters and values of 512, as OpenAI takes them.
MAX_METADATA = 16


class ContentPart(Body):
    type: str = Field(
        description='"input_text", "input_image" (in a user message), or "output_text" in an assistant '
        "message."
    )
    text: str | None = None
    image_url: str | None = Field(
        default=None, description="An input_image's: a data: URL (base64) or an http(s) URL."
    )
    file_id: str | None = Field(
        default=None,
        description="Refused: heylook's files (/v1/files) are batches' input and output, not images.",
    )
    detail: Literal["auto", "low", "high"] | None = Field(
        default=None, description="An input_image's; taken, and the model's processor decides."
    )


Content = one_of("a string or an array of content parts", string=str, array=list[ContentPart])


class SummaryPart(Body):
    type: Literal["summary_text"]
    text: str


class InputItem(Body):
    """One item of `input`: a message (`type` may be left out), a function call (or a custom
    tool's) an earlier turn made, its output, or earlier reasoning (its summary goes back to the
    model as that turn's)."""

    type: choice(ITEM_TYPES, "one of " + ", ".join(ITEM_TYPES)) | None = Field(
        default=None, description="Left out: a message."
    )
    role: Literal[INPUT_ROLES] | None = Field(default=None, description="A message's.")
    content: Content | None = Field(default=None, description="A message's.")
    call_id: str | None = Field(default=None, description="A call's, and its output's.")
    name: str | None = None
    namespace: str | None = Field(default=None, description="A call's: the namespace tool its tool is in.")
    arguments: str | None = Field(default=None, description="A function call's, as JSON text.")
    input: str | None = Field(default=None, description="A custom tool call's: its text.")
    output: Content | None = Field(default=None, description="A call's output.")
    summary: list[SummaryPart] | None = Field(default=None, description="Reasoning's.")
    id: str | None = None
    status: str | None = None


def _function_name(name: str) -> str:
    if not re.fullmatch(FUNCTION_NAME, name):
        raise ValueError(f"must be 1 to 64 letters, digits, '_', '-' or '.', not {name!r}")
    return name


ToolName = Annotated[str, AfterValidator(_function_name)]
_NAME = Field(
    description="Letters, digits, '_', '-' and '.', up to 64.", json_schema_extra={"pattern": FUNCTION_NAME}
)


class FunctionTool(Body):
    """A function, in the Responses API's flat shape."""

    type: choice(("function",), '"function" or "custom"')
    name: ToolName = _NAME
    description: str | None = None
    parameters: ObjectSchema | None = Field(
        default=None, description='A JSON schema of an object (type "object"); none: no arguments.'
    )
    strict: bool | None = None


class CustomFormat(Body):
    type: Literal["text", "grammar"]
    syntax: Literal["lark", "regex"] | None = Field(default=None, description="A grammar's.")
    definition: str | None = Field(default=None, description="A grammar's: shown to the model, not enforced.")


class CustomTool(Body):
    """A custom tool: its input is free text (OpenAI's freeform tools, Codex's apply_patch). The
    model is offered a function taking that text as `input`; its call comes back as a
    custom_tool_call item."""

    type: Literal["custom"]
    name: ToolName = _NAME
    description: str | None = None
    format: CustomFormat | None = Field(default=None, description="Left out: free text.")


def _inner_branch(value: Any) -> str:
    kind = value.get("type") if isinstance(value, dict) else None
    return BRANCH + ("custom" if kind == "custom" else "function")


InnerTool = Annotated[
    Annotated[FunctionTool, Tag(BRANCH + "function")] | Annotated[CustomTool, Tag(BRANCH + "custom")],
    Discriminator(_inner_branch),
]


class NamespaceTool(Body):
    """Function and custom tools grouped under a name (Codex's multi_agent_v1, its MCP servers').
    The model sees each as namespace__name; its call comes back with `name` and `namespace` apart,
    as the client routes it."""

    type: Literal["namespace"]
    name: ToolName = _NAME
    description: str | None = None
    tools: list[InnerTool] = Field(max_length=MAX_TOOLS)


class HostedTool(Body):
    """A tool OpenAI's servers run (web_search, file_search, code_interpreter, computer use, mcp,
    image_generation, local_shell, shell, apply_patch, tool_search, ...): taken and dropped, never
    refused; the reply's X-Heylook-Dropped-Tools header names the dropped types."""

    type: str = Field(description='Not "function", "custom" or "namespace": dropped.')


def _tool_branch(value: Any) -> str:
    """The tool's kind by its type; a value without a string type is checked as a function."""
    kind = value.get("type") if isinstance(value, dict) else None
    if kind in ("function", "custom", "namespace"):
        return BRANCH + kind
    return BRANCH + ("hosted" if isinstance(kind, str) else "function")


ResponseTool = Annotated[
    Annotated[FunctionTool, Tag(BRANCH + "function")]
    | Annotated[CustomTool, Tag(BRANCH + "custom")]
    | Annotated[NamespaceTool, Tag(BRANCH + "namespace")]
    | Annotated[HostedTool, Tag(BRANCH + "hosted")],
    Discriminator(_tool_branch),
]


class FunctionChoice(Body):
    type: Literal["function", "custom"]
    name: str


ToolChoiceField = one_of(
    'none, auto, required or {"type": "function", "name": ...}',
    string=choice(TOOL_CHOICES, "none, auto, required or a function"),
    object=FunctionChoice,
)


class TextFormat(Body):
    type: Literal["text", "json_object", "json_schema"]
    name: str | None = None
    schema_: JsonObject | None = Field(default=None, alias="schema", description="With json_schema.")
    description: str | None = None
    strict: bool | None = None


class TextConfig(Body):
    format: TextFormat | None = None
    verbosity: Literal["low", "medium", "high"] | None = None


class ReasoningConfig(Body):
    effort: Literal[EFFORTS] | None = None
    summary: Literal["auto", "concise", "detailed"] | None = None
    generate_summary: Literal["auto", "concise", "detailed"] | None = None


Metadata = Annotated[dict[str, Annotated[str, Field(max_length=512)]], Field(max_length=MAX_METADATA)]


class ResponseRequestBase(Body):
    model_config = example({"model": "smollm2", "input": "Why is the sky blue?"})

    model: str = Field(description="An alias from models.yaml (a tag of :latest is the alias itself).")
    input: one_of("a string or an array of input items", string=str, array=list[InputItem])
    instructions: str | None = Field(
        default=None, description="A system message first; not carried over by previous_response_id."
    )
    tools: Annotated[list[ResponseTool], Field(max_length=MAX_TOOLS)] | None = Field(
        default=None,
        description="Functions, custom tools and namespaces of them; hosted tools are dropped.",
    )
    tool_choice: ToolChoiceField | None = None
    parallel_tool_calls: bool | None = None
    text: TextConfig | None = None
    reasoning: ReasoningConfig | None = None
    max_output_tokens: Integer | None = Field(default=None, ge=1)
    stream: bool | None = None
    store: bool | None = Field(default=None, description="Keep the response (default true), to continue it.")
    previous_response_id: str | None = Field(
        default=None, description="A stored response this one continues: its conversation goes first."
    )
    metadata: Metadata | None = None
    user: str | None = None
    truncation: Literal["auto", "disabled"] | None = None
    include: list[str] | None = Field(default=None, description="Taken; nothing further is included.")
    background: bool | None = Field(default=None, description="Not supported: only false.")
    top_logprobs: Integer | None = Field(
        default=None, ge=0, le=MAX_TOP_LOGPROBS, description="Not supported yet: only 0."
    )
    conversation: Any = Field(default=None, description="Not supported: send previous_response_id.")
    prompt: Any = Field(default=None, description="Stored prompts are not supported.")


def response_request() -> type[BaseModel]:
    """/v1/responses' body: the fields above and every setting the OpenAI API carries."""
    return with_settings(ResponseRequestBase, "openai")


# --- the response ---------------------------------------------------------------------------------


class Reply(BaseModel):
    model_config = CLOSED


class OutputText(Reply):
    type: Literal["output_text"]
    text: str
    annotations: list[Any]


class SummaryText(Reply):
    type: Literal["summary_text"]
    text: str


ItemStatus = Literal["in_progress", "completed", "incomplete"]


class MessageItem(Reply):
    type: Literal["message"]
    id: str
    role: Literal["assistant"]
    status: ItemStatus
    content: list[OutputText]


class ReasoningItem(Reply):
    type: Literal["reasoning"]
    id: str
    summary: list[SummaryText] = Field(description="The model's reasoning, as one summary part.")


class FunctionCallItem(Reply):
    type: Literal["function_call"]
    id: str
    call_id: str
    name: str
    arguments: str = Field(description="The arguments as JSON text.")
    status: ItemStatus
    namespace: str | None = Field(default=None, description="A namespace tool's function: the namespace.")


class CustomToolCallItem(Reply):
    type: Literal["custom_tool_call"]
    id: str
    call_id: str
    name: str
    input: str = Field(description="The tool's input text.")
    status: ItemStatus
    namespace: str | None = Field(default=None, description="A namespace tool's custom tool: the namespace.")


OutputItem = Annotated[
    MessageItem | ReasoningItem | FunctionCallItem | CustomToolCallItem, Field(discriminator="type")
]


class InputTokensDetails(Reply):
    cached_tokens: int
    cache_write_tokens: int


class OutputTokensDetails(Reply):
    reasoning_tokens: int


class ResponseUsage(Reply):
    input_tokens: int
    input_tokens_details: InputTokensDetails
    output_tokens: int
    output_tokens_details: OutputTokensDetails
    total_tokens: int


class IncompleteDetails(Reply):
    reason: Literal["max_output_tokens"]


class ResponseError(Reply):
    """Why a response failed: OpenAI's codes where it has one (context_length_exceeded: the input
    is over the model's context, which Codex compacts its conversation on; rate_limit_exceeded;
    server_is_overloaded), else heylook's."""

    code: str | None
    message: str


class FunctionToolOut(Reply):
    type: Literal["function"]
    name: str
    description: str | None
    parameters: JsonObject | None
    strict: bool | None


class CustomToolOut(Reply):
    type: Literal["custom"]
    name: str
    description: str | None
    format: JsonObject


class NamespaceToolOut(Reply):
    type: Literal["namespace"]
    name: str
    description: str | None
    tools: list[Annotated[FunctionToolOut | CustomToolOut, Field(discriminator="type")]]


class HostedToolOut(BaseModel):
    """A hosted tool, as the request gave it (it was dropped)."""

    model_config = ConfigDict(extra="allow")
    type: str


ToolOut = Annotated[
    FunctionToolOut | CustomToolOut | NamespaceToolOut | HostedToolOut, Field(union_mode="left_to_right")
]


class FunctionChoiceOut(Reply):
    type: Literal["function", "custom"]
    name: str


class TextFormatOut(Reply):
    type: Literal["text", "json_object", "json_schema"]
    name: str | None = None
    schema_: JsonObject | None = Field(default=None, alias="schema")
    description: str | None = None
    strict: bool | None = None


class TextConfigOut(Reply):
    format: TextFormatOut
    verbosity: Literal["low", "medium", "high"] | None = None


class ReasoningOut(Reply):
    effort: Literal[EFFORTS] | None
    summary: Literal["auto", "concise", "detailed"] | None


class Response(Reply):
    id: str
    object: Literal["response"]
    created_at: int
    status: Literal["completed", "incomplete", "in_progress", "failed"]
    completed_at: int | None
    error: ResponseError | None = Field(description="Why it failed (status failed); else null.")
    incomplete_details: IncompleteDetails | None
    background: bool
    instructions: str | None
    max_output_tokens: int | None
    model: str
    output: list[OutputItem]
    parallel_tool_calls: bool
    previous_response_id: str | None
    reasoning: ReasoningOut
    store: bool
    temperature: float | None
    text: TextConfigOut
    tool_choice: Literal[TOOL_CHOICES] | FunctionChoiceOut
    tools: list[ToolOut]
    top_p: float | None
    truncation: Literal["auto", "disabled"]
    usage: ResponseUsage | None = Field(description="Null until the response is done (stream events).")
    user: str | None
    metadata: dict[str, str]


class DeletedResponse(Reply):
    id: str
    object: Literal["response"]
    deleted: Literal[True]


# --- input items ----------------------------------------------------------------------------------


class InputText(Reply):
    type: Literal["input_text"]
    text: str


class InputImage(Reply):
    type: Literal["input_image"]
    image_url: str = Field(description="As sent: an http(s) URL, or the image's bytes as a data: URL.")
    detail: Literal["auto", "low", "high"]


class InputMessageItem(Reply):
    type: Literal["message"]
    id: str
    role: Literal["user", "system"]
    status: Literal["completed"]
    content: list[Annotated[InputImage | InputText, Field(discriminator="type")]]


class FunctionCallOutputItem(Reply):
    type: Literal["function_call_output", "custom_tool_call_output"]
    id: str
    call_id: str
    output: str
    status: Literal["completed"]


ListedItem = Annotated[
    InputMessageItem
    | MessageItem
    | ReasoningItem
    | FunctionCallItem
    | CustomToolCallItem
    | FunctionCallOutputItem,
    Field(union_mode="left_to_right"),
]


class InputItemList(Reply):
    object: Literal["list"]
    data: list[ListedItem]
    first_id: str | None
    last_id: str | None
    has_more: bool


# --- stream events --------------------------------------------------------------------------------


class _Event(Reply):
    sequence_number: int


class ResponseEvent(_Event):
    """response.created and response.in_progress (the response as it starts), response.completed
    and response.incomplete (the whole response), response.failed (the stream's last event when
    it fails: the response's `error` says why)."""

    type: Literal[
        "response.created",
        "response.in_progress",
        "response.completed",
        "response.incomplete",
        "response.failed",
    ]
    response: Response


class OutputItemEvent(_Event):
    type: Literal["response.output_item.added", "response.output_item.done"]
    output_index: int
    item: OutputItem


class ContentPartEvent(_Event):
    type: Literal["response.content_part.added", "response.content_part.done"]
    item_id: str
    output_index: int
    content_index: int
    part: OutputText


class TextDeltaEvent(_Event):
    type: Literal["response.output_text.delta"]
    item_id: str
    output_index: int
    content_index: int
    delta: str
    logprobs: list[Any]


class TextDoneEvent(_Event):
    type: Literal["response.output_text.done"]
    item_id: str
    output_index: int
    content_index: int
    text: str
    logprobs: list[Any]


class SummaryPartEvent(_Event):
    type: Literal["response.reasoning_summary_part.added", "response.reasoning_summary_part.done"]
    item_id: str
    output_index: int
    summary_index: int
    part: SummaryText


class SummaryDeltaEvent(_Event):
    type: Literal["response.reasoning_summary_text.delta"]
    item_id: str
    output_index: int
    summary_index: int
    delta: str


class SummaryDoneEvent(_Event):
    type: Literal["response.reasoning_summary_text.done"]
    item_id: str
    output_index: int
    summary_index: int
    text: str


class ArgumentsDeltaEvent(_Event):
    type: Literal["response.function_call_arguments.delta"]
    item_id: str
    output_index: int
    delta: str


class ArgumentsDoneEvent(_Event):
    type: Literal["response.function_call_arguments.done"]
    item_id: str
    output_index: int
    name: str
    arguments: str


class CustomInputDoneEvent(_Event):
    type: Literal["response.custom_tool_call_input.done"]
    item_id: str
    output_index: int
    input: str


class ResponseStreamEvent(RootModel[Any]):
    """One server-sent event of a streamed response, named by its `type` (no [DONE] at the end)."""

    root: Annotated[
        ResponseEvent
        | OutputItemEvent
        | ContentPartEvent
        | TextDeltaEvent
        | TextDoneEvent
        | SummaryPartEvent
        | SummaryDeltaEvent
        | SummaryDoneEvent
        | ArgumentsDeltaEvent
        | ArgumentsDoneEvent
        | CustomInputDoneEvent,
        Field(union_mode="left_to_right"),
    ]
