"""The core path for reranking on a local cross-encoder: lease the model, tokenize each (query,
document) pair together (cutting the document, never the query, to what the model takes), score
them in the model's batches, and give the model back."""

from __future__ import annotations

from typing import Any

import anyio.to_thread

from heylook.errors import InvalidRequest
from heylook.router import ModelRouter
from heylook.types import Ranking, RerankRequest


async def rank_locally(router: ModelRouter, request: RerankRequest) -> Ranking:
    lease = await router.acquire(request.model)
    try:
        model = lease.model
        if model.kind != "rerank":
            raise InvalidRequest(
                f"{request.model!r} is not a reranking model (a cross-encoder with a "
                "sequence-classification head)",
                param="model",
            )
        scorer = model.encoder()
        ids = await anyio.to_thread.run_sync(pair_ids, model.tokenizer, request, model.context_length)
        scores = await scorer.encode(ids)
    finally:
        router.release(lease, lease.alias.keep_alive)
    return Ranking(scores=[score for (score,) in scores], prompt_tokens=sum(len(i) for i in ids))


def pair_ids(tokenizer: Any, request: RerankRequest, limit: int) -> list[list[int]]:
    encoded = []
    for document in request.documents:
        ids = tokenizer(request.query, document, truncation="only_second", max_length=limit)["input_ids"]
        if len(ids) > limit:
            raise InvalidRequest(f"'query' is longer than the {limit} tokens the model takes", param="query")
        encoded.append(list(ids))
    return encoded
