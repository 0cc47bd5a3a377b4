"""The coding agents users point at heylook, run for real and non-interactively against a live server
(`scripts/setup` installs them at pinned versions): Claude Code on the Anthropic API, Codex CLI on
the Responses API (its provider config, and `--oss --local-provider ollama`), Continue's CLI,
aider and opencode on chat completions. Each does (a) a full tool round trip through an alias whose
upstream is a scripted OpenAI-compatible server (it asks for a shell command, the agent runs it and
sends the result back, the upstream answers quoting it), and (b) a turn on the demo model, so the
local path answers too. Every body each agent sent is checked against its fixture
(tests/fixtures/agents/): a field or block type a new version adds fails here first.
`HEYLOOK_RECORD_AGENTS=1` records them."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import agent_fixtures
from tests.agent_upstream import AgentUpstream, ScriptedCall
from tests.conftest import demo_entry
from tests.recording_proxy import RecordingProxy
from tests.server import RunningServer

pytestmark = pytest.mark.demo

ROOT = Path(__file__).resolve().parent.parent
NODE_BIN = ROOT / ".venv" / "agents" / "node_modules" / ".bin"
AIDER = ROOT / ".venv" / "aider" / "bin" / "aider"
VERSIONS = {
    "claude-code": "2.1.197",
    "codex": "0.171.0",
    "continue": "1.5.47",
    "aider": "0.86.2",
    "opencode": "1.18.33",
}
RECORD = os.environ.get("HEYLOOK_RECORD_AGENTS") == "1"
MARK = "heylook-round-trip"
# The demo model's turn: short, so a 135M model on two cores answers within the test's time.
DEMO_TOKENS = "48"


def installed(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path.name} is not installed: scripts/setup installs it (npm, or a venv for aider)")
    return path


@pytest.fixture(scope="module")
def upstream() -> Iterator[AgentUpstream]:
    calls = [
        ScriptedCall("Bash", {"command": f"echo {MARK}", "description": "Print the marker"}),
        ScriptedCall("exec_command", {"cmd": f"echo {MARK}"}),
        ScriptedCall("bash", {"command": f"echo {MARK}", "description": "Print the marker"}),
    ]
    with AgentUpstream(calls=calls) as scripted:
        yield scripted


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, upstream: AgentUpstream) -> Iterator[RunningServer]:
    home = tmp_path_factory.mktemp("agents-server")
    models = home / "models.yaml"
    entries: dict[str, Any] = {
        # Greedy, and a short reply for clients that ask for no limit (a 135M model may not stop).
        "smollm2": {**demo_entry(), "options": {"temperature": 0, "max_tokens": int(DEMO_TOKENS)}},
        "scripted": {"provider": "openai", "model": "scripted-model", "base_url": upstream.base_url},
    }
    models.write_text(yaml.safe_dump({"models": entries}))
    running = RunningServer(models, home / "serve.log")
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def proxy(server: RunningServer) -> Iterator[RecordingProxy]:
    with RecordingProxy(server.base_url) as recording:
        yield recording


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A git repository (Codex works in one) holding a README."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "README.md").write_text("A project the agent works in.\n")
    subprocess.run(["git", "init", "-q", str(work)], check=True)
    return work


def run(command: list[str | Path], *, cwd: Path, env: dict[str, str], timeout: float = 240) -> str:
    """Runs an agent to its end; its output (stdout and stderr) is returned, and shown on failure."""
    done = subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        env={**os.environ, **env},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{command[0]} exited {done.returncode}:\n{output[-4000:]}"
    return output


def agent_home(tmp_path: Path) -> Path:
    """A HOME of the agent's own: no user settings, logins or history leak in, none are left."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return home


def check_sent(client: str, proxy: RecordingProxy, *routes: str) -> list[tuple[str, Any]]:
    """Every body the agent sent on `routes` was answered 2xx, and holds only fields its fixture
    holds (or, recording, is added to it)."""
    sent = []
    for route in routes:
        for exchange in proxy.posted(route):
            assert exchange.status < 300, f"{client}: {route} answered {exchange.status}"
            sent.append((route, exchange.body))
    assert sent, f"{client} sent nothing on {routes}"
    if RECORD:
        agent_fixtures.save(client, VERSIONS[client], sent)
    new = agent_fixtures.new_paths(client, sent)
    assert not new, (
        f"{client} sent fields its fixture does not hold; check heylook handles each, then record "
        f"again with HEYLOOK_RECORD_AGENTS=1: {new}"
    )
    return sent


def assert_round_trip(upstream: AgentUpstream, output: str, since: int) -> None:
    """The agent ran the scripted call, sent its result back, and showed the answer quoting it."""
    results = [r for body in upstream.bodies[since:] for r in _tool_results(body)]
    assert any(MARK in result for result in results), f"no tool result came back: {results}"
    assert f"The tool said: {MARK}" in output, output[-4000:]


def _tool_results(body: dict[str, Any]) -> list[str]:
    texts = []
    for message in body.get("messages") or []:
        if message.get("role") == "tool":
            content = message.get("content")
            texts.append(content if isinstance(content, str) else json.dumps(content))
    return texts


# --- Claude Code (Anthropic Messages API) -----------------------------------------------------------


def claude_env(tmp_path: Path, proxy: RecordingProxy) -> dict[str, str]:
    # What the README tells a user: the base URL, and a token (Claude Code wants one; heylook
    # checks none unless started with --api-key).
    return {
        "HOME": str(agent_home(tmp_path)),
        "ANTHROPIC_BASE_URL": proxy.base_url,
        "ANTHROPIC_AUTH_TOKEN": "not-needed",
    }


def test_claude_code_tool_round_trip(
    upstream: AgentUpstream, proxy: RecordingProxy, workdir: Path, tmp_path: Path
) -> None:
    claude = installed(NODE_BIN / "claude")
    since = len(upstream.bodies)
    command = [claude, "-p", f"Run `echo {MARK}` in the shell.", "--model", "scripted"]
    output = run([*command, "--allowedTools", "Bash"], cwd=workdir, env=claude_env(tmp_path, proxy))
    assert_round_trip(upstream, output, since)
    check_sent("claude-code", proxy, "/v1/messages")


def test_claude_code_on_the_demo_model(proxy: RecordingProxy, workdir: Path, tmp_path: Path) -> None:
    claude = installed(NODE_BIN / "claude")
    # Claude Code fails a reply cut at its limit: room enough for the small model to finish.
    env = claude_env(tmp_path, proxy) | {"CLAUDE_CODE_MAX_OUTPUT_TOKENS": "512"}
    # Claude Code's own prompt and tools are far more than the demo model's 8,192-token context:
    # a short system prompt and no tools, as one would give a model this small.
    command = [claude, "-p", "What is the capital of France? Answer in one word.", "--model", "smollm2"]
    output = run(
        [*command, "--system-prompt", "You are a helpful assistant.", "--tools", ""],
        cwd=workdir,
        env=env,
    )
    assert "Paris" in output
    check_sent("claude-code", proxy, "/v1/messages")


# --- Codex CLI (Responses API) ----------------------------------------------------------------------


def codex_home(tmp_path: Path, base_url: str, model: str, extra: str = "") -> Path:
    """The README's ~/.codex/config.toml, pointed at this server."""
    home = agent_home(tmp_path)
    (home / ".codex").mkdir(exist_ok=True)
    config = f"""model = "{model}"
model_provider = "heylook"
{extra}
[model_providers.heylook]
name = "heylook"
base_url = "{base_url}/v1"
wire_api = "responses"
"""
    (home / ".codex" / "config.toml").write_text(config)
    return home


def codex_exec(codex: Path, prompt: str, *extra: str) -> list[str | Path]:
    # `codex exec` as it comes: its read-only sandbox and approval policy (echo needs no more).
    return [codex, "exec", *extra, prompt]


def test_codex_tool_round_trip(
    upstream: AgentUpstream, proxy: RecordingProxy, workdir: Path, tmp_path: Path
) -> None:
    codex = installed(NODE_BIN / "codex")
    since = len(upstream.bodies)
    home = codex_home(tmp_path, proxy.base_url, "scripted")
    output = run(codex_exec(codex, f"Run `echo {MARK}` in the shell."), cwd=workdir, env={"HOME": str(home)})
    assert_round_trip(upstream, output, since)
    check_sent("codex", proxy, "/v1/responses")


def test_codex_oss_ollama_tool_round_trip(
    upstream: AgentUpstream, proxy: RecordingProxy, workdir: Path, tmp_path: Path
) -> None:
    """`codex --oss --local-provider ollama`: it checks /api/version and /api/tags, then talks to
    the Responses API; CODEX_OSS_BASE_URL is only where heylook listens (Ollama's port by default)."""
    codex = installed(NODE_BIN / "codex")
    since = len(upstream.bodies)
    env = {"HOME": str(agent_home(tmp_path)), "CODEX_OSS_BASE_URL": f"{proxy.base_url}/v1"}
    command = codex_exec(codex, f"Run `echo {MARK}` in the shell.", "--oss", "--local-provider", "ollama")
    output = run([*command[:-1], "-m", "scripted", command[-1]], cwd=workdir, env=env)
    assert_round_trip(upstream, output, since)
    check_sent("codex", proxy, "/v1/responses")


def test_codex_on_the_demo_model(proxy: RecordingProxy, workdir: Path, tmp_path: Path) -> None:
    codex = installed(NODE_BIN / "codex")
    instructions = tmp_path / "instructions.md"
    instructions.write_text("You are a helpful assistant. Answer briefly.\n")
    extra = f'model_instructions_file = "{instructions}"\n'
    home = codex_home(tmp_path, proxy.base_url, "smollm2", extra)
    output = run(codex_exec(codex, "What is the capital of France?"), cwd=workdir, env={"HOME": str(home)})
    assert "Paris" in output
    check_sent("codex", proxy, "/v1/responses")


# --- Continue's CLI (chat completions) --------------------------------------------------------------


def continue_config(tmp_path: Path, base_url: str, model: str) -> Path:
    config = tmp_path / "continue.yaml"
    entry = {
        "name": model,
        "provider": "openai",
        "model": model,
        "apiBase": f"{base_url}/v1",
        "apiKey": "not-needed",
        "roles": ["chat", "edit", "apply"],
        "capabilities": ["tool_use"],
    }
    config.write_text(
        yaml.safe_dump({"name": "heylook", "version": "0.0.1", "schema": "v1", "models": [entry]})
    )
    return config


def test_continue_tool_round_trip(
    upstream: AgentUpstream, proxy: RecordingProxy, workdir: Path, tmp_path: Path
) -> None:
    cn = installed(NODE_BIN / "cn")
    since = len(upstream.bodies)
    config = continue_config(tmp_path, proxy.base_url, "scripted")
    prompt = f"Run `echo {MARK}` in the shell."
    output = run(
        [cn, "-p", prompt, "--config", config, "--auto"], cwd=workdir, env={"HOME": str(agent_home(tmp_path))}
    )
    assert_round_trip(upstream, output, since)
    check_sent("continue", proxy, "/v1/chat/completions")


def test_continue_on_the_demo_model(proxy: RecordingProxy, workdir: Path, tmp_path: Path) -> None:
    cn = installed(NODE_BIN / "cn")
    config = continue_config(tmp_path, proxy.base_url, "smollm2")
    command = [cn, "-p", "What is the capital of France?", "--config", config, "--readonly"]
    output = run(command, cwd=workdir, env={"HOME": str(agent_home(tmp_path))})
    assert "Paris" in output
    check_sent("continue", proxy, "/v1/chat/completions")


# --- aider (chat completions, through litellm) ------------------------------------------------------


def aider_command(base_url: str, model: str, message: str) -> list[str | Path]:
    return [
        installed(AIDER),
        "--model",
        f"openai/{model}",
        "--openai-api-base",
        f"{base_url}/v1",
        "--openai-api-key",
        "not-needed",
        "--yes-always",
        "--no-git",
        "--no-show-model-warnings",
        "--no-check-update",
        "--analytics-disable",
        "--no-pretty",
        "--message",
        message,
    ]


def aider_env(tmp_path: Path) -> dict[str, str]:
    return {"HOME": str(agent_home(tmp_path))}


def test_aider_edits_a_file_through_a_scripted_upstream(
    upstream: AgentUpstream, proxy: RecordingProxy, workdir: Path, tmp_path: Path
) -> None:
    """aider asks for whole files back (its `whole` edit format for an unknown model): the scripted
    upstream's answer names the file and its new text, and aider writes it."""
    upstream.answer_whole = ("hello.txt", MARK)
    try:
        command = aider_command(proxy.base_url, "scripted", "Create hello.txt saying the marker.")
        run([*command, "hello.txt"], cwd=workdir, env=aider_env(tmp_path))
    finally:
        upstream.answer_whole = None
    assert (workdir / "hello.txt").read_text().strip() == MARK
    check_sent("aider", proxy, "/v1/chat/completions")


def test_aider_on_the_demo_model(proxy: RecordingProxy, workdir: Path, tmp_path: Path) -> None:
    command = aider_command(proxy.base_url, "smollm2", "What is the capital of France? Answer in one word.")
    output = run([*command, "--max-chat-history-tokens", "1024"], cwd=workdir, env=aider_env(tmp_path))
    assert "Tokens:" in output
    check_sent("aider", proxy, "/v1/chat/completions")


# --- opencode (chat completions, through @ai-sdk/openai-compatible) ---------------------------------


def opencode_env(tmp_path: Path, base_url: str, model: dict[str, Any], **extra: Any) -> dict[str, str]:
    """A HOME whose ~/.config/opencode/opencode.json is the README's: a provider on heylook's /v1
    offering `model` (its entry), and `extra` settings."""
    home = agent_home(tmp_path)
    config_dir = home / ".config" / "opencode"
    config_dir.mkdir(parents=True, exist_ok=True)
    provider = {
        "npm": "@ai-sdk/openai-compatible",
        "name": "heylook",
        "options": {"baseURL": f"{base_url}/v1"},
        "models": {model["name"]: model},
    }
    config = {"$schema": "https://opencode.ai/config.json", "provider": {"heylook": provider}, **extra}
    (config_dir / "opencode.json").write_text(json.dumps(config, indent=2))
    # opencode fetches its model catalogue from models.dev at start; offline it logs the failure and
    # goes on: this skips the try.
    return {"HOME": str(home), "OPENCODE_DISABLE_MODELS_FETCH": "1"}


def test_opencode_tool_round_trip(
    upstream: AgentUpstream, proxy: RecordingProxy, workdir: Path, tmp_path: Path
) -> None:
    """`opencode run` as it comes: its build agent runs bash without asking."""
    opencode = installed(NODE_BIN / "opencode")
    since = len(upstream.bodies)
    env = opencode_env(tmp_path, proxy.base_url, {"name": "scripted"})
    command = [opencode, "run", "-m", "heylook/scripted", f"Run `echo {MARK}` in the shell."]
    output = run(command, cwd=workdir, env=env)
    assert_round_trip(upstream, output, since)
    check_sent("opencode", proxy, "/v1/chat/completions")


def test_opencode_on_the_demo_model(proxy: RecordingProxy, workdir: Path, tmp_path: Path) -> None:
    opencode = installed(NODE_BIN / "opencode")
    # opencode's own prompt and tools are more than the demo model's 8,192-token context: an agent
    # with a short prompt and no tools, and the model's limits (it asks for `output` tokens).
    model = {"name": "smollm2", "limit": {"context": 8192, "output": int(DEMO_TOKENS)}}
    plain = {"mode": "primary", "prompt": "You are a helpful assistant.", "tools": {"*": False}}
    env = opencode_env(tmp_path, proxy.base_url, model, agent={"plain": plain})
    # The question as separate words: `opencode run` wraps an argument holding a space in quotes,
    # which leads the small model astray. A title given, so no second generation makes one.
    question = ["What", "is", "the", "capital", "of", "France?"]
    command = [opencode, "run", "-m", "heylook/smollm2", "--agent", "plain", "--title", "quiz", *question]
    output = run(command, cwd=workdir, env=env)
    assert "Paris" in output
    check_sent("opencode", proxy, "/v1/chat/completions")


# --- The README shows the suite's commands ----------------------------------------------------------


def readme_section() -> str:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("## Coding agents")
    return readme[start : readme.index("\n## ", start + 1)]


def blocks(section: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", section, flags=re.DOTALL)


def test_the_readme_configs_are_the_suites(tmp_path: Path) -> None:
    section = readme_section()
    url = "http://127.0.0.1:11434"
    [continue_yaml] = blocks(section, "yaml")
    assert yaml.safe_load(continue_yaml) == yaml.safe_load(
        continue_config(tmp_path, url, "qwen3").read_text()
    )
    [opencode_json] = blocks(section, "json")
    env = opencode_env(tmp_path, url, {"name": "qwen3"})
    written = Path(env["HOME"]) / ".config" / "opencode" / "opencode.json"
    assert json.loads(opencode_json) == json.loads(written.read_text())


def test_the_readme_commands_use_the_suites_flags(tmp_path: Path) -> None:
    """Each agent's command line in the README uses only flags the suite's runs use."""
    section = readme_section()
    [aider] = re.findall(r"^aider .*$", section, flags=re.MULTILINE)
    suite = aider_command("http://127.0.0.1:11434", "qwen3", "m")
    assert all(flag in suite for flag in aider.split() if flag.startswith("--"))
    claude_flags = {"-p", "--model", "--allowedTools", "--system-prompt", "--tools"}
    for line in re.findall(r"^.*\bclaude -p .*$", section, flags=re.MULTILINE):
        assert {f for f in line.split() if f.startswith("-")} <= claude_flags, line


def test_the_versions_checked_are_the_ones_set_up() -> None:
    """The fixtures' versions are scripts/setup's pins: a pin raised without recording fails here."""
    setup = (ROOT / "scripts" / "setup").read_text()
    packages = {
        "claude-code": "@anthropic-ai/claude-code@",
        "codex": "@openai/codex@",
        "continue": "@continuedev/cli@",
        "aider": "aider-chat==",
        "opencode": "opencode-ai@",
    }
    for client, version in VERSIONS.items():
        assert f"{packages[client]}{version}" in setup, client
        assert agent_fixtures.load(client)["version"] == version, client
