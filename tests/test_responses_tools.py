"""Codex CLI's tools through the app, in-process: its recorded first request (a namespace of
functions, a hosted web_search) is served with the namespace's functions offered flattened and
web_search dropped (said in X-Heylook-Dropped-Tools); the model's call to a namespace's function
goes back with `name` and `namespace` apart, as Codex routes it, and Codex's next turn (that call
and its output sent back) is taken. Chat completions drop the tools that are not functions too."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from heylook.registry.aliases import Alias
from heylook.types import (
    Chunk,
    FinalChunk,
    GenerationRequest,
    Timings,
    ToolCall,
    ToolCallChunk,
    ToolCallDone,
    Usage,
)
from tests.inprocess import InProcessServer, ScriptedGeneration, ScriptedProvider, serve_in_process

CODEX = json.loads(
    (Path(__file__).parent / "fixtures" / "clients" / "codex" / "0.171.0-first-turn.json").read_text()
)
SPAWN = ToolCall("multi_agent_v1__spawn_agent", '{"message": "list files"}', "call_spawn")


@dataclass
class CallingGeneration(ScriptedGeneration):
    """A model that calls one tool."""

    async def chunks(self) -> AsyncGenerator[Chunk, None]:
        yield ToolCallChunk(0, SPAWN.arguments, id=SPAWN.id, name=SPAWN.name)
        yield ToolCallDone(0, SPAWN)
        yield FinalChunk("tool_calls", Usage(prompt_tokens=1, completion_tokens=1), Timings())


@dataclass
class CallingProvider(ScriptedProvider):
    async def start(self, alias: Alias, request: GenerationRequest) -> ScriptedGeneration:
        self.started.append(request)
        return CallingGeneration(request, alias.name, [])


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[InProcessServer]:
    models = tmp_path / "models.yaml"
    models.write_text(yaml.safe_dump({"models": {"smollm2": {"model": str(tmp_path / "unused")}}}))
    async with serve_in_process(models, provider=CallingProvider()) as served:
        yield served


async def _events(app: InProcessServer, body: dict[str, Any]) -> tuple[dict[str, str], list[dict[str, Any]]]:
    async with app.client.stream("POST", "/v1/responses", json=body) as reply:
        assert reply.status_code == 200, await reply.aread()
        lines = [line async for line in reply.aiter_lines() if line.startswith("data: ")]
        return dict(reply.headers), [json.loads(line.removeprefix("data: ")) for line in lines]


@pytest.mark.anyio
async def test_codex_first_turn_and_its_next(app: InProcessServer) -> None:
    headers, bodies = await _events(app, CODEX)
    assert headers["x-heylook-dropped-tools"] == "web_search"
    [asked] = app.provider.started
    assert "multi_agent_v1__spawn_agent" in [tool.name for tool in asked.tools]
    assert asked.dropped_tools == ("web_search",)
    done = [body["item"] for body in bodies if body["type"] == "response.output_item.done"]
    assert done == [
        {"type": "function_call", "id": done[0]["id"], "call_id": "call_spawn", "name": "spawn_agent",
         "arguments": SPAWN.arguments, "status": "completed", "namespace": "multi_agent_v1"},
    ]  # fmt: skip
    assert bodies[-1]["type"] == "response.completed"
    # Codex's next turn: its history, the call as it read it and the call's output, sent back.
    later = {**CODEX, "input": [
        *CODEX["input"],
        {"type": "function_call", "name": "spawn_agent", "namespace": "multi_agent_v1",
         "arguments": SPAWN.arguments, "call_id": "call_spawn"},
        {"type": "function_call_output", "call_id": "call_spawn", "output": "agent started"},
    ]}  # fmt: skip
    _, bodies = await _events(app, later)
    assert bodies[-1]["type"] == "response.completed"
    turns = app.provider.started[-1].prompt.messages  # type: ignore[union-attr]
    assert turns[-2].tool_calls == (SPAWN,)
    assert (turns[-1].role, turns[-1].tool_name, turns[-1].content) == ("tool", SPAWN.name, "agent started")


@pytest.mark.anyio
async def test_chat_completions_drop_custom_and_hosted_tools(app: InProcessServer) -> None:
    tools = [
        {"type": "function", "function": {"name": "f"}},
        {"type": "custom", "custom": {"name": "apply_patch", "format": {"type": "text"}}},
        {"type": "web_search"},
    ]
    body = {"model": "smollm2", "messages": [{"role": "user", "content": "hi"}], "tools": tools}
    reply = await app.client.post("/v1/chat/completions", json=body)
    assert reply.status_code == 200, reply.text
    assert reply.headers["x-heylook-dropped-tools"] == "custom,web_search"
    assert [tool.name for tool in app.provider.started[-1].tools] == ["f"]
