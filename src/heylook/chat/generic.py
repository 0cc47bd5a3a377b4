"""Tools for models whose chat template knows nothing of them: heylook writes the instructions into
the system prompt itself, and turns earlier calls and their results into plain turns, so any chat
template renders them. Calls come back as `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`
(syntax.GENERIC), which the grammar enforces once a call starts.

The same instructions, with its own call syntax, serve a family whose template writes calls but
never shows the tools (DeepSeek's)."""

from __future__ import annotations

import json

from heylook.chat.syntax import GENERIC, ToolSyntax
from heylook.types import Message, Tool, ToolCall, ToolChoice

_INSTRUCTIONS = """You can call these functions to help you answer:
<tools>
{tools}
</tools>
To call one, write {example} (once for each call) and nothing after the calls. {results}{choice}"""
_ARGUMENTS = "<its arguments as a JSON object>"
_CHOICES = {
    "auto": "When no function helps, answer directly.",
    "required": "Call at least one function.",
}
# A tool's description in the list: its first paragraph, this long at most.
_DESCRIPTION_CHARS = 300


def signature(tool: Tool) -> str:
    """A tool as one line: name(argument: type, optional?: type) - what it does. Far fewer tokens
    than its JSON schema (Open WebUI's 36 built-in tools: 1,763 tokens, not 6,538), which small
    models, the ones without tool templates, read better; the grammar holds calls to the full
    schema anyway."""
    schema = json.loads(tool.parameters)
    required = set(schema.get("required") or ())
    properties = schema.get("properties") or {}
    arguments = ", ".join(
        f"{name}{'' if name in required else '?'}: {_type_of(spec)}" for name, spec in properties.items()
    )
    description = tool.description.strip().split("\n\n")[0].replace("\n", " ")
    if len(description) > _DESCRIPTION_CHARS:
        description = description[: _DESCRIPTION_CHARS - 3].rstrip() + "..."
    return f"{tool.name}({arguments})" + (f" - {description}" if description else "")


def _type_of(spec: object) -> str:
    if not isinstance(spec, dict):
        return "any"
    if "enum" in spec and isinstance(spec["enum"], list):
        return " | ".join(json.dumps(value) for value in spec["enum"][:8])
    if "const" in spec:
        return json.dumps(spec["const"])
    kind = spec.get("type", "any")
    if kind == "array":
        return f"array of {_type_of(spec.get('items'))}"
    return " | ".join(kind) if isinstance(kind, list) else str(kind)


def call_example(syntax: ToolSyntax) -> str:
    """How a call looks in this syntax, with placeholders for the name and the arguments."""
    if syntax.json_name:
        call = f'{{"name": "<function name>", "{syntax.args_key}": {_ARGUMENTS}}}'
    else:
        call = f"<function name>{syntax.name_sep}{_ARGUMENTS}"
    return f"{syntax.section_begin}{syntax.call_begin}{call}{syntax.call_end}{syntax.section_end}"


def instructions(tools: tuple[Tool, ...], choice: ToolChoice, syntax: ToolSyntax = GENERIC) -> str:
    listed = "\n".join(signature(t) for t in tools)
    said = f"Call the function {choice.name}." if choice.mode == "function" else _CHOICES[choice.mode]
    results = "Their results come back in <tool_response> tags. " if syntax.generic else ""
    return _INSTRUCTIONS.format(tools=listed, example=call_example(syntax), results=results, choice=said)


def with_instructions(
    messages: tuple[Message, ...], tools: tuple[Tool, ...], choice: ToolChoice, syntax: ToolSyntax
) -> tuple[Message, ...]:
    """The conversation with the tool instructions in its system turn (added if it has none)."""
    text = instructions(tools, choice, syntax)
    if messages and messages[0].role == "system":
        return (Message("system", f"{messages[0].content}\n\n{text}"), *messages[1:])
    return (Message("system", text), *messages)


def call_text(call: ToolCall) -> str:
    return f'<tool_call>{{"name": {json.dumps(call.name)}, "arguments": {call.arguments}}}</tool_call>'


def plain_turns(messages: tuple[Message, ...], tools: tuple[Tool, ...], choice: ToolChoice) -> list[Message]:
    """The conversation as system, user and assistant turns of text only: the tool instructions in
    the system turn, calls in the assistant's text, and results as a user turn. A system message
    after the first turn stays where it is (chat.render folds it into a user turn where the
    template cannot take it there)."""
    turns: list[Message] = []
    system = instructions(tools, choice) if tools else ""
    for message in messages:
        if message.role == "system" and not turns:
            system = f"{message.content}\n\n{system}" if system else message.content
            continue
        if message.role == "tool":
            name = f' name="{message.tool_name}"' if message.tool_name else ""
            result = f"<tool_response{name}>{message.content}</tool_response>"
            if turns and turns[-1].role == "user" and turns[-1].content.endswith("</tool_response>"):
                turns[-1] = Message("user", f"{turns[-1].content}\n{result}")
            else:
                turns.append(Message("user", result))
            continue
        content = message.content + "".join(call_text(c) for c in message.tool_calls)
        turns.append(Message(message.role, content, images=message.images))
    return ([Message("system", system)] if system else []) + turns
