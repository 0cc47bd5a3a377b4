"""Tools, tool_choice and tool turns as both APIs send them (Ollama took OpenAI's shape for tool
definitions), read into internal types; a wrong value raises InvalidRequest naming the field."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any, Literal

from heylook.errors import InvalidRequest
from heylook.protocols.fields import schema_text
from heylook.types import Message, Think, Tool, ToolCall, ToolChoice
from heylook.wire.fields import Body
from heylook.wire.tools import (
    EFFORTS,
    FunctionDefinition,
    FunctionToolDefinition,
    NamedToolChoice,
    Reasoning,
    ToolCallIn,
    ToolChoiceField,
    ToolDefinition,
    Tools,
)
from heylook.wire.tools import Think as ThinkField
from heylook.wire.validate import validate

log = logging.getLogger(__name__)

# All tools' schemas and descriptions together (Open WebUI's 36 built-in tools: 25 KiB).
MAX_TOOLS_BYTES = 512 * 1024
_EMPTY_OBJECT = json.dumps({"type": "object", "properties": {}})
# OpenAI's reasoning efforts as Ollama's think levels (Ollama maps them the same way).
_EFFORTS: dict[str, Think] = {
    "none": False, "minimal": "low", "low": "low", "medium": "medium", "high": "high", "xhigh": "high",
}  # fmt: skip


def tool_body(tool: Tool) -> dict[str, Any]:
    """A tool as both APIs (and chat templates) take it."""
    function = {"name": tool.name, "description": tool.description, "parameters": json.loads(tool.parameters)}
    return {"type": "function", "function": function}


class _ToolsPart(Body):
    tools: Tools | None = None
    tool_choice: ToolChoiceField | None = None


def read_tools(body: Mapping[str, Any]) -> tuple[Tool, ...]:
    """A body's `tools`, validated and read (the request routes validate the whole body at once
    and call tools_from)."""
    return tools_from(validate(_ToolsPart, dict(body)).tools)


def tools_from(raw: list[ToolDefinition] | None) -> tuple[Tool, ...]:
    """Validated tool definitions as internal tools: the functions (other kinds are dropped, see
    dropped_tools), names unique, all of them within a size."""
    named = [
        (f"tools[{index}].function.name", _tool(item.function, f"tools[{index}]"))
        for index, item in enumerate(raw or ())
        if isinstance(item, FunctionToolDefinition)
    ]
    tools = tuple(tool for _, tool in named)
    check_tools(named)
    return tools


def check_tools(named: list[tuple[str, Tool]]) -> None:
    """Tools (each with the param naming it) are within a size in all, and no two share a name."""
    if sum(len(tool.parameters) + len(tool.description) for _, tool in named) > MAX_TOOLS_BYTES:
        raise InvalidRequest(f"'tools' are larger than {MAX_TOOLS_BYTES // 1024} KiB in all", param="tools")
    seen: set[str] = set()
    for param, tool in named:
        if tool.name in seen:
            raise InvalidRequest(f"two tools are named {tool.name!r}", param=param)
        seen.add(tool.name)


def dropped_tools(raw: list[ToolDefinition] | None) -> tuple[str, ...]:
    """The types of the tools that are not functions (OpenAI's `custom`, hosted tools), each
    dropped with a log line: a model here calls functions only. The request goes on without them,
    and X-Heylook-Dropped-Tools names them (GenerationRequest.dropped_tools)."""
    dropped = []
    for index, item in enumerate(raw or ()):
        if not isinstance(item, FunctionToolDefinition):
            log.info("dropped tools[%d] (%s): a model here cannot call it", index, item.type)
            dropped.append(item.type)
    return tuple(dropped)


def _tool(function: FunctionDefinition, param: str) -> Tool:
    description = function.description or ""
    if function.parameters is None:
        return Tool(function.name, description, _EMPTY_OBJECT)
    return Tool(function.name, description, schema_text(function.parameters, f"{param}.function.parameters"))


def read_tool_choice(body: Mapping[str, Any], tools: tuple[Tool, ...]) -> ToolChoice:
    return tool_choice_from(validate(_ToolsPart, {"tool_choice": body.get("tool_choice")}).tool_choice, tools)


def tool_choice_from(value: str | NamedToolChoice | None, tools: tuple[Tool, ...]) -> ToolChoice:
    """A validated tool_choice, checked against the tools it may name."""
    if value is None:
        return ToolChoice()
    if isinstance(value, str):
        choice = ToolChoice(mode=value)  # type: ignore[arg-type]
    else:
        name = value.function.name
        if name not in {t.name for t in tools}:
            known = ", ".join(t.name for t in tools) or "none"
            raise InvalidRequest(
                f"'tool_choice' names the function {name!r}, which is not among the tools ({known})",
                param="tool_choice",
            )
        choice = ToolChoice(mode="function", name=name)
    if choice.mode in ("required", "function") and not tools:
        raise InvalidRequest(f"'tool_choice' {choice.mode} needs 'tools'", param="tool_choice")
    return choice


def read_call_arguments(value: Any, param: str) -> str:
    """A call's arguments: a JSON object, as OpenAI's JSON text or as Ollama's object."""
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False)
    if value is None or (isinstance(value, str) and not value.strip()):
        return "{}"
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            return value
    raise InvalidRequest(f"'{param}' must be a JSON object (or one as a JSON string)", param=param)


def tool_calls_from(raw: list[ToolCallIn] | None, param: str) -> tuple[ToolCall, ...]:
    """An assistant turn's validated calls: [{"id", "type", "function": {"name", "arguments"}}]."""
    return tuple(
        ToolCall(
            item.function.name,
            read_call_arguments(item.function.arguments, f"{param}[{index}].function.arguments"),
            item.id or "",
        )
        for index, item in enumerate(raw or ())
    )


def check_tool_turns(messages: tuple[Message, ...]) -> None:
    """Every tool result answers a call an earlier assistant turn made (by id, else by name)."""
    ids: set[str] = set()
    names: set[str] = set()
    for index, message in enumerate(messages):
        for call in message.tool_calls:
            ids.add(call.id)
            names.add(call.name)
        if message.role != "tool":
            continue
        never = "which no earlier assistant turn made"
        if message.tool_call_id and message.tool_call_id not in ids:
            param = f"messages[{index}].tool_call_id"
            raise InvalidRequest(f"'{param}' answers the call {message.tool_call_id!r}, {never}", param=param)
        if not message.tool_call_id and message.tool_name and message.tool_name not in names:
            param = f"messages[{index}].tool_name"
            raise InvalidRequest(f"'{param}' answers a call to {message.tool_name!r}, {never}", param=param)
        if not ids:
            param = f"messages[{index}]"
            raise InvalidRequest(
                f"'{param}' is a tool result, but no earlier assistant turn called a tool", param=param
            )


class _ThinkPart(Body):
    think: ThinkField | None = None


def read_think(value: Any) -> Think:
    return think_from(validate(_ThinkPart, {"think": value}).think)


def think_from(value: bool | str | None) -> Think:
    """Ollama's validated think: true, false, or how hard ("max" is "high")."""
    return "high" if value == "max" else value  # type: ignore[return-value]


class _EffortPart(Body):
    reasoning_effort: Literal[EFFORTS] | None = None  # type: ignore[valid-type]
    reasoning: Reasoning | None = None


def read_reasoning_effort(body: Mapping[str, Any]) -> Think:
    part = validate(_EffortPart, dict(body))
    return effort_from(part.reasoning_effort, part.reasoning)


def effort_from(effort: str | None, reasoning: Reasoning | None) -> Think:
    """OpenAI's validated reasoning_effort (or reasoning.effort) as a think level; absent leaves it
    to the model."""
    chosen = effort if effort is not None else reasoning.effort if reasoning is not None else None
    return None if chosen is None else _EFFORTS[chosen]
