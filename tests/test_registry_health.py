"""models.yaml that is empty or broken, met by the API's edits and by /health: an empty file is an
empty registry to edit (also one emptied while aliases are served: its comments are kept), a broken
one refuses edits with a 409 naming the file and line, never a 500, and /health says what is wrong
while the last good version serves. In-process (tests.inprocess)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from heylook.registry.aliases import load_registry
from heylook.registry.model_source import ModelSource
from tests.inprocess import InProcessServer, serve_in_process

pytestmark = pytest.mark.anyio

GOOD = "# mine\nmodels:\n  a:\n    model: org/a\n"
BROKEN = "models:\n  a:\n    model: org/a\n   bad indent: 1\n"  # a hand edit gone wrong on line 4
EDITS: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", "/api/copy", {"source": "a", "destination": "b"}),
    ("DELETE", "/api/delete", {"model": "a"}),
    ("POST", "/api/pull", {"model": "org/pulled", "stream": False}),
]


@pytest.fixture
def pulled(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """/api/pull without the Hub: the download succeeds at once; what it was asked for is kept."""
    from heylook.routes import ollama

    asked: list[str] = []

    def pull_model(target: Any, report: Any) -> ModelSource:
        asked.append(target.repo_id)
        return ModelSource(target.repo_id)

    monkeypatch.setattr(ollama, "pull_model", pull_model)
    return asked


async def edit(app: InProcessServer, method: str, path: str, body: dict[str, Any]) -> httpx.Response:
    return await app.client.request(method, path, json=body)


async def registry_state(app: InProcessServer) -> dict[str, Any]:
    health = await app.client.get("/health")
    assert health.status_code == 200
    return health.json()["registry"]


async def test_an_empty_file_is_an_empty_registry(tmp_path: Path, pulled: list[str]) -> None:
    models = tmp_path / "models.yaml"
    models.write_text("")
    async with serve_in_process(models) as app:
        assert (await registry_state(app))["status"] == "ok"
        answer = await edit(app, "POST", "/api/pull", {"model": "org/pulled", "stream": False})
        assert answer.status_code == 200, answer.text
        assert list(load_registry(models).aliases) == ["org/pulled"]
        copied = await edit(app, "POST", "/api/copy", {"source": "org/pulled", "destination": "b"})
        assert copied.status_code == 200, copied.text
        assert list(load_registry(models).aliases) == ["org/pulled", "b"]
        assert (await registry_state(app)) == {"path": str(models), "status": "ok", "aliases": 2}


@pytest.mark.parametrize(("method", "path", "body"), EDITS)
@pytest.mark.parametrize(
    ("text", "where"),
    [
        (BROKEN, ":4: YAML syntax error"),
        ("models:\n  a:\n    model: org/a\n    gguf_file: ../../etc/passwd\n", ":4: alias 'a': 'gguf_file'"),
    ],
)
async def test_an_edit_of_a_file_that_is_not_what_is_served_is_a_409_naming_it(
    tmp_path: Path, pulled: list[str], text: str, where: str, method: str, path: str, body: dict
) -> None:
    models = tmp_path / "models.yaml"
    models.write_text(GOOD)
    async with serve_in_process(models) as app:
        models.write_text(text)  # by hand, while the server serves `a`
        answer = await edit(app, method, path, body)
        assert answer.status_code == 409, answer.text
        assert f"{models}{where}" in answer.json()["error"]  # Ollama's shape, naming file and line
        assert models.read_text() == text, "the user's file is left as it is"
        assert pulled == [], "nothing is downloaded for an alias that could not be written"
        state = await registry_state(app)
        assert state["status"] == "error" and state["serving"] == "the last good version"
        assert state["error"]["file"] == str(models) and where in state["error"]["message"]
        listed = (await app.client.get("/api/tags")).json()["models"]
        assert [m["name"] for m in listed] == ["a:latest"]  # still served
        models.write_text(GOOD)  # fixed: edits work again, /health says so
        assert (await edit(app, method, path, body)).status_code == 200
        assert (await registry_state(app))["status"] == "ok"


@pytest.mark.parametrize("emptied", ["", "\n  \n", "# emptied by hand\n\n# nothing served yet\n"])
async def test_a_file_emptied_under_the_server_is_an_empty_registry_to_edit(
    tmp_path: Path, pulled: list[str], emptied: str
) -> None:
    """Emptied (0 bytes, blank, or only comments) while the server serves `a`: edits apply to it as
    to an empty registry, keeping its comments, and the server serves what they wrote."""
    models = tmp_path / "models.yaml"
    models.write_text(GOOD)
    async with serve_in_process(models) as app:
        models.write_text(emptied)  # by hand, while the server serves `a`
        answer = await edit(app, "POST", "/api/pull", {"model": "org/pulled", "stream": False})
        assert answer.status_code == 200, answer.text
        assert pulled == ["org/pulled"]
        copied = await edit(app, "POST", "/api/copy", {"source": "org/pulled", "destination": "b"})
        assert copied.status_code == 200, copied.text
        assert list(load_registry(models).aliases) == ["org/pulled", "b"]
        assert models.read_text().startswith(emptied.strip()), "the comments are kept, above"
        # `a` is in the file no more: an edit of it is one of an alias the registry lacks.
        gone = await edit(app, "POST", "/api/copy", {"source": "a", "destination": "c"})
        assert gone.status_code == 404 and "a" in gone.json()["error"], gone.text
        listed = (await app.client.get("/api/tags")).json()["models"]
        assert [m["name"] for m in listed] == ["org/pulled:latest", "b:latest"]
        assert (await registry_state(app)) == {"path": str(models), "status": "ok", "aliases": 2}


async def test_health_names_the_line_of_a_broken_file(tmp_path: Path) -> None:
    models = tmp_path / "models.yaml"
    models.write_text(GOOD)
    async with serve_in_process(models) as app:
        assert (await registry_state(app)) == {"path": str(models), "status": "ok", "aliases": 1}
        models.write_text(BROKEN)
        state = await registry_state(app)
        assert state["error"]["line"] == 4
        assert state["error"]["message"].startswith(f"{models}:4: YAML syntax error")
