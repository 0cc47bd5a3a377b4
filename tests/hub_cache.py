"""Hugging Face caches laid out in the tests with huggingface_hub's real structure."""

from __future__ import annotations

import shutil
from pathlib import Path


def lay_out_hub_cache(cache: Path, repo: str, files: Path, commit: str = "a" * 40) -> None:
    """huggingface_hub's real cache structure: blobs, snapshots/<commit>, refs/main."""
    root = cache / f"models--{repo.replace('/', '--')}"
    snapshot = root / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (root / "blobs").mkdir()
    for file in files.iterdir():
        blob = root / "blobs" / f"blob-{file.name}"
        shutil.copy(file, blob)
        (snapshot / file.name).symlink_to(Path("../../blobs") / blob.name)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(commit)
