"""Embeddings on both APIs, as pure functions: request bodies to the internal EmbedRequest, and
vectors back to each API's reply. OpenAI's /v1/embeddings; Ollama's /api/embed, and its older
/api/embeddings (one prompt, one vector)."""

from __future__ import annotations

import base64
import struct
from typing import Any, Literal

from heylook.protocols.ollama import parse_keep_alive
from heylook.types import Embeddings, EmbedRequest
from heylook.wire import embeddings as wire
from heylook.wire.validate import validate

EncodingFormat = Literal["float", "base64"]


def parse_openai_request(body: dict[str, Any]) -> tuple[EmbedRequest, EncodingFormat]:
    typed = validate(wire.EmbeddingRequest, body)
    raw = typed.input
    inputs: tuple[str | tuple[int, ...], ...]
    if isinstance(raw, str):
        inputs = (raw,)
    elif all(isinstance(item, int) for item in raw):
        inputs = (tuple(raw),)  # one input, as token ids
    else:
        inputs = tuple(item if isinstance(item, str) else tuple(item) for item in raw)
    request = EmbedRequest(
        model=typed.model, inputs=inputs, dimensions=typed.dimensions, truncate=typed.truncate is not False
    )
    return request, typed.encoding_format or "float"


def openai_reply(model: str, result: Embeddings, encoding_format: EncodingFormat) -> dict[str, Any]:
    data = [
        {"object": "embedding", "index": index, "embedding": _encoded(vector, encoding_format)}
        for index, vector in enumerate(result.vectors)
    ]
    usage = {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens}
    return {"object": "list", "data": data, "model": model, "usage": usage}


def _encoded(vector: list[float], encoding_format: EncodingFormat) -> list[float] | str:
    """base64 is the vector's float32 values, little-endian, as OpenAI sends it (and as the openai
    SDK, which asks for it by default, decodes it)."""
    if encoding_format == "float":
        return vector
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


def parse_ollama_embed(body: dict[str, Any]) -> EmbedRequest:
    typed = validate(wire.EmbedRequest, body)
    inputs = (typed.input,) if isinstance(typed.input, str) else tuple(typed.input)
    return EmbedRequest(
        model=typed.model,
        inputs=inputs,
        truncate=typed.truncate is not False,
        dimensions=typed.dimensions,
        keep_alive=parse_keep_alive(typed.keep_alive),
    )


def ollama_embed_reply(model: str, result: Embeddings) -> dict[str, Any]:
    return {
        "model": model,
        "embeddings": result.vectors,
        "total_duration": result.total_ns,
        "load_duration": result.load_ns,
        "prompt_eval_count": result.prompt_tokens,
    }


def parse_ollama_embeddings(body: dict[str, Any]) -> EmbedRequest:
    """The older route: one `prompt`, one vector."""
    typed = validate(wire.EmbeddingsRequest, body)
    return EmbedRequest(
        model=typed.model, inputs=(typed.prompt,), keep_alive=parse_keep_alive(typed.keep_alive)
    )


def ollama_embeddings_reply(result: Embeddings) -> dict[str, Any]:
    return {"embedding": result.vectors[0]}
