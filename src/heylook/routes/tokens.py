"""/tokenize and /detokenize for any local alias, with its own tokenizer (and chat template, for
a conversation). The model is leased like any request's, so it loads if it must."""

from __future__ import annotations

from typing import Any

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from heylook.errors import InvalidRequest
from heylook.generate import encode_prompt
from heylook.models.loader import LoadedModel
from heylook.protocols import tokens
from heylook.routes.common import backends_of, parsed_body, router_of
from heylook.types import TextPrompt, TokenizeRequest


async def tokenize(request: Request) -> Response:
    internal = await parsed_body(request, tokens.parse_tokenize)
    ids, pieces, context = await _with_model(request, internal.model, lambda loaded: _ids(loaded, internal))
    return JSONResponse(tokens.tokenize_reply(ids, pieces if internal.with_pieces else None, context))


async def detokenize(request: Request) -> Response:
    name, ids = await parsed_body(request, tokens.parse_detokenize)
    text = await _with_model(request, name, lambda loaded: _text(loaded, ids))
    return JSONResponse(tokens.detokenize_reply(text))


async def _with_model(request: Request, name: str, work: Any) -> Any:
    alias = backends_of(request).local_alias(name, "tokenization")
    router = router_of(request)
    lease = await router.acquire(alias.name)
    try:
        return await anyio.to_thread.run_sync(work, lease.model)
    finally:
        router.release(lease, alias.keep_alive)


def _ids(model: LoadedModel, internal: TokenizeRequest) -> tuple[list[int], list[str], int]:
    tokenizer = model.tokenizer
    if isinstance(internal.prompt, TextPrompt):
        ids = list(
            tokenizer(internal.prompt.text, add_special_tokens=internal.add_special_tokens)["input_ids"]
        )
    else:
        ids = encode_prompt(tokenizer, internal.prompt)
    pieces = [tokenizer.decode([i]) for i in ids] if internal.with_pieces else []
    return ids, pieces, model.context_length


def _text(model: LoadedModel, ids: list[int]) -> str:
    wrong = next((i for i in ids if model.vocab_size and i >= model.vocab_size), None)
    if wrong is not None:
        raise InvalidRequest(
            f"'tokens' holds {wrong}, which is no token id of this model (0 to {model.vocab_size - 1})",
            param="tokens",
        )
    return model.tokenizer.decode(ids)


routes = [
    Route("/tokenize", tokenize, methods=["POST"]),
    Route("/detokenize", detokenize, methods=["POST"]),
]
