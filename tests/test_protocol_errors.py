"""Errors in each API's own shape, codes and words, for what clients act on: a prompt over the
context (Codex compacts on OpenAI's code, Claude Code on Anthropic's wording), a rate limit, a
server too busy for now; and an upstream's context overflow read as the same error."""

from __future__ import annotations

from typing import Any

import pytest

from heylook.errors import (
    ContextLengthExceeded,
    HeylookError,
    InvalidRequest,
    MissingToken,
    ServerBusy,
    UpstreamError,
)
from heylook.protocols.errors import error_body_for_path, error_status_for_path
from heylook.providers.remote import context_overflow

OVER = ContextLengthExceeded(5000, 4096, "smollm2", param="messages")
# An upstream that said so without the numbers.
UPSTREAM_OVER = ContextLengthExceeded(
    None, None, "far", message="upstream refused: input too long for the model"
)
BUSY = ServerBusy("4 requests are waiting already", retry_after=2)
LIMITED = UpstreamError("the upstream is rate-limiting requests", status=429, retry_after=5)
UNAVAILABLE = UpstreamError("the upstream is unavailable", status=503, retry_after=3)
NO_TOKEN = MissingToken("HF_TOKEN is not set")

CHAT_WORDS = (
    "This model's maximum context length is 4096 tokens. However, your messages resulted in 5000 tokens. "
    "Please reduce the length of the messages."
)


@pytest.mark.parametrize(
    ("path", "error", "status", "body"),
    [
        ("/v1/chat/completions", OVER, 400, {"error": {
            "message": CHAT_WORDS, "type": "invalid_request_error", "param": "messages",
            "code": "context_length_exceeded"}}),
        ("/v1/completions", OVER, 400, {"error": {
            "message": CHAT_WORDS.replace("messages", "prompt"), "type": "invalid_request_error",
            "param": "messages", "code": "context_length_exceeded"}}),
        ("/v1/responses", OVER, 400, {"error": {
            "message": "Your input exceeds the context window of this model. Please adjust your input and "
                       "try again. (The input is 5000 tokens; 'smollm2' has a context of 4096 tokens.)",
            "type": "invalid_request_error", "param": "input", "code": "context_length_exceeded"}}),
        ("/v1/messages", OVER, 400, {"type": "error", "error": {
            "type": "invalid_request_error", "message": "prompt is too long: 5000 tokens > 4096 maximum"}}),
        ("/api/chat", OVER, 400, {"error": "the input length exceeds the context length: the prompt is 5000 "
                                           "tokens; 'smollm2' has a context of 4096 tokens"}),
        ("/v1/chat/completions", UPSTREAM_OVER, 400, {"error": {
            "message": UPSTREAM_OVER.message, "type": "invalid_request_error", "param": None,
            "code": "context_length_exceeded"}}),
        ("/v1/messages", UPSTREAM_OVER, 400, {"type": "error", "error": {
            "type": "invalid_request_error", "message": f"prompt is too long: {UPSTREAM_OVER.message}"}}),
        ("/v1/chat/completions", BUSY, 503, {"error": {
            "message": BUSY.message, "type": "server_error", "param": None, "code": "server_is_overloaded"}}),
        ("/v1/responses", BUSY, 503, {"error": {
            "message": BUSY.message, "type": "server_error", "param": None, "code": "server_is_overloaded"}}),
        ("/v1/messages", BUSY, 529, {"type": "error", "error": {
            "type": "overloaded_error", "message": BUSY.message}}),
        ("/api/chat", BUSY, 503, {"error": BUSY.message}),
        ("/v1/messages", UNAVAILABLE, 529, {"type": "error", "error": {
            "type": "overloaded_error", "message": UNAVAILABLE.message}}),
        ("/v1/chat/completions", LIMITED, 429, {"error": {
            "message": LIMITED.message, "type": "requests", "param": None, "code": "rate_limit_exceeded"}}),
        ("/v1/messages", LIMITED, 429, {"type": "error", "error": {
            "type": "rate_limit_error", "message": LIMITED.message}}),
        # A 503 that says no time to come back (a token not set) is no overload.
        ("/v1/chat/completions", NO_TOKEN, 503, {"error": {
            "message": NO_TOKEN.message, "type": "server_error", "param": None, "code": "missing_token"}}),
        ("/v1/messages", NO_TOKEN, 503, {"type": "error", "error": {
            "type": "api_error", "message": NO_TOKEN.message}}),
        ("/v1/messages/count_tokens", InvalidRequest("bad", param="x"), 400, {"type": "error", "error": {
            "type": "invalid_request_error", "message": "bad"}}),
    ],
)  # fmt: skip
def test_each_api_says_it_its_own_way(path: str, error: HeylookError, status: int, body: Any) -> None:
    assert error_status_for_path(path, error) == status
    assert error_body_for_path(path, error) == body


@pytest.mark.parametrize(
    ("said", "overflow"),
    [
        ({"message": "This model's maximum context length is 4096 tokens. However, your messages resulted "
                     "in 5000 tokens. Please reduce the length of the messages.",
          "type": "invalid_request_error", "code": "context_length_exceeded"}, (5000, 4096)),
        ({"message": "This model's maximum context length is 2048 tokens. However, you requested 2100 tokens "
                     "(2000 in the messages, 100 in the completion). Please reduce the length of the "
                     "messages or completion.", "type": "BadRequestError", "code": 400}, (2000, 2048)),
        ({"message": "'max_tokens' is too large: 100. This model's maximum context length is 2048 tokens "
                     "and your request has 2000 input tokens (100 > 2048 - 2000)."}, (2000, 2048)),
        ({"code": 400, "type": "exceed_context_size_error",
          "message": "request (8889 tokens) exceeds the available context size (4096 tokens), try "
                     "increasing it"}, (8889, 4096)),
        ("Input validation error: `inputs` tokens + `max_new_tokens` must be <= 4096. Given: 4000 "
         "`inputs` tokens and 200 `max_new_tokens`", (4000, 4096)),
        ({"type": "invalid_request_error", "message": "prompt is too long: 210118 tokens > 200000 maximum"},
         (210118, 200000)),
        ({"message": "too long", "code": "context_length_exceeded"}, (None, None)),
        ({"message": "bad temperature", "type": "invalid_request_error"}, None),
        ({"message": "input too long"}, None),
        ("Model not found", None),
    ],
)  # fmt: skip
def test_an_upstreams_context_overflow_is_read(said: Any, overflow: Any) -> None:
    assert context_overflow(said) == overflow
