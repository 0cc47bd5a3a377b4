"""The server runs on uvloop's event loop where uvloop is installed, and on asyncio's where it is
not (Windows, where the dependency is left out): both serve."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
import yaml

from tests.server import RunningServer


@pytest.mark.parametrize("uvloop", [True, False], ids=["uvloop", "asyncio"])
def test_the_server_serves_on_either_event_loop(tmp_path: Path, tiny_model_dir: Path, uvloop: bool) -> None:
    models = tmp_path / "models.yaml"
    models.write_text(yaml.safe_dump({"models": {"tiny": {"model": str(tiny_model_dir)}}}))
    env = {}
    if not uvloop:  # a package of that name that fails to import, as where it is not installed
        (tmp_path / "blocked" / "uvloop").mkdir(parents=True)
        (tmp_path / "blocked" / "uvloop" / "__init__.py").write_text("raise ImportError('no uvloop here')\n")
        paths = [str(tmp_path / "blocked"), os.environ.get("PYTHONPATH")]
        env["PYTHONPATH"] = os.pathsep.join(path for path in paths if path)
    server = RunningServer(models, tmp_path / "server.log", env=env)
    try:
        chat = {"model": "tiny", "messages": [{"role": "user", "content": "Hi"}]}
        openai_reply = httpx.post(f"{server.base_url}/v1/chat/completions", json={**chat, "max_tokens": 4})
        ollama_reply = httpx.post(
            f"{server.base_url}/api/chat", json={**chat, "stream": False, "options": {"num_predict": 4}}
        )
        assert openai_reply.status_code == 200 and openai_reply.json()["usage"]["completion_tokens"] >= 1
        assert ollama_reply.status_code == 200 and ollama_reply.json()["done"] is True
        said = "event loop: uvloop's" if uvloop else "event loop: asyncio's (uvloop is not installed)"
        assert said in server.output()
    finally:
        server.stop()
