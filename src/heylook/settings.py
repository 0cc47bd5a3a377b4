"""Server-wide settings, fixed at start-up."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from heylook.responses_store import DEFAULT_MAX_BYTES, DEFAULT_MAX_RESPONSES

DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
# Seconds a client has to send a whole request body once its headers are in.
DEFAULT_BODY_TIMEOUT = 60.0
# What compiled grammars may hold in memory, per model (least recently used go first): a grammar
# for the demo model's vocabulary takes 0.05 to 1.5 MB, and compiles again in 10 to 200 ms.
DEFAULT_GRAMMAR_CACHE_BYTES = 128 * 1024 * 1024
# What one model's prefix cache may hold (engine.prefix_cache): a coding agent's ~40k-token prompt
# of a model the demo's size (46 KB of float32 keys and values a token), ~30k of an 8B in float16.
DEFAULT_PREFIX_CACHE_BYTES = 2 * 1024 * 1024 * 1024
_GIB = 1024 * 1024 * 1024
# The browser origins Ollama allows unless told otherwise (its envconfig.AllowedOrigins): pages
# served from this machine on any port, and the schemes of desktop apps and editor extensions
# (Electron, Tauri, VS Code webviews). A page on any other origin is refused.
LOCAL_ORIGINS = tuple(
    f"{scheme}://{host}{port}"
    for host in ("localhost", "127.0.0.1", "0.0.0.0")
    for scheme in ("http", "https")
    for port in ("", ":*")
)
DEFAULT_CORS_ORIGINS = (
    *LOCAL_ORIGINS,
    "app://*",
    "file://*",
    "tauri://*",
    "vscode-webview://*",
    "vscode-file://*",
)
# More origins, comma-separated, as Ollama reads them: one setting for both servers.
ORIGINS_ENV = "OLLAMA_ORIGINS"


def allowed_origins(added: Iterable[str] = (), environ: Mapping[str, str] = os.environ) -> tuple[str, ...]:
    """Ollama's default origins, then those of $OLLAMA_ORIGINS, then `added` (--cors-origins):
    each adds to the default, as OLLAMA_ORIGINS does in Ollama."""
    from_env = [origin.strip() for origin in environ.get(ORIGINS_ENV, "").split(",")]
    return (*DEFAULT_CORS_ORIGINS, *(o for o in (*from_env, *added) if o))


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"  # the address served on; a Host header naming it is always served
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    body_timeout: float = DEFAULT_BODY_TIMEOUT
    # The most tokens one request may generate, whatever it asks for (Ollama's num_predict -1, no
    # max_tokens, or more than this); None: up to the context.
    max_tokens_limit: int | None = None
    # Aliases to load as the server starts.
    preload: tuple[str, ...] = ()
    # List Hugging Face's router models in /v1/models, and pass requests for a Hub repo id that is
    # no alias through to Inference Providers, on the operator's token: off unless asked for.
    remote_models: bool = False
    # Host headers served (besides the bind address and localhost's names); "*" serves any.
    allowed_hosts: tuple[str, ...] = ()
    # Browser origins allowed to call (CORS): Ollama's default, and those the operator adds
    # (--cors-origins, $OLLAMA_ORIGINS).
    cors_origins: tuple[str, ...] = DEFAULT_CORS_ORIGINS
    # When set, every route but the probes (/, /health) and the docs (/openapi.json, /docs,
    # /redoc) needs it (Authorization: Bearer, or x-api-key).
    api_key: str | None = None
    grammar_cache_bytes: int = DEFAULT_GRAMMAR_CACHE_BYTES
    # Keys and values of earlier prompts kept for later ones, per model (engine.prefix_cache).
    prefix_cache_bytes: int = DEFAULT_PREFIX_CACHE_BYTES
    # Seconds a JSON schema or tool set may take to compile into a grammar (a 400 after that).
    grammar_timeout: float = 15.0
    # The Responses API's stored responses (for previous_response_id): how many, and how much
    # conversation text; the least recently used go first.
    responses_stored: int = DEFAULT_MAX_RESPONSES
    responses_store_bytes: int = DEFAULT_MAX_BYTES
    # Image URLs in requests may reach loopback, private and link-local addresses (a trusted
    # network's own image servers); off, they reach public addresses only (heylook.images).
    allow_private_image_urls: bool = False
    # OpenAI's Batch API (heylook.batches; kept in paths.batches_dir()): stored files in all, in
    # bytes and in number; one file; batches kept (finished ones go first); requests per batch
    # (OpenAI's 50,000).
    batch_files_bytes: int = _GIB
    batch_files: int = 1000
    batch_file_bytes: int = 200 * 1024 * 1024
    batches_stored: int = 1000
    batch_lines: int = 50_000
