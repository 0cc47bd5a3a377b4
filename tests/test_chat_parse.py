"""Reading replies apart, per family: every way of cutting the text into pieces gives the same
reply, and the argument pieces of each call join to exactly its whole arguments."""

from __future__ import annotations

import itertools
import json

import pytest

from heylook.chat import syntax
from heylook.chat.parse import JsonValueEnd, ReplyParser
from heylook.chat.syntax import ThinkSyntax, ToolSyntax
from heylook.types import Reply, TextChunk, ThinkingChunk, ToolCall, ToolCallChunk, ToolCallDone

THINK = ThinkSyntax()
WEATHER = '{"city": "Paris", "unit": "c"}'
NESTED = '{"q": "a \\"}\\" b", "list": [1, {"x": [2]}], "s": "{["}'


def collect(chunks) -> tuple[Reply, list[ToolCall]]:
    """The reply the chunks add up to, and the calls as their ToolCallDone chunks carry them."""
    content, thinking, done = [], [], []
    calls: dict[int, list[str]] = {}
    for chunk in chunks:
        if isinstance(chunk, TextChunk):
            content.append(chunk.text)
        elif isinstance(chunk, ThinkingChunk):
            thinking.append(chunk.text)
        elif isinstance(chunk, ToolCallChunk):
            if chunk.name:
                assert chunk.index not in calls, "a call starts once"
                calls[chunk.index] = [chunk.id, chunk.name, ""]
            else:
                calls[chunk.index][2] += chunk.arguments
        elif isinstance(chunk, ToolCallDone):
            done.append(chunk.call)
    streamed = tuple(ToolCall(name, arguments, id) for id, name, arguments in calls.values())
    return Reply("".join(content), "".join(thinking), streamed), done


def parse(pieces: list[str], **kwargs) -> tuple[Reply, list[ToolCall]]:
    ids = (f"call_{n}" for n in itertools.count())
    parser = ReplyParser(new_id=lambda: next(ids), **kwargs)
    chunks = [chunk for piece in pieces for chunk in parser.feed(piece)]
    return collect(chunks + parser.finish())


def splits(text: str):
    """The text whole, one character at a time, and cut in two at every place."""
    yield [text]
    yield list(text)
    for cut in range(1, len(text)):
        yield [text[:cut], text[cut:]]


def calls(*pairs: tuple[str, str]) -> tuple[ToolCall, ...]:
    return tuple(ToolCall(name, arguments, f"call_{n}") for n, (name, arguments) in enumerate(pairs))


CASES = [
    # (id, syntax, think, in_thinking, text, expected reply)
    ("plain", None, None, False, "The capital is Paris.\n", Reply("The capital is Paris.\n")),
    ("hermes", syntax.HERMES, None, False,
     f'<tool_call>\n{{"name": "get_weather", "arguments": {WEATHER}}}\n</tool_call>',
     Reply(tool_calls=calls(("get_weather", WEATHER)))),
    ("hermes text first", syntax.HERMES, None, False,
     f'Let me check.\n<tool_call>\n{{"name": "get_weather", "arguments": {WEATHER}}}\n</tool_call>',
     Reply("Let me check.", tool_calls=calls(("get_weather", WEATHER)))),
    ("hermes two calls", syntax.HERMES, None, False,
     f'<tool_call>\n{{"name": "a", "arguments": {NESTED}}}\n</tool_call>\n'
     '<tool_call>\n{"name": "b", "arguments": {}}\n</tool_call>',
     Reply(tool_calls=calls(("a", NESTED), ("b", "{}")))),
    ("hermes arguments first", syntax.HERMES, None, False,
     '<tool_call>\n{"arguments": {"x": 1}, "name": "a"}\n</tool_call>',
     Reply(tool_calls=calls(("a", '{"x": 1}')))),
    ("hermes no call after all", syntax.HERMES, None, False,
     "use <tool_call> tags, like <tool_call>hello", Reply("use <tool_call> tags, like <tool_call>hello")),
    ("hermes cut off before the name", syntax.HERMES, None, False,
     '<tool_call>\n{"na', Reply('<tool_call>\n{"na')),
    ("qwen3 thinking then call", syntax.HERMES, THINK, False,
     "<think>\nI should look.\n</think>\n\n"
     f'<tool_call>\n{{"name": "w", "arguments": {WEATHER}}}\n</tool_call>',
     Reply(thinking="I should look.", tool_calls=calls(("w", WEATHER)))),
    ("thinking then answer", None, THINK, False, "<think>\nHmm.\n\nYes.\n</think>\n\nParis.",
     Reply("Paris.", "Hmm.\n\nYes.")),
    ("prompt opened the thinking", None, THINK, True, "Hmm.</think>Paris.", Reply("Paris.", "Hmm.")),
    ("no thinking after all", None, THINK, False, "Paris <think> is", Reply("Paris <think> is")),
    ("thinking cut off", None, THINK, True, "Hmm, let me", Reply(thinking="Hmm, let me")),
    ("qwen xml", syntax.QWEN_XML, None, False,
     "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n"
     "<parameter=days>\n3\n</parameter>\n</function>\n</tool_call>",
     Reply(tool_calls=calls(("get_weather", '{"city": "Paris", "days": 3}')))),
    ("llama3", syntax.LLAMA3, None, False, f'{{"name": "get_weather", "parameters": {WEATHER}}}',
     Reply(tool_calls=calls(("get_weather", WEATHER)))),
    ("llama3 python tag", syntax.LLAMA3, None, False,
     f'<|python_tag|>{{"name": "get_weather", "parameters": {WEATHER}}}',
     Reply(tool_calls=calls(("get_weather", WEATHER)))),
    ("llama3 answer", syntax.LLAMA3, None, False, 'It is {"a": 1}', Reply('It is {"a": 1}')),
    ("mistral list", syntax.MISTRAL, None, False,
     f'[TOOL_CALLS][{{"name": "a", "arguments": {WEATHER}}}, {{"name": "b", "arguments": {NESTED}}}]',
     Reply(tool_calls=calls(("a", WEATHER), ("b", NESTED)))),
    ("mistral args", syntax.MISTRAL_ARGS, None, False,
     f"[TOOL_CALLS]a[ARGS]{WEATHER}[TOOL_CALLS]b[ARGS]{{}}",
     Reply(tool_calls=calls(("a", WEATHER), ("b", "{}")))),
    ("granite", syntax.GRANITE, None, False, f'<|tool_call|>[{{"name": "a", "arguments": {WEATHER}}}]',
     Reply(tool_calls=calls(("a", WEATHER)))),
    ("deepseek", syntax.DEEPSEEK, None, False,
     "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>a\n```json\n"
     f"{WEATHER}\n```<｜tool▁call▁end｜>\n<｜tool▁call▁begin｜>function<｜tool▁sep｜>b\n```json\n"
     "{}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
     Reply(tool_calls=calls(("a", WEATHER), ("b", "{}")))),
    ("deepseek v3.1", syntax.DEEPSEEK_V31, THINK, True,
     "ok</think><｜tool▁calls▁begin｜><｜tool▁call▁begin｜>a<｜tool▁sep｜>"
     f"{WEATHER}<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
     Reply(thinking="ok", tool_calls=calls(("a", WEATHER)))),
    ("generic", syntax.GENERIC, None, False,
     f'Sure.<tool_call>{{"name": "a", "arguments": {WEATHER}}}</tool_call>',
     Reply("Sure.", tool_calls=calls(("a", WEATHER)))),
]  # fmt: skip


@pytest.mark.parametrize(
    ("tools", "think", "in_thinking", "text", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_every_split_reads_the_same(tools: ToolSyntax | None, think, in_thinking, text, expected) -> None:
    for pieces in splits(text):
        reply, done = parse(pieces, tools=tools, think=think, in_thinking=in_thinking)
        assert reply == expected, pieces
        assert tuple(done) == expected.tool_calls, pieces


def test_arguments_parse_as_json_objects() -> None:
    for case in CASES:
        for call in case[-1].tool_calls:
            assert isinstance(json.loads(call.arguments), dict)


def test_reasoning_can_be_dropped() -> None:
    reply, _ = parse(["Hmm.</think>Paris."], think=THINK, in_thinking=True, keep_thinking=False)
    assert reply == Reply("Paris.")


def test_calls_are_numbered_from_zero() -> None:
    parser = ReplyParser(tools=syntax.GENERIC)
    parser.feed('<tool_call>{"name": "a", "arguments": {}}</tool_call>')
    assert parser.calls == 1


@pytest.mark.parametrize(
    ("text", "end"),
    [('{"a": 1} tail', 8), ('[1, [2], "]"]x', 13), ('{"s": "\\\\"}', 11), ('{"open": [', None)],
)
def test_json_value_end(text: str, end: int | None) -> None:
    assert JsonValueEnd().feed(text) == end
