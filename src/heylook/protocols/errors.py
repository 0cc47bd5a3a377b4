"""Errors in each API's wire shape, one builder per shape, and which shape a path takes: Ollama's
under /api/, Anthropic's under /v1/messages, OpenAI's everywhere else (the Responses API's under
/v1/responses). Each API's own codes and words for the errors its clients act on: a prompt over
the context (Codex compacts on OpenAI's code, Claude Code on Anthropic's wording), a rate limit,
a server too busy for now."""

from __future__ import annotations

from typing import Any, Literal

from heylook.errors import ContextLengthExceeded, HeylookError

# Which OpenAI endpoint an error answers: the context overflow is worded for what it was sent.
OpenAIApi = Literal["chat", "completions", "responses"]


def is_overloaded(error: HeylookError) -> bool:
    """Busy for now, come back later: a 503 that says when (a full queue, memory held by models in
    use, an upstream that is unavailable for a while). A 503 without Retry-After (a token not set)
    is not."""
    return error.status == 503 and "Retry-After" in error.headers


def openai_error_fields(error: HeylookError, api: OpenAIApi = "chat") -> dict[str, Any]:
    """{"message", "type", "param", "code"} as OpenAI's API says them: context_length_exceeded,
    rate_limit_exceeded (429), server_is_overloaded (a busy 503, which Codex retries)."""
    kind, code, message, param = error.kind, error.code, error.message, error.param
    if isinstance(error, ContextLengthExceeded):
        message = _openai_context_words(error, api)
        param = "input" if api == "responses" else param
    elif error.status == 429:
        kind, code = "requests", "rate_limit_exceeded"
    elif is_overloaded(error):
        kind, code = "server_error", "server_is_overloaded"
    return {"message": message, "type": kind, "param": param, "code": code}


def _openai_context_words(error: ContextLengthExceeded, api: OpenAIApi) -> str:
    if error.prompt_tokens is None or error.context_length is None:
        return error.message  # an upstream's own words
    if api == "responses":
        return (
            "Your input exceeds the context window of this model. Please adjust your input and try "
            f"again. (The input is {error.prompt_tokens} tokens; {error.model!r} has a context of "
            f"{error.context_length} tokens.)"
        )
    what = "prompt" if api == "completions" else "messages"
    return (
        f"This model's maximum context length is {error.context_length} tokens. However, your {what} "
        f"resulted in {error.prompt_tokens} tokens. Please reduce the length of the {what}."
    )


def openai_error_body(error: HeylookError, api: OpenAIApi = "chat") -> dict[str, Any]:
    """{"error": {"message", "type", "param", "code"}}, which the OpenAI SDK turns into its exceptions."""
    return {"error": openai_error_fields(error, api)}


def ollama_error_body(error: HeylookError) -> dict[str, Any]:
    """{"error": "..."}, as Ollama answers (and ends a broken stream)."""
    return {"error": error.message}


# Anthropic's error types, by HTTP status (docs.anthropic.com/en/api/errors); the SDK raises its
# exceptions from the status, and shows the type and message.
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
    529: "overloaded_error",
}
# Anthropic answers "overloaded" with its own status, which its SDK (OverloadedError) and Claude
# Code know and retry, honouring Retry-After.
ANTHROPIC_OVERLOADED = 529


def anthropic_status(error: HeylookError) -> int:
    return ANTHROPIC_OVERLOADED if is_overloaded(error) else error.status


def anthropic_error_body(error: HeylookError) -> dict[str, Any]:
    """{"type": "error", "error": {"type", "message"}}, as Anthropic's API answers (and ends a
    stream); a prompt over the context in Anthropic's words, "prompt is too long: N tokens > M
    maximum", the ones Claude Code compacts its conversation on."""
    status = anthropic_status(error)
    kind = _ANTHROPIC_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")
    message = error.message
    if isinstance(error, ContextLengthExceeded):
        if error.prompt_tokens is not None and error.context_length is not None:
            message = f"prompt is too long: {error.prompt_tokens} tokens > {error.context_length} maximum"
        else:
            message = f"prompt is too long: {error.message}"
    return {"type": "error", "error": {"type": kind, "message": message}}


def is_ollama_path(path: str) -> bool:
    return path == "/api" or path.startswith("/api/")


def is_anthropic_path(path: str) -> bool:
    return path == "/v1/messages" or path.startswith("/v1/messages/")


def _openai_api(path: str) -> OpenAIApi:
    if path == "/v1/responses" or path.startswith("/v1/responses/"):
        return "responses"
    return "completions" if path == "/v1/completions" else "chat"


def error_body_for_path(path: str, error: HeylookError) -> dict[str, Any]:
    if is_ollama_path(path):
        return ollama_error_body(error)
    if is_anthropic_path(path):
        return anthropic_error_body(error)
    return openai_error_body(error, _openai_api(path))


def error_status_for_path(path: str, error: HeylookError) -> int:
    """The HTTP status the error answers with on this path: its own, but Anthropic's 529 for
    "overloaded" under /v1/messages."""
    return anthropic_status(error) if is_anthropic_path(path) else error.status
