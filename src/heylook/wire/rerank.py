"""Reranking bodies, in the shape llama.cpp's server, vLLM, Jina and Cohere share: a `query`,
`documents`, `top_n` and `return_documents`; `results` with `index` and `relevance_score`."""

# Field types made at run time (one_of) are types to pydantic, but not to mypy.
# mypy: disable-error-code="valid-type"

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field

from heylook.wire.fields import CLOSED, Body, Integer, example, one_of

MAX_DOCUMENTS = 1000


class DocumentObject(Body):
    text: str


Document = one_of("a string or an object with its text", string=str, object=DocumentObject)


class RerankRequest(Body):
    model_config = example(
        {
            "model": "reranker",
            "query": "What colour is the sky?",
            "documents": ["The sky is blue.", "Grass is green."],
            "top_n": 1,
        }
    )

    model: str = Field(description="An alias of a reranking model (a cross-encoder).")
    query: str
    documents: Annotated[list[Document], Field(min_length=1, max_length=MAX_DOCUMENTS)]
    top_n: Annotated[Integer, Field(ge=1)] | None = Field(default=None, description="The best this many.")
    return_documents: bool | None = Field(
        default=None, description="Each result with its text (default true)."
    )


class _Reply(BaseModel):
    model_config = CLOSED


class RankedText(_Reply):
    text: str


class RankedDocument(_Reply):
    index: int = Field(description="The document's place in the request.")
    relevance_score: float = Field(description="0 to 1: the cross-encoder's probability of relevance.")
    document: RankedText | None = None


class RerankUsage(_Reply):
    prompt_tokens: int
    total_tokens: int


class RerankResponse(_Reply):
    id: str
    model: str
    results: list[RankedDocument] = Field(description="Best first.")
    usage: RerankUsage
