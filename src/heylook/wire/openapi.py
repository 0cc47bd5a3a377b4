"""The OpenAPI 3.1 document, made from the wire types: every route of both APIs with its request
and response bodies, its streaming media types and its errors in the API's shape."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from heylook import __version__
from heylook import options as settings_table
from heylook.wire import anthropic, batches, embeddings, ollama, openai, rerank, tokens
from heylook.wire import responses as responses_api

Tag = Literal["OpenAI", "Ollama", "Anthropic", "Server"]
JSON, SSE, NDJSON, TEXT, HTML = (
    "application/json",
    "text/event-stream",
    "application/x-ndjson",
    "text/plain",
    "text/html",
)

# What any route may answer besides its own: the guards' refusals, limits and failures.
_COMMON_ERRORS = {
    400: "The body, a field or a header is wrong; the message names it.",
    401: "An API key is required (serve --api-key) and none or a wrong one was sent.",
    403: "A browser page on another origin, or an unknown Host (DNS rebinding), was refused.",
    408: "The body did not arrive in time.",
    413: "The body is larger than the server takes.",
    415: "A browser form post (not JSON) was refused.",
    500: "Something failed in the server; the message says what.",
}
_REMOTE_RERANKING = "The alias is served by a remote provider: reranking there is not served yet."
_REMOTE_TOKENIZER = "The alias is served by a remote provider, whose tokenizer is not here."
_REMOTE_EMBEDDINGS = "The alias is served by a remote provider: embeddings from those are not served yet."
_MODEL_ERRORS = {
    404: "No alias of that name in models.yaml.",
    502: "A remote provider failed or could not be reached.",
    503: "The server is busy (loading, or full): Retry-After says when to try again.",
    504: "Loading the model took too long.",
}


@dataclass(frozen=True)
class Operation:
    path: str
    method: Literal["get", "post", "delete", "head"]
    tag: Tag
    summary: str
    request: Callable[[], type[BaseModel]] | None = None  # made at call time (settings rows)
    # The 200 reply: a JSON model, and the models of streamed events (SSE) or lines (NDJSON).
    reply: type[BaseModel] | None = None
    streamed: tuple[str, type[BaseModel]] | None = None
    reply_media: str = JSON
    reply_schema: dict[str, Any] | None = None  # a reply no model describes
    errors: dict[int, str] = field(default_factory=dict)
    parameters: tuple[dict[str, Any], ...] = ()
    # A request body no model describes (a multipart form), with its media type.
    request_schema: dict[str, Any] | None = None
    request_media: str = JSON


def _fixed(model: type[BaseModel]) -> Callable[[], type[BaseModel]]:
    return lambda: model


_OBJECT = {"type": "object", "additionalProperties": True}
_MODEL_PARAMETER = {
    "name": "model",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "An alias from models.yaml.",
}

_DIGEST_PARAMETER = {"name": "digest", "in": "path", "required": True, "schema": {"type": "string"}}

# The Responses API (OpenAI's agents' API): filled in by its work.
_RESPONSE_ID = {"name": "response_id", "in": "path", "required": True, "schema": {"type": "string"}}
_NO_RESPONSE = {404: "No response of that id is stored (never, not with store, deleted, or expired)."}
_PAGE_PARAMETERS = (
    _RESPONSE_ID,
    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}},
    {"name": "order", "in": "query", "schema": {"type": "string", "enum": ["asc", "desc"]}},
    {"name": "after", "in": "query", "schema": {"type": "string"}, "description": "An item id."},
)
_RESPONSES_OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "/v1/responses", "post", "OpenAI", "Responses: a reply to input items, with tools, reasoning, state",
        request=responses_api.response_request, reply=responses_api.Response,
        streamed=(SSE, responses_api.ResponseStreamEvent),
        errors={**_MODEL_ERRORS, 404: "No alias of that name, or previous_response_id is not stored."},
    ),
    Operation(
        "/v1/responses/{response_id}", "get", "OpenAI", "A stored response", reply=responses_api.Response,
        errors=_NO_RESPONSE, parameters=(_RESPONSE_ID,),
    ),
    Operation(
        "/v1/responses/{response_id}", "delete", "OpenAI", "Delete a stored response",
        reply=responses_api.DeletedResponse, errors=_NO_RESPONSE, parameters=(_RESPONSE_ID,),
    ),
    Operation(
        "/v1/responses/{response_id}/input_items", "get", "OpenAI", "A stored response's input items",
        reply=responses_api.InputItemList, errors=_NO_RESPONSE, parameters=_PAGE_PARAMETERS,
    ),
)  # fmt: skip
# Anthropic's Messages API: filled in by its work.
_REMOTE_COUNTING = "The alias is served by a remote provider, whose tokenizer and template are not here."
_ANTHROPIC_OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "/v1/messages", "post", "Anthropic", "Messages: a reply to a conversation, with tools and thinking",
        request=_fixed(anthropic.MessagesRequest), reply=anthropic.Message,
        streamed=(SSE, anthropic.StreamEvent), errors=_MODEL_ERRORS,
    ),
    Operation(
        "/v1/messages/count_tokens", "post", "Anthropic",
        "The prompt's tokens, as the model's template renders it (system and tools included)",
        request=_fixed(anthropic.CountTokensRequest), reply=anthropic.TokenCount,
        errors={**_MODEL_ERRORS, 501: _REMOTE_COUNTING},
    ),
)  # fmt: skip

# OpenAI's Files and Batch API (heylook.batches).
_FILE_ID = {"name": "file_id", "in": "path", "required": True, "schema": {"type": "string"}}
_BATCH_ID = {"name": "batch_id", "in": "path", "required": True, "schema": {"type": "string"}}
_LIST_PARAMETERS = (
    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}},
    {"name": "after", "in": "query", "schema": {"type": "string"}, "description": "An id of the last page."},
)
_NO_FILE = {404: "No file of that id."}
_NO_BATCH = {404: "No batch of that id."}
_FILE_FORM = {
    "schema": {
        "type": "object",
        "required": ["file", "purpose"],
        "properties": {
            "file": {
                "type": "string",
                "format": "binary",
                "contentMediaType": "application/octet-stream",
                "description": "JSON lines: custom_id, method (POST), url (the batch's endpoint), body.",
            },
            "purpose": {"type": "string", "enum": ["batch"]},
        },
    },
}
_BATCH_OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "/v1/files", "post", "OpenAI", "Upload a batch's input file (JSON lines)",
        request_schema=_FILE_FORM, request_media="multipart/form-data", reply=batches.FileObject,
        errors={413: "The file is larger than one file may be, or the stored files would pass their bound.",
                415: "The body is not multipart/form-data."},
    ),
    Operation(
        "/v1/files", "get", "OpenAI", "The stored files, newest first", reply=batches.FileList,
        parameters=(*_LIST_PARAMETERS, {"name": "purpose", "in": "query", "schema": {"type": "string"}}),
    ),
    Operation(
        "/v1/files/{file_id}", "get", "OpenAI", "A stored file", reply=batches.FileObject, errors=_NO_FILE,
        parameters=(_FILE_ID,),
    ),
    Operation(
        "/v1/files/{file_id}", "delete", "OpenAI", "Delete a stored file", reply=batches.FileDeleted,
        errors=_NO_FILE, parameters=(_FILE_ID,),
    ),
    Operation(
        "/v1/files/{file_id}/content", "get", "OpenAI", "A stored file's bytes",
        reply_media="application/jsonl", errors=_NO_FILE, parameters=(_FILE_ID,),
    ),
    Operation(
        "/v1/batches", "post", "OpenAI", "Start a batch: its requests are answered behind interactive ones",
        request=_fixed(batches.BatchCreateRequest), reply=batches.Batch,
        errors={503: "As many batches are running as are kept: Retry-After says when to try again."},
    ),
    Operation("/v1/batches", "get", "OpenAI", "The batches, newest first", reply=batches.BatchList,
              parameters=_LIST_PARAMETERS),
    Operation(
        "/v1/batches/{batch_id}", "get", "OpenAI", "A batch", reply=batches.Batch, errors=_NO_BATCH,
        parameters=(_BATCH_ID,),
    ),
    Operation(
        "/v1/batches/{batch_id}/cancel", "post", "OpenAI", "Cancel a batch: its running line stops",
        reply=batches.Batch, errors=_NO_BATCH, parameters=(_BATCH_ID,),
    ),
)  # fmt: skip

# /v1/chat/completions/multipart's form: the chat body as JSON text, and image files.
_CHAT_FORM = {
    "schema": {
        "type": "object",
        "required": ["request"],
        "properties": {
            "request": {
                "type": "string",
                "description": "The body /v1/chat/completions takes, as JSON text (a text or a file part).",
            },
            "images": {
                "type": "array",
                # format: binary too, for Swagger UI's file pickers.
                "items": {
                    "type": "string",
                    "format": "binary",
                    "contentMediaType": "application/octet-stream",
                },
                "description": "Image files (PNG, JPEG, WebP, GIF...), appended in order to the last user "
                "message; `image` is taken too.",
            },
        },
    },
    "encoding": {"request": {"contentType": "application/json, text/plain"}},
}

OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "/v1/chat/completions", "post", "OpenAI", "Chat: a reply to messages, with tools and reasoning",
        request=openai.chat_completion_request, reply=openai.ChatCompletion,
        streamed=(SSE, openai.ChatCompletionChunk), errors=_MODEL_ERRORS,
    ),
    Operation(
        "/v1/chat/completions/multipart", "post", "OpenAI",
        "Chat with image files: a request part (the chat body as JSON) and image file parts",
        request_schema=_CHAT_FORM, request_media="multipart/form-data", reply=openai.ChatCompletion,
        streamed=(SSE, openai.ChatCompletionChunk),
        errors={**_MODEL_ERRORS, 415: "The body is not multipart/form-data."},
    ),
    Operation(
        "/v1/completions", "post", "OpenAI", "Completion: text after a raw prompt",
        request=openai.completion_request, reply=openai.Completion, streamed=(SSE, openai.Completion),
        errors=_MODEL_ERRORS,
    ),
    Operation(
        "/v1/embeddings", "post", "OpenAI", "Embeddings of texts or token ids",
        request=_fixed(embeddings.EmbeddingRequest), reply=embeddings.EmbeddingList,
        errors={**_MODEL_ERRORS, 501: _REMOTE_EMBEDDINGS},
    ),
    Operation(
        "/tokenize", "post", "Server", "Token ids of a text or a conversation (llama-server's, vLLM's shape)",
        request=_fixed(tokens.TokenizeRequest), reply=tokens.TokenizeResponse,
        errors={**_MODEL_ERRORS, 501: _REMOTE_TOKENIZER},
    ),
    Operation(
        "/detokenize", "post", "Server", "The text of token ids",
        request=_fixed(tokens.DetokenizeRequest), reply=tokens.DetokenizeResponse,
        errors={**_MODEL_ERRORS, 501: _REMOTE_TOKENIZER},
    ),
    Operation(
        "/v1/rerank", "post", "Server", "Documents ranked by relevance to a query (a cross-encoder)",
        request=_fixed(rerank.RerankRequest), reply=rerank.RerankResponse,
        errors={**_MODEL_ERRORS, 501: _REMOTE_RERANKING},
    ),
    Operation(
        "/rerank", "post", "Server", "The same as /v1/rerank, where llama-server and vLLM also serve it",
        request=_fixed(rerank.RerankRequest), reply=rerank.RerankResponse,
        errors={**_MODEL_ERRORS, 501: _REMOTE_RERANKING},
    ),
    *_RESPONSES_OPERATIONS,
    *_ANTHROPIC_OPERATIONS,
    *_BATCH_OPERATIONS,
    Operation("/v1/models", "get", "OpenAI", "The aliases", reply=openai.OpenAIModelList),
    Operation(
        "/v1/models/{model}", "get", "OpenAI", "One alias", reply=openai.Model,
        errors={404: _MODEL_ERRORS[404]}, parameters=(_MODEL_PARAMETER,),
    ),
    Operation(
        "/api/chat", "post", "Ollama", "Chat (NDJSON unless stream is false); no messages loads the model",
        request=ollama.chat_request, reply=ollama.ChatResponse, streamed=(NDJSON, ollama.ChatResponse),
        errors=_MODEL_ERRORS,
    ),
    Operation(
        "/api/generate", "post", "Ollama", "Generate after a prompt (or fill in the middle); no prompt loads",
        request=ollama.generate_request, reply=ollama.GenerateResponse,
        streamed=(NDJSON, ollama.GenerateResponse), errors=_MODEL_ERRORS,
    ),
    Operation("/api/tags", "get", "Ollama", "The aliases, with their details", reply=ollama.OllamaModelList),
    Operation(
        "/api/show", "post", "Ollama", "One alias: details, parameters, template, capabilities",
        request=_fixed(ollama.ModelName), reply=ollama.ShowResponse, errors={404: _MODEL_ERRORS[404]},
    ),
    Operation("/api/ps", "get", "Ollama", "The models loaded now", reply=ollama.RunningList),
    Operation(
        "/api/copy", "post", "Ollama", "Copy an alias in models.yaml", request=_fixed(ollama.CopyRequest),
        reply_media="", errors={404: _MODEL_ERRORS[404], 503: _MODEL_ERRORS[503]},
    ),
    Operation(
        "/api/delete", "delete", "Ollama", "Delete an alias from models.yaml",
        request=_fixed(ollama.ModelName), reply_media="",
        errors={404: _MODEL_ERRORS[404], 503: _MODEL_ERRORS[503]},
    ),
    Operation(
        "/api/pull", "post", "Ollama", "Download a model from the Hub and make an alias for it",
        request=_fixed(ollama.PullRequest), reply=ollama.PullProgress,
        streamed=(NDJSON, ollama.PullProgress), errors={404: "No such model on the Hub.", **_MODEL_ERRORS},
    ),
    Operation("/api/version", "get", "Ollama", "The Ollama API version heylook covers", reply=ollama.Version),
    Operation(
        "/api/embed", "post", "Ollama", "Embeddings of one text or several",
        request=_fixed(embeddings.EmbedRequest), reply=embeddings.EmbedResponse,
        errors={**_MODEL_ERRORS, 501: _REMOTE_EMBEDDINGS},
    ),
    Operation(
        "/api/embeddings", "post", "Ollama", "The embedding of one prompt (Ollama's older route)",
        request=_fixed(embeddings.EmbeddingsRequest), reply=embeddings.EmbeddingsResponse,
        errors={**_MODEL_ERRORS, 501: _REMOTE_EMBEDDINGS},
    ),
    Operation(
        "/api/create", "post", "Ollama", "Create from a Modelfile: not served (use models.yaml)",
        errors={501: "Not served."},
    ),
    Operation("/api/push", "post", "Ollama", "Push to a registry: not served", errors={501: "Not served."}),
    Operation(
        "/api/blobs/{digest}", "post", "Ollama", "Upload a blob: not served", errors={501: "Not served."},
        parameters=(_DIGEST_PARAMETER,),
    ),
    Operation(
        "/api/blobs/{digest}", "head", "Ollama", "Whether a blob exists: not served",
        errors={501: "Not served."}, parameters=(_DIGEST_PARAMETER,),
    ),
    Operation("/", "get", "Server", "Ollama's probe: answers \"Ollama is running\"", reply_media=TEXT),
    Operation(
        "/health", "get", "Server", "The server and its loaded models and providers", reply_schema=_OBJECT
    ),
    Operation(
        "/v1/capabilities", "get", "Server", "The machine's memory, heylook's limits, what is loaded",
        reply_schema=_OBJECT,
    ),
    Operation("/metrics", "get", "Server", "Prometheus metrics", reply_media=TEXT),
    Operation(
        "/v1/performance", "get", "Server", "The live figures of /metrics as JSON; running batches",
        reply=batches.Performance,
    ),
    Operation("/openapi.json", "get", "Server", "This document", reply_schema=_OBJECT),
    Operation("/docs", "get", "Server", "Swagger UI", reply_media=HTML),
    Operation("/redoc", "get", "Server", "ReDoc", reply_media=HTML),
)  # fmt: skip

NOT_SERVED = {"/api/create", "/api/push", "/api/blobs/{digest}"}


def openapi_document() -> dict[str, Any]:
    """The whole API as OpenAPI 3.1 (made once per settings table)."""
    return _document(settings_table.SETTINGS)


@functools.cache
def _document(rows: Any) -> dict[str, Any]:
    models: list[type[BaseModel]] = [openai.OpenAIError, ollama.OllamaError, anthropic.AnthropicError]
    for operation in OPERATIONS:
        if operation.request:
            models.append(operation.request())
        models += [m for m in (operation.reply, operation.streamed[1] if operation.streamed else None) if m]
    unique = list(dict.fromkeys(models))
    refs, definitions = models_json_schema(
        [(model, "validation") for model in unique], ref_template="#/components/schemas/{model}"
    )
    ref = {model: refs[(model, "validation")] for model in unique}
    paths: dict[str, dict[str, Any]] = {}
    for operation in OPERATIONS:
        paths.setdefault(operation.path, {})[operation.method] = _operation(operation, ref)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "heylook",
            "version": __version__,
            "description": "The OpenAI API (/v1) and the Ollama API (/api) over local Hugging Face "
            "models and remote providers. Errors come in each API's shape: OpenAI's "
            '{"error": {"message", "type", "param", "code"}}, Ollama\'s {"error": "..."}.',
        },
        "tags": [
            {"name": "OpenAI", "description": "OpenAI's API: the openai SDK, LangChain, agents."},
            {"name": "Ollama", "description": "Ollama's API: the ollama client, Open WebUI."},
            {"name": "Anthropic", "description": "Anthropic's Messages API: the anthropic SDK, Claude Code."},
            {"name": "Server", "description": "Probes, metrics and this documentation."},
        ],
        "paths": paths,
        "components": {
            "schemas": definitions.get("$defs", {}),
            "securitySchemes": {
                "apiKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "With serve --api-key: Authorization: Bearer <key> (or x-api-key).",
                }
            },
        },
        # Every route takes the key when the server has one; the probes and the docs never need it.
        "security": [{"apiKey": []}, {}],
    }


def _operation(operation: Operation, ref: dict[type[BaseModel], dict[str, Any]]) -> dict[str, Any]:
    body: dict[str, Any] = {
        "tags": [operation.tag],
        "summary": operation.summary,
        "operationId": _operation_id(operation),
        "responses": _responses(operation, ref),
    }
    if operation.parameters:
        body["parameters"] = list(operation.parameters)
    if operation.request:
        body["requestBody"] = {
            "required": True,
            "content": {JSON: {"schema": ref[operation.request()]}},
        }
    elif operation.request_schema is not None:
        body["requestBody"] = {
            "required": True,
            "content": {operation.request_media: operation.request_schema},
        }
    elif operation.path in NOT_SERVED:
        body["requestBody"] = {"required": False, "content": {JSON: {"schema": _OBJECT}}}
    return body


def _operation_id(operation: Operation) -> str:
    words = [part for part in operation.path.replace("{", "").replace("}", "").split("/") if part]
    return "_".join([operation.method, *(w.replace(".", "_").replace("-", "_") for w in words)]) or "root"


def _responses(operation: Operation, ref: dict[type[BaseModel], dict[str, Any]]) -> dict[str, Any]:
    ollama_shaped = operation.path.startswith("/api/")
    anthropic_shaped = operation.path.startswith("/v1/messages")
    error_model = anthropic.AnthropicError if anthropic_shaped else openai.OpenAIError
    error_schema = ref[ollama.OllamaError if ollama_shaped else error_model]
    content: dict[str, Any] = {}
    if operation.reply is not None:
        content[JSON] = {"schema": ref[operation.reply]}
    elif operation.reply_schema is not None:
        content[JSON] = {"schema": operation.reply_schema}
    elif operation.reply_media:
        content[operation.reply_media] = {"schema": {"type": "string"}}
    if operation.streamed is not None:
        media, event = operation.streamed
        described = (
            "server-sent events, ending with data: [DONE]" if media == SSE else "one JSON object a line"
        )
        if anthropic_shaped:
            described = "server-sent events, each named by its type"
        if operation.path == "/v1/responses":  # OpenAI's typed events: no [DONE] either
            described = "server-sent events, each named by its type"
        content[media] = {
            "schema": {
                "type": "string",
                "description": f"With stream: {described}, each as {event.__name__}.",
            },
        }
    ok: dict[str, Any] = {"description": "OK"}
    if content:
        ok["content"] = content
    responses: dict[str, Any] = {} if operation.path in NOT_SERVED else {"200": ok}
    for status, description in sorted({**_COMMON_ERRORS, **operation.errors}.items()):
        responses[str(status)] = {"description": description, "content": {JSON: {"schema": error_schema}}}
    return responses
