"""Every body the coding agents sent (tests/fixtures/agents/, recorded by tests/test_agents.py) is
served: replayed against the app in-process, each is answered 200 on its route, never refused. And the
key paths that the fixtures compare are what they say."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from tests import agent_fixtures
from tests.inprocess import serve_in_process

CLIENTS = sorted(path.stem for path in agent_fixtures.FIXTURES.glob("*.json"))
RECORDED = [
    pytest.param(client, route, body, id=f"{client}-{route.strip('/').replace('/', '-')}-{index}")
    for client in CLIENTS
    for route, bodies in agent_fixtures.load(client)["bodies"].items()
    for index, body in enumerate(bodies)
]


@pytest.mark.parametrize(
    ("body", "paths"),
    [
        ({"model": "m"}, {"model"}),
        (
            {"messages": [{"role": "user", "content": "hi"}]},
            {"messages", "messages[].role", "messages[].content"},
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "text", "text": "hi", "cache_control": {}}]}
                ]
            },
            {
                "messages",
                "messages[].role",
                "messages[].content",
                "messages[].content[type=text].type",
                "messages[].content[type=text].text",
                "messages[].content[type=text].cache_control",
            },
        ),
        # A tool's schema, a call's arguments and the client's metadata are data: not walked into.
        (
            {"tools": [{"name": "f", "input_schema": {"type": "object", "properties": {"x": {}}}}]},
            {"tools", "tools[].name", "tools[].input_schema"},
        ),
        (
            {"content": [{"type": "tool_use", "input": {"command": "ls"}}]},
            {"content", "content[type=tool_use].type", "content[type=tool_use].input"},
        ),
        ({"metadata": {"user_id": "u"}}, {"metadata"}),
        # Responses' `input` is a list of items: protocol.
        (
            {"input": [{"type": "message", "role": "user"}]},
            {"input", "input[type=message].type", "input[type=message].role"},
        ),
    ],
)
def test_key_paths(body: dict[str, Any], paths: set[str]) -> None:
    assert agent_fixtures.key_paths(body) == paths


def test_trimmed_keeps_every_key_and_cuts_long_text() -> None:
    body = {"system": "x" * 1000, "messages": [{"role": "user", "content": "short"}]}
    cut = agent_fixtures.trimmed(body)
    assert agent_fixtures.key_paths(cut) == agent_fixtures.key_paths(body)
    assert len(cut["system"]) < 200
    assert cut["messages"][0]["content"] == "short"


def test_a_new_field_is_caught(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(agent_fixtures, "FIXTURES", tmp_path)
    agent_fixtures.save("client", "1.0", [("/v1/messages", {"model": "m", "messages": []})])
    assert agent_fixtures.new_paths("client", [("/v1/messages", {"model": "m"})]) == []
    later = {"model": "m", "messages": [{"role": "system", "content": "x"}], "speed": "fast"}
    assert agent_fixtures.new_paths("client", [("/v1/messages", later)]) == [
        "messages[].content",
        "messages[].role",
        "speed",
    ]


def test_every_agent_has_fixtures() -> None:
    assert {"claude-code", "codex", "continue", "aider", "opencode"} <= set(CLIENTS)


@pytest.mark.anyio
@pytest.mark.parametrize(("client", "route", "body"), RECORDED)
async def test_recorded_bodies_are_served(
    client: str, route: str, body: dict[str, Any], tmp_path: Path
) -> None:
    models = tmp_path / "models.yaml"
    models.write_text("models:\n  agent-model:\n    model: ./nowhere\n")
    sent = copy.deepcopy(body)
    sent["model"] = "agent-model"
    async with serve_in_process(models) as server:
        reply = await server.client.post(route, json=sent)
        assert reply.status_code == 200, f"{client} on {route}: {reply.status_code} {reply.text[:2000]}"
        if not sent.get("stream"):
            json.loads(reply.text)
