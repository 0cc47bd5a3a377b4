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
    port: int = 8080,
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
    max_body_bytes: Annotated[
        int, cyclopts.Parameter(help="Largest request body accepted.")
    ] = DEFAULT_MAX_BODY_BYTES,
    log_level: str = "info",
) -> int:
    """Start the server: the OpenAI API under /v1, the Ollama API under /api (use --port 11434 for
    clients that assume Ollama's port). Models load on first use.

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
    from heylook.router import ModelRouter
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
    router = ModelRouter(registry, keep_alive=default_keep_alive if default_keep_alive is not None else 300.0)
    settings = Settings(max_body_bytes=max_body_bytes, max_tokens_limit=max_tokens_limit)
    run_server(create_app(router, settings), host=host, port=port)
    return 0
