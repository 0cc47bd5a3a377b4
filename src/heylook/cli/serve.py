"""heylook serve."""

from __future__ import annotations

import logging
from typing import Annotated

import cyclopts

from heylook.cli.common import EXIT_USAGE, ModelsOption, app, configure_logging, registry_path
from heylook.settings import DEFAULT_MAX_BODY_BYTES


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
    parallel: Annotated[int, cyclopts.Parameter(help="Requests one model generates for at once.")] = 1,
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
            help="List Hugging Face's router models in /v1/models and pass requests for a repo id there."
        ),
    ] = True,
    max_body_bytes: Annotated[
        int, cyclopts.Parameter(help="Largest request body accepted.")
    ] = DEFAULT_MAX_BODY_BYTES,
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
    from heylook.protocols.ollama import parse_keep_alive
    from heylook.registry import RegistryError, load_registry
    from heylook.router import DEFAULT_KEEP_ALIVE, Limits, ModelRouter
    from heylook.server import run_server
    from heylook.settings import Settings

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
    if not 0 < memory_share <= 1 or min(max_loaded_models, parallel) < 1 or max_queue < 0:
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
    router = ModelRouter(registry, keep_alive=keep, limits=limits)
    settings = Settings(
        max_body_bytes=max_body_bytes,
        max_tokens_limit=max_tokens_limit,
        preload=tuple(preload or ()),
        remote_models=remote_models,
    )
    run_server(create_app(router, settings), host=host, port=port)
    return 0
