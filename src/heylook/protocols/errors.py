"""Which wire shape an error takes: Ollama's under /api/, OpenAI's everywhere else."""

from __future__ import annotations

from typing import Any

from heylook.errors import HeylookError
from heylook.protocols import openai


def is_ollama_path(path: str) -> bool:
    return path == "/api" or path.startswith("/api/")


def error_body_for_path(path: str, error: HeylookError) -> dict[str, Any]:
    if is_ollama_path(path):
        return {"error": error.message}
    return openai.error_body(error)
