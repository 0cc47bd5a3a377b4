"""heylook serve."""

from __future__ import annotations

import functools
import ipaddress
import logging
import os
from typing import Annotated

import cyclopts

from heylook.cli.common import API_KEY_ENV, EXIT_USAGE, ModelsOption, app, configure_logging, registry_path
from heylook.settings import (
    DEFAULT_BODY_TIMEOUT,
    DEFAULT_GRAMMAR_CACHE_BYTES,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_PREFIX_CACHE_BYTES,
)


@app.command
def serve(
    *,
    host: str = "127.0.0.1",
    port: int = 11434,
    models: ModelsOption = None,
    keep_alive: Annotated[
        str,
        cyclopts.Parameter(help='How long an idle model stays loaded: "5m", "1h", seconds, or -1 for ever.'),
    ] = "5m",
    max_tokens_limit: Annotated[
        int | None,
        cyclopts.Parameter(
            help="Most tokens a request that sets no limit may generate (default: the context)."
        ),
    ] = None,
    memory_share: Annotated[
        float, cyclopts.Parameter(help="Share of a device's memory heylook's models may take (0-1].")
    ] = 0.9,
    max_loaded_models: Annotated[int, cyclopts.Parameter(help="Models loaded at once.")] = 3,
    parallel: Annotated[
        int | None,
        cyclopts.Parameter(
            help="Most requests one model generates for at once (default: as many as its memory for "
            "keys and values has room for, up to 16 on a CPU and 64 on a GPU)."
        ),
    ] = None,
    max_queue: Annotated[
        int, cyclopts.Parameter(help="Requests that may wait per model; more get 503 and Retry-After.")
    ] = 32,
    load_timeout: Annotated[float, cyclopts.Parameter(help="Seconds a model may take to load.")] = 600.0,
    preload: Annotated[
        list[str] | None, cyclopts.Parameter(help="An alias to load at start-up; repeat for more.")
    ] = None,
    remote_models: Annotated[
        bool,
        cyclopts.Parameter(
            help="List Hugging Face's router models in /v1/models and pass requests for a Hub repo id "
            "that is no alias there, on your token (off: only aliases are served)."
        ),
    ] = False,
    max_body_bytes: Annotated[
        int, cyclopts.Parameter(help="Largest request body accepted.")
    ] = DEFAULT_MAX_BODY_BYTES,
    body_timeout: Annotated[
        float, cyclopts.Parameter(help="Seconds a client has to send its request body.")
    ] = DEFAULT_BODY_TIMEOUT,
    allowed_hosts: Annotated[
        list[str] | None,
        cyclopts.Parameter(
            help="Host names to serve besides the bind address, IP addresses and localhost "
            "(e.g. heylook.example.com, *.lan; * for any); repeat for more."
        ),
    ] = None,
    cors_origins: Annotated[
        list[str] | None,
        cyclopts.Parameter(
            help="More web origins allowed to call from a browser (e.g. https://chat.example.com, "
            "https://*.example.com, * for any), besides Ollama's default (localhost, 127.0.0.1 and 0.0.0.0 "
            "on any port; app://, file://, tauri://, vscode-webview:// and vscode-file:// pages) and "
            "$OLLAMA_ORIGINS (comma-separated); repeat for more."
        ),
    ] = None,
    api_key: Annotated[
        str | None,
        cyclopts.Parameter(help=f"Require this key on every route but / and /health (else ${API_KEY_ENV})."),
    ] = None,
    grammar_cache_mb: Annotated[
        int, cyclopts.Parameter(help="Memory for compiled JSON and tool grammars, per model (MiB).")
    ] = DEFAULT_GRAMMAR_CACHE_BYTES // 2**20,
    prefix_cache_mb: Annotated[
        int,
        cyclopts.Parameter(
            help="Memory for the keys and values of earlier prompts, kept so a prompt that repeats "
            "one's beginning (a chat's next turn, an agent's tools) skips it; per model (MiB), 0 for none."
        ),
    ] = DEFAULT_PREFIX_CACHE_BYTES // 2**20,
    allow_private_image_urls: Annotated[
        bool,
        cyclopts.Parameter(
            help="Let image URLs in requests reach loopback, private and link-local addresses "
            "(off: public addresses only, so a request cannot reach into this machine's network)."
        ),
    ] = False,
    log_level: str = "info",
) -> int:
    """Start the server: the OpenAI API under /v1, the Ollama API under /api, on Ollama's port 11434
    by default, so Ollama's clients find it with no configuration. Models load on first use.

    The registry is --models, else $HEYLOOK_MODELS, else ./models.yaml, else models.yaml in the
    user config directory (created with the demo alias if missing).
    """
    configure_logging(log_level)
    # A server logs; it draws no progress bars.
    from transformers.utils import logging as transformers_logging

    from heylook.app import create_app
    from heylook.errors import InvalidRequest
    from heylook.models.loader import load_model
    from heylook.protocols.ollama import parse_keep_alive
    from heylook.registry.aliases import RegistryError, load_registry
    from heylook.router import DEFAULT_KEEP_ALIVE, Limits, ModelRouter
    from heylook.server import run_server
    from heylook.settings import Settings, allowed_origins

    transformers_logging.disable_progress_bar()
    log = logging.getLogger("heylook")
    try:
        default_keep_alive = parse_keep_alive(keep_alive)
    except InvalidRequest as error:
        log.error("--keep-alive: %s", error.message)
        return EXIT_USAGE
    path = registry_path(models)
    try:
        registry = load_registry(path)
    except RegistryError as error:
        log.error("%s", error)
        return EXIT_USAGE
    log.info("registry %s: %s", path, ", ".join(registry.aliases) or "no aliases")
    if not 0 < memory_share <= 1 or min(max_loaded_models, parallel or 1) < 1 or max_queue < 0:
        log.error("--memory-share must be in (0, 1]; --max-loaded-models and --parallel at least 1")
        return EXIT_USAGE
    limits = Limits(
        memory_share=memory_share,
        max_loaded=max_loaded_models,
        parallel=parallel,
        max_queue=max_queue,
        load_timeout=load_timeout,
    )
    keep = default_keep_alive if default_keep_alive is not None else DEFAULT_KEEP_ALIVE
    settings = Settings(
        host=host,
        max_body_bytes=max_body_bytes,
        body_timeout=body_timeout,
        max_tokens_limit=max_tokens_limit,
        preload=tuple(preload or ()),
        remote_models=remote_models,
        allowed_hosts=tuple(allowed_hosts or ()),
        cors_origins=allowed_origins(cors_origins or ()),
        api_key=api_key or os.environ.get(API_KEY_ENV) or None,
        grammar_cache_bytes=grammar_cache_mb * 2**20,
        prefix_cache_bytes=prefix_cache_mb * 2**20,
        allow_private_image_urls=allow_private_image_urls,
    )
    loader = functools.partial(
        load_model,
        grammar_cache_bytes=settings.grammar_cache_bytes,
        prefix_cache_bytes=settings.prefix_cache_bytes,
    )
    router = ModelRouter(registry, loader, keep_alive=keep, limits=limits)
    if settings.api_key is None and not _is_loopback(host):
        log.warning("serving on %s without an API key: anyone who can reach it can use it (--api-key)", host)
    run_server(create_app(router, settings), host=host, port=port)
    return 0


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
