"""The shape a reply must take, as an xgrammar structural tag: reasoning first where the model
thinks, then the answer, with tool_choice enforced in the family's own call syntax.

"auto" leaves text or calls to the model, but a call it opens must name a tool and carry arguments
its schema allows; "required" and a named function make the reply calls and nothing else; "none"
and no tools need no grammar. Built from the same ToolSyntax the parser reads.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from heylook.chat.syntax import ThinkSyntax, ToolSyntax
from heylook.types import JsonFormat, Tool, ToolChoice

# The reasoning's place in the reply: the prompt opened it, the model may open it, or none.
Reasoning = Literal["open", "optional", "none"]
# Small models under a grammar pad with whitespace when they may: one space between tokens is enough.
_MAX_WHITESPACE = 1


def reply_structure(
    syntax: ToolSyntax,
    tools: tuple[Tool, ...],
    choice: ToolChoice,
    *,
    parallel: bool = True,
    response_format: JsonFormat | None = None,
    reasoning: Reasoning = "none",
    think: ThinkSyntax | None = None,
) -> Any | None:
    """The structural tag for this reply, or None when nothing constrains it (or plain JSON mode,
    which the JSON schema grammar alone serves)."""
    from xgrammar.structural_tag import (
        AnyTextFormat,
        OptionalFormat,
        OrFormat,
        SequenceFormat,
        StructuralTag,
        TagFormat,
    )

    calling = bool(tools) and choice.mode != "none"
    if not calling and (response_format is None or reasoning == "none"):
        return None
    body: Any
    if not calling:
        assert response_format is not None
        body = _json(response_format)
    elif choice.mode == "function":
        named = tuple(t for t in tools if t.name == choice.name)
        body = _calls(syntax, named, forced=True, single=True)
    else:
        body = _calls(syntax, tools, forced=choice.mode == "required", single=not parallel)
        if response_format is not None and choice.mode == "auto":
            # An answer in the requested JSON, or calls.
            calls = _calls(syntax, tools, forced=True, single=not parallel)
            body = OrFormat(elements=[_json(response_format), calls])
    if reasoning != "none" and think is not None:
        opened = reasoning == "open"
        block = TagFormat(begin="" if opened else think.open, content=AnyTextFormat(), end=think.close)
        body = SequenceFormat(elements=[block if opened else OptionalFormat(content=block), body])
    return StructuralTag(format=body)


def _json(response_format: JsonFormat) -> Any:
    from xgrammar.structural_tag import JSONSchemaFormat

    schema = json.loads(response_format.schema) if response_format.schema else {"type": "object"}
    return JSONSchemaFormat(json_schema=schema, max_whitespace_cnt=_MAX_WHITESPACE)


def _calls(syntax: ToolSyntax, tools: tuple[Tool, ...], *, forced: bool, single: bool) -> Any:
    """The family's calls to these tools. Forced, they are the whole reply; otherwise the reply is
    free text up to the family's trigger, and once it is written, calls and nothing else."""
    from xgrammar.structural_tag import (
        ConstStringFormat,
        DispatchFormat,
        OrFormat,
        SequenceFormat,
        StarFormat,
        TagFormat,
        TagsWithSeparatorFormat,
    )

    tags = [_call(syntax, tool) for tool in tools]
    separator = syntax.separator
    if syntax.section_begin:  # all calls in one section: the section is the one "call"
        inner = TagsWithSeparatorFormat(
            tags=tags, separator=separator, at_least_one=True, stop_after_first=single
        )
        tags, single, separator = (
            [TagFormat(begin=syntax.section_begin, content=inner, end=syntax.section_end)],
            True,
            "",
        )
    if forced:
        return TagsWithSeparatorFormat(
            tags=tags, separator=separator, at_least_one=True, stop_after_first=single
        )

    def one_of(options: list[Any]) -> Any:
        return options[0] if len(options) == 1 else OrFormat(elements=options)

    # Dispatch consumes the trigger: what follows it is the rest of the first call's beginning.
    assert all(tag.begin.startswith(syntax.trigger) for tag in tags)
    first = one_of([tag.model_copy(update={"begin": tag.begin[len(syntax.trigger) :]}) for tag in tags])
    if not single:
        more = [ConstStringFormat(value=separator), one_of(tags)] if separator else [one_of(tags)]
        first = SequenceFormat(elements=[first, StarFormat(content=SequenceFormat(elements=more))])
    return DispatchFormat(rules=[(syntax.trigger, first)], loop=False)


def _call(syntax: ToolSyntax, tool: Tool) -> Any:
    from xgrammar.structural_tag import JSONSchemaFormat, TagFormat

    schema = json.loads(tool.parameters)
    if syntax.json_name:
        head = f'{{"name": {json.dumps(tool.name)}, "{syntax.args_key}": '
        arguments = JSONSchemaFormat(json_schema=schema, max_whitespace_cnt=_MAX_WHITESPACE)
        return TagFormat(begin=syntax.call_begin + head, content=arguments, end="}" + syntax.call_end)
    style = syntax.args_style
    arguments = JSONSchemaFormat(json_schema=schema, style=style, max_whitespace_cnt=_MAX_WHITESPACE)
    begin = syntax.call_begin + tool.name + syntax.name_sep
    return TagFormat(begin=begin, content=arguments, end=syntax.call_end)
