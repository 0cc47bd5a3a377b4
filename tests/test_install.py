"""What users install: heylook's wheel, without extras, in a fresh virtual environment (not this
editable checkout, which hides a package left out of the wheel or a dependency left undeclared),
must run its commands and serve."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import httpx
import pytest
import yaml

from tests.server import free_port, stop_process

ROOT = Path(__file__).resolve().parent.parent
BUILD_LEFTOVERS = (".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".whl")


def run(*command: str | Path, timeout: float = 900, **kwargs) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(c) for c in command], capture_output=True, text=True, timeout=timeout, **kwargs
    )
    assert done.returncode == 0, f"{command} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The bin directory of a fresh virtual environment holding heylook's wheel and nothing else
    but its declared dependencies (torch first, the CPU build the set-up script installs)."""
    root = tmp_path_factory.mktemp("install")
    # Built from a copy: setuptools reuses a checkout's build/ directory, whose stale modules
    # would stand in for the ones CI builds from a clean clone.
    source = root / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*BUILD_LEFTOVERS))
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", root / "dist", source)
    [wheel] = (root / "dist").glob("heylook-*.whl")
    run(sys.executable, "-m", "venv", root / "venv")
    pip = [root / "venv" / "bin" / "python", "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    run(*pip, f"torch=={version('torch').split('+')[0]}")
    run(*pip, wheel)
    yield root / "venv" / "bin"


def test_the_wheel_ships_every_package(installed: Path) -> None:
    listed = run(installed / "python", "-m", "pip", "show", "--files", "heylook").stdout
    packages = [init.parent.name for init in (ROOT / "src" / "heylook").glob("*/__init__.py")]
    assert len(packages) > 5
    for package in [*packages, "middleware"]:
        assert f"heylook/{package}/__init__.py" in listed, f"the wheel lacks heylook.{package}"


def test_the_installed_commands_run_and_serve(installed: Path, tmp_path: Path, tiny_model_dir: Path) -> None:
    env = {**os.environ, "HEYLOOK_URL": "http://127.0.0.1:9"}
    assert "serve" in run(installed / "heylook", "--help", env=env).stdout
    models = tmp_path / "models.yaml"
    models.write_text(yaml.safe_dump({"models": {"tiny": {"model": str(tiny_model_dir)}}}))
    assert "ready" in run(installed / "heylook", "check", "--models", models, env=env).stdout
    port = free_port()
    log = (tmp_path / "serve.log").open("w")
    command = [installed / "heylook", "serve", "--port", str(port), "--models", models]
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(600):
            assert server.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                httpx.get(f"{url}/health", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        # ignore_eos: the random tiny model may end its turn early, and the count is what is checked.
        body = {
            "model": "tiny",
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 3,
            "ignore_eos": True,
        }
        reply = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=120)
        assert reply.status_code == 200, reply.text
        assert reply.json()["usage"]["completion_tokens"] == 3
        # The API's description and its pages come from the installed dependencies too.
        assert httpx.get(f"{url}/openapi.json", timeout=30).json()["openapi"].startswith("3.1")
        docs = httpx.get(f"{url}/docs", timeout=30)
        assert docs.status_code == 200 and "swagger" in docs.text.lower()
    finally:
        stop_process(server, 15)
        log.close()
