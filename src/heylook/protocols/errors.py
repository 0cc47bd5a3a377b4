"""Errors in each API's wire shape, one builder per shape, and which shape a path takes: Ollama's
under /api/, OpenAI's everywhere else."""

from __future__ import annotations

from typing import Any

from heylook.errors import HeylookError


def openai_error_body(error: HeylookError) -> dict[str, Any]:
    """{"error": {"message", "type", "param", "code"}}, which the OpenAI SDK turns into its exceptions."""
    return {"error": {"message": error.message, "type": error.kind, "param": error.param, "code": error.code}}


def ollama_error_body(error: HeylookError) -> dict[str, Any]:
    """{"error": "..."}, as Ollama answers (and ends a broken stream)."""
    return {"error": error.message}


def is_ollama_path(path: str) -> bool:
    return path == "/api" or path.startswith("/api/")


def error_body_for_path(path: str, error: HeylookError) -> dict[str, Any]:
    return ollama_error_body(error) if is_ollama_path(path) else openai_error_body(error)
