"""Fuzzing a real server, bounded in count and time: property-based request bodies for every route
(no 5xx, every 4xx in its API's shape, the server still answers), and a stateful run of registry
edits over HTTP and the CLI (models.yaml always parses and holds exactly the aliases not deleted)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from heylook.registry.aliases import load_registry, untagged
from tests.server import RunningServer

FUZZ = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture], database=None
)
# Text that has broken servers: control characters, lone surrogates, NEL, YAML's booleans, tags.
NASTY = ["", " ", "\ud800", "a\u0085b", "x\ny", "yes", "on", "~", "tiny:latest", "../etc", "a" * 300, "\x00"]
text = st.one_of(st.text(max_size=40), st.sampled_from(NASTY))
numbers = st.one_of(
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0, -1, 1e-300, 1e308]),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, text)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=12,
)
models = st.sampled_from(["tiny", "tiny:latest", "nope", "", "org/repo"]) | text
roles = st.sampled_from(["system", "user", "assistant", "tool", "developer", "robot"])
messages = st.lists(
    st.fixed_dictionaries(
        {"role": roles, "content": st.one_of(text, values)},
        optional={"tool_calls": values, "tool_call_id": text, "tool_name": text, "thinking": text},
    ),
    max_size=3,
)
SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}}
function = st.fixed_dictionaries(
    {"name": st.sampled_from(["f", "get_weather"]) | text},
    optional={"parameters": st.one_of(values, st.just(SCHEMA)), "description": text},
)
tools = st.lists(
    st.fixed_dictionaries({"type": st.sampled_from(["function", "x"]), "function": function}), max_size=2
)
option_names = st.sampled_from(
    ["temperature", "num_predict", "repeat_penalty", "typical_p", "num_ctx", "stop", "seed"]
)
# Fields either API takes, with wrong types and wrong values among the right ones.
FIELDS: dict[str, st.SearchStrategy] = {
    "temperature": numbers | values,
    "top_p": numbers,
    "top_k": numbers,
    "min_p": numbers,
    "typical_p": numbers,
    "max_tokens": numbers,
    "seed": numbers,
    "stop": st.one_of(text, st.lists(text, max_size=3), values),
    "stream": st.booleans() | values,
    "tools": tools | values,
    "tool_choice": st.sampled_from(["auto", "none", "required"]) | values,
    "response_format": values,
    "format": st.sampled_from(["json"]) | values,
    "think": st.booleans() | text,
    "reasoning_effort": text,
    "keep_alive": numbers | text,
    "options": st.dictionaries(option_names, numbers | values, max_size=4),
    "context": st.lists(numbers, max_size=3) | values,
    "raw": st.booleans(),
    "suffix": text,
    "n": numbers,
    "logprobs": st.booleans() | st.integers(-2, 25) | values,
    "top_logprobs": st.integers(-2, 25) | values,
    "parallel_tool_calls": values,
}
ROUTES = [
    ("POST", "/v1/chat/completions", {"messages": messages}),
    ("POST", "/v1/completions", {"prompt": text}),
    ("POST", "/api/chat", {"messages": messages}),
    ("POST", "/api/generate", {"prompt": text}),
    ("POST", "/api/show", {}),
    ("POST", "/api/embed", {"input": text}),
    ("POST", "/api/copy", {"source": models, "destination": text}),
    ("DELETE", "/api/delete", {}),
]


@st.composite
def bodies(draw: st.DrawFn, required: dict[str, st.SearchStrategy]) -> dict[str, Any]:
    body = {"model": draw(models)}
    body |= {key: draw(strategy) for key, strategy in required.items()}
    chosen = draw(st.lists(st.sampled_from(sorted(FIELDS)), max_size=5, unique=True))
    body |= {key: draw(FIELDS[key]) for key in chosen}
    if draw(st.booleans()):  # keep generations short: the tiny model, a few tokens
        body |= {"max_tokens": 2, "options": {"num_predict": 2}}
    return body


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("fuzzed")
    (root / "models.yaml").write_text(yaml.safe_dump({"models": {"tiny": {"model": str(tiny_model_dir)}}}))
    running = RunningServer(root / "models.yaml", root / "server.log", "--max-tokens-limit", "4")
    yield running
    running.stop()


def check(response: httpx.Response) -> None:
    """No 5xx but the honest ones (501: not built yet); a 4xx in its API's shape."""
    assert response.status_code < 500 or response.status_code == 501, response.text[:500]
    if response.status_code >= 400:
        body = response.json()
        if response.request.url.path.startswith("/api/"):
            assert isinstance(body.get("error"), str) and body["error"], body
        else:
            assert body["error"]["message"] and body["error"]["type"], body


def send(server: RunningServer, method: str, path: str, body: Any) -> httpx.Response:
    raw = json.dumps(body)  # a lone surrogate goes out as its \\ud800 escape, as a client would send it
    headers = {"Content-Type": "application/json"}
    with httpx.Client(timeout=60) as client:
        response = client.request(method, f"{server.base_url}{path}", content=raw, headers=headers)
        response.read()
    return response


@pytest.mark.parametrize(("method", "path", "required"), ROUTES, ids=[f"{m} {p}" for m, p, _ in ROUTES])
def test_any_body_gets_an_answer_in_shape(fuzzed: RunningServer, method: str, path: str, required) -> None:
    @FUZZ
    @given(body=bodies(required))
    def fuzz(body: dict[str, Any]) -> None:
        check(send(fuzzed, method, path, body))

    fuzz()
    assert httpx.get(f"{fuzzed.base_url}/health").status_code == 200
    load_registry(fuzzed.models)  # still parses, whatever /api/copy and /api/delete were sent


@FUZZ
@given(raw=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_any_bytes_get_an_answer_in_shape(fuzzed: RunningServer, raw: bytes) -> None:
    for path in ("/v1/chat/completions", "/api/chat"):
        response = httpx.post(
            f"{fuzzed.base_url}{path}", content=raw, headers={"Content-Type": "application/json"}
        )
        check(response)


@FUZZ
@given(name=text)
def test_any_model_name_in_a_path_gets_an_answer(fuzzed: RunningServer, name: str) -> None:
    try:
        response = httpx.get(f"{fuzzed.base_url}/v1/models/{name}")
    except (httpx.InvalidURL, UnicodeEncodeError):
        return  # not a URL a client can send
    check(response)


# --- registry edits over HTTP and the CLI, in any order -------------------------------------------------


def cli(*args: str) -> int:
    """`heylook ...` in this process: the real command line, without a process start per step."""
    from heylook.cli import aliases  # noqa: F401 (registers the commands)
    from heylook.cli.common import CommandFailed, app

    try:
        code = app(list(args), result_action="return_value")
    except CommandFailed as failure:
        return failure.code
    except SystemExit as exit:  # cyclopts on a command line it cannot parse
        return int(exit.code or 0)
    return code if isinstance(code, int) else 0


class RegistryEdits(RuleBasedStateMachine):
    server: RunningServer
    made = 0  # edits that went through, over every run: a run of refusals alone proves little
    names = st.one_of(st.text(min_size=1, max_size=12), st.sampled_from(NASTY))

    def __init__(self) -> None:
        super().__init__()
        self.expected = {"tiny"}

    @property
    def path(self) -> Path:
        return self.server.models

    @rule(name=names)
    def copy_over_http(self, name: str) -> None:
        response = send(self.server, "POST", "/api/copy", {"source": "tiny", "destination": name})
        check(response)
        if response.status_code == 200:
            self.expected.add(untagged(name))
            RegistryEdits.made += 1

    @rule(name=names)
    def delete_over_http(self, name: str) -> None:
        if untagged(name) == "tiny":
            return
        response = send(self.server, "DELETE", "/api/delete", {"model": name})
        check(response)
        if response.status_code == 200:
            self.expected.discard(load_name(name, self.expected))

    @rule(name=names)
    def create_with_the_cli(self, name: str) -> None:
        if (
            cli("create", "--alias", name, "--model", "org/some-model", "--force", "--models", str(self.path))
            == 0
        ):
            self.expected.add(name)

    @rule(name=names)
    def remove_with_the_cli(self, name: str) -> None:
        if name != "tiny" and cli("rm", name, "--models", str(self.path)) == 0:
            self.expected.discard(name)

    @invariant()
    def models_yaml_holds_exactly_the_aliases_not_deleted(self) -> None:
        assert set(load_registry(self.path).aliases) == self.expected
        assert self.path.read_text().startswith("# my models"), "the user's comment stays"
        assert httpx.get(f"{self.server.base_url}/health").status_code == 200

    def teardown(self) -> None:
        for name in self.expected - {"tiny"}:
            cli("rm", name, "--models", str(self.path))


def load_name(name: str, known: set[str]) -> str:
    """The alias a name reaches, as the server resolves it (`x:latest` is `x`, and the other way)."""
    for candidate in (name, untagged(name), f"{untagged(name)}:latest"):
        if candidate in known:
            return candidate
    return name


@pytest.fixture(scope="module")
def edited(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("edited")
    (root / "models.yaml").write_text(
        "# my models\n" + yaml.safe_dump({"models": {"tiny": {"model": str(tiny_model_dir)}}})
    )
    running = RunningServer(root / "models.yaml", root / "server.log")
    yield running
    running.stop()


def test_registry_edits_in_any_order_lose_nothing(edited: RunningServer) -> None:
    RegistryEdits.server = edited
    runner = RegistryEdits.TestCase
    runner.settings = settings(max_examples=4, stateful_step_count=12, deadline=None, database=None)
    runner().runTest()
    assert RegistryEdits.made > 0
