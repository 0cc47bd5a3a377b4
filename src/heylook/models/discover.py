"""Finding models heylook can serve: in the Hugging Face cache, or under a folder."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from heylook.models.catalog import recommended_options

# Architectures transformers' AutoModelForCausalLM builds: text generators.
_GENERATIVE = re.compile(r"(ForCausalLM|LMHeadModel)$")
_MAX_DEPTH = 3


@dataclass(frozen=True)
class Found:
    """A model worth an alias, or one passed over (`skipped` says why)."""

    name: str
    entry: dict[str, Any] = field(default_factory=dict)
    where: str = ""
    skipped: str | None = None


def alias_name(text: str) -> str:
    """A lower-case alias from a repo or file name: SmolLM2-135M-Instruct -> smollm2-135m-instruct."""
    return re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-.") or "model"


def in_hf_cache() -> Iterator[Found]:
    from huggingface_hub import CacheNotFound, scan_cache_dir

    try:
        cache = scan_cache_dir()
    except CacheNotFound:
        return
    for repo in sorted(cache.repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model":
            continue
        # The revision a branch points at (as `hf download` leaves it), else the newest.
        revision = max(repo.revisions, key=lambda r: (bool(r.refs), r.last_modified))
        ref = "main" if "main" in revision.refs else next(iter(sorted(revision.refs)), revision.commit_hash)
        base = {"model": repo.repo_id, **({} if ref == "main" else {"revision": ref})}
        name = alias_name(repo.repo_id.split("/")[-1])
        yield from _classify(revision.snapshot_path, name, base, where=repo.repo_id, gguf_key="gguf_file")


def under_folder(folder: Path) -> Iterator[Found]:
    folder = folder.expanduser().resolve()
    for directory in _directories(folder, depth=0):
        name = alias_name(directory.name if directory != folder else folder.name)
        yield from _classify(directory, name, {"model": str(directory)}, where=str(directory), gguf_key=None)


def _directories(folder: Path, depth: int) -> Iterator[Path]:
    yield folder
    if depth >= _MAX_DEPTH or (folder / "config.json").is_file():
        return
    for child in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        yield from _directories(child, depth + 1)


def _classify(
    directory: Path, name: str, base: dict[str, Any], *, where: str, gguf_key: str | None
) -> Iterator[Found]:
    ggufs = sorted(p for p in directory.glob("*.gguf") if not p.name.lower().startswith("mmproj"))
    for gguf in ggufs:
        entry = {**base, gguf_key: gguf.name} if gguf_key else {"model": str(gguf)}
        yield Found(alias_name(gguf.stem), entry, where=f"{where}/{gguf.name}" if gguf_key else str(gguf))
    config_file = directory / "config.json"
    if not config_file.is_file():
        return
    try:
        config = json.loads(config_file.read_text())
    except (OSError, ValueError):
        yield Found(name, where=where, skipped="config.json is unreadable")
        return
    architectures = config.get("architectures") or []
    if not any(_GENERATIVE.search(a) for a in architectures):
        kind = ", ".join(architectures) or config.get("model_type", "unknown")
        yield Found(name, where=where, skipped=f"not a text generator ({kind})")
    elif not any(directory.glob("*.safetensors")):
        yield Found(name, where=where, skipped="no safetensors weights")
    else:
        recommended = recommended_options(directory)
        yield Found(name, {**base, "options": recommended} if recommended else dict(base), where=where)
