"""The grammar that enforces tool_choice, per family: it takes the family's real call format
(which the parser reads back to the same call) and refuses unknown functions, arguments the schema
does not allow, text where a call is required, and a second call where only one is allowed."""

from __future__ import annotations

import json

import pytest

from heylook.chat import syntax
from heylook.chat.grammar import reply_structure
from heylook.chat.parse import ReplyParser
from heylook.chat.syntax import ThinkSyntax, ToolSyntax
from heylook.types import JsonFormat, Tool, ToolCallDone, ToolChoice

CITY = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
TOOLS = (
    Tool("get_weather", "", json.dumps(CITY)),
    Tool("get_time", "", json.dumps({"type": "object", "properties": {"tz": {"enum": ["UTC", "CET"]}}})),
)
PARIS = '{"city": "Paris"}'

# (syntax, a call to get_weather as the family writes it, the same with a bad argument)
WRITTEN = [
    (syntax.HERMES, f'<tool_call>\n{{"name": "get_weather", "arguments": {PARIS}}}\n</tool_call>'),
    (syntax.QWEN_XML, "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n"
     "</function>\n</tool_call>"),
    (syntax.LLAMA3, f'{{"name": "get_weather", "parameters": {PARIS}}}'),
    (syntax.MISTRAL, f'[TOOL_CALLS][{{"name": "get_weather", "arguments": {PARIS}}}]'),
    (syntax.MISTRAL_ARGS, f"[TOOL_CALLS]get_weather[ARGS]{PARIS}"),
    (syntax.GRANITE, f'<|tool_call|>[{{"name": "get_weather", "arguments": {PARIS}}}]'),
    (syntax.DEEPSEEK, "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather"
     f"\n```json\n{PARIS}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>"),
    (syntax.DEEPSEEK_V31, "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>"
     f"{PARIS}<｜tool▁call▁end｜><｜tool▁calls▁end｜>"),
    (syntax.GENERIC, f'<tool_call>{{"name": "get_weather", "arguments": {PARIS}}}</tool_call>'),
]  # fmt: skip
IDS = [case[0].name for case in WRITTEN]


@pytest.fixture(scope="module")
def compiler(tiny_tokenizer):
    import xgrammar

    info = xgrammar.TokenizerInfo.from_huggingface(
        tiny_tokenizer, vocab_size=len(tiny_tokenizer), stop_token_ids=[tiny_tokenizer.eos_token_id]
    )
    return xgrammar.GrammarCompiler(info), tiny_tokenizer.eos_token_id


def takes(compiler, structure, text: str) -> bool:
    """Whether the grammar takes the text as a whole reply (the end token included)."""
    import xgrammar

    grammar_compiler, eos = compiler
    matcher = xgrammar.GrammarMatcher(grammar_compiler.compile_structural_tag(structure))
    return matcher.accept_string(text) and matcher.accept_token(eos)


def structure(tools_syntax: ToolSyntax, mode: str = "auto", **kwargs):
    name = "get_weather" if mode == "function" else None
    return reply_structure(tools_syntax, TOOLS, ToolChoice(mode, name), **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(("tools_syntax", "call"), WRITTEN, ids=IDS)
def test_the_parser_reads_what_the_grammar_takes(tools_syntax: ToolSyntax, call: str) -> None:
    parser = ReplyParser(tools=tools_syntax)
    chunks = [*parser.feed(call), *parser.finish()]
    [done] = [c.call for c in chunks if isinstance(c, ToolCallDone)]
    assert (done.name, json.loads(done.arguments)) == ("get_weather", {"city": "Paris"})


@pytest.mark.parametrize(("tools_syntax", "call"), WRITTEN, ids=IDS)
@pytest.mark.parametrize("mode", ["auto", "required", "function"])
def test_a_call_is_taken_in_every_mode(compiler, tools_syntax: ToolSyntax, call: str, mode: str) -> None:
    assert takes(compiler, structure(tools_syntax, mode), call)


@pytest.mark.parametrize(("tools_syntax", "call"), WRITTEN, ids=IDS)
def test_auto_takes_text_but_required_does_not(compiler, tools_syntax: ToolSyntax, call: str) -> None:
    assert takes(compiler, structure(tools_syntax, "auto"), "It is sunny in Paris.")
    assert takes(compiler, structure(tools_syntax, "auto"), "Let me look. " + call)
    assert not takes(compiler, structure(tools_syntax, "required"), "It is sunny in Paris.")
    assert not takes(compiler, structure(tools_syntax, "auto"), call + " And it is sunny."), (
        "calls end a reply"
    )


@pytest.mark.parametrize(("tools_syntax", "call"), WRITTEN, ids=IDS)
@pytest.mark.parametrize("mode", ["auto", "required"])
def test_unknown_functions_and_bad_arguments_are_refused(compiler, tools_syntax, call, mode) -> None:
    assert not takes(compiler, structure(tools_syntax, mode), call.replace("get_weather", "rm_rf"))
    if tools_syntax.args_style == "json":
        assert not takes(compiler, structure(tools_syntax, mode), call.replace('"city"', '"town"'))
        assert not takes(compiler, structure(tools_syntax, mode), call.replace('"Paris"', "42"))


def test_a_named_function_is_the_only_one_taken(compiler) -> None:
    other = '<tool_call>\n{"name": "get_time", "arguments": {"tz": "UTC"}}\n</tool_call>'
    assert takes(compiler, structure(syntax.HERMES, "required"), other)
    assert not takes(compiler, structure(syntax.HERMES, "function"), other)


@pytest.mark.parametrize(
    ("tools_syntax", "two"),
    [
        (
            syntax.HERMES,
            '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
            '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>',
        ),
        (
            syntax.MISTRAL,
            '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}}, '
            '{"name": "get_time", "arguments": {}}]',
        ),
        (syntax.MISTRAL_ARGS, '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}[TOOL_CALLS]get_time[ARGS]{}'),
    ],
    ids=["hermes", "mistral", "mistral-args"],
)
@pytest.mark.parametrize("mode", ["auto", "required"])
def test_parallel_calls_only_when_allowed(compiler, tools_syntax, two: str, mode: str) -> None:
    assert takes(compiler, structure(tools_syntax, mode), two)
    assert not takes(compiler, structure(tools_syntax, mode, parallel=False), two)


def test_reasoning_comes_first(compiler) -> None:
    think = ThinkSyntax()
    call = WRITTEN[0][1]
    opened = structure(syntax.HERMES, "required", reasoning="open", think=think)
    assert takes(compiler, opened, "Let me see.</think>" + call)
    assert not takes(compiler, opened, call)
    optional = structure(syntax.HERMES, "required", reasoning="optional", think=think)
    assert takes(compiler, optional, "<think>Let me see.</think>" + call)
    assert takes(compiler, optional, call)


def test_json_answers_after_reasoning(compiler) -> None:
    answer = reply_structure(
        syntax.HERMES, (), ToolChoice(), response_format=JsonFormat(json.dumps(CITY)),
        reasoning="open", think=ThinkSyntax(),
    )  # fmt: skip
    assert takes(compiler, answer, 'Hmm.</think>{"city": "Paris"}')
    assert not takes(compiler, answer, "Hmm.</think>Paris")


def test_auto_with_a_response_format_takes_json_or_calls(compiler) -> None:
    either = structure(syntax.HERMES, "auto", response_format=JsonFormat(json.dumps(CITY)))
    assert takes(compiler, either, '{"city": "Paris"}')
    assert takes(compiler, either, WRITTEN[0][1])
    assert not takes(compiler, either, "Paris")


@pytest.mark.parametrize("mode", ["none"])
def test_no_grammar_when_nothing_constrains_the_reply(mode: str) -> None:
    assert reply_structure(syntax.HERMES, TOOLS, ToolChoice("none")) is None
    assert reply_structure(syntax.HERMES, (), ToolChoice()) is None
    # plain JSON mode has its own grammar (constraints.JsonGrammars.compile)
    assert reply_structure(syntax.HERMES, (), ToolChoice(), response_format=JsonFormat()) is None
