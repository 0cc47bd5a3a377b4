"""The README's examples, run as written against a real server (only the port differs)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.server import RunningServer

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
DOCUMENTED_URL = "http://127.0.0.1:8080"


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.DOTALL)


def test_readme_opens_with_the_two_commands() -> None:
    first = code_blocks("sh")[0].splitlines()
    assert [line.split()[0] for line in first] == ["./scripts/serve", "./scripts/test"]
    ci = (Path(__file__).resolve().parent.parent / ".ci" / "run").read_text()
    assert "./scripts/test" in ci


@pytest.mark.demo
def test_curl_example(server: RunningServer) -> None:
    [curl] = [block for block in code_blocks("sh") if block.startswith("curl")]
    assert DOCUMENTED_URL in curl
    done = subprocess.run(
        ["sh", "-c", curl.replace(DOCUMENTED_URL, server.base_url)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert '"content":"The capital of France is Paris."' in done.stdout


@pytest.mark.demo
def test_openai_sdk_example(server: RunningServer) -> None:
    [example] = code_blocks("python")
    assert DOCUMENTED_URL in example
    done = subprocess.run(
        [sys.executable, "-c", example.replace(DOCUMENTED_URL, server.base_url)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "Paris" in lines[0]
    assert len(lines) >= 2 and lines[1].strip()
