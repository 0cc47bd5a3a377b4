"""Server-wide settings, fixed at start-up."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class Settings:
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    # The most tokens one request may generate when it sets no limit of its own (Ollama's
    # num_predict -1, or no max_tokens); None: until the context is full.
    max_tokens_limit: int | None = None
    # Aliases to load as the server starts.
    preload: tuple[str, ...] = ()
    # List Hugging Face's router models in /v1/models, and pass requests for a Hub repo id that is
    # no alias through to Inference Providers.
    remote_models: bool = True
