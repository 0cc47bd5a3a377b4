"""Reranking as pure functions: the body (documents as strings or `{"text": ...}` objects) to the
internal request, and the scores back as results, best first."""

from __future__ import annotations

from typing import Any

from heylook.types import Ranking, RerankRequest
from heylook.wire import rerank as wire
from heylook.wire.validate import validate


def parse_rerank_request(body: dict[str, Any]) -> RerankRequest:
    typed = validate(wire.RerankRequest, body)
    documents = tuple(d if isinstance(d, str) else d.text for d in typed.documents)
    return RerankRequest(
        model=typed.model,
        query=typed.query,
        documents=documents,
        top_n=typed.top_n,
        return_documents=typed.return_documents is not False,
    )


def rerank_reply(id: str, request: RerankRequest, ranking: Ranking) -> dict[str, Any]:
    order = sorted(range(len(ranking.scores)), key=lambda i: -ranking.scores[i])[: request.top_n]
    results = []
    for index in order:
        result: dict[str, Any] = {"index": index, "relevance_score": ranking.scores[index]}
        if request.return_documents:
            result["document"] = {"text": request.documents[index]}
        results.append(result)
    usage = {"prompt_tokens": ranking.prompt_tokens, "total_tokens": ranking.prompt_tokens}
    return {"id": id, "model": request.model, "results": results, "usage": usage}
