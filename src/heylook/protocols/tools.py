"""Tools, tool_choice and tool turns as both APIs send them (Ollama took OpenAI's shape for tool
definitions), read into internal types; a wrong value raises InvalidRequest naming the field."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from heylook.errors import InvalidRequest
from heylook.protocols.fields import json_type, read_object, read_str, schema_text
from heylook.types import THINK_LEVELS, Message, Think, Tool, ToolCall, ToolChoice

# OpenAI's rule for function names (letters, digits, _ and -, up to 64), and dots, which MCP
# clients use for namespaced tools.
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
MAX_TOOLS = 128  # as OpenAI allows
# All tools' schemas and descriptions together (Open WebUI's 36 built-in tools: 25 KiB).
MAX_TOOLS_BYTES = 512 * 1024
_EMPTY_OBJECT = json.dumps({"type": "object", "properties": {}})
_CHOICES = ("none", "auto", "required")
# OpenAI's reasoning efforts as Ollama's think levels (Ollama maps them the same way).
_EFFORTS: dict[str, Think] = {
    "none": False, "minimal": "low", "low": "low", "medium": "medium", "high": "high", "xhigh": "high",
}  # fmt: skip


def tool_body(tool: Tool) -> dict[str, Any]:
    """A tool as both APIs (and chat templates) take it."""
    function = {"name": tool.name, "description": tool.description, "parameters": json.loads(tool.parameters)}
    return {"type": "function", "function": function}


def read_tools(body: Mapping[str, Any]) -> tuple[Tool, ...]:
    raw = body.get("tools")
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise InvalidRequest(f"'tools' must be an array, not {json_type(raw)}", param="tools")
    if len(raw) > MAX_TOOLS:
        raise InvalidRequest(f"'tools' may hold at most {MAX_TOOLS} tools", param="tools")
    tools = [_read_tool(item, f"tools[{index}]") for index, item in enumerate(raw)]
    if sum(len(tool.parameters) + len(tool.description) for tool in tools) > MAX_TOOLS_BYTES:
        raise InvalidRequest(f"'tools' are larger than {MAX_TOOLS_BYTES // 1024} KiB in all", param="tools")
    seen: set[str] = set()
    for index, tool in enumerate(tools):
        if tool.name in seen:
            param = f"tools[{index}].function.name"
            raise InvalidRequest(f"two tools are named {tool.name!r}", param=param)
        seen.add(tool.name)
    return tuple(tools)


def _read_tool(item: Any, param: str) -> Tool:
    if not isinstance(item, dict):
        raise InvalidRequest(f"'{param}' must be an object", param=param)
    kind = item.get("type", "function")
    if kind != "function":
        raise InvalidRequest(
            f"'{param}.type' must be \"function\", not {json.dumps(kind)}", param=f"{param}.type"
        )
    function = read_object(item, "function", param=f"{param}.function")
    if function is None:
        raise InvalidRequest(f"'{param}.function' is required", param=f"{param}.function")
    name = read_str(function, "name", param=f"{param}.function.name", required=True) or ""
    if not _NAME.fullmatch(name):
        raise InvalidRequest(
            f"'{param}.function.name' must be 1 to 64 letters, digits, '_', '-' or '.', not {name!r}",
            param=f"{param}.function.name",
        )
    description = read_str(function, "description", param=f"{param}.function.description") or ""
    parameters = function.get("parameters")
    where = f"{param}.function.parameters"
    if parameters is None:
        return Tool(name, description, _EMPTY_OBJECT)
    if not isinstance(parameters, dict):
        raise InvalidRequest(
            f"'{where}' must be a JSON schema object, not {json_type(parameters)}", param=where
        )
    kind = parameters.get("type", "object")
    if kind != "object" and not (isinstance(kind, list) and "object" in kind):
        raise InvalidRequest(
            f"'{where}' must describe an object (type \"object\"), not {json.dumps(kind)}", param=where
        )
    return Tool(name, description, schema_text(parameters, where))


def read_tool_choice(body: Mapping[str, Any], tools: tuple[Tool, ...]) -> ToolChoice:
    value = body.get("tool_choice")
    if value is None:
        return ToolChoice()
    if isinstance(value, str):
        if value not in _CHOICES:
            raise InvalidRequest(
                f"'tool_choice' must be none, auto, required or a function, not {value!r}",
                param="tool_choice",
            )
        choice = ToolChoice(mode=value)  # type: ignore[arg-type]
    elif isinstance(value, dict):
        function = value.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        if value.get("type") != "function" or not isinstance(name, str):
            raise InvalidRequest(
                '\'tool_choice\' must be {"type": "function", "function": {"name": ...}}', param="tool_choice"
            )
        if name not in {t.name for t in tools}:
            known = ", ".join(t.name for t in tools) or "none"
            raise InvalidRequest(
                f"'tool_choice' names the function {name!r}, which is not among the tools ({known})",
                param="tool_choice",
            )
        choice = ToolChoice(mode="function", name=name)
    else:
        raise InvalidRequest(
            f"'tool_choice' must be a string or an object, not {json_type(value)}", param="tool_choice"
        )
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


def read_tool_calls(raw: Any, param: str) -> tuple[ToolCall, ...]:
    """An assistant turn's calls: [{"id", "type", "function": {"name", "arguments"}}]."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise InvalidRequest(f"'{param}' must be an array", param=param)
    calls = []
    for index, item in enumerate(raw):
        where = f"{param}[{index}]"
        function = item.get("function") if isinstance(item, dict) else None
        if not isinstance(function, dict):
            raise InvalidRequest(f"'{where}.function' must be an object", param=f"{where}.function")
        name = read_str(function, "name", param=f"{where}.function.name", required=True) or ""
        arguments = read_call_arguments(function.get("arguments"), f"{where}.function.arguments")
        call_id = read_str(item, "id", param=f"{where}.id") or ""
        calls.append(ToolCall(name, arguments, call_id))
    return tuple(calls)


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


def read_think(value: Any, param: str = "think") -> Think:
    """Ollama's think: true, false, or how hard ("low", "medium", "high"; "max" is "high")."""
    if value is None or isinstance(value, bool):
        return value
    if value == "max":
        return "high"
    if value in THINK_LEVELS:
        return value
    raise InvalidRequest(
        f'\'{param}\' must be true, false, "low", "medium" or "high", not {json.dumps(value)}', param=param
    )


def read_reasoning_effort(body: Mapping[str, Any]) -> Think:
    """OpenAI's reasoning_effort (or reasoning.effort) as a think level; absent leaves it to the model."""
    effort = body.get("reasoning_effort")
    param = "reasoning_effort"
    reasoning = body.get("reasoning")
    if effort is None and isinstance(reasoning, dict):
        effort, param = reasoning.get("effort"), "reasoning.effort"
    if effort is None:
        return None
    if effort not in _EFFORTS:
        raise InvalidRequest(
            f"'{param}' must be one of {', '.join(_EFFORTS)}, not {json.dumps(effort)}", param=param
        )
    return _EFFORTS[effort]
