"""Tokenization bodies: /tokenize and /detokenize, in the shape llama.cpp's server and vLLM share
(llama-server's `content` or vLLM's `prompt` or `messages`; `tokens` back)."""

# Field types made at run time (one_of) are types to pydantic, but not to mypy.
# mypy: disable-error-code="valid-type"

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field

from heylook.wire.fields import CLOSED, Body, Integer, example
from heylook.wire.openai import ChatMessage

TokenId = Annotated[Integer, Field(ge=0)]


class TokenizeRequest(Body):
    model_config = example({"model": "smollm2", "prompt": "Why is the sky blue?"})

    model: str
    content: str | None = Field(default=None, description="The text (llama-server's name for it).")
    prompt: str | None = Field(default=None, description="The text (vLLM's name for it).")
    messages: list[ChatMessage] | None = Field(
        default=None, description="A conversation, rendered by the model's chat template first."
    )
    add_special: bool | None = Field(default=None, description="llama-server's add_special_tokens.")
    add_special_tokens: bool | None = Field(
        default=None, description="Add the tokenizer's BOS/EOS to text (default true); never to messages."
    )
    add_generation_prompt: bool | None = Field(
        default=None, description="With messages: end with the assistant's turn opening (default true)."
    )
    with_pieces: bool | None = Field(default=None, description="Each token's text beside its id.")


class DetokenizeRequest(Body):
    model_config = example({"model": "smollm2", "tokens": [1, 2, 3]})

    model: str
    tokens: list[TokenId]


class _Reply(BaseModel):
    model_config = CLOSED


class TokenPiece(_Reply):
    id: int
    piece: str


class TokenizeResponse(_Reply):
    tokens: list[int] | list[TokenPiece]
    count: int
    max_model_len: int


class DetokenizeResponse(_Reply):
    prompt: str = Field(description="The text (vLLM's name).")
    content: str = Field(description="The same text (llama-server's name).")
