"""The running server follows models.yaml: edits by hand or by the CLI take effect without a
restart, and a broken edit leaves the last good registry serving, with the error logged."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

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


def _load_changed(path: Path) -> Registry:
    """The registry as the file now says. An emptied file is a broken edit (an editor truncating
    it, a failed write), not a wish to serve nothing: to remove every alias, say `models: {}`."""
    try:
        empty = not path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        empty = False  # load_registry says what is wrong
    if empty:
        raise RegistryError(path, "the file is empty (to serve no aliases, write `models: {}`)")
    return load_registry(path)


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
