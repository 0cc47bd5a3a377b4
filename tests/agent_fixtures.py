"""The request bodies coding agents sent heylook, kept as fixtures: each body trimmed to its shape
(long texts cut, every key kept), and the set of its key paths, so that a new client version's new
field or block type shows up as a failing test instead of a user's broken session.

A path names each key from the top, `[]` for a list's items, and the `type` of an object that has
one (`messages[].content[type=tool_result].is_error`). Values that are the client's own data (JSON
schemas, tool arguments, metadata) are not walked into: their keys are not protocol."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).parent / "fixtures" / "agents"

# Keys whose values are data, not protocol: a tool's schema, a call's arguments, the client's tags.
_DATA_KEYS = frozenset(
    {"input_schema", "parameters", "schema", "metadata", "client_metadata", "arguments", "properties"}
)
_CUT = 120  # characters of a string kept in a fixture


def key_paths(body: Any, prefix: str = "") -> set[str]:
    paths: set[str] = set()
    if isinstance(body, dict):
        for key, value in body.items():
            path = f"{prefix}.{key}" if prefix else key
            paths.add(path)
            # An Anthropic tool_use block's `input` is the call's arguments: data too.
            if key in _DATA_KEYS or (key == "input" and isinstance(value, dict)):
                continue
            paths |= key_paths(value, path)
    elif isinstance(body, list):
        for item in body:
            kind = item.get("type") if isinstance(item, dict) else None
            paths |= key_paths(item, f"{prefix}[type={kind}]" if isinstance(kind, str) else f"{prefix}[]")
    return paths


def trimmed(body: Any) -> Any:
    """The body with every string cut to a few words and lists of like items kept whole: its shape."""
    if isinstance(body, dict):
        return {key: trimmed(value) for key, value in body.items()}
    if isinstance(body, list):
        return [trimmed(item) for item in body]
    if isinstance(body, str) and len(body) > _CUT:
        return body[:_CUT] + "..."
    return body


def fixture_path(client: str) -> Path:
    return FIXTURES / f"{client}.json"


def load(client: str) -> dict[str, Any]:
    return json.loads(fixture_path(client).read_text())


def save(client: str, version: str, sent: list[tuple[str, Any]]) -> None:
    """Writes (or extends) a client's fixture: its bodies by route, and every key path they hold."""
    path = fixture_path(client)
    old = json.loads(path.read_text()) if path.exists() else {"bodies": {}}
    merged: dict[str, list[Any]] = old["bodies"] if old.get("version") == version else {}
    for route, body in sent:
        shapes = merged.setdefault(route, [])
        shape = trimmed(body)
        known = {json.dumps(sorted(key_paths(s))) for s in shapes}
        if json.dumps(sorted(key_paths(shape))) not in known:
            shapes.append(shape)
    paths = sorted({p for shapes in merged.values() for s in shapes for p in key_paths(s)})
    document = {"client": client, "version": version, "paths": paths, "bodies": merged}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n")


def new_paths(client: str, sent: list[tuple[str, Any]]) -> list[str]:
    """The key paths these bodies hold that the client's fixture does not: fields heylook has not
    been checked against."""
    known = set(load(client)["paths"])
    seen = {p for _, body in sent for p in key_paths(body)}
    return sorted(seen - known)
