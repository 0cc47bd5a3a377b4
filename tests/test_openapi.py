"""The API documents itself: /openapi.json is a valid OpenAPI 3.1 document made from the wire
types, names every route the app serves, describes what the writers really write, and a live
server driven from it by schemathesis answers no 5xx and nothing the document does not describe."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, given, settings
from openapi_spec_validator import validate as validate_spec
from pydantic import BaseModel
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.routing import Route

from heylook.errors import InvalidRequest, ModelNotFound
from heylook.protocols import anthropic as anthropic_protocol
from heylook.protocols import ollama as ollama_protocol
from heylook.protocols import openai as openai_protocol
from heylook.protocols import responses as responses_protocol
from heylook.protocols.errors import anthropic_error_body, ollama_error_body, openai_error_body
from heylook.types import (
    FinalChunk,
    Logprob,
    Message,
    ModelFacts,
    Reply,
    TextChunk,
    ThinkingChunk,
    Timings,
    TokenLogprob,
    ToolCall,
    ToolCallChunk,
    ToolCallDone,
    Usage,
)
from heylook.wire import anthropic as anthropic_wire
from heylook.wire import ollama as ollama_wire
from heylook.wire import openai as openai_wire
from heylook.wire import openapi
from heylook.wire import responses as responses_wire
from heylook.wire.openapi import OPERATIONS, openapi_document
from tests.server import RunningServer
from tests.test_rerank import build_cross_encoder

FINAL = FinalChunk("stop", Usage(3, 2), Timings(load_ns=1, prompt_eval_ns=2, eval_ns=3, total_ns=6))
CALL = ToolCall("get_weather", '{"city": "Paris"}', "call_1")
HI = Logprob("Hi", -0.1, b"Hi", (TokenLogprob("Hi", -0.1, b"Hi"), TokenLogprob("\ufffd", -3.0, b"\xc3")))
REPLY = Reply(content="Hi", thinking="Hmm", tool_calls=(CALL,))
# With logprobs asked for: every token's, and the final chunk saying they were.
SCORED = dataclasses.replace(REPLY, logprobs=(HI, Logprob("!", -9999.0, b"!")))
ASKED = dataclasses.replace(FINAL, logprobs=True)
MOMENT = datetime(2026, 1, 1, tzinfo=timezone.utc)


def test_the_document_is_valid_openapi_3_1() -> None:
    document = openapi_document()
    validate_spec(document)
    assert document["openapi"] == "3.1.0"
    assert document["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"
    json.dumps(document)  # plain JSON, nothing else


def test_every_route_the_app_serves_is_documented() -> None:
    from heylook.app import create_app
    from heylook.registry.aliases import parse_registry
    from heylook.router import ModelRouter

    app = create_app(ModelRouter(parse_registry("models: {}\n", Path("/tmp/models.yaml"))))
    served = {
        (route.path.replace(":path", ""), method.lower())
        for route in app.routes
        if isinstance(route, Route) and not route.path.startswith("/docs/assets/")
        for method in route.methods or ()
        if method != "HEAD" or route.path.startswith("/api/blobs")
    }
    documented = {(path, method) for path, item in openapi_document()["paths"].items() for method in item}
    assert served == documented


def test_requests_carry_every_setting_with_its_bounds() -> None:
    schemas = openapi_document()["components"]["schemas"]
    chat = schemas["ChatCompletionRequest"]["properties"]
    assert chat["temperature"]["maximum"] == 100.0 and chat["temperature"]["minimum"] == 0.0
    assert "max_completion_tokens" in chat and "num_ctx" not in chat
    options = schemas["Options"]["properties"]
    assert options["num_ctx"]["minimum"] == 1 and options["repeat_penalty"]["description"]
    assert schemas["Options"]["additionalProperties"] is True  # llama.cpp's other options are ignored


def _chat_writer(stream: bool) -> openai_protocol.ChatWriter:
    return openai_protocol.ChatWriter(
        id="chatcmpl-1", created=1, model="m", stream=stream, include_usage=stream
    )


def _model() -> dict[str, Any]:
    return openai_protocol.model_body("m", 0)


def _completion_writer(stream: bool) -> openai_protocol.CompletionWriter:
    return openai_protocol.CompletionWriter(id="c", created=1, model="m", stream=stream)


def _ollama_writer(kind: ollama_protocol.Kind) -> ollama_protocol.OllamaWriter:
    return ollama_protocol.OllamaWriter(model="m", kind=kind, clock=lambda: MOMENT)


def _streamed_chat() -> list[dict[str, Any]]:
    writer = _chat_writer(True)
    chunks = [TextChunk("Hi"), ThinkingChunk("Hmm"), ToolCallChunk(0, '{"ci', "call_1", "get_weather"),
              ToolCallChunk(0, 'ty": 1}'), TextChunk("Hi", logprobs=(HI,)),
              ThinkingChunk("Hmm", logprobs=(HI,)), ToolCallChunk(0, "}", logprobs=(HI,)),
              ToolCallDone(0, CALL, logprobs=(HI,))]  # fmt: skip
    return [*writer.opening(), *(b for c in chunks for b in writer.delta(c)), *writer.closing(ASKED)]


def _ollama_lines(kind: ollama_protocol.Kind) -> list[dict[str, Any]]:
    writer = _ollama_writer(kind)
    chunks = [TextChunk("Hi"), ThinkingChunk("Hmm"), ToolCallDone(0, CALL), TextChunk("Hi", logprobs=(HI,)),
              ToolCallChunk(0, "}", logprobs=(HI,)), ToolCallDone(0, CALL, logprobs=(HI,))]  # fmt: skip
    return [*(b for c in chunks for b in writer.delta(c)), *writer.closing(FINAL), writer.whole(REPLY, FINAL),
            writer.whole(SCORED, ASKED)]  # fmt: skip


def _anthropic_events() -> list[dict[str, Any]]:
    writer = anthropic_protocol.MessageWriter(id="msg_1", model="m", stream=True)
    chunks = [ThinkingChunk("Hmm"), TextChunk("Hi"), ToolCallChunk(0, '{"ci', "call_1", "get_weather"),
              ToolCallChunk(0, 'ty": 1}'), ToolCallDone(0, CALL)]  # fmt: skip
    stopped = dataclasses.replace(FINAL, stop_sequence="END")
    return [*writer.opening(3), *(b for c in chunks for b in writer.delta(c)), *writer.closing(stopped),
            writer.error(ModelNotFound("no", ["tiny"]))]  # fmt: skip


def _response_writer(stream: bool = False) -> responses_protocol.ResponsesWriter:
    return responses_protocol.ResponsesWriter(id="resp_1", created_at=1, model="m", stream=stream)


def _response_events() -> list[dict[str, Any]]:
    writer = _response_writer(stream=True)
    chunks = [ThinkingChunk("Hmm"), TextChunk("Hi"), ToolCallChunk(0, '{"ci', "call_1", "get_weather"),
              ToolCallChunk(0, 'ty": 1}'), ToolCallDone(0, CALL)]  # fmt: skip
    return [*writer.opening(), *(b for c in chunks for b in writer.delta(c)), *writer.closing(FINAL),
            writer.error(ModelNotFound("no", ["tiny"]))]  # fmt: skip


def _input_items() -> list[dict[str, Any]]:
    given = (
        Message("user", "hi"),
        Message("assistant", "x", (CALL,), thinking="Hmm"),
        Message("tool", "21", tool_call_id="call_1"),
    )
    return [responses_protocol.input_items_body(responses_protocol.input_items(given), 20, "desc", None)]


FACTS = ModelFacts(name="tiny", source="org/tiny", family="llama", parameter_count=1000, size_bytes=10)


@pytest.mark.parametrize(
    ("model", "bodies"),
    [
        (
            openai_wire.ChatCompletion,
            lambda: [_chat_writer(False).whole(REPLY, FINAL), _chat_writer(False).whole(SCORED, ASKED)],
        ),
        (openai_wire.ChatCompletionChunk, _streamed_chat),
        (
            openai_wire.Completion,
            lambda: [
                _completion_writer(False).whole(REPLY, FINAL),
                _completion_writer(False).whole(SCORED, ASKED),
                *_completion_writer(True).delta(TextChunk("x")),
                *_completion_writer(True).delta(TextChunk("Hi", logprobs=(HI,))),
                *_completion_writer(True).closing(FINAL),
            ],
        ),
        (openai_wire.OpenAIModelList, lambda: [openai_protocol.model_list_body([_model()])]),
        (openai_wire.OpenAIError, lambda: [openai_error_body(InvalidRequest("bad", param="model"))]),
        (ollama_wire.ChatResponse, lambda: _ollama_lines("chat")),
        (ollama_wire.GenerateResponse, lambda: _ollama_lines("generate")),
        (ollama_wire.OllamaModelList, lambda: [ollama_protocol.tags_body([FACTS])]),
        (ollama_wire.ShowResponse, lambda: [ollama_protocol.show_body(FACTS)]),
        (
            ollama_wire.RunningList,
            lambda: [ollama_protocol.ps_body([ollama_protocol.Running(FACTS, 10, False, float("inf"), 64)])],
        ),
        (ollama_wire.OllamaError, lambda: [ollama_error_body(ModelNotFound("no", ["tiny"]))]),
        (
            anthropic_wire.Message,
            lambda: [anthropic_protocol.MessageWriter(id="msg_1", model="m").whole(REPLY, FINAL)],
        ),
        (anthropic_wire.StreamEvent, _anthropic_events),
        (anthropic_wire.AnthropicError, lambda: [anthropic_error_body(InvalidRequest("bad", param="model"))]),
        (anthropic_wire.TokenCount, lambda: [anthropic_protocol.count_body(12)]),
        (responses_wire.Response, lambda: [_response_writer().whole(REPLY, FINAL)]),
        (responses_wire.ResponseStreamEvent, _response_events),
        (responses_wire.DeletedResponse, lambda: [responses_protocol.deleted_body("resp_1")]),
        (responses_wire.InputItemList, _input_items),
    ],
)  # fmt: skip
def test_what_the_writers_write_is_what_the_document_says(model: type[BaseModel], bodies: Any) -> None:
    for body in bodies():
        model.model_validate(body)


def test_each_operation_is_unique_and_tagged() -> None:
    keys = [(operation.path, operation.method) for operation in OPERATIONS]
    assert len(keys) == len(set(keys))
    ids = [item["operationId"] for path in openapi_document()["paths"].values() for item in path.values()]
    assert len(ids) == len(set(ids))


# --- a live server, driven from the document ------------------------------------------------------


@pytest.fixture(scope="module")
def documented_server(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, embedding_model_dir: Path
) -> Iterator[RunningServer]:
    """Its own server (schemathesis may copy and delete aliases): the examples' alias `smollm2` is
    the tiny model, `all-minilm` the shipped embedding model, and replies are capped at a few tokens
    so that generated bodies stay quick."""
    folder = tmp_path_factory.mktemp("documented")
    registry = {
        "models": {
            "smollm2": {"model": str(tiny_model_dir)},
            "all-minilm": {"model": str(embedding_model_dir)},
            "reranker": {"model": str(build_cross_encoder(folder / "reranker"))},
        }
    }
    (folder / "models.yaml").write_text(yaml.safe_dump(registry))
    running = RunningServer(folder / "models.yaml", folder / "server.log", "--max-tokens-limit", "4")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def live_schema(documented_server: RunningServer) -> Any:
    document = httpx.get(f"{documented_server.base_url}/openapi.json", timeout=30).json()
    schema = schemathesis.openapi.from_dict(document)
    schema.config.update(base_url=documented_server.base_url)
    return schema


# Not the pages (HTML) or the metrics (text): nothing there to conform to but a 200. Invalid
# input (negative) only where there is input to make invalid.
LIVE = [
    pytest.param(o.path, o.method, mode, id=f"{o.method.upper()} {o.path} {mode}")
    for o in OPERATIONS
    if o.path not in ("/docs", "/redoc", "/metrics")
    for mode in schemathesis.GenerationMode
    if mode == schemathesis.GenerationMode.POSITIVE or o.request or o.request_schema
]
# What is documented as not served answers 501 by design; everything else, never a 5xx.
NOT_SERVED = {(o.path, o.method) for o in OPERATIONS if o.path in openapi.NOT_SERVED}
CONFORMANCE = [status_code_conformance, content_type_conformance, response_schema_conformance]


def _served_alias(case: schemathesis.Case) -> schemathesis.Case:
    """A body naming a model names the alias served, so that valid bodies generate and invalid ones
    are refused for what is wrong with them, not turned away as an unknown model (a 404)."""
    generates = case.path in (
        "/v1/chat/completions",
        "/v1/responses",
        "/v1/messages",
        "/v1/messages/count_tokens",
        "/v1/completions",
        "/api/chat",
        "/api/generate",
        "/api/show",
        "/tokenize",
        "/detokenize",
    )
    embeds = case.path in ("/v1/embeddings", "/api/embed", "/api/embeddings")
    ranks = case.path in ("/v1/rerank", "/rerank")
    named = isinstance(case.body, dict) and isinstance(case.body.get("model"), str)
    if (generates or embeds or ranks) and named:
        case.body = {**case.body, "model": "all-minilm" if embeds else "reranker" if ranks else "smollm2"}
    return case


@pytest.mark.parametrize(("path", "method", "mode"), LIVE)
def test_a_live_server_answers_as_documented(
    live_schema: Any, path: str, method: str, mode: schemathesis.GenerationMode
) -> None:
    """Bodies made from the document, valid ones and (negative) invalid ones: no 5xx, every status,
    content type and body as documented, and every invalid body refused with a 4xx."""
    operation = live_schema[path][method.upper()]
    checks = [*CONFORMANCE, negative_data_rejection]
    if (path, method) not in NOT_SERVED:
        checks.append(not_a_server_error)

    @given(case=operation.as_strategy(generation_mode=mode).map(_served_alias))
    @settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    def drive(case: schemathesis.Case) -> None:
        response = case.call_and_validate(checks=checks, timeout=60)
        if (path, method) in NOT_SERVED:
            assert response.status_code in (400, 501)

    drive()


@pytest.mark.parametrize(
    "path",
    [
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/messages",
        "/v1/responses",
        "/api/chat",
        "/api/generate",
    ],
)
def test_the_documented_examples_generate(documented_server: RunningServer, path: str) -> None:
    """The example bodies /docs offers reach a real model and answer as documented."""
    document = openapi_document()
    ref = document["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    example = document["components"]["schemas"][ref.rsplit("/", 1)[1]]["examples"][0]
    response = httpx.post(
        f"{documented_server.base_url}{path}", json={**example, "stream": False}, timeout=120
    )
    assert response.status_code == 200, response.text
    reply = {
        "/v1/chat/completions": openai_wire.ChatCompletion,
        "/v1/completions": openai_wire.Completion,
        "/v1/messages": anthropic_wire.Message,
        "/v1/responses": responses_wire.Response,
        "/api/chat": ollama_wire.ChatResponse,
        "/api/generate": ollama_wire.GenerateResponse,
    }[path]
    reply.model_validate(response.json())
