"""A conversation, its tools and its reasoning switch, through the model's own chat template."""

from __future__ import annotations

import hashlib
import json
import string
from dataclasses import dataclass, replace
from typing import Any

from heylook.chat import generic
from heylook.chat.syntax import TemplateTraits
from heylook.errors import InvalidRequest
from heylook.protocols.tools import tool_body
from heylook.types import THINK_LEVELS, Message, Think, Tool, ToolCall, ToolChoice

_ID_ALPHABET = string.ascii_letters + string.digits
_AUTO = ToolChoice()


@dataclass(frozen=True)
class Rendered:
    text: str
    # The prompt ends inside the reasoning markers: the reply starts with reasoning.
    in_thinking: bool = False


def thinking_on(traits: TemplateTraits, think: Think) -> bool:
    """Whether this reply reasons: as asked, else (as Ollama does) whenever the model can."""
    return traits.thinks if think is None else think is not False


def render_chat(
    tokenizer: Any,
    messages: tuple[Message, ...],
    traits: TemplateTraits,
    *,
    tools: tuple[Tool, ...] = (),
    choice: ToolChoice = _AUTO,
    think: Think = None,
) -> Rendered:
    """The prompt text, rendered by the template with the tools it should show (none for
    tool_choice none) in the family's own form, or heylook's generic one."""
    shown = tools if choice.mode != "none" else ()
    options: dict[str, Any] = {}
    if traits.thinks:
        on = thinking_on(traits, think)
        options.update(dict.fromkeys(traits.think_switches, on))
        if traits.takes_effort and on:
            options["reasoning_effort"] = think if think in THINK_LEVELS else "medium"
    with_tools = {**options, "tools": [tool_body(t) for t in shown]}
    messages = placed_system_messages(
        tokenizer, messages, with_tools if shown and not traits.tools.generic else options
    )
    if traits.tools.generic:
        turns = [_plain(m) for m in generic.plain_turns(messages, shown, choice)]
    else:
        paired = _with_call_ids(messages)
        turns = [_turn(m, traits) for m in paired]
        if shown:
            if _apply(tokenizer, turns, with_tools) == _try_apply(tokenizer, turns, options):
                # The template writes calls but never shows the tools (DeepSeek's): heylook does.
                turns = [
                    _turn(m, traits) for m in generic.with_instructions(paired, shown, choice, traits.tools)
                ]
            options = with_tools
    text = _apply(tokenizer, turns, options)
    think_syntax = traits.think
    in_thinking = think_syntax is not None and text.rfind(think_syntax.open) > text.rfind(think_syntax.close)
    return Rendered(text, in_thinking)


# Texts a template is asked to render to learn where it puts a system message after the first
# turn (distinct words, which no template changes).
_PROBE_TEXTS = {
    "lead": "Probe alpha", "user": "Probe bravo", "assistant": "Probe charlie",
    "system": "Probe delta", "next": "Probe echo",
}  # fmt: skip


def placed_system_messages(
    tokenizer: Any, messages: tuple[Message, ...], options: dict[str, Any]
) -> tuple[Message, ...]:
    """The conversation with its system messages where the template can take them: those it opens
    with as one system message; those after its first turn (Anthropic's mid-conversation system
    messages, an OpenAI client's reminders) in place where the template renders a system turn
    there, else folded into the neighbouring user turn."""
    lead = 0
    while lead < len(messages) and messages[lead].role == "system":
        lead += 1
    opening = (Message("system", "\n\n".join(m.content for m in messages[:lead])),) if lead > 1 else ()
    messages = (*opening, *messages[lead:]) if opening else messages
    later = any(m.role == "system" for m in messages[1:])
    if not later or _takes_later_system_turns(tokenizer, messages[0].role == "system", options):
        return messages
    return _folded_into_user_turns(messages)


def _takes_later_system_turns(tokenizer: Any, opens_with_system: bool, options: dict[str, Any]) -> bool:
    """Whether the template renders a system message after the first turn where it stands: some
    raise (Mistral's and Gemma's allow system only first, or strict alternation), some move it to
    the top (DeepSeek's, gpt-oss's, where DeepSeek-R1's also drops all but the last)."""
    words = _PROBE_TEXTS
    head = [("system", words["lead"])] if opens_with_system else []
    probes = (
        [*head, ("user", words["user"]), ("system", words["system"])],  # last, as Claude Code sends it
        [
            *head, ("user", words["user"]), ("assistant", words["assistant"]), ("system", words["system"]),
            ("user", words["next"]),
        ],  # between turns
    )  # fmt: skip
    for probe in probes:
        try:
            text = _apply(tokenizer, [{"role": role, "content": said} for role, said in probe], options)
        except InvalidRequest:
            return False
        where = [text.find(said) for _, said in probe]
        if -1 in where or where != sorted(where):
            return False
    return True


def _folded_into_user_turns(messages: tuple[Message, ...]) -> tuple[Message, ...]:
    """Each system message after the first turn as text of the neighbouring user turn, for a
    template that cannot take it where it stands: appended to the user turn it follows (Claude
    Code sends one right after the user's turn) or to the tool results it follows (in Anthropic's
    API those are the user's turn too; Mistral's and Gemma's templates take no user turn between
    results and the reply), else put before the user turn that comes next, else (after an
    assistant's turn, last) a user turn of its own. The instruction keeps its place in the
    conversation, which moving it to the top would not."""
    folded: list[Message] = [messages[0]]
    waiting: list[str] = []  # system texts for the user turn that comes next
    for index in range(1, len(messages)):
        message = messages[index]
        if message.role != "system":
            if waiting and message.role == "user":
                message = replace(message, content=_joined(*waiting, message.content))
                waiting = []
            folded.append(message)
            continue
        if not message.content:
            continue
        after = folded[-1]
        coming = next((m.role for m in messages[index + 1 :] if m.role != "system"), None)
        if after.role in ("user", "tool"):
            folded[-1] = replace(after, content=_joined(after.content, message.content))
        elif coming == "user":
            waiting.append(message.content)
        else:
            folded.append(Message("user", message.content))
    return tuple(folded)


def _joined(*texts: str) -> str:
    return "\n\n".join(text for text in texts if text)


def _apply(tokenizer: Any, turns: list[dict[str, Any]], options: dict[str, Any]) -> str:
    try:
        return tokenizer.apply_chat_template(turns, add_generation_prompt=True, tokenize=False, **options)
    except Exception as error:  # jinja2 raises on conversations a template refuses
        refused = error
    if (
        len(turns) > 1
        and (turns[0]["role"], turns[1]["role"]) == ("system", "user")
        and isinstance(turns[0]["content"], str)
        and isinstance(turns[1]["content"], str)
    ):
        # Templates without a system role (Gemma's) get it at the head of the first user turn.
        merged = {**turns[1], "content": f"{turns[0]['content']}\n\n{turns[1]['content']}"}
        try:
            return tokenizer.apply_chat_template(
                [merged, *turns[2:]], add_generation_prompt=True, tokenize=False, **options
            )
        except Exception:
            pass
    raise InvalidRequest(f"the model's chat template refused these messages: {refused}", param="messages")


def _try_apply(tokenizer: Any, turns: list[dict[str, Any]], options: dict[str, Any]) -> str | None:
    try:
        return _apply(tokenizer, turns, options)
    except InvalidRequest:  # a template that needs its tools (Hermes' tool_use) shows them
        return None


def _plain(message: Message) -> dict[str, Any]:
    return {"role": message.role, "content": _content(message)}


def _content(message: Message) -> str | list[dict[str, Any]]:
    """The text, or for a message with images the content parts vision templates read: one image
    part for each image, in order, then the text (where each image's tokens go is the processor's)."""
    if not message.images:
        return message.content
    parts: list[dict[str, Any]] = [{"type": "image"} for _ in message.images]
    return [*parts, {"type": "text", "text": message.content}] if message.content else parts


def _turn(message: Message, traits: TemplateTraits) -> dict[str, Any]:
    syntax = traits.tools
    turn: dict[str, Any] = {"role": message.role, "content": _content(message)}
    if message.tool_calls:
        turn["tool_calls"] = [
            {
                "id": _call_id(call.id, syntax.id_length),
                "type": "function",
                "function": {
                    "name": call.name,
                    "arguments": call.arguments if syntax.arguments_as_text else json.loads(call.arguments),
                },
            }
            for call in message.tool_calls
        ]
    if message.role == "tool":
        turn["tool_call_id"] = _call_id(message.tool_call_id or "", syntax.id_length)
        if message.tool_name:
            turn["name"] = message.tool_name
    if message.thinking:
        turn["reasoning_content"] = message.thinking
    return turn


def _call_id(given: str, length: int | None) -> str:
    """The id as the template wants it: Mistral's take exactly nine letters or digits, so other
    ids map to nine (the same id always to the same nine, so a call and its result still pair)."""
    if length is None or (len(given) == length and given.isalnum() and given.isascii()):
        return given
    digest = int.from_bytes(hashlib.sha256(given.encode()).digest(), "big")
    letters = []
    for _ in range(length):
        digest, index = divmod(digest, len(_ID_ALPHABET))
        letters.append(_ID_ALPHABET[index])
    return "".join(letters)


def _with_call_ids(messages: tuple[Message, ...]) -> tuple[Message, ...]:
    """Every call with an id, and every tool result naming the call it answers: clients of
    Ollama's API send neither ids nor pairs, which templates such as Mistral's need."""
    paired: list[Message] = []
    waiting: list[tuple[str, str]] = []  # (id, name) of calls not yet answered, oldest first
    for number, message in enumerate(messages):
        if message.tool_calls:
            calls = tuple(
                call if call.id else ToolCall(call.name, call.arguments, f"call_{number}_{index}")
                for index, call in enumerate(message.tool_calls)
            )
            message = replace(message, tool_calls=calls)
            waiting = [(call.id, call.name) for call in calls]
        elif message.role == "tool":
            answered = message.tool_call_id
            if not answered and waiting:
                match = next((w for w in waiting if w[1] == message.tool_name), waiting[0])
                answered = match[0]
            waiting = [w for w in waiting if w[0] != answered]
            name = message.tool_name or next((n for i, n in _calls_by_id(paired) if i == answered), None)
            message = replace(message, tool_call_id=answered, tool_name=name)
        paired.append(message)
    return tuple(paired)


def _calls_by_id(messages: list[Message]) -> list[tuple[str, str]]:
    return [(call.id, call.name) for message in messages for call in message.tool_calls]
