"""Holds the loaded models: loads an alias's model on first use and keeps it loaded.

Aliases that name the same source share one loaded model. Loading is single-flight: concurrent
first requests wait for one load.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import anyio
import anyio.to_thread

from heylook.errors import HeylookError, ModelLoadFailed
from heylook.loader import LoadedModel, load_model
from heylook.registry import Alias, Registry
from heylook.sources import ModelSource

log = logging.getLogger(__name__)

Loader = Callable[..., LoadedModel]


@dataclass(frozen=True)
class Resolved:
    alias: Alias
    model: LoadedModel
    load_ns: int  # time this request spent waiting for the load; 0 when already loaded


class ModelRouter:
    def __init__(self, registry: Registry, loader: Loader = load_model) -> None:
        self.registry = registry
        self._loader = loader
        self._loaded: dict[ModelSource, LoadedModel] = {}
        self._loading: dict[ModelSource, anyio.Lock] = {}

    def loaded(self) -> dict[ModelSource, LoadedModel]:
        return dict(self._loaded)

    async def get(self, name: str) -> Resolved:
        """The alias and its loaded model. Raises ModelNotFound or ModelLoadFailed."""
        alias = self.registry.get(name)
        model = self._loaded.get(alias.source)
        if model is not None:
            return Resolved(alias, model, 0)
        started = anyio.current_time()
        lock = self._loading.setdefault(alias.source, anyio.Lock())
        async with lock:
            model = self._loaded.get(alias.source)
            if model is None:
                model = await anyio.to_thread.run_sync(self._load, alias)
        return Resolved(alias, model, int((anyio.current_time() - started) * 1e9))

    def _load(self, alias: Alias) -> LoadedModel:
        # Stores the model from the loading thread itself, so a load finishes and is kept even if
        # the request that started it has gone.
        log.info("loading %s (%s)", alias.name, alias.source.describe())
        try:
            model = self._loader(alias.source, name=alias.name)
        except HeylookError as error:
            log.error("could not load %s: %s", alias.name, error.message)
            raise
        except Exception as error:
            log.exception("could not load %s", alias.name)
            raise ModelLoadFailed(f"could not load {alias.name!r}: {error}") from error
        self._loaded[alias.source] = model
        return model

    def close(self) -> None:
        for model in self._loaded.values():
            model.close()
        self._loaded.clear()
