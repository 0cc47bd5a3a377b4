"""The running server follows models.yaml: edits by hand or by the CLI take effect without a
restart, and a broken edit leaves the last good registry serving, with the error logged."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from heylook.registry.aliases import Registry, RegistryError, load_registry

log = logging.getLogger(__name__)

Signature = tuple[int, int, int] | None


def file_signature(path: Path) -> Signature:
    """Changes whenever the file does, also when it is replaced by a rename (a new inode)."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return (stat.st_mtime_ns, stat.st_size, stat.st_ino)


class EmptyRegistry(RegistryError):
    """models.yaml holds nothing at all: an editor truncating it, a failed write."""


def _load_changed(path: Path) -> Registry:
    """The registry as the file now says. An emptied file is a broken edit (an editor truncating
    it, a failed write), not a wish to serve nothing: to remove every alias, say `models: {}`."""
    try:
        empty = not path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        empty = False  # load_registry says what is wrong
    if empty:
        raise EmptyRegistry(path, "the file is empty (to serve no aliases, write `models: {}`)")
    return load_registry(path)


# The last check of each file, by its signature: /health stats the file, and reads it only when it
# changed.
_checked: dict[Path, tuple[Signature, RegistryError | None]] = {}


def _file_problem(path: Path) -> RegistryError | None:
    """What is wrong with the file as it is now (an EmptyRegistry for an emptied one), if anything."""
    signature = file_signature(path)
    cached = _checked.get(path)
    if cached is not None and cached[0] == signature and signature is not None:
        return cached[1]
    try:
        _load_changed(path)
        problem = None
    except RegistryError as error:
        problem = error
    _checked.clear()  # one server, one file: the cache never grows
    _checked[path] = (signature, problem)
    return problem


def registry_problem(serving: Registry) -> RegistryError | None:
    """Why models.yaml as it is now cannot be edited, if it cannot: a broken hand edit (the last
    good version still serves; an edit would overwrite the user's unfinished work). An empty file
    is an empty registry to edit, also one emptied while the server still serves its aliases."""
    problem = _file_problem(serving.path)
    return None if isinstance(problem, EmptyRegistry) else problem


def _served_problem(serving: Registry) -> RegistryError | None:
    """Why models.yaml as it is now is not what the server serves, if it is not: a broken hand edit
    or an emptied file while aliases are served (the watcher keeps those). An empty file the
    server started from is an empty registry, and no problem."""
    problem = _file_problem(serving.path)
    if isinstance(problem, EmptyRegistry) and not serving.aliases:
        return None
    return problem


def registry_health(serving: Registry) -> dict[str, Any]:
    """models.yaml's state for /health: ok, or what is wrong with it (file, line, message) while
    the last good version serves."""
    problem = _served_problem(serving)
    state: dict[str, Any] = {"path": str(serving.path), "status": "ok", "aliases": len(serving.aliases)}
    if problem is not None:
        state["status"] = "error"
        state["error"] = {"file": str(problem.path), "line": problem.line, "message": str(problem)}
        state["serving"] = "the last good version" if serving.aliases else "no aliases"
    return state


async def follow_registry(path: Path, serve: Callable[[Registry], None], interval: float = 1.0) -> None:
    """Hand every good new version of the file to `serve`; keep the last good one otherwise."""
    seen = file_signature(path)
    while True:
        await anyio.sleep(interval)
        current = file_signature(path)
        if current == seen:
            continue
        seen = current
        try:
            registry = await anyio.to_thread.run_sync(_load_changed, path)
        except RegistryError as error:
            log.error(
                "models.yaml changed but cannot be used; still serving the last good version: %s", error
            )
            continue
        serve(registry)
        log.info("reloaded %s: %s", path, ", ".join(registry.aliases) or "no aliases")
