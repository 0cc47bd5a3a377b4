"""What the commands share: the app, consoles, failure reporting, finding models.yaml and a server."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal, TypeVar

import cyclopts
from rich.console import Console

from heylook import __version__
from heylook.errors import HeylookError
from heylook.registry.aliases import Registry, RegistryError, load_registry, locate_registry

T = TypeVar("T")

EXIT_FAILED = 1
EXIT_USAGE = 2
DEFAULT_URL = "http://127.0.0.1:11434"
# The server's API key, which `serve` requires and `run`, `chat` and `ps` send.
API_KEY_ENV = "HEYLOOK_API_KEY"

app = cyclopts.App(
    name="heylook",
    help="Serve Hugging Face models behind the OpenAI and Ollama APIs, and manage them.",
    version=__version__,
)
# soft_wrap: messages (paths above all) are not broken at the terminal's width; tables still fit it.
console = Console(highlight=False, soft_wrap=True)
error_console = Console(stderr=True, highlight=False, soft_wrap=True)

ModelsOption = Annotated[
    Path | None,
    cyclopts.Parameter(help="models.yaml to use (else $HEYLOOK_MODELS, ./models.yaml, the user config dir)."),
]
UrlOption = Annotated[
    str | None, cyclopts.Parameter(help=f"A running heylook server (else $HEYLOOK_URL, else {DEFAULT_URL}).")
]
# --quantize on create, pull and import: the alias's load.quantization (heylook.models.quantization).
QuantizeOption = Annotated[
    Literal["int8", "int4", "none"] | None,
    cyclopts.Parameter(
        help="Quantized weights: int8 or int4 (a CPU: heylook's blocks; a CUDA GPU: bitsandbytes), "
        "or none (float weights, a GGUF's too; a GGUF keeps about its own bits by default)."
    ),
]


class CommandFailed(Exception):
    """Stops a command with a message for the user and an exit code."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def registry_path(models: Path | None) -> Path:
    return locate_registry(models)


def open_registry(models: Path | None) -> Registry:
    try:
        return load_registry(registry_path(models))
    except RegistryError as error:
        raise CommandFailed(str(error), EXIT_USAGE) from None


def write_registry(edit: Callable[[], T]) -> T:
    """Run a models.yaml edit, turning its failures into messages for the user."""
    try:
        return edit()
    except RegistryError as error:
        raise CommandFailed(str(error), EXIT_USAGE) from None
    except HeylookError as error:
        hint = "; --force replaces it" if error.code == "alias_exists" else ""
        raise CommandFailed(
            error.message + hint, EXIT_USAGE if error.status == 400 else EXIT_FAILED
        ) from None


def server_url(url: str | None) -> str:
    return (url or os.environ.get("HEYLOOK_URL") or DEFAULT_URL).rstrip("/")


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    quiet_libraries(level.upper() == "DEBUG")


def quiet_libraries(debug: bool = False) -> None:
    """Libraries' warnings (torch's and transformers' deprecations, say) are for heylook's
    developers, not its users: they go to the log, seen only at --log-level debug."""
    level = logging.DEBUG if debug else logging.ERROR
    logging.captureWarnings(True)
    logging.getLogger("py.warnings").setLevel(level)
    # transformers sets its own level when first imported, from this variable; later, from ours.
    os.environ["TRANSFORMERS_VERBOSITY"] = "debug" if debug else "error"
    for name in ("transformers", "huggingface_hub", "torch"):
        logging.getLogger(name).setLevel(level)


def human_bytes(count: int) -> str:
    size = float(count)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"


def auth_headers() -> dict[str, str]:
    """The API key from $HEYLOOK_API_KEY, as a server that requires one wants it."""
    key = os.environ.get(API_KEY_ENV)
    return {"Authorization": f"Bearer {key}"} if key else {}
