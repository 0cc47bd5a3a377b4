"""One chat reply's plan: the prompt rendered, how to read the reply apart, and the structure it
must follow. Made once per request, before generating."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import Any

from heylook.chat.grammar import Reasoning, reply_structure
from heylook.chat.parse import ReplyParser
from heylook.chat.render import render_chat, thinking_on
from heylook.chat.syntax import TemplateTraits, ThinkSyntax, ToolSyntax
from heylook.errors import InvalidRequest
from heylook.types import ChatPrompt, GenerationRequest, JsonFormat


def new_call_id() -> str:
    """An id like OpenAI's: call_ and 24 letters or digits."""
    return "call_" + secrets.token_hex(12)


@dataclass(frozen=True)
class ReplyPlan:
    text: str  # the prompt, rendered
    tools: ToolSyntax | None = None  # read calls in this syntax; None: none were offered
    think: ThinkSyntax | None = None  # read reasoning between these markers
    in_thinking: bool = False
    keep_thinking: bool = True
    structure: Any = None  # the structural tag the reply must follow, if any

    @property
    def reads_parts(self) -> bool:
        """Whether the reply is more than plain text to pass on."""
        return self.tools is not None or self.think is not None

    def parser(self) -> ReplyParser:
        return ReplyParser(
            tools=self.tools,
            think=self.think,
            in_thinking=self.in_thinking,
            keep_thinking=self.keep_thinking,
            new_id=new_call_id,
        )


def plan_chat(
    tokenizer: Any,
    traits: TemplateTraits,
    prompt: ChatPrompt,
    request: GenerationRequest,
    response_format: JsonFormat | None = None,
) -> ReplyPlan:
    """Render the conversation and plan its reply. A model that cannot think, asked to, is refused
    as Ollama refuses it, on every API; asked only as a hint (Anthropic's adaptive thinking or
    effort), it answers without thinking."""
    tools, choice, think = request.tools, request.tool_choice, request.think
    if think not in (None, False) and not traits.thinks:
        if not request.think_hint:
            # Ollama's words: "qwen2.5" does not support thinking.
            raise InvalidRequest(f"{json.dumps(request.model)} does not support thinking", param="think")
        think = None
    rendered = render_chat(tokenizer, prompt.messages, traits, tools=tools, choice=choice, think=think)
    thinking = thinking_on(traits, think)
    calling = bool(tools) and choice.mode != "none"
    reasoning: Reasoning = "none"
    if rendered.in_thinking:
        reasoning = "open"
    elif thinking and traits.thinks:
        reasoning = "optional"
    structure = reply_structure(
        traits.tools,
        request.tools,
        request.tool_choice,
        parallel=request.parallel_tool_calls,
        response_format=response_format,
        reasoning=reasoning,
        think=traits.think,
    )
    return ReplyPlan(
        text=rendered.text,
        tools=traits.tools if calling else None,
        think=traits.think,
        in_thinking=rendered.in_thinking,
        keep_thinking=thinking,
        structure=structure,
    )
