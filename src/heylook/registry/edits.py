"""Changes to models.yaml, made the way a file the user also edits by hand deserves: under a lock
against other writers, keeping every comment and the key order (ruamel.yaml round-trips them),
checked before writing, and written atomically (temp file, fsync, rename)."""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from filelock import FileLock
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap

from heylook.errors import HeylookError, InvalidRequest, ModelNotFound
from heylook.registry.aliases import (
    MAX_ALIASES,
    Registry,
    RegistryError,
    check_alias_name,
    load_registry,
    parse_registry,
)

Edit = Callable[[CommentedMap], None]


class AliasExists(HeylookError):
    status = 409
    kind = "invalid_request_error"
    code = "alias_exists"


def add_alias(path: Path, name: str, entry: dict[str, Any], *, replace: bool = True) -> Registry:
    """Add an alias (replacing one of that name unless `replace` is False); returns the registry."""
    return add_aliases(path, {name: entry}, replace=replace)[0]


def add_aliases(
    path: Path, entries: dict[str, dict[str, Any]], *, replace: bool = True
) -> tuple[Registry, list[str]]:
    """Add several aliases in one locked edit; with `replace` False, those whose names are taken are
    left alone (one alone: AliasExists). Returns the registry and the names written."""
    written: list[str] = []
    for name in entries:
        check_alias_name(name)

    def edit(models: CommentedMap) -> None:
        taken = [name for name in entries if name in models]
        if taken and not replace and len(entries) == 1:
            raise AliasExists(f"alias {taken[0]!r} already exists in {path}")
        for name, entry in entries.items():
            if replace or name not in models:
                models[name] = CommentedMap(entry)
                written.append(name)

    return _edit(path, edit), written


def copy_alias(path: Path, source: str, destination: str, *, replace: bool = True) -> Registry:
    """Copy an alias under a new name, replacing any alias of that name (as Ollama's copy does)
    unless `replace` is False."""
    check_alias_name(destination, "destination")

    def edit(models: CommentedMap) -> None:
        if source not in models:
            raise ModelNotFound(source, models)
        if not replace and destination in models:
            raise AliasExists(f"alias {destination!r} already exists in {path}")
        # Values only: a deep copy would also copy the comments ruamel attached to the source.
        models[destination] = CommentedMap(_plain(models[source]))

    return _edit(path, edit)


def delete_alias(path: Path, name: str) -> Registry:
    def edit(models: CommentedMap) -> None:
        if name not in models:
            raise ModelNotFound(name, models)
        del models[name]

    return _edit(path, edit)


def _plain(node: Any) -> Any:
    if isinstance(node, dict):
        return {key: _plain(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_plain(item) for item in node]
    return node


def _yaml() -> YAML:
    yaml = YAML()  # round-trip mode: comments, order and quoting survive
    yaml.preserve_quotes = True
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.width = 4096  # never re-wrap the user's long lines
    return yaml


def _edit(path: Path, edit: Edit) -> Registry:
    path.parent.mkdir(parents=True, exist_ok=True)
    yaml = _yaml()
    with FileLock(str(path) + ".lock"):
        document, text = None, ""
        if path.exists():
            load_registry(path)  # a broken hand edit is reported (with its line), never overwritten
            text = path.read_text(encoding="utf-8")
            document = yaml.load(text)
        # An empty file is an empty registry; one holding only comments keeps them, above.
        kept = text.rstrip() + "\n" if document is None and text.strip() else ""
        if document is None:
            document = CommentedMap()
        if document.get("models") is None:
            document["models"] = CommentedMap()
        before = len(document["models"])
        edit(document["models"])
        if len(document["models"]) > max(before, MAX_ALIASES):
            raise InvalidRequest(f"models.yaml holds at most {MAX_ALIASES} aliases: delete some first")
        buffer = io.StringIO()
        buffer.write(kept)
        yaml.dump(document, buffer)
        try:
            parse_registry(buffer.getvalue(), path)  # never write what heylook could not read back
        except RegistryError as error:
            raise InvalidRequest(f"that edit would leave models.yaml unusable: {error}") from None
        _write_atomically(path, buffer.getvalue())
        return load_registry(path)


def _write_atomically(path: Path, text: str) -> None:
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        if path.exists():
            os.chmod(temporary, path.stat().st_mode & 0o777)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a crash
    finally:
        os.close(directory)
