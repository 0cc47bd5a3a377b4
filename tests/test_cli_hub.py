"""heylook pull, import and cache, against a fake Hub on 127.0.0.1 and caches with the real layout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from heylook.registry.aliases import load_registry
from tests.fake_hub import FakeHub
from tests.hub_cache import lay_out_hub_cache
from tests.test_cli import HEADER, heylook


@pytest.fixture
def models(tmp_path: Path) -> Path:
    path = tmp_path / "models.yaml"
    path.write_text(HEADER + "  existing:\n    model: org/existing\n")
    return path


@pytest.fixture
def hf_cache(tmp_path: Path, tiny_model_dir: Path) -> Path:
    """A Hugging Face cache holding a chat model, an encoder (not a text generator) and a GGUF repo."""
    cache = tmp_path / "hub"
    lay_out_hub_cache(cache, "test-org/Tiny-Chat", tiny_model_dir)
    encoder = tmp_path / "encoder"
    encoder.mkdir()
    (encoder / "config.json").write_text(json.dumps({"architectures": ["BertModel"], "model_type": "bert"}))
    (encoder / "model.safetensors").write_bytes(b"\0" * 16)
    lay_out_hub_cache(cache, "test-org/an-encoder", encoder, commit="b" * 40)
    gguf = tmp_path / "gguf"
    gguf.mkdir()
    (gguf / "Small-Q4_K_M.gguf").write_bytes(b"GGUF")
    lay_out_hub_cache(cache, "test-org/Small-GGUF", gguf, commit="c" * 40)
    return cache


def test_pull_downloads_with_progress_and_adds_an_alias(
    fake_hub: FakeHub, models: Path, tmp_path: Path
) -> None:
    env = {"HF_ENDPOINT": fake_hub.endpoint, "HF_HUB_OFFLINE": "0", "HF_HUB_CACHE": str(tmp_path / "hub")}
    done = heylook("pull", "test-org/tiny-chat", "--models", str(models), env=env)
    assert done.returncode == 0, done.stderr
    assert "pulling manifest" in done.stdout and "alias tiny-chat" not in done.stdout
    assert "alias test-org/tiny-chat added" in done.stdout
    alias = load_registry(models).get("test-org/tiny-chat")
    assert alias.source.model == "test-org/tiny-chat" and len(alias.source.revision or "") == 40
    assert models.read_text().startswith(HEADER)
    # The alias resolves offline from what was pulled, and `check` says it is ready.
    check = heylook("check", "--models", str(models), env={**env, "HF_HUB_OFFLINE": "1"})
    assert "ready" in check.stdout
    named = heylook(
        "pull",
        "test-org/tiny-chat",
        "--alias",
        "chatty",
        "--quantize",
        "int8",
        "--models",
        str(models),
        env=env,
    )
    assert named.returncode == 0 and load_registry(models).get("chatty").load.quantization == "int8"


def test_pull_failures(fake_hub: FakeHub, models: Path, tmp_path: Path) -> None:
    env = {"HF_ENDPOINT": fake_hub.endpoint, "HF_HUB_OFFLINE": "0", "HF_HUB_CACHE": str(tmp_path / "hub")}
    missing = heylook("pull", "test-org/nothing-here", "--models", str(models), env=env)
    assert missing.returncode == 1 and "not found" in missing.stderr
    bad = heylook("pull", "not a repo", "--models", str(models), env=env)
    assert bad.returncode == 2
    taken = heylook("pull", "test-org/tiny-chat", "--alias", "existing", "--models", str(models), env=env)
    assert taken.returncode == 1 and "--force" in taken.stderr


def test_import_from_the_hf_cache(hf_cache: Path, models: Path) -> None:
    env = {"HF_HUB_CACHE": str(hf_cache)}
    dry = heylook("import", "--hf-cache", "--dry-run", "--models", str(models), env=env)
    assert dry.returncode == 0, dry.stderr
    assert "would create" in dry.stdout and "tiny-chat" in dry.stdout
    assert "skipped: not a text generator (BertModel)" in dry.stdout
    assert "tiny-chat" not in models.read_text(), "a dry run writes nothing"

    profiled = ("--profile", "interactive", "--override", "options.temperature=0.5")
    done = heylook("import", "--hf-cache", *profiled, "--models", str(models), env=env)
    assert done.returncode == 0, done.stderr
    registry = load_registry(models)
    chat, gguf = registry.get("tiny-chat"), registry.get("small-q4_k_m")
    assert chat.source.model == "test-org/Tiny-Chat"
    assert (
        chat.options.temperature == 0.5 and chat.options.repetition_penalty == 1.1 and chat.keep_alive == 1800
    )
    assert gguf.source.gguf_file == "Small-Q4_K_M.gguf"
    assert "an-encoder" not in registry.aliases
    assert models.read_text().startswith(HEADER)

    again = heylook("import", "--hf-cache", "--profile", "fast", "--models", str(models), env=env)
    assert "exists: kept" in again.stdout
    assert load_registry(models).get("tiny-chat").options.temperature == 0.5
    forced = heylook("import", "--hf-cache", "--profile", "fast", "--force", "--models", str(models), env=env)
    assert "replaced" in forced.stdout
    assert load_registry(models).get("tiny-chat").options.max_tokens == 512


def test_import_from_a_folder(tmp_path: Path, tiny_model_dir: Path, models: Path) -> None:
    import shutil

    folder = tmp_path / "my-models"
    shutil.copytree(tiny_model_dir, folder / "family" / "Tiny-Finetune")
    (folder / "loose.Q8_0.gguf").write_bytes(b"GGUF")
    done = heylook(
        "import",
        "--folder",
        str(folder),
        "--profile",
        "memory",
        "--quantize",
        "int4",
        "--models",
        str(models),
    )
    assert done.returncode == 0, done.stderr
    registry = load_registry(models)
    assert registry.get("tiny-finetune").source.model == str(folder / "family" / "Tiny-Finetune")
    assert registry.get("tiny-finetune").load.dtype == "bfloat16"
    assert registry.get("tiny-finetune").load.quantization == "int4"
    assert registry.get("loose.q8_0").source.model == str(folder / "loose.Q8_0.gguf")


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["import"], "exactly one of --hf-cache and --folder"),
        (["import", "--folder", "/no/such/place"], "is not a folder"),
        (["import", "--hf-cache", "--override", "oops"], "is not KEY=VALUE"),
        (["import", "--hf-cache", "--override", "options.temperature=hot"], "'temperature' must be a number"),
    ],
)
def test_import_usage_errors(hf_cache: Path, models: Path, args: list[str], words: str) -> None:
    done = heylook(*args, "--models", str(models), env={"HF_HUB_CACHE": str(hf_cache)})
    assert done.returncode == 2
    assert words in done.stderr
    assert "tiny-chat" not in models.read_text()


def test_cache_scan_and_clear(hf_cache: Path, models: Path) -> None:
    env = {"HF_HUB_CACHE": str(hf_cache)}
    scan = heylook("cache", "scan", env=env)
    assert scan.returncode == 0 and "test-org/Tiny-Chat" in scan.stdout and "3 repos" in scan.stdout
    refused = heylook("cache", "clear", "test-org/Tiny-Chat", "--models", str(models), env=env, input="n\n")
    assert refused.returncode == 1 and "Nothing deleted" in refused.stdout
    assert (hf_cache / "models--test-org--Tiny-Chat").exists()
    cleared = heylook("cache", "clear", "test-org/Tiny-Chat", "--models", str(models), env=env, input="y\n")
    assert cleared.returncode == 0 and "freed" in cleared.stdout
    assert not (hf_cache / "models--test-org--Tiny-Chat" / "snapshots").exists() or not any(
        (hf_cache / "models--test-org--Tiny-Chat" / "snapshots").iterdir()
    )
    everything = heylook("cache", "clear", "--yes", "--models", str(models), env=env)
    assert everything.returncode == 0
    unknown = heylook("cache", "clear", "test-org/never-there", "--yes", env=env)
    assert unknown.returncode == 1 and "not in the Hugging Face cache" in unknown.stderr


SAMPLING = {"do_sample": True, "temperature": 0.6, "top_k": 20, "top_p": 0.95, "eos_token_id": 0}


def with_recommended_sampling(tiny_model_dir: Path, folder: Path) -> Path:
    """The tiny model, with a generation_config.json that recommends sampling settings."""
    import shutil

    shutil.copytree(tiny_model_dir, folder)
    (folder / "generation_config.json").write_text(json.dumps(SAMPLING))
    return folder


def test_import_takes_the_models_recommended_sampling(
    tmp_path: Path, tiny_model_dir: Path, models: Path
) -> None:
    folder = tmp_path / "my-models"
    with_recommended_sampling(tiny_model_dir, folder / "Sampler")
    done = heylook("import", "--folder", str(folder), "--profile", "balanced", "--models", str(models))
    assert done.returncode == 0, done.stderr
    options = load_registry(models).get("sampler").options
    # The model's recommendation beats the profile's (temperature 0.7, top_p 0.9); the rest of the
    # profile (min_p 0.05) still applies.
    assert (options.temperature, options.top_k, options.top_p, options.min_p) == (0.6, 20, 0.95, 0.05)


def test_pull_takes_the_models_recommended_sampling(
    fake_hub: FakeHub, models: Path, tmp_path: Path, tiny_model_dir: Path
) -> None:
    fake_hub.add_repo("test-org/sampler", with_recommended_sampling(tiny_model_dir, tmp_path / "sampler"))
    env = {"HF_ENDPOINT": fake_hub.endpoint, "HF_HUB_OFFLINE": "0", "HF_HUB_CACHE": str(tmp_path / "hub")}
    done = heylook("pull", "test-org/sampler", "--alias", "sampler", "--models", str(models), env=env)
    assert done.returncode == 0, done.stderr
    options = load_registry(models).get("sampler").options
    assert (options.temperature, options.top_k, options.top_p) == (0.6, 20, 0.95)


def test_a_model_that_does_not_sample_recommends_nothing(tmp_path: Path, tiny_model_dir: Path) -> None:
    from heylook.models.catalog import recommended_options

    assert recommended_options(tiny_model_dir) == {}  # do_sample left at transformers' false
    assert recommended_options(tmp_path) == {}  # no generation_config.json at all
