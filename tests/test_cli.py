from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.server import RunningServer, free_port


def heylook(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "heylook", *args], capture_output=True, text=True, timeout=timeout
    )


def test_help_lists_serve_and_its_options() -> None:
    done = heylook("--help")
    assert done.returncode == 0 and "serve" in done.stdout
    done = heylook("serve", "--help")
    assert done.returncode == 0
    for option in ("--host", "--port", "--models", "--keep-alive", "--max-tokens-limit", "--max-body-bytes"):
        assert option in done.stdout


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
