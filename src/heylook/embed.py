"""The core path for local embeddings, whichever API asked: lease the model from the router,
tokenize (cutting or refusing what is too long), encode in the model's batches, shorten for
`dimensions`, and give the model back for its keep_alive."""

from __future__ import annotations

import time
from typing import Any

import anyio.to_thread

from heylook.engine.encoder import truncated
from heylook.errors import InvalidRequest
from heylook.router import ModelRouter
from heylook.types import Embeddings, EmbedRequest


async def embed_locally(router: ModelRouter, request: EmbedRequest) -> Embeddings:
    started = time.perf_counter_ns()
    lease = await router.acquire(request.model)
    try:
        model = lease.model
        if model.kind == "rerank":
            raise InvalidRequest(
                f"{request.model!r} is a reranking model: it gives no embeddings", param="model"
            )
        encoder = model.encoder()
        if request.dimensions is not None and request.dimensions > encoder.dimensions:
            raise InvalidRequest(
                f"'dimensions' is {request.dimensions}; {request.model!r} gives vectors of "
                f"{encoder.dimensions}",
                param="dimensions",
            )
        limit = encoder.config.max_length or model.context_length
        ids = await anyio.to_thread.run_sync(
            token_ids, model.tokenizer, request.inputs, limit, request.truncate, model.vocab_size
        )
        vectors = await encoder.encode(ids)
    finally:
        keep_alive = request.keep_alive if request.keep_alive is not None else lease.alias.keep_alive
        router.release(lease, keep_alive)
    if request.dimensions is not None:
        vectors = [truncated(vector, request.dimensions) for vector in vectors]
    return Embeddings(
        vectors=vectors,
        prompt_tokens=sum(len(i) for i in ids),
        load_ns=lease.load_ns,
        total_ns=time.perf_counter_ns() - started,
    )


def token_ids(
    tokenizer: Any, inputs: tuple[str | tuple[int, ...], ...], limit: int, truncate: bool, vocab_size: int
) -> list[list[int]]:
    """Each input's token ids: texts tokenized with the model's special tokens (as
    sentence-transformers does), token ids taken as they are. Longer than `limit`: cut to it, or,
    without `truncate`, refused."""
    # Texts of ordinary length are tokenized in one call (the fast tokenizers batch in Rust); a
    # very long one on its own, from its head (_text_ids).
    window = limit * _CHARACTERS_PER_TOKEN
    ordinary = [i for i, item in enumerate(inputs) if isinstance(item, str) and len(item) <= window]
    texts = [inputs[i] for i in ordinary]
    batched: dict[int, list[int]] = {}
    if texts:
        ids_of_texts = tokenizer(texts, truncation=truncate, max_length=limit)["input_ids"]
        batched = dict(zip(ordinary, ids_of_texts, strict=True))
    encoded: list[list[int]] = []
    for index, item in enumerate(inputs):
        where = f"input[{index}]" if len(inputs) > 1 else "input"
        if index in batched:
            ids = list(batched[index])
        elif isinstance(item, str):
            ids = _text_ids(tokenizer, item, limit, truncate, where)
        else:
            ids = list(item)
            wrong = next((i for i in ids if i >= vocab_size), None) if vocab_size else None
            if wrong is not None:
                raise InvalidRequest(
                    f"'{where}' holds {wrong}, which is no token id of this model (0 to {vocab_size - 1})",
                    param=where,
                )
            if truncate:
                ids = ids[:limit]
        if len(ids) > limit:
            raise _too_long(where, str(len(ids)), limit)
        if not ids:
            raise InvalidRequest(f"'{where}' is empty: it has no tokens to embed", param=where)
        encoded.append(ids)
    return encoded


# Characters read ahead of the token limit before the whole text is tokenized (see _text_ids).
_CHARACTERS_PER_TOKEN = 16
_MARGIN = 8


def _text_ids(tokenizer: Any, text: str, limit: int, truncate: bool, where: str) -> list[int]:
    """The text's token ids, cut to `limit` if `truncate`. A text far longer than that (10 MB of
    it) is judged from its head: once the head alone runs well past the limit, the first tokens
    are the whole text's, and the rest need not be tokenized at all."""
    window = limit * _CHARACTERS_PER_TOKEN
    if len(text) > window:
        head = text[:window]
        if len(tokenizer(head)["input_ids"]) > limit + _MARGIN:
            if not truncate:
                raise _too_long(where, f"more than {limit + _MARGIN}", limit)
            return tokenizer(head, truncation=True, max_length=limit)["input_ids"]
    return tokenizer(text, truncation=truncate, max_length=limit)["input_ids"]


def _too_long(where: str, count: str, limit: int) -> InvalidRequest:
    return InvalidRequest(
        f"'{where}' is {count} tokens; the model takes {limit} (truncate: true cuts it)", param=where
    )
