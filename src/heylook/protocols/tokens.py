"""/tokenize and /detokenize as pure functions, in the shape llama.cpp's server and vLLM share: a
body in llama-server's words (`content`, `add_special`) or vLLM's (`prompt`, `messages`,
`add_special_tokens`), and a reply carrying both servers' fields."""

from __future__ import annotations

from typing import Any

from heylook.errors import InvalidRequest
from heylook.protocols.openai import chat_messages
from heylook.types import ChatPrompt, TextPrompt, TokenizeRequest
from heylook.wire import tokens as wire
from heylook.wire.validate import validate


def parse_tokenize(body: dict[str, Any]) -> TokenizeRequest:
    typed = validate(wire.TokenizeRequest, body)
    given = [name for name in ("content", "prompt", "messages") if getattr(typed, name) is not None]
    if len(given) != 1:
        raise InvalidRequest("give one of 'content', 'prompt' or 'messages'", param=(given or ["prompt"])[-1])
    if typed.add_generation_prompt is False:
        raise InvalidRequest(
            "'add_generation_prompt': false is not supported: messages are rendered ready for the reply",
            param="add_generation_prompt",
        )
    special = typed.add_special_tokens if typed.add_special_tokens is not None else typed.add_special
    prompt: TextPrompt | ChatPrompt
    if typed.messages is not None:
        if not typed.messages:
            raise InvalidRequest("'messages' must not be empty", param="messages")
        prompt = ChatPrompt(chat_messages(typed.messages))
    else:
        prompt = TextPrompt(typed.content if typed.content is not None else typed.prompt or "")
    return TokenizeRequest(
        model=typed.model,
        prompt=prompt,
        add_special_tokens=special is not False,
        with_pieces=bool(typed.with_pieces),
    )


def tokenize_reply(ids: list[int], pieces: list[str] | None, max_model_len: int) -> dict[str, Any]:
    tokens: list[Any] = (
        ids if pieces is None else [{"id": i, "piece": p} for i, p in zip(ids, pieces, strict=True)]
    )
    return {"tokens": tokens, "count": len(ids), "max_model_len": max_model_len}


def parse_detokenize(body: dict[str, Any]) -> tuple[str, list[int]]:
    typed = validate(wire.DetokenizeRequest, body)
    return typed.model, list(typed.tokens)


def detokenize_reply(text: str) -> dict[str, Any]:
    return {"prompt": text, "content": text}
