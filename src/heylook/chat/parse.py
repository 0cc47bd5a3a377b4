"""Reads a reply as the model writes it, piece by piece: reasoning, answer and tool calls apart.

Pure: text in, internal chunks out. Whatever the pieces' boundaries, the chunks add up to the
same reply (tested by feeding every split), and a call's argument pieces join to exactly the
arguments its ToolCallDone carries.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from heylook.chat.syntax import ThinkSyntax, ToolSyntax
from heylook.types import ReplyChunk, TextChunk, ThinkingChunk, ToolCall, ToolCallChunk, ToolCallDone

State = Literal["start", "thinking", "after_thinking", "content", "calls"]
# A function name longer than this is no name: the "call" was text that happened to match.
_MAX_NAME = 256


def _marker_pattern(marker: str) -> re.Pattern[str]:
    """The marker with any whitespace where it has some, after any leading whitespace."""
    pieces = [re.escape(piece) for piece in marker.split()]
    return re.compile(r"\s*" + r"\s*".join(pieces))


def _squeeze(text: str) -> str:
    return "".join(text.split())


@dataclass
class _Marker:
    text: str
    pattern: re.Pattern[str] = field(init=False)

    def __post_init__(self) -> None:
        self.pattern = _marker_pattern(self.text)

    def match(self, buffer: str) -> int | Literal[False] | None:
        """The end of the marker at the start of `buffer`; None while `buffer` could still become
        it; False when it cannot."""
        if not self.text.strip():
            return len(buffer) - len(buffer.lstrip()) if buffer.strip() or not self.text else None
        found = self.pattern.match(buffer)
        if found:
            return found.end()
        return None if _squeeze(self.text).startswith(_squeeze(buffer)) else False


class JsonValueEnd:
    """Finds where a JSON object or array written piece by piece ends, without parsing it."""

    def __init__(self) -> None:
        self.depth = 0
        self.in_string = False
        self.escaped = False
        self.done = False

    def feed(self, text: str) -> int | None:
        """How much of `text` belongs to the value (all of it: None, the value goes on)."""
        for index, char in enumerate(text):
            if self.in_string:
                if self.escaped:
                    self.escaped = False
                elif char == "\\":
                    self.escaped = True
                elif char == '"':
                    self.in_string = False
            elif char == '"':
                self.in_string = True
            elif char in "{[":
                self.depth += 1
            elif char in "}]":
                self.depth -= 1
                if self.depth == 0:
                    self.done = True
                    return index + 1
        return None


_ARGUMENT_KEYS = ("arguments", "parameters")
_JSON_HEAD = r'\s*\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"(?:%s)"\s*:\s*'


@dataclass
class _Call:
    """The call being read."""

    index: int
    id: str
    phase: Literal["begin", "head", "name", "args", "object_tail", "end"] = "begin"
    name: str | None = None
    started: bool = False  # its first chunk (id and name) went out
    arguments: str = ""
    raw: str = ""  # everything read of it, for when it turns out to be no call
    value: JsonValueEnd = field(default_factory=JsonValueEnd)
    whole: JsonValueEnd = field(default_factory=JsonValueEnd)  # the {"name": ...} object


class ReplyParser:
    """Splits a reply into reasoning, answer and tool calls.

    `thinking`: the reply may open with the reasoning markers; `in_thinking`: the prompt already
    opened them, so the reply starts inside. `keep_thinking` False drops the reasoning (the
    client asked for none, from a model that thinks regardless). `tools` None reads no calls.
    """

    def __init__(
        self,
        *,
        tools: ToolSyntax | None = None,
        think: ThinkSyntax | None = None,
        in_thinking: bool = False,
        keep_thinking: bool = True,
        new_id: Callable[[], str] = lambda: "",
    ) -> None:
        self._tools = tools
        self._think = think
        self._keep_thinking = keep_thinking
        self._new_id = new_id
        self._state: State = "thinking" if (think and in_thinking) else "start" if think else "content"
        self._buffer = ""
        self._held_space = ""  # whitespace at the end of the answer or reasoning, shown once text follows
        self._space_before_call = ""
        self._thought = False  # some reasoning went out
        self._call: _Call | None = None
        self._in_section = False
        self._section_calls = 0
        self.calls = 0  # calls started
        self._out: list[ReplyChunk] = []
        self._tokens = 0
        if tools is not None:
            keys = "|".join(sorted({re.escape(tools.args_key), "arguments", "parameters"}))
            self._head = re.compile(_JSON_HEAD % keys)
            self._trigger = tools.lead + tools.trigger if tools.lead else tools.trigger

    def feed(self, text: str, tokens: int = 0) -> list[ReplyChunk]:
        self._tokens = tokens
        self._buffer += text
        while self._buffer and self._step():
            pass
        return self._take()

    def finish(self) -> list[ReplyChunk]:
        """What is still held back, once the reply has ended."""
        if self._state == "calls":
            call = self._call
            if call is not None and not call.started:
                # It never became a call (cut off before its name): show what was written.
                self._held_space = self._space_before_call
                self._content(call.raw + self._buffer, flush=True)
        elif self._state == "thinking":
            self._thinking(self._buffer, final=True)
        else:
            rest = self._buffer.lstrip() if self._state == "after_thinking" else self._buffer
            self._content(rest, flush=True)
        self._buffer = ""
        self._call = None
        return self._take()

    # --- states -----------------------------------------------------------------------------------

    def _step(self) -> bool:
        """Advance through the buffer; False when it needs more text."""
        if self._state == "start":
            return self._start()
        if self._state == "thinking":
            return self._in_thinking()
        if self._state == "after_thinking":
            stripped = self._buffer.lstrip()
            if not stripped:
                self._buffer = ""
                return False
            self._buffer, self._state = stripped, "content"
            return True
        if self._state == "content":
            return self._in_content()
        return self._in_calls()

    def _start(self) -> bool:
        assert self._think is not None
        stripped = self._buffer.lstrip()
        if stripped.startswith(self._think.open):
            self._buffer = stripped[len(self._think.open) :].lstrip()
            self._state = "thinking"
            return True
        if self._think.open.startswith(stripped):
            return False  # perhaps the opening marker, still coming
        self._state = "content"
        return True

    def _in_thinking(self) -> bool:
        assert self._think is not None
        end = self._buffer.find(self._think.close)
        if end < 0:
            keep = _partial_suffix(self._buffer, self._think.close)
            self._thinking(self._buffer[: len(self._buffer) - keep])
            self._buffer = self._buffer[len(self._buffer) - keep :]
            return False
        self._thinking(self._buffer[:end], final=True)
        self._buffer = self._buffer[end + len(self._think.close) :]
        self._state = "after_thinking"
        return True

    def _in_content(self) -> bool:
        if self._tools is None:
            self._content(self._buffer)
            self._buffer = ""
            return False
        trigger = self._buffer.find(self._tools.trigger)
        if trigger < 0:
            keep = max(_partial_suffix(self._buffer, t) for t in (self._trigger, self._tools.trigger))
            self._content(self._buffer[: len(self._buffer) - keep])
            self._buffer = self._buffer[len(self._buffer) - keep :]
            return False
        before = self._buffer[:trigger]
        if self._tools.lead and before.endswith(self._tools.lead):
            before = before[: -len(self._tools.lead)]
        self._content(before)
        # The whitespace between the answer and the calls belongs to neither, if calls they are.
        self._space_before_call, self._held_space = self._held_space, ""
        self._buffer = self._buffer[trigger:]
        self._state = "calls"
        self._in_section = False
        self._new_call()
        return True

    def _in_calls(self) -> bool:
        call = self._call
        assert call is not None and self._tools is not None
        syntax = self._tools
        if call.phase == "begin":
            if syntax.section_begin and not self._in_section:
                return self._expect(syntax.section_begin, self._open_section, self._not_a_call)
            if self._in_section and self._section_calls:
                return self._between_calls()
            return self._expect(syntax.call_begin, self._begun, self._not_a_call)
        if call.phase == "head":
            return self._read_head(call)
        if call.phase == "name":
            return self._read_name(call)
        if call.phase == "args":
            return self._read_args(call)
        if call.phase == "object_tail":
            end = call.whole.feed(self._buffer)
            if end is None:
                self._consume(call, len(self._buffer))
                return False
            self._consume(call, end)
            call.phase = "end"
            return True
        return self._expect(syntax.call_end, self._ended, self._call_over)

    def _expect(self, marker: str, then: Callable[[int], None], otherwise: Callable[[], None]) -> bool:
        matched = _Marker(marker).match(self._buffer)
        if matched is None:
            return False
        if matched is False:
            otherwise()
        else:
            then(matched)
        return True

    def _open_section(self, end: int) -> None:
        self._consume(self._call, end)
        self._in_section = True
        self._section_calls = 0

    def _begun(self, end: int) -> None:
        call = self._call
        assert call is not None and self._tools is not None
        self._consume(call, end)
        call.phase = "head" if self._tools.json_name else "name"

    def _between_calls(self) -> bool:
        """Inside a section after a call: another call, or the section's end."""
        assert self._tools is not None
        syntax = self._tools
        for marker, then in ((syntax.section_end, self._close_section), (syntax.separator, self._separated)):
            if not marker.strip() and marker:
                continue
            matched = _Marker(marker).match(self._buffer)
            if matched is None:
                return False
            if matched is not False:
                then(matched)
                return True
        if syntax.separator and not syntax.separator.strip():
            # A whitespace separator: the next call's own beginning says whether one follows.
            return self._expect(syntax.call_begin or "{", self._separated_call, self._leave_calls)
        self._leave_calls()
        return True

    def _separated(self, end: int) -> None:
        self._buffer = self._buffer[end:]
        self._section_calls = 0  # now read the next call's beginning

    def _separated_call(self, end: int) -> None:
        self._section_calls = 0

    def _close_section(self, end: int) -> None:
        self._buffer = self._buffer[end:]
        self._leave_calls()

    def _read_head(self, call: _Call) -> bool:
        """`{"name": "...", "arguments": ` so far: once whole, the call starts and its arguments flow."""
        found = self._head.match(self._buffer)
        if found:
            call.whole.feed(self._buffer[: found.end()])
            call.name, call.phase = _json_string(found.group(1)), "args"
            self._consume(call, found.end())
            return True
        stripped = self._buffer.lstrip()
        if stripped and not stripped.startswith("{"):
            self._not_a_call()
            return True
        # The object may hold its name after its arguments: then it is read whole.
        end = JsonValueEnd().feed(self._buffer) if stripped else None
        if end is None:
            return False
        text = self._buffer[:end]
        self._consume(call, end)
        self._whole_object(call, text)
        return True

    def _whole_object(self, call: _Call, text: str) -> None:
        try:
            value = json.loads(text)
        except ValueError:
            value = None
        if not isinstance(value, dict):
            value = {}
        arguments = next((value[k] for k in _ARGUMENT_KEYS if isinstance(value.get(k), dict)), None)
        if not isinstance(value.get("name"), str) or arguments is None:
            self._not_a_call()
            return
        call.name = value["name"]
        self._start_call(call)
        self._argument_piece(call, json.dumps(arguments, ensure_ascii=False))
        self._done(call)
        call.phase = "end"

    def _read_name(self, call: _Call) -> bool:
        assert self._tools is not None
        sep = self._tools.name_sep
        found = _marker_pattern(sep).search(self._buffer)
        if found is None:
            if len(self._buffer) > _MAX_NAME:
                self._not_a_call()
                return True
            return False
        name = self._buffer[: found.start()].strip()
        if not name or len(name) > _MAX_NAME:
            self._not_a_call()
            return True
        self._consume(call, found.end())
        call.name, call.phase = name, "args"
        return True

    def _read_args(self, call: _Call) -> bool:
        assert self._tools is not None
        if self._tools.args_style == "qwen_xml":
            return self._read_xml_args(call)
        if not call.started:
            stripped = self._buffer.lstrip()
            if not stripped:
                self._consume(call, len(self._buffer))
                return False
            if not stripped.startswith("{"):
                self._not_a_call()
                return True
            self._consume(call, len(self._buffer) - len(stripped))
            self._start_call(call)
        end = call.value.feed(self._buffer)
        piece = self._buffer if end is None else self._buffer[:end]
        if self._tools.json_name:
            call.whole.feed(piece)
        self._argument_piece(call, piece)
        self._consume(call, len(piece))
        if end is None:
            return False
        self._done(call)
        call.phase = "object_tail" if self._tools.json_name else "end"
        return True

    def _read_xml_args(self, call: _Call) -> bool:
        """Qwen's XML arguments (`<parameter=key>\\nvalue\\n</parameter>`), read whole at the call's end."""
        assert self._tools is not None
        end_marker = self._tools.call_end.strip().split()[0]
        end = self._buffer.find(end_marker)
        if end < 0:
            return False
        arguments = _xml_arguments(self._buffer[:end])
        self._consume(call, end)
        self._start_call(call)
        self._argument_piece(call, json.dumps(arguments, ensure_ascii=False))
        self._done(call)
        call.phase = "end"
        return True

    def _ended(self, end: int) -> None:
        self._buffer = self._buffer[end:]
        self._call_over()

    def _call_over(self) -> None:
        """The call is read: the next one, or back to the answer."""
        if self._in_section:
            self._section_calls += 1
            self._new_call(keep_section=True)
        else:
            self._leave_calls()

    def _leave_calls(self) -> None:
        self._call = None
        self._in_section = False
        self._state = "content"

    def _not_a_call(self) -> None:
        """What looked like the start of a call is not one: it is part of the answer."""
        call = self._call
        assert call is not None
        if call.started:  # already announced: what remains of it is dropped
            self._leave_calls()
            return
        # The trigger itself goes out as text, and reading resumes after it.
        raw = call.raw + self._buffer
        skip = len(self._tools.trigger) if self._tools and raw.startswith(self._tools.trigger) else 1
        self._held_space = self._space_before_call
        self._content(raw[:skip])
        self._buffer = raw[skip:]
        self._leave_calls()

    # --- output -------------------------------------------------------------------------------

    def _new_call(self, keep_section: bool = False) -> None:
        self._call = _Call(index=self.calls, id="")
        if not keep_section:
            self._section_calls = 0

    def _consume(self, call: _Call | None, length: int) -> None:
        if call is not None:
            call.raw += self._buffer[:length]
        self._buffer = self._buffer[length:]

    def _start_call(self, call: _Call) -> None:
        call.id = self._new_id()
        call.started = True
        self.calls += 1
        self._out.append(ToolCallChunk(call.index, "", call.id, call.name or "", self._tokens))

    def _argument_piece(self, call: _Call, piece: str) -> None:
        if piece:
            call.arguments += piece
            self._out.append(ToolCallChunk(call.index, piece, tokens=self._tokens))

    def _done(self, call: _Call) -> None:
        done = ToolCall(call.name or "", call.arguments, call.id)
        self._out.append(ToolCallDone(call.index, done, self._tokens))

    def _content(self, text: str, *, flush: bool = False) -> None:
        text = self._held_space + text
        kept = text if flush else text.rstrip()
        self._held_space = text[len(kept) :]
        if kept:
            self._out.append(TextChunk(kept, self._tokens))

    def _thinking(self, text: str, *, final: bool = False) -> None:
        if not self._thought:
            text = text.lstrip()
        text = self._held_space + text
        kept = text.rstrip()
        self._held_space = "" if final else text[len(kept) :]
        if kept:
            self._thought = True
            if self._keep_thinking:
                self._out.append(ThinkingChunk(kept, self._tokens))

    def _take(self) -> list[ReplyChunk]:
        out, self._out = self._out, []
        return out


def _partial_suffix(text: str, marker: str) -> int:
    """Length of the longest end of `text` that `marker` starts with (and could still complete)."""
    for length in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:length]):
            return length
    return 0


def _json_string(body: str) -> str:
    try:
        return json.loads(f'"{body}"')
    except ValueError:
        return body


_XML_PARAMETER = re.compile(r"<parameter=([^>\n]+)>(.*?)</parameter>", flags=re.DOTALL)


def _xml_arguments(text: str) -> dict[str, object]:
    """Qwen's XML parameters as an object: values that read as JSON (numbers, objects, true) are
    those values, the rest strings; the whitespace around a value is the format's, not the value's."""
    arguments: dict[str, object] = {}
    for key, value in _XML_PARAMETER.findall(text):
        value = value.strip()
        try:
            arguments[key.strip()] = json.loads(value)
        except ValueError:
            arguments[key.strip()] = value
    return arguments
