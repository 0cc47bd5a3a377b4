"""Every cache and queue has a bound, and nothing slow holds what others need: grammar caches in
bytes, schema compiles off the model's slots and stopped with their client, registry edits on a
thread of their own with a bounded queue, models.yaml of bounded size, model facts read once."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import anyio
import pytest

from heylook.engine.constraints import JsonGrammars
from heylook.errors import InvalidRequest, ServerBusy
from heylook.generate import GrammarJob, compile_grammar, start_generation
from heylook.protocols.fields import MAX_SCHEMA_BYTES, parse_json_object
from heylook.protocols.tools import read_tools
from heylook.registry.aliases import parse_registry
from heylook.registry.edits import add_alias
from heylook.registry.model_source import source_kind
from heylook.router import Limits, ModelRouter
from heylook.routes.common import unless_client_leaves
from heylook.routes.ollama import RegistryEdits
from heylook.settings import Settings
from heylook.types import ChatPrompt, GenerationRequest, JsonFormat, Message, SamplingOptions
from tests.fakes import fake_loaded_model

pytestmark = pytest.mark.anyio
HI = ChatPrompt((Message("user", "hi"),))


def test_the_grammar_cache_stays_within_its_bytes(tiny_tokenizer) -> None:
    limit = 64 * 2**10
    grammars = JsonGrammars(
        tiny_tokenizer, len(tiny_tokenizer), [tiny_tokenizer.eos_token_id], cache_bytes=limit
    )
    for n in range(60):  # distinct schemas: each compiles anew
        schema = {"type": "object", "properties": {f"field{n}": {"type": "string", "enum": [f"v{n}"] * 3}}}
        grammars.compile(JsonFormat(json.dumps(schema)))
    assert 0 < grammars.bytes_held <= limit
    assert 0 < len(grammars) < 60
    schema = {"type": "object", "properties": {"field59": {"type": "string", "enum": ["v59"] * 3}}}
    assert grammars.compile(JsonFormat(json.dumps(schema))) is grammars.compile(
        JsonFormat(json.dumps(schema))
    )


@pytest.mark.parametrize(
    "schema",
    [
        {"enum": [f"value-{i}" for i in range(20_000)]},  # a huge enum
        {"const": "x" * (MAX_SCHEMA_BYTES + 1)},  # a huge const
    ],
)
def test_schemas_too_big_to_compile_quickly_are_400s(schema: dict) -> None:
    tool = {
        "type": "function",
        "function": {"name": "f", "parameters": {"type": "object", "properties": {"a": schema}}},
    }
    with pytest.raises(InvalidRequest, match="KiB") as caught:
        read_tools({"tools": [tool]})
    assert caught.value.param == "tools[0].function.parameters"
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "response_format": {"type": "json_schema", "json_schema": {"schema": schema}},
    }
    from heylook.protocols import openai

    with pytest.raises(InvalidRequest, match="KiB"):
        openai.parse_chat_request(body)


def test_a_deeply_nested_schema_is_refused_before_it_is_compiled() -> None:
    schema: dict = {"type": "array"}
    for _ in range(900):
        schema = {"type": "array", "items": schema}
    raw = json.dumps({"model": "m", "messages": [], "format": schema}).encode()
    with pytest.raises(InvalidRequest, match="nested deeper"):
        parse_json_object(raw)


async def test_a_slow_compile_is_a_400_after_its_timeout() -> None:
    started = time.monotonic()
    with pytest.raises(InvalidRequest, match=r"took longer than 0\.2 s") as caught:
        await compile_grammar(GrammarJob(lambda: time.sleep(2), "response_format"), timeout=0.2)
    assert caught.value.param == "response_format"
    assert time.monotonic() - started < 1.5


class SlowGrammars:
    """Compiles take `seconds`; records whether other requests generated meanwhile."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.started = threading.Event()

    def compile(self, format: JsonFormat) -> str:
        self.started.set()
        time.sleep(self.seconds)
        return "compiled"


async def test_a_compiling_request_holds_no_slot(tiny_tokenizer) -> None:
    """With one slot and no queue, a request whose schema compiles slowly lets another through."""
    registry = parse_registry("models:\n  m:\n    model: org/m\n", Path("/tmp/models.yaml"))
    slow = SlowGrammars(1.0)

    def loader(source, load=None, *, name):
        return replace(fake_loaded_model(source, tiny_tokenizer), grammars=slow)

    router = ModelRouter(registry, loader=loader, limits=Limits(parallel=1, max_queue=0))
    json_mode = GenerationRequest("m", HI, SamplingOptions(response_format=JsonFormat()))
    plain = GenerationRequest("m", HI, SamplingOptions())
    results = {}
    async with anyio.create_task_group() as group:

        async def compiling() -> None:
            results["json"] = await start_generation(router, json_mode, Settings())

        group.start_soon(compiling)
        await anyio.to_thread.run_sync(slow.started.wait)
        results["plain"] = await start_generation(router, plain, Settings())  # no ServerBusy
        results["plain"].close()
    engine = results["json"].lease.model.engine
    assert engine.submitted[-1][1].grammar == "compiled"
    results["json"].close()


async def test_work_stops_when_the_client_leaves() -> None:
    stopped = anyio.Event()
    messages = iter([{"type": "http.request", "body": b"{}"}, {"type": "http.disconnect"}])

    async def receive() -> dict:
        await anyio.sleep(0.05)
        return next(messages)

    request = SimpleNamespace(
        receive=receive, method="POST", url=SimpleNamespace(path="/v1/chat/completions")
    )

    async def forever() -> None:
        try:
            await anyio.sleep(30)
        finally:
            stopped.set()

    with anyio.fail_after(5):
        assert await unless_client_leaves(request, forever) is None  # type: ignore[arg-type]
    assert stopped.is_set()


async def test_errors_come_out_whole_not_as_a_group() -> None:
    async def receive() -> dict:
        await anyio.sleep(30)
        return {"type": "http.disconnect"}

    async def failing() -> None:
        raise InvalidRequest("nope")

    request = SimpleNamespace(receive=receive, method="POST", url=SimpleNamespace(path="/"))
    with pytest.raises(InvalidRequest, match="nope"):
        await unless_client_leaves(request, failing)  # type: ignore[arg-type]


async def test_registry_edits_wait_on_their_own_thread_and_their_queue_is_bounded(tmp_path: Path) -> None:
    path = tmp_path / "models.yaml"
    path.write_text("models:\n  a:\n    model: org/a\n")
    edits = RegistryEdits(max_waiting=2)
    router = SimpleNamespace(registry=parse_registry(path.read_text(), path))
    release = threading.Event()

    def stuck_edit(target: Path) -> object:
        release.wait(10)
        return router.registry

    async with anyio.create_task_group() as group:
        group.start_soon(edits.apply, router, stuck_edit)
        group.start_soon(edits.apply, router, stuck_edit)
        await anyio.sleep(0.1)
        with pytest.raises(ServerBusy):
            await edits.apply(router, stuck_edit)  # type: ignore[arg-type]
        # Meanwhile the worker threads every request needs are free.
        with anyio.fail_after(2):
            assert await anyio.to_thread.run_sync(lambda: "free") == "free"
        release.set()


def test_models_yaml_holds_a_bounded_number_of_aliases(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import heylook.registry.edits

    monkeypatch.setattr(heylook.registry.edits, "MAX_ALIASES", 3)
    path = tmp_path / "models.yaml"
    path.write_text("models:\n")
    for n in range(3):
        add_alias(path, f"a{n}", {"model": "org/m"})
    with pytest.raises(InvalidRequest, match="at most 3 aliases"):
        add_alias(path, "one-too-many", {"model": "org/m"})
    add_alias(path, "a0", {"model": "org/other"})  # replacing one is fine


def test_model_facts_read_the_files_once_per_version(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch
) -> None:
    import shutil

    import heylook.models.catalog
    from heylook.models.catalog import model_facts

    folder = shutil.copytree(tiny_model_dir, tmp_path / "model")
    registry = parse_registry(
        "models:\n" + "".join(f"  a{n}:\n    model: {folder}\n" for n in range(50)), tmp_path / "models.yaml"
    )
    reads = []
    real = heylook.models.catalog.read_json
    monkeypatch.setattr(heylook.models.catalog, "read_json", lambda path: reads.append(path) or real(path))
    facts = [model_facts(alias) for alias in registry.aliases.values()]
    assert len({f.digest for f in facts}) == 1 and facts[0].family == "llama"
    assert len(reads) == 3, "config, tokenizer config and tokenizer, once for all 50 aliases"
    (folder / "config.json").write_text((folder / "config.json").read_text().replace("llama", "llama "))
    model_facts(registry.get("a0"))
    assert len(reads) == 6, "a changed file is read again"


@pytest.mark.parametrize(
    ("model", "kind"),
    [
        ("org/model.gguf", "hub"),
        ("model.gguf", "local"),
        ("./dir/model.gguf", "local"),
        ("a/b/c.gguf", "local"),
    ],
)
def test_a_repo_id_ending_in_gguf_is_a_repo(model: str, kind: str) -> None:
    assert source_kind(model) == kind
