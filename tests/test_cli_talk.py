"""heylook run and heylook chat: in this process or through a server; chat through a real terminal."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pexpect
import pytest

from heylook.cli.talk import Conversation
from tests.server import RunningServer
from tests.test_cli import heylook

NO_SERVER = "http://127.0.0.1:9"


@pytest.fixture
def models(tmp_path: Path, tiny_model_dir: Path) -> Path:
    path = tmp_path / "models.yaml"
    path.write_text(f"models:\n  tiny:\n    model: {tiny_model_dir}\n")
    return path


def test_run_in_process(models: Path) -> None:
    done = heylook(
        "run", "tiny", "hello", "--max-new-tokens", "5", "--temperature", "0", "--models", str(models)
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.endswith("\n") and done.stdout.strip()
    # No library's warnings on the user's terminal (transformers' deprecations, say).
    assert "Warning" not in done.stderr and "deprecated" not in done.stderr, done.stderr


def test_run_reads_the_prompt_from_stdin(models: Path) -> None:
    done = heylook(
        "run", "tiny", "--max-new-tokens", "3", "--models", str(models), input="hello from a pipe\n"
    )
    assert done.returncode == 0, done.stderr
    empty = heylook("run", "tiny", "--models", str(models), input="")
    assert empty.returncode == 2 and "nothing to ask" in empty.stderr


def test_run_through_a_running_server(server: RunningServer, models: Path) -> None:
    direct = heylook(
        "run", "tiny", "hello", "--max-new-tokens", "6", "--temperature", "0", "--models", str(models)
    )
    served = heylook(
        "run", "tiny", "hello", "--max-new-tokens", "6", "--temperature", "0", "--url", server.base_url
    )
    assert served.returncode == 0, served.stderr
    assert served.stdout == direct.stdout, "the server and this process generate the same"
    unknown = heylook("run", "no-such-alias", "hi", "--url", server.base_url)
    assert unknown.returncode == 1 and "not found" in unknown.stderr
    gone = heylook("run", "tiny", "hi", "--url", NO_SERVER)
    assert gone.returncode == 1 and "no heylook server answers" in gone.stderr


@pytest.mark.demo
def test_run_json_mode_gives_json() -> None:
    done = heylook("run", "smollm2", "Describe Paris as JSON.", "--json-mode", "--temperature", "0",
                   "--models", str(Path(__file__).parent.parent / "models.yaml"))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert isinstance(json.loads(done.stdout), dict)


def spawn_chat(models: Path, *args: str) -> pexpect.spawn:
    env = {**os.environ, "HEYLOOK_URL": NO_SERVER, "COLUMNS": "200"}
    command = ["-m", "heylook", "chat", "tiny", "--models", str(models), "--max-new-tokens", "4", *args]
    return pexpect.spawn(sys.executable, command, env=env, encoding="utf-8", timeout=60)


def test_chat_through_a_terminal(models: Path, tmp_path: Path) -> None:
    history = tmp_path / "chat.json"
    chat = spawn_chat(models, "--history", str(history))
    chat.expect("/bye to leave")
    chat.expect(">>> ")
    chat.sendline("hello there")
    chat.expect(">>> ")  # the answer streamed, then the prompt again
    chat.sendline("/set temperature 0")
    chat.expect("temperature = 0.0")
    chat.sendline("/set")
    chat.expect("'temperature': 0.0")
    chat.sendline("/set warmth 3")
    chat.expect("Unknown setting 'warmth'")
    chat.sendline("/system Be brief.")
    chat.expect("System prompt set")
    chat.sendline('"""')
    chat.sendline("two")
    chat.sendline('lines"""')
    chat.expect(">>> ")
    chat.sendline("/help")
    chat.expect("/clear")
    chat.sendline("/bye")
    chat.expect(pexpect.EOF)
    chat.close()
    assert chat.exitstatus == 0
    saved = json.loads(history.read_text())
    assert [m["role"] for m in saved] == ["system", "user", "assistant", "user", "assistant"]
    assert saved[0]["content"] == "Be brief." and saved[3]["content"] == "two\nlines"

    resumed = spawn_chat(models, "--history", str(history))
    resumed.expect(">>> ")
    resumed.sendline("/clear")
    resumed.expect("cleared")
    resumed.sendline("again")
    resumed.expect(">>> ")
    resumed.sendeof()
    resumed.expect(pexpect.EOF)
    again = json.loads(history.read_text())
    assert [m["role"] for m in again] == ["system", "user", "assistant"]  # cleared, the system prompt kept


def test_chat_seeded_from_a_file_and_fitted_to_a_context(models: Path, tmp_path: Path) -> None:
    seed = tmp_path / "seed.json"
    turns = [
        {"role": "user", "content": "the quick brown fox " * 5},
        {"role": "assistant", "content": "ok " * 20},
    ]
    seed.write_text(json.dumps(turns))
    chat = spawn_chat(models, "--input-file", str(seed), "--ctx", "40")
    chat.expect(">>> ")
    chat.sendline("and now?")
    chat.expect("dropped the 2 oldest turn")
    chat.expect(">>> ")
    chat.sendline("/bye")
    chat.expect(pexpect.EOF)

    question = tmp_path / "question.txt"
    question.write_text("asked from a file")
    chat = spawn_chat(models, "--input-file", str(question))
    chat.expect("/bye to leave")
    chat.expect(">>> ")  # answered before the first prompt
    chat.sendline("/bye")
    chat.expect(pexpect.EOF)


def test_conversation_fit_keeps_the_system_prompt_and_the_newest_question() -> None:
    conversation = Conversation("sys", [{"role": "user", "content": str(i)} for i in range(6)])

    def count(messages: list[dict[str, str]]) -> int:
        return 10 * len(messages)

    assert conversation.fit(count, 35) == 4
    assert conversation.messages() == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "4"},
        {"role": "user", "content": "5"},
    ]
    assert conversation.fit(count, 5) == 1  # never below the newest question
    assert conversation.messages()[-1] == {"role": "user", "content": "5"}


def test_a_broken_history_file_is_a_usage_error(models: Path, tmp_path: Path) -> None:
    history = tmp_path / "chat.json"
    history.write_text('{"not": "a list"}')
    done = heylook("chat", "tiny", "--history", str(history), "--models", str(models), input="/bye\n")
    assert done.returncode == 2 and "JSON list" in done.stderr
