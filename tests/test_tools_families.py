"""tool_choice enforced through the real engine, per family: a tiny random model of each family,
with that family's real chat template, must write calls that name a given tool and whose
arguments validate against its schema, because the grammar leaves it no other way."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest
import yaml

from heylook.chat.syntax import template_traits
from heylook.generate import start_generation
from heylook.registry.aliases import parse_registry
from heylook.reply import ReplyBuilder
from heylook.router import ModelRouter
from heylook.types import (
    ChatPrompt,
    FinalChunk,
    GenerationRequest,
    Message,
    Reply,
    SamplingOptions,
    Tool,
    ToolChoice,
)
from tests.families import FAMILIES, build_family_model, build_scripted_model

pytestmark = pytest.mark.anyio

# Schemas a random model finishes quickly: no free text, whose random walk could run for long.
WEATHER = {
    "type": "object",
    "properties": {
        "city": {"enum": ["Paris", "Oslo"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
        "metric": {"type": "boolean"},
    },
    "required": ["city", "days", "metric"],
}
TIME = {"type": "object", "properties": {"zone": {"enum": ["UTC", "CET"]}}, "required": ["zone"]}
TOOLS = (
    Tool("get_weather", "The weather", json.dumps(WEATHER)),
    Tool("get_time", "The time", json.dumps(TIME)),
)
SCHEMAS = {"get_weather": WEATHER, "get_time": TIME}
ASK = ChatPrompt((Message("system", "You help."), Message("user", "What is the weather in Paris?")))
# Families whose prompt always opens the reasoning: a random model would never close it.
ALWAYS_THINKING = {"deepseek-r1-distill"}


@pytest.fixture(scope="module")
def router(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelRouter]:
    root = tmp_path_factory.mktemp("families")
    aliases = {}
    for name in FAMILIES:
        aliases[name] = {"model": str(build_family_model(root / name, name))}
    # DeepSeek-R1 closes its reasoning at once, then the grammar writes the call.
    aliases["r1-scripted"] = {
        "model": str(build_scripted_model(root / "r1-scripted", "deepseek-r1-distill", {"\n": "</think>"}))
    }
    registry = parse_registry(yaml.safe_dump({"models": aliases}), root / "models.yaml")
    router = ModelRouter(registry)
    yield router
    router.close()


async def reply_to(router: ModelRouter, request: GenerationRequest) -> tuple[Reply, FinalChunk]:
    generation = await start_generation(router, request)
    builder, final = ReplyBuilder(), None
    async for chunk in generation.chunks():
        if isinstance(chunk, FinalChunk):
            final = chunk
        else:
            builder.add(chunk)
    assert final is not None
    return builder.build(), final


def ask(model: str, choice: ToolChoice, *, parallel: bool = True, seed: int = 1) -> GenerationRequest:
    think = False if template_traits(FAMILIES[model].chat_template).thinks else None
    return GenerationRequest(
        model, ASK, SamplingOptions(max_tokens=400, temperature=1.0, seed=seed),
        tools=TOOLS, tool_choice=choice, parallel_tool_calls=parallel, think=think,
    )  # fmt: skip


def assert_valid_calls(reply: Reply, final: FinalChunk, names: set[str]) -> None:
    assert final.finish_reason == "tool_calls", reply
    assert reply.tool_calls and not reply.content
    for call in reply.tool_calls:
        assert call.name in names
        jsonschema.validate(json.loads(call.arguments), SCHEMAS[call.name])
        assert call.id.startswith("call_")


@pytest.mark.parametrize("family", sorted(set(FAMILIES) - ALWAYS_THINKING))
@pytest.mark.parametrize("seed", [1, 2])
async def test_required_makes_even_a_random_model_call_validly(router, family: str, seed: int) -> None:
    reply, final = await reply_to(router, ask(family, ToolChoice("required"), parallel=False, seed=seed))
    assert_valid_calls(reply, final, set(SCHEMAS))
    assert len(reply.tool_calls) == 1, "parallel_tool_calls false allows one call"


@pytest.mark.parametrize("family", ["qwen3", "llama3.2", "mistral-nemo", "devstral", "gemma2"])
async def test_a_named_function_is_the_one_called(router, family: str) -> None:
    reply, final = await reply_to(router, ask(family, ToolChoice("function", "get_time")))
    assert_valid_calls(reply, final, {"get_time"})
    assert len(reply.tool_calls) == 1


async def test_a_model_that_always_reasons_reasons_then_calls(router) -> None:
    request = GenerationRequest(
        "r1-scripted", ASK, SamplingOptions(max_tokens=400, temperature=0), tools=TOOLS,
        tool_choice=ToolChoice("function", "get_weather"),
    )  # fmt: skip
    reply, final = await reply_to(router, request)
    assert_valid_calls(reply, final, {"get_weather"})


@pytest.mark.parametrize("family", ["qwen3", "mistral-nemo", "gemma2"])
async def test_none_never_calls(router, family: str) -> None:
    request = GenerationRequest(
        family, ASK, SamplingOptions(max_tokens=30, temperature=1.0, seed=3), tools=TOOLS,
        tool_choice=ToolChoice("none"), think=False if family == "qwen3" else None,
    )  # fmt: skip
    reply, final = await reply_to(router, request)
    assert reply.tool_calls == () and final.finish_reason in ("stop", "length")


def test_every_family_template_is_a_fixture() -> None:
    assert {f.template for f in FAMILIES.values()} <= {
        p.name for p in Path(__file__).parent.glob("templates/*")
    }
