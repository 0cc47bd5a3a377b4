"""Embeddings from remote aliases end to end: a heylook server whose aliases point at a scriptable
OpenAI-compatible upstream (as `provider: openai`, and as Hugging Face's router), driven with the
openai and ollama clients and httpx. The upstream's /v1/embeddings answers; heylook passes its
vectors, their order and its usage on, and its errors in each API's shape. No model runs here."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
import yaml

import ollama
from tests.fake_upstream import Failure, FakeUpstream, fake_vector
from tests.server import RunningServer, free_port

UPSTREAM_KEY = "upstream-key-never-shown-4321"
HF_TOKEN = "hf_embed_token_never_shown_0123"
MODEL = "text-embed-up"  # the upstream's name for the model behind the alias `vectors`
WORDS = ["one", "two three", "four", "five six seven"]
approx = functools.partial(pytest.approx, rel=1e-6)  # heylook's vectors are float32


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream() as upstream:
        yield upstream


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, fake: FakeUpstream) -> Iterator[RunningServer]:
    folder = tmp_path_factory.mktemp("remote-embeddings")
    nowhere = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens: connection refused
    up = {"provider": "openai", "base_url": fake.base_url}
    models = {
        "vectors": {**up, "model": MODEL, "token_env": "UPSTREAM_KEY"},
        "slow": {**up, "model": "slow-up", "timeout": 1},
        "down": {"provider": "openai", "base_url": nowhere, "model": MODEL},
        "down-then-up": {"provider": "openai", "base_url": nowhere, "model": MODEL, "fallback": ["vectors"]},
        "hub": {"provider": "huggingface", "model": "BAAI/bge-small-en-v1.5:hf-inference"},
        "hub-no-token": {"provider": "huggingface", "model": "BAAI/bge-m3", "token_env": "NO_SUCH_TOKEN"},
    }
    path = folder / "models.yaml"
    path.write_text(yaml.safe_dump({"models": models}, sort_keys=False))
    env = {"UPSTREAM_KEY": UPSTREAM_KEY, "HF_TOKEN": HF_TOKEN, "HEYLOOK_HF_ROUTER": fake.base_url}
    running = RunningServer(path, folder / "server.log", env=env)
    yield running
    running.stop()


@pytest.fixture(autouse=True)
def _fresh(fake: FakeUpstream) -> None:
    fake.reset()


@pytest.fixture
def sdk(gateway: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.base_url}/v1", api_key="x", max_retries=0, timeout=30)


def sent(fake: FakeUpstream) -> dict[str, Any]:
    """The body of the one request the upstream received."""
    assert [r.path for r in fake.requests] == ["/v1/embeddings"]
    return fake.requests[0].body


def post(gateway: RunningServer, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{gateway.base_url}{path}", json=body, timeout=30)


# --- vectors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "inputs"),  # inputs: what the upstream is sent, and whose vectors come back in order
    [
        ("The sky is blue.", ["The sky is blue."]),
        (WORDS, WORDS),
        ([5, 6, 7], [[5, 6, 7]]),  # token ids go as lists of ints
        ([[1, 2], [3]], [[1, 2], [3]]),
    ],
    ids=["one string", "strings", "token ids", "lists of token ids"],
)
def test_the_openai_sdk_gets_the_upstreams_vectors_in_order(sdk, fake, given, inputs) -> None:
    # The SDK asks for base64 by default: heylook asks the upstream for floats, and encodes them.
    reply = sdk.embeddings.create(model="vectors", input=given)
    assert [item.embedding for item in reply.data] == [approx(fake_vector(item)) for item in inputs]
    assert [item.index for item in reply.data] == list(range(len(inputs)))
    words = sum(len(item) if isinstance(item, list) else len(item.split()) for item in inputs)
    assert reply.model == "vectors" and reply.usage.prompt_tokens == words == reply.usage.total_tokens
    body = sent(fake)
    assert body == {"model": MODEL, "input": inputs, "encoding_format": "float"}
    assert fake.requests[0].headers["authorization"] == f"Bearer {UPSTREAM_KEY}"


def test_dimensions_go_upstream(sdk, fake) -> None:
    reply = sdk.embeddings.create(model="vectors", input=["a b", "c"], dimensions=4, encoding_format="float")
    assert [item.embedding for item in reply.data] == [
        approx(fake_vector("a b", 4)),
        approx(fake_vector("c", 4)),
    ]
    assert sent(fake)["dimensions"] == 4


def test_the_ollama_client_embeds_through_the_upstream(gateway, fake) -> None:
    client = ollama.Client(host=gateway.base_url, timeout=30)
    # truncate: false cannot be said upstream: the upstream cuts (or refuses) as it does.
    reply = client.embed(model="vectors", input=["one", "two three", "four"], truncate=False)
    assert reply.embeddings == [approx(fake_vector(text)) for text in ("one", "two three", "four")]
    assert reply.model == "vectors" and reply.prompt_eval_count == 4 and reply.total_duration > 0
    assert sent(fake) == {"model": MODEL, "input": ["one", "two three", "four"], "encoding_format": "float"}


def test_ollamas_older_route_embeds_one_prompt(gateway, fake) -> None:
    response = post(gateway, "/api/embeddings", {"model": "vectors", "prompt": "Grass is green."})
    assert response.status_code == 200, response.text
    assert response.json() == {"embedding": approx(fake_vector("Grass is green."))}
    assert sent(fake)["input"] == ["Grass is green."]


def test_a_hugging_face_alias_embeds_through_the_router(sdk, fake) -> None:
    reply = sdk.embeddings.create(model="hub", input="hello")
    assert reply.data[0].embedding == approx(fake_vector("hello")) and reply.model == "hub"
    assert sent(fake)["model"] == "BAAI/bge-small-en-v1.5:hf-inference"
    assert fake.requests[0].headers["authorization"] == f"Bearer {HF_TOKEN}"


def test_vectors_without_an_index_keep_the_order_given(sdk, fake) -> None:
    fake.embeddings_reply = {"data": [{"embedding": [1, 2]}, {"embedding": [3, 4]}]}
    reply = sdk.embeddings.create(model="vectors", input=["a", "b"], encoding_format="float")
    assert [item.embedding for item in reply.data] == [[1.0, 2.0], [3.0, 4.0]]
    assert reply.usage.prompt_tokens == 0  # the upstream said no usage


# --- errors ---------------------------------------------------------------------------------------

PATHS = {
    "/v1/embeddings": {"input": "one"},
    "/api/embed": {"input": "one"},
    "/api/embeddings": {"prompt": "one"},
}


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(
    ("alias", "failure", "status", "retry_after", "says"),
    [
        ("down", None, 502, None, "cannot reach"),  # connection refused
        ("down-then-up", None, 502, None, "cannot reach"),  # no fallback: other vectors differ
        ("vectors", Failure(429, {"Retry-After": "7"}), 429, "7", "rate-limiting"),
        ("vectors", Failure(503, {"Retry-After": "3"}), 503, "3", "unavailable"),
        ("vectors", Failure(404, body={"error": {"message": "no such model"}}), 404, None, MODEL),
        ("vectors", Failure(401), 502, None, "UPSTREAM_KEY"),
        ("vectors", Failure(400, body={"error": {"message": "input too long"}}), 400, None, "input too long"),
        ("vectors", Failure(500), 502, None, "(500)"),
        ("hub-no-token", None, 503, None, "NO_SUCH_TOKEN is not set"),
    ],
    ids=["refused", "no fallback", "429", "503", "404", "401", "400", "500", "no token"],
)
def test_upstream_errors_in_each_apis_shape(
    gateway, fake, path, alias, failure, status, retry_after, says
) -> None:
    if failure is not None:
        fake.fail(MODEL, failure)
    response = post(gateway, path, {"model": alias, **PATHS[path]})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    message = error if path.startswith("/api/") else error["message"]
    assert isinstance(message, str) and says in message
    if not path.startswith("/api/"):
        # OpenAI's types: a 429 is a rate limit on requests.
        assert error["type"] == {400: "invalid_request_error", 429: "requests"}.get(status, "server_error")
    assert response.headers.get("retry-after") == retry_after
    assert UPSTREAM_KEY not in response.text and HF_TOKEN not in response.text
    if alias == "hub-no-token":
        assert fake.requests == []  # not asked without a token


@pytest.mark.parametrize(
    "reply",
    [
        b"not json at all",
        {"object": "list"},
        {"data": None},
        {"data": [{"index": 0, "embedding": [0.5]}]},  # one vector for two inputs
        {"data": [{"index": i, "embedding": [0.5]} for i in range(3)]},  # three
        {"data": [{"index": 0, "embedding": "AAAAPw=="}, {"index": 1, "embedding": [0.5]}]},
        {"data": [{"index": 0, "embedding": ["x"]}, {"index": 1, "embedding": [0.5]}]},
    ],
    ids=["not json", "no data", "null data", "too few", "too many", "base64", "not numbers"],
)
def test_a_broken_upstream_reply_is_a_502(gateway, fake, reply) -> None:
    fake.embeddings_reply = reply
    for path in ("/v1/embeddings", "/api/embed"):
        response = post(gateway, path, {"model": "vectors", "input": ["a", "b"]})
        assert response.status_code == 502, response.text


def test_a_slow_upstream_is_a_504(gateway, fake) -> None:
    fake.hang = 2.0  # the alias's timeout is 1 s
    response = post(gateway, "/v1/embeddings", {"model": "slow", "input": "one"})
    assert response.status_code == 504 and "in time" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/rerank", {"query": "q", "documents": ["a"]}),
        ("/tokenize", {"content": "hello"}),
    ],
)
def test_reranking_and_tokenizing_stay_local_only(gateway, fake, path, body) -> None:
    response = post(gateway, path, {"model": "vectors", **body})
    assert response.status_code == 501 and "remote aliases" in response.text
    assert fake.requests == []
