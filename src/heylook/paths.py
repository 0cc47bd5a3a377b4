"""Where heylook keeps its cache and looks for the user's config."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs


def cache_dir() -> Path:
    """Fetched and converted models live here; HEYLOOK_CACHE moves it."""
    override = os.environ.get("HEYLOOK_CACHE")
    return Path(override) if override else Path(platformdirs.user_cache_dir("heylook"))


def config_dir() -> Path:
    """The user's models.yaml lives here when no other is given; HEYLOOK_CONFIG_DIR moves it."""
    override = os.environ.get("HEYLOOK_CONFIG_DIR")
    return Path(override) if override else Path(platformdirs.user_config_dir("heylook"))


def batches_dir() -> Path:
    """Uploaded files and batches (OpenAI's Batch API) live here; HEYLOOK_BATCHES moves them
    (without moving the models)."""
    override = os.environ.get("HEYLOOK_BATCHES")
    return Path(override) if override else cache_dir() / "batches"
