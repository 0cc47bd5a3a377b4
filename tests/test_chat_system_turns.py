"""System messages after a conversation's first turn (Anthropic's mid-conversation system messages,
which Claude Code sends), through every family's real chat template: kept where the template takes
them, folded into the neighbouring user turn where it raises or moves them; and thinking asked as a
hint (Anthropic's adaptive thinking and effort), which a model that cannot think ignores."""

from __future__ import annotations

import json

import pytest

from heylook.chat.plan import plan_chat
from heylook.chat.render import placed_system_messages, render_chat
from heylook.chat.syntax import template_traits
from heylook.errors import InvalidRequest
from heylook.generate import with_default_system
from heylook.protocols.tools import tool_body
from heylook.types import ChatPrompt, GenerationRequest, Message, SamplingOptions, Tool, ToolCall
from tests.families import FAMILIES, Family, build_tokenizer

WEATHER = Tool(
    "get_weather",
    "Get the weather",
    json.dumps({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
)
# gpt-oss's template is one heylook reads with its generic tools; its tokens, for the tokenizer.
_GPT_OSS = Family(
    "gpt-oss.jinja",
    ("<|start|>", "<|end|>", "<|message|>", "<|channel|>", "<|return|>", "<|call|>", "<|constrain|>"),
    "<|return|>",
)
TEMPLATE_FAMILIES = {**FAMILIES, "gpt-oss": _GPT_OSS}
# Families whose template renders a system turn anywhere; the others raise on one after the first
# turn (Mistral-Nemo's, Gemma's) or move it to the top (DeepSeek's, gpt-oss's).
TAKES_THEM = {"qwen3", "qwen2.5", "hermes3", "qwen3-coder", "llama3.1", "llama3.2", "devstral", "granite3.3",
              "phi3.5"}  # fmt: skip
CALL = ToolCall("get_weather", '{"city": "Paris"}', "call_1")
CONVERSATIONS = {
    # Claude Code's: the instruction right after the user's turn, last.
    "after the user": (Message("user", "Ask one"), Message("system", "Note two")),
    "between turns": (
        Message("user", "Ask one"), Message("assistant", "Said two"), Message("system", "Note three"),
        Message("user", "Ask four"),
    ),
    "two in a row": (
        Message("user", "Ask one"), Message("system", "Note two"), Message("system", "Note three"),
    ),
    "after results": (
        Message("user", "Ask one"), Message("assistant", "", (CALL,)),
        Message("tool", "Sunny two", tool_call_id="call_1"), Message("system", "Note three"),
    ),
}  # fmt: skip


@pytest.fixture(scope="module", params=sorted(TEMPLATE_FAMILIES))
def family(request: pytest.FixtureRequest) -> tuple[str, object]:
    return request.param, build_tokenizer(TEMPLATE_FAMILIES[request.param])


@pytest.mark.parametrize("opening", [True, False], ids=["with a system prompt", "without"])
@pytest.mark.parametrize("shape", sorted(CONVERSATIONS))
def test_every_template_renders_them_in_order(family: tuple[str, object], shape: str, opening: bool) -> None:
    name, tokenizer = family
    conversation = CONVERSATIONS[shape]
    messages = ((Message("system", "Top zero"),) if opening else ()) + conversation
    traits = template_traits(tokenizer.chat_template)
    # Tools shown: Hermes' tool-use template takes no conversation without them.
    text = render_chat(tokenizer, messages, traits, tools=(WEATHER,)).text
    said = [m.content for m in conversation if m.content]
    where = [text.find(words) for words in said]
    assert -1 not in where, f"{name} lost {said[where.index(-1)]!r}"
    assert where == sorted(where), f"{name} moved a message: {text!r}"
    assert all(text.count(words) == 1 for words in said)
    # Mistral-Nemo's own template puts the system prompt in the last user turn (none: it is lost).
    if opening and name != "mistral-nemo":
        assert -1 < text.find("Top zero") < where[0]
    placed = placed_system_messages(tokenizer, messages, {"tools": [tool_body(WEATHER)]})
    later = [m.role for m in placed[1:] if m.role == "system"]
    assert later if name in TAKES_THEM else not later


@pytest.mark.parametrize(
    ("messages", "folded"),
    [
        (
            (Message("system", "top"), Message("user", "u"), Message("system", "s")),
            (Message("system", "top"), Message("user", "u\n\ns")),
        ),
        (
            (Message("user", "u"), Message("system", "s"), Message("system", "t"), Message("assistant", "a")),
            (Message("user", "u\n\ns\n\nt"), Message("assistant", "a")),
        ),
        (
            (Message("user", "u"), Message("assistant", "a"), Message("system", "s"), Message("user", "v")),
            (Message("user", "u"), Message("assistant", "a"), Message("user", "s\n\nv")),
        ),
        (
            (Message("user", "u"), Message("assistant", "a"), Message("system", "s")),
            (Message("user", "u"), Message("assistant", "a"), Message("user", "s")),
        ),
        (
            (
                Message("user", "u"), Message("assistant", "", (CALL,)),
                Message("tool", "r", tool_call_id="call_1"), Message("system", "s"), Message("system", ""),
            ),
            (
                Message("user", "u"), Message("assistant", "", (CALL,)),
                Message("tool", "r\n\ns", tool_call_id="call_1"),
            ),
        ),
        # Those it opens with are one system message, in their order.
        (
            (Message("system", "a"), Message("system", "b"), Message("user", "u"), Message("system", "s")),
            (Message("system", "a\n\nb"), Message("user", "u\n\ns")),
        ),
    ],
)  # fmt: skip
def test_where_a_template_cannot_take_them_they_fold_into_a_user_turn(
    messages: tuple[Message, ...], folded: tuple[Message, ...]
) -> None:
    tokenizer = build_tokenizer(FAMILIES["mistral-nemo"])
    assert placed_system_messages(tokenizer, messages, {}) == folded


def test_where_a_template_takes_them_they_stay() -> None:
    tokenizer = build_tokenizer(FAMILIES["qwen2.5"])
    messages = (Message("system", "a"), Message("system", "b"), Message("user", "u"), Message("system", "s"))
    assert placed_system_messages(tokenizer, messages, {}) == (
        Message("system", "a\n\nb"),
        Message("user", "u"),
        Message("system", "s"),
    )
    text = render_chat(tokenizer, messages, template_traits(tokenizer.chat_template)).text
    assert "<|im_start|>user\nu<|im_end|>\n<|im_start|>system\ns<|im_end|>\n<|im_start|>assistant\n" in text


def test_the_alias_system_prompt_goes_first_when_the_conversation_has_only_later_ones() -> None:
    later = ChatPrompt((Message("user", "u"), Message("system", "s")))
    assert with_default_system(later, "alias").messages == (Message("system", "alias"), *later.messages)
    own = ChatPrompt((Message("system", "mine"), Message("user", "u")))
    assert with_default_system(own, "alias") == own


def _request(think: object, hint: bool) -> GenerationRequest:
    prompt = ChatPrompt((Message("user", "hi"),))
    return GenerationRequest("m", prompt, SamplingOptions(), think=think, think_hint=hint)  # type: ignore[arg-type]


@pytest.mark.parametrize("think", [True, "high"])
def test_a_model_that_cannot_think_ignores_thinking_asked_as_a_hint(think: object) -> None:
    tokenizer = build_tokenizer(FAMILIES["qwen2.5"])
    traits = template_traits(tokenizer.chat_template)
    plan = plan_chat(tokenizer, traits, ChatPrompt((Message("user", "hi"),)), _request(think, hint=True))
    assert not plan.keep_thinking and plan.think is None
    with pytest.raises(InvalidRequest, match="does not support thinking"):
        plan_chat(tokenizer, traits, ChatPrompt((Message("user", "hi"),)), _request(think, hint=False))


def test_a_model_that_thinks_takes_the_hint() -> None:
    tokenizer = build_tokenizer(FAMILIES["qwen3"])
    traits = template_traits(tokenizer.chat_template)
    plan = plan_chat(tokenizer, traits, ChatPrompt((Message("user", "hi"),)), _request("high", hint=True))
    assert plan.keep_thinking and plan.think is not None
