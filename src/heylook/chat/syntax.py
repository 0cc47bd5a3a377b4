"""How model families write tool calls and reasoning, declared once: the grammar that enforces
tool_choice and the parser that reads replies are both built from these declarations, and a
model's family is recognised from its chat template, never from its name."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class ToolSyntax:
    """One family's tool-call syntax. Markers hold the spacing the family's own template writes
    (what the grammar makes the model write); the parser also accepts other whitespace around
    them.

    A reply's calls are `section_begin call (separator call)* section_end`, and one call is
    `call_begin` then either a JSON object `{"name": ..., "<args_key>": {...}}` (name_sep empty)
    or the function's name, `name_sep` and its arguments; then `call_end`.
    """

    name: str
    trigger: str  # what starts the calls in a reply: the text before it is the answer
    call_begin: str = ""
    call_end: str = ""
    section_begin: str = ""
    section_end: str = ""
    separator: str = ""  # between two calls (inside the section, for families with one)
    args_key: str = "arguments"
    name_sep: str = ""
    args_style: Literal["json", "qwen_xml"] = "json"
    # Text a model may put right before its calls that belongs to neither answer nor call.
    lead: str = ""
    # The template prints arguments as given, so it wants them as JSON text, not an object.
    arguments_as_text: bool = False
    # Call ids the template insists on, e.g. Mistral's nine letters or digits; None takes any.
    id_length: int | None = None
    # Whether heylook writes the tool instructions itself (templates that know nothing of tools).
    generic: bool = False

    @property
    def json_name(self) -> bool:
        """The name is inside a JSON object with the arguments, not text before them."""
        return not self.name_sep


@dataclass(frozen=True)
class ThinkSyntax:
    """Where a family's reasoning starts and ends in its replies."""

    open: str = "<think>"
    close: str = "</think>"


HERMES = ToolSyntax(
    "hermes", trigger="<tool_call>", call_begin="<tool_call>\n", call_end="\n</tool_call>", separator="\n"
)
QWEN_XML = ToolSyntax(
    "qwen-xml", trigger="<tool_call>", call_begin="<tool_call>\n<function=", name_sep=">\n",
    call_end="\n</function>\n</tool_call>", args_style="qwen_xml", separator="\n",
)  # fmt: skip
LLAMA3 = ToolSyntax(
    "llama3-json", trigger='{"name": ', args_key="parameters", lead="<|python_tag|>", separator="\n"
)
MISTRAL = ToolSyntax(
    "mistral", trigger="[TOOL_CALLS]", section_begin="[TOOL_CALLS][", section_end="]", separator=", ",
    id_length=9,
)  # fmt: skip
MISTRAL_ARGS = ToolSyntax(
    "mistral-args", trigger="[TOOL_CALLS]", call_begin="[TOOL_CALLS]", name_sep="[ARGS]", id_length=9
)
GRANITE = ToolSyntax(
    "granite", trigger="<|tool_call|>", section_begin="<|tool_call|>[", section_end="]", separator=", "
)
DEEPSEEK = ToolSyntax(
    "deepseek", trigger="<｜tool▁calls▁begin｜>", section_begin="<｜tool▁calls▁begin｜>",
    section_end="<｜tool▁calls▁end｜>", separator="\n",
    call_begin="<｜tool▁call▁begin｜>function<｜tool▁sep｜>", name_sep="\n```json\n",
    call_end="\n```<｜tool▁call▁end｜>", arguments_as_text=True,
)  # fmt: skip
DEEPSEEK_V31 = ToolSyntax(
    "deepseek-v3.1", trigger="<｜tool▁calls▁begin｜>", section_begin="<｜tool▁calls▁begin｜>",
    section_end="<｜tool▁calls▁end｜>", call_begin="<｜tool▁call▁begin｜>", name_sep="<｜tool▁sep｜>",
    call_end="<｜tool▁call▁end｜>", arguments_as_text=True,
)  # fmt: skip
# For templates that know nothing of tools: heylook puts the tools in the system prompt and reads
# calls in this tagged JSON (see chat.generic).
GENERIC = ToolSyntax(
    "generic", trigger="<tool_call>", call_begin="<tool_call>", call_end="</tool_call>", generic=True
)

# (syntax, markers that must all be in the template), most specific first.
_TOOL_FAMILIES: tuple[tuple[ToolSyntax, tuple[str, ...]], ...] = (
    (QWEN_XML, ("<tool_call>", "<function=")),
    (HERMES, ("<tool_call>",)),
    (MISTRAL_ARGS, ("[TOOL_CALLS]", "[ARGS]")),
    (MISTRAL, ("[TOOL_CALLS]",)),
    (GRANITE, ("<|tool_call|>",)),
    (DEEPSEEK, ("tool▁call▁begin", "```json")),
    (DEEPSEEK_V31, ("tool▁call▁begin",)),
    (LLAMA3, ('"parameters": dictionary of argument name',)),
    (LLAMA3, ("<|python_tag|>",)),
)
_THINK_FAMILIES = (ThinkSyntax("<think>", "</think>"), ThinkSyntax("[THINK]", "[/THINK]"))
# Template variables that turn reasoning on or off, and that say how hard to think.
_THINK_SWITCHES = ("enable_thinking", "thinking")
_EFFORT_VARIABLE = "reasoning_effort"


@dataclass(frozen=True)
class TemplateTraits:
    """What a chat template supports, read from its text."""

    tools: ToolSyntax = GENERIC
    think: ThinkSyntax | None = None
    # The variables this template reads to switch reasoning on or off, and to set its effort.
    think_switches: tuple[str, ...] = ()
    takes_effort: bool = False

    @property
    def thinks(self) -> bool:
        return self.think is not None

    def markers(self) -> tuple[str, ...]:
        """Every marker text a reply of this family may hold."""
        syntax = self.tools
        texts: tuple[str, ...] = (syntax.trigger, syntax.call_begin, syntax.call_end, syntax.section_begin)
        texts += (syntax.section_end, syntax.name_sep, syntax.lead)
        if self.think is not None:
            texts += (self.think.open, self.think.close)
        return tuple(t for t in texts if t.strip())


def shown_special_tokens(tokenizer: Any, traits: TemplateTraits) -> dict[int, str]:
    """The special tokens a reply must keep in its text, because they are the family's markers
    (Mistral's [TOOL_CALLS], DeepSeek's tool-call tokens): id -> text."""
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    markers = traits.markers()
    return {
        index: token.content
        for index, token in added.items()
        if getattr(token, "special", False) and any(token.content in m for m in markers)
    }


def template_text(tokenizer: Any) -> str | None:
    """A tokenizer's chat template; one with several named templates (Hermes: default and
    tool_use) gives them all, for reading the family's markers."""
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):
        return "\n".join(str(t) for t in template.values())
    return template if isinstance(template, str) else None


def template_traits(template: str | None) -> TemplateTraits:
    """The tool syntax and reasoning markers of a chat template (GENERIC tools when it shows no
    family's markers: heylook then writes the tool instructions itself)."""
    if not template:
        return TemplateTraits()
    tools = next((s for s, markers in _TOOL_FAMILIES if all(m in template for m in markers)), GENERIC)
    think = next((t for t in _THINK_FAMILIES if t.open in template), None)
    switches = tuple(v for v in _THINK_SWITCHES if _reads_variable(template, v)) if think else ()
    return TemplateTraits(
        tools=tools,
        think=think,
        think_switches=switches,
        takes_effort=think is not None and _reads_variable(template, _EFFORT_VARIABLE),
    )


def _reads_variable(template: str, name: str) -> bool:
    """Whether a Jinja template tests or prints a top-level variable of that name (not an
    attribute such as message.thinking, nor a word inside a string)."""
    for block in re.findall(r"{[{%](.*?)[}%]}", template, flags=re.DOTALL):
        code = re.sub(r"'[^']*'|\"[^\"]*\"", "", block)
        if re.search(rf"(?<![.\w]){re.escape(name)}\b", code):
            return True
    return False
