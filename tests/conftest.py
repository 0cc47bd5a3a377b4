from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
import yaml

from tests.fake_hub import FakeHub
from tests.fake_upstream import FakeUpstream
from tests.server import RunningServer
from tests.tiny import build_tiny_model

# Tests never reach the Hugging Face Hub or its router; the package index (for the demo wheel) is
# allowed. No real token is seen: tests that need one set their own.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ["HEYLOOK_HF_ROUTER"] = "http://127.0.0.1:9/v1"  # nothing listens there
for _variable in ("HF_TOKEN", "HF_API_KEY", "HUGGING_FACE_HUB_TOKEN"):
    os.environ.pop(_variable, None)
os.environ["HF_TOKEN_PATH"] = os.path.join(tempfile.mkdtemp(prefix="heylook-no-token-"), "token")
# Files and batches posted to test servers (schemathesis uploads some) stay out of the user's cache.
os.environ.setdefault("HEYLOOK_BATCHES", tempfile.mkdtemp(prefix="heylook-batches-"))

# The session server's body cap, small enough that tests can cross it cheaply.
BODY_CAP = 64 * 1024


def demo_entry(alias: str = "smollm2") -> dict[str, str]:
    """A shipped alias's source as models.yaml writes it."""
    from heylook.models.demo import demo_source

    source = demo_source(alias)
    entry = {"model": source.model, "gguf_file": source.gguf_file, "subfolder": source.subfolder}
    return {key: value for key, value in entry.items() if value}


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
    from heylook.models.demo import prepare_demo

    return prepare_demo()


@pytest.fixture(scope="session")
def embedding_model_dir() -> Path:
    """all-MiniLM-L6-v2, the shipped embedding model, unpacked from its wheel by heylook's own code."""
    from heylook.models.demo import EMBEDDING_ALIAS, prepare_demo

    return prepare_demo(EMBEDDING_ALIAS)


@pytest.fixture(scope="session")
def fake_hub(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[FakeHub]:
    """A server on 127.0.0.1 speaking the Hub's protocol, holding the tiny model as a repo."""
    with FakeHub(tmp_path_factory.mktemp("fake-hub")) as hub:
        hub.add_repo("test-org/tiny-chat", tiny_model_dir)
        yield hub


@pytest.fixture(scope="session")
def server(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, demo_model_dir: Path, fake_hub: FakeHub
) -> Iterator[RunningServer]:
    folder = tmp_path_factory.mktemp("server")
    broken = folder / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "no-such-architecture"}')
    registry = {
        "models": {
            "smollm2": demo_entry(),
            "tiny": {"model": str(tiny_model_dir)},
            "broken": {"model": str(broken)},
            "not-downloaded": {"model": "org/not-downloaded"},
        }
    }
    (folder / "models.yaml").write_text(yaml.safe_dump(registry, sort_keys=False))
    (folder / "hub").mkdir()
    running = RunningServer(
        folder / "models.yaml",
        folder / "server.log",
        "--max-body-bytes", str(BODY_CAP),
        # Pulls go to the fake Hub; everything else resolves from the local cache only.
        env={"HF_HUB_CACHE": str(folder / "hub"), "HF_HUB_OFFLINE": "0", "HF_ENDPOINT": fake_hub.endpoint},
    )  # fmt: skip
    yield running
    running.stop()


@pytest.fixture(scope="session")
def tool_server(tmp_path_factory: pytest.TempPathFactory, demo_model_dir: Path) -> Iterator[RunningServer]:
    """A server for tool calling and thinking: the demo model, and scripted models of real families
    (tests/families.py) whose replies are known: `thinker` (Qwen3's template; also as `qwen3`, for
    the README's example) reasons "Hmm" and answers "Paris"; `caller` (Qwen2.5's template) opens a
    tool call, which the grammar then completes."""
    from tests.families import build_scripted_model

    root = tmp_path_factory.mktemp("tool-server")
    script = {"\n": "<think>", "<think>": "Hmm", "Hmm": "</think>", "</think>": "Paris"}
    thinker = str(build_scripted_model(root / "thinker", "qwen3", script))
    caller = str(build_scripted_model(root / "caller", "qwen2.5", {"\n": "<tool_call>"}))
    registry = {
        "models": {
            # The demo alias as shipped, seeded so that what it says (and how long it takes) is the same
            # on every run.
            "smollm2": {**demo_entry(), "options": {"temperature": 0.2, "top_p": 0.9, "seed": 7}},
            "thinker": {"model": thinker},
            "qwen3": {"model": thinker},
            "caller": {"model": caller},
        }
    }
    (root / "models.yaml").write_text(yaml.safe_dump(registry, sort_keys=False))
    running = RunningServer(root / "models.yaml", root / "server.log")
    yield running
    running.stop()


@pytest.fixture(scope="session")
def client(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="not-needed", max_retries=0, timeout=120)


@pytest.fixture(scope="session")
def upstream_session() -> Iterator[FakeUpstream]:
    with FakeUpstream() as fake:
        yield fake


@pytest.fixture
def fake_upstream(upstream_session: FakeUpstream) -> FakeUpstream:
    """The session's scriptable OpenAI-compatible upstream, reset for each test."""
    upstream_session.reset()
    return upstream_session
