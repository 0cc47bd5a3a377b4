"""Holds the loaded models: loads an alias's model on first use, keeps it while it is in use and
for its keep_alive afterwards, then unloads it.

Aliases that name the same source with the same load options share one loaded model. Loading is
single-flight: concurrent first requests wait for one load. A request holds a lease while it uses a
model; an idle model whose keep_alive has run out is unloaded by `expire_forever`.
"""

from __future__ import annotations

import gc
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import anyio
import anyio.to_thread

from heylook.errors import HeylookError, ModelLoadFailed
from heylook.loader import LoadedModel, load_model
from heylook.registry import Alias, Registry
from heylook.sources import ModelSource
from heylook.types import LoadOptions

log = logging.getLogger(__name__)

Loader = Callable[..., LoadedModel]
ModelKey = tuple[ModelSource, LoadOptions]
DEFAULT_KEEP_ALIVE = 300.0  # Ollama's five minutes


@dataclass(frozen=True)
class Lease:
    """A request's hold on a loaded model; give it back with `ModelRouter.release`."""

    alias: Alias
    model: LoadedModel
    load_ns: int  # time this request spent waiting for the load; 0 when already loaded


@dataclass
class Resident:
    """A loaded model and what keeps it loaded."""

    model: LoadedModel
    name: str  # the alias it was last asked for by
    leases: int = 0
    expires_at: float = math.inf  # wall-clock seconds; inf while in use or kept forever


class ModelRouter:
    def __init__(
        self, registry: Registry, loader: Loader = load_model, *, keep_alive: float = DEFAULT_KEEP_ALIVE
    ) -> None:
        self.registry = registry
        self.default_keep_alive = keep_alive
        self._loader = loader
        self._residents: dict[ModelKey, Resident] = {}
        self._loading: dict[ModelKey, anyio.Lock] = {}

    def residents(self) -> dict[ModelKey, Resident]:
        return dict(self._residents)

    async def acquire(self, name: str) -> Lease:
        """The alias and its model, loaded if need be. Raises ModelNotFound or ModelLoadFailed."""
        alias = self.registry.get(name)
        resident = self._residents.get(alias.model_key)
        waited_ns = 0
        if resident is None:
            started = time.perf_counter_ns()
            lock = self._loading.setdefault(alias.model_key, anyio.Lock())
            async with lock:
                resident = self._residents.get(alias.model_key)
                if resident is None:
                    resident = await anyio.to_thread.run_sync(self._load, alias)
            waited_ns = time.perf_counter_ns() - started
        resident.leases += 1
        resident.expires_at = math.inf
        resident.name = alias.name
        return Lease(alias, resident.model, waited_ns)

    def release(self, lease: Lease, keep_alive: float | None = None) -> None:
        """Done with the model: it stays loaded for `keep_alive` seconds once idle (None: the default,
        negative: forever, 0: unload as soon as it is idle)."""
        resident = self._residents.get(lease.alias.model_key)
        if resident is None or resident.model is not lease.model:
            return
        resident.leases -= 1
        if resident.leases > 0:
            return
        seconds = self.default_keep_alive if keep_alive is None else keep_alive
        resident.expires_at = math.inf if seconds < 0 else time.time() + seconds
        # Unloading joins the engine's thread: do it here only when that is instant (no sequence
        # still winding down after a cancel); otherwise the expiry loop does it a moment later.
        if seconds == 0 and resident.model.engine.active == 0:
            self._unload(lease.alias.model_key)

    def unload(self, name: str) -> bool:
        """Unload an alias's model now if it is loaded and idle; True if it was unloaded."""
        key = self.registry.get(name).model_key
        resident = self._residents.get(key)
        if resident is None or not _idle(resident):
            return False
        self._unload(key)
        return True

    def expire_idle(self, now: float | None = None) -> list[str]:
        """Unload every idle model whose keep_alive has run out; their names."""
        now = time.time() if now is None else now
        due = [(k, r.name) for k, r in self._residents.items() if _idle(r) and r.expires_at <= now]
        for key, _ in due:
            self._unload(key)
        return [name for _, name in due]

    async def expire_forever(self, interval: float = 1.0) -> None:
        while True:
            await anyio.sleep(interval)
            for name in self.expire_idle():
                log.info("unloaded %s: keep_alive expired", name)

    def _load(self, alias: Alias) -> Resident:
        # Stores the model from the loading thread itself, so a load finishes and is kept even if
        # the request that started it has gone.
        log.info("loading %s (%s)", alias.name, alias.source.describe())
        try:
            model = self._loader(alias.source, alias.load, name=alias.name)
        except HeylookError as error:
            log.error("could not load %s: %s", alias.name, error.message)
            raise
        except Exception as error:
            log.exception("could not load %s", alias.name)
            raise ModelLoadFailed(f"could not load {alias.name!r}: {error}") from error
        resident = Resident(model=model, name=alias.name)
        self._residents[alias.model_key] = resident
        return resident

    def _unload(self, key: ModelKey) -> None:
        resident = self._residents.pop(key, None)
        if resident is None:
            return
        resident.model.close()
        # Modules hold reference cycles; collect now so the memory is back before the next load.
        gc.collect()
        if resident.model.engine.device.type == "cuda":
            import torch

            torch.cuda.empty_cache()
        log.info("unloaded %s", resident.name)

    def close(self) -> None:
        for key in list(self._residents):
            self._unload(key)


def _idle(resident: Resident) -> bool:
    return resident.leases == 0 and resident.model.engine.active == 0
