"""Errors in each API's wire shape, one builder per shape, and which shape a path takes: Ollama's
under /api/, Anthropic's under /v1/messages, OpenAI's everywhere else."""

from __future__ import annotations

from typing import Any

from heylook.errors import HeylookError


def openai_error_body(error: HeylookError) -> dict[str, Any]:
    """{"error": {"message", "type", "param", "code"}}, which the OpenAI SDK turns into its exceptions."""
    return {"error": {"message": error.message, "type": error.kind, "param": error.param, "code": error.code}}


def ollama_error_body(error: HeylookError) -> dict[str, Any]:
    """{"error": "..."}, as Ollama answers (and ends a broken stream)."""
    return {"error": error.message}


# Anthropic's error types, by HTTP status (docs.anthropic.com/en/api/errors); the SDK raises its
# exceptions from the status, and shows the type and message.
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


def anthropic_error_body(error: HeylookError) -> dict[str, Any]:
    """{"type": "error", "error": {"type", "message"}}, as Anthropic's API answers (and ends a stream)."""
    kind = _ANTHROPIC_TYPES.get(error.status, "invalid_request_error" if error.status < 500 else "api_error")
    return {"type": "error", "error": {"type": kind, "message": error.message}}


def is_ollama_path(path: str) -> bool:
    return path == "/api" or path.startswith("/api/")


def is_anthropic_path(path: str) -> bool:
    return path == "/v1/messages" or path.startswith("/v1/messages/")


def error_body_for_path(path: str, error: HeylookError) -> dict[str, Any]:
    if is_ollama_path(path):
        return ollama_error_body(error)
    if is_anthropic_path(path):
        return anthropic_error_body(error)
    return openai_error_body(error)
