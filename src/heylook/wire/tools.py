"""Tool definitions and calls as both APIs send them (Ollama took OpenAI's shape for tools)."""

# Field types made at run time (one_of, choice) are types to pydantic, but not to mypy.
# mypy: disable-error-code="valid-type"

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Discriminator, Field, Tag

from heylook.wire.fields import BRANCH, Body, JsonObject, choice, one_of

MAX_TOOLS = 128  # as OpenAI allows
# OpenAI's rule for function names (letters, digits, _ and -, up to 64), and dots, which MCP
# clients use for namespaced tools.
FUNCTION_NAME = r"^[A-Za-z0-9_.-]{1,64}$"
TOOL_CHOICES = ("none", "auto", "required")
# OpenAI's reasoning efforts; Ollama's think levels.
EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")
THINK_LEVELS = ("low", "medium", "high", "max")
_THINK_WORDS = 'true, false, "low", "medium" or "high"'
Think = one_of(_THINK_WORDS, boolean=bool, string=choice(THINK_LEVELS, _THINK_WORDS))


def _function_name(name: str) -> str:
    if not re.fullmatch(FUNCTION_NAME, name):
        raise ValueError(f"must be 1 to 64 letters, digits, '_', '-' or '.', not {name!r}")
    return name


def _object_schema(schema: dict[str, Any]) -> dict[str, Any]:
    kind = schema.get("type", "object")
    if kind != "object" and not (isinstance(kind, list) and "object" in kind):
        raise ValueError(f'must describe an object (type "object"), not {json.dumps(kind)}')
    return schema


ObjectSchema = Annotated[one_of("a JSON schema object", object=JsonObject), AfterValidator(_object_schema)]


class FunctionDefinition(Body):
    name: Annotated[str, AfterValidator(_function_name)] = Field(
        description="Letters, digits, '_', '-' and '.', up to 64.",
        json_schema_extra={"pattern": FUNCTION_NAME},
    )
    description: str | None = None
    parameters: ObjectSchema | None = Field(
        default=None, description='A JSON schema of an object (type "object"); none: no arguments.'
    )


class FunctionToolDefinition(Body):
    type: Literal["function"] = "function"
    function: FunctionDefinition


class OtherTool(Body):
    """A tool of another kind: OpenAI's `custom` (freeform text input), or a hosted tool a client
    sends (web search, file search, ...). Taken and dropped, never refused: a model here calls
    functions only, and the reply's X-Heylook-Dropped-Tools header names the dropped types."""

    type: str = Field(description='Not "function": dropped.')


def _tool_branch(value: Any) -> str:
    """A function tool (type "function" or left out, as Ollama clients do) is checked as one;
    any other type is another kind of tool. A value that is no object gets the function's errors."""
    kind = value.get("type", "function") if isinstance(value, dict) else "function"
    return BRANCH + ("other" if isinstance(kind, str) and kind != "function" else "function")


ToolDefinition = Annotated[
    Annotated[FunctionToolDefinition, Tag(BRANCH + "function")] | Annotated[OtherTool, Tag(BRANCH + "other")],
    Discriminator(_tool_branch),
]


class ChosenFunction(Body):
    name: str


class NamedToolChoice(Body):
    type: Literal["function"]
    function: ChosenFunction


ToolChoiceField = one_of(
    'none, auto, required or {"type": "function", "function": {"name": ...}}',
    string=choice(TOOL_CHOICES, "none, auto, required or a function"),
    object=NamedToolChoice,
)

Tools = Annotated[list[ToolDefinition], Field(max_length=MAX_TOOLS)]


class CalledFunction(Body):
    name: str
    # OpenAI sends the arguments as JSON text, Ollama as an object.
    arguments: Any = Field(default=None, json_schema_extra={"type": ["string", "object", "null"]})


class ToolCallIn(Body):
    """A call an earlier assistant turn made, as sent back in the conversation."""

    id: str | None = None
    type: Literal["function"] | None = None
    function: CalledFunction


class Reasoning(Body):
    effort: Literal[EFFORTS] | None = None
