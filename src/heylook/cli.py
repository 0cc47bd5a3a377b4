"""The heylook command line."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import cyclopts

from heylook import __version__

app = cyclopts.App(
    name="heylook",
    help="Serve Hugging Face models behind the OpenAI and Ollama APIs.",
    version=__version__,
)


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )


@app.command
def serve(
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    models: Annotated[Path | None, cyclopts.Parameter(help="models.yaml to use.")] = None,
    max_body_bytes: Annotated[int, cyclopts.Parameter(help="Largest request body accepted.")] = 16
    * 1024
    * 1024,
    log_level: str = "info",
) -> int:
    """Start the server. Models load on first use and stay loaded.

    The registry is --models, else $HEYLOOK_MODELS, else ./models.yaml, else models.yaml in the
    user config directory (created with the demo alias if missing).
    """
    _configure_logging(log_level)
    # A server logs; it draws no progress bars.
    from transformers.utils import logging as transformers_logging

    from heylook.app import create_app
    from heylook.registry import RegistryError, load_registry, locate_registry
    from heylook.router import ModelRouter
    from heylook.server import run_server

    transformers_logging.disable_progress_bar()
    log = logging.getLogger("heylook")
    path = locate_registry(models)
    try:
        registry = load_registry(path)
    except RegistryError as error:
        log.error("%s", error)
        return 2
    log.info("registry %s: %s", path, ", ".join(registry.aliases) or "no aliases")
    run_server(create_app(ModelRouter(registry), max_body_bytes=max_body_bytes), host=host, port=port)
    return 0


def main() -> None:
    sys.exit(app())
