"""Embedding request and response bodies: OpenAI's /v1/embeddings, Ollama's /api/embed and its
older /api/embeddings."""

# Field types made at run time (one_of) are types to pydantic, but not to mypy.
# mypy: disable-error-code="valid-type"

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, Field
from pydantic_core import PydanticCustomError

from heylook.wire.fields import CLOSED, Body, Integer, JsonObject, example, one_of
from heylook.wire.ollama import KeepAlive

# Inputs one request may hold, as OpenAI allows.
MAX_INPUTS = 2048

TokenId = Annotated[Integer, Field(ge=0)]
_Inputs = Field(min_length=1, max_length=MAX_INPUTS)
_Item = one_of(
    "a string, a token id or an array of token ids",
    string=str,
    number=TokenId,
    array=Annotated[list[TokenId], Field(min_length=1)],
)


def _one_kind(items: list) -> list:
    if len({type(item) for item in items}) > 1:
        raise PydanticCustomError("mixed", "must be all strings, all token ids or all arrays of token ids")
    return items


OpenAIInput = one_of(
    "a string, an array of strings, an array of token ids or an array of arrays of token ids",
    string=str,
    array=Annotated[list[_Item], _Inputs, AfterValidator(_one_kind)],
)
OllamaInput = one_of("a string or an array of strings", string=str, array=Annotated[list[str], _Inputs])
Dimensions = Annotated[
    Integer, Field(ge=1, description="Shorter vectors (Matryoshka models): cut, then normalised.")
]


class EmbeddingRequest(Body):
    model_config = example({"model": "all-minilm", "input": ["The sky is blue.", "Grass is green."]})

    model: str = Field(description="An alias from models.yaml: an embedding model, or one that generates.")
    input: OpenAIInput
    encoding_format: Literal["float", "base64"] | None = Field(
        default=None, description="base64: each vector's float32 values, little-endian, base64-encoded."
    )
    dimensions: Dimensions | None = None
    truncate: bool | None = Field(
        default=None,
        description="heylook's: inputs longer than the model takes are cut (the default, as Ollama "
        "does); false refuses them.",
    )
    user: str | None = None


class EmbedRequest(Body):
    model_config = example({"model": "all-minilm", "input": ["Why is the sky blue?", "Why is grass green?"]})

    model: str
    input: OllamaInput
    truncate: bool | None = Field(
        default=None, description="Cut inputs longer than the model takes (default)."
    )
    dimensions: Dimensions | None = None
    keep_alive: KeepAlive | None = None
    options: JsonObject | None = Field(
        default=None, description="Accepted; embeddings use no sampling setting."
    )


class EmbeddingsRequest(Body):
    model_config = example({"model": "all-minilm", "prompt": "Why is the sky blue?"})

    model: str
    prompt: str
    keep_alive: KeepAlive | None = None
    options: JsonObject | None = None


class _Reply(BaseModel):
    model_config = CLOSED


class Embedding(_Reply):
    object: Literal["embedding"]
    index: int
    embedding: list[float] | str = Field(description="The vector, or its base64 form.")


class EmbeddingUsage(_Reply):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(_Reply):
    object: Literal["list"]
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage


class EmbedResponse(_Reply):
    model: str
    embeddings: list[list[float]]
    total_duration: int
    load_duration: int
    prompt_eval_count: int


class EmbeddingsResponse(_Reply):
    embedding: list[float]
