"""How the server is doing: /health for probes, /v1/capabilities for the machine and its models,
/metrics for Prometheus, /v1/performance for the same figures as one JSON object."""

from __future__ import annotations

import math

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from heylook import __version__
from heylook.metrics import CONTENT_TYPE
from heylook.models.hardware import detect_memory
from heylook.models.memory import model_memory, process_memory
from heylook.protocols.performance import performance_body
from heylook.registry.watch import registry_health
from heylook.routes.common import backends_of, router_of


async def health(request: Request) -> Response:
    router = router_of(request)
    registry = router.registry
    loaded = []
    memories = []
    for key, resident in router.residents().items():
        engine = resident.model.runner
        memory = model_memory(resident.model)
        memories.append(memory)
        loaded.append(
            {
                "model": key[0].describe(),
                "aliases": [a.name for a in registry.aliases.values() if a.model_key == key],
                "device": str(engine.device),
                "context_length": resident.model.context_length,
                "active_requests": engine.active,
                "tokens_generated": engine.tokens_generated,
                "expires_at": None if math.isinf(resident.expires_at) else resident.expires_at,
                "memory": memory.as_dict(),
            }
        )
    backends = backends_of(request)
    providers = [health.as_dict() for health in await backends.health()]
    return JSONResponse(
        {
            "status": "ok",
            "version": __version__,
            # models.yaml: ok, or what is wrong with it while the last good version serves.
            "registry": await anyio.to_thread.run_sync(registry_health, registry),
            "loaded": loaded,
            # The process's resident memory: what the loaded models hold of it, and the rest.
            "memory": process_memory(memories),
            "providers": providers,
            "replicas": [replicas.describe() for replicas in backends.replica_sets()],
            # The batch runner: whether this server owns the batches directory, and its restarts.
            "batches": request.app.state.batch_runner.status.as_dict(),
        }
    )


async def capabilities(request: Request) -> Response:
    """The machine's memory, the limits heylook keeps to, and what is loaded where."""
    router = router_of(request)
    devices = await anyio.to_thread.run_sync(detect_memory)
    limits = router.limits
    loaded = [
        {
            "name": resident.name,
            "source": key[0].describe(),
            "device": resident.device,
            "size_bytes": resident.model.size_bytes,
            "memory": model_memory(resident.model).as_dict(),
            "estimated_bytes": resident.footprint,
            # The estimate it was loaded on: the weights and overhead, and each token of KV cache.
            "estimate": resident.estimate
            and {
                "weights_bytes": resident.estimate.weights_bytes,
                "overhead_bytes": resident.estimate.overhead_bytes,
                "kv_bytes_per_token": int(resident.estimate.kv_bytes_per_token),
            },
            "context_length": resident.model.context_length,
            "active_requests": resident.leases,
            "queued_requests": max(0, resident.leases - resident.parallel),
            "parallel_requests": resident.parallel,
            "kv_budget_tokens": getattr(resident.model.runner, "kv_budget_tokens", None),
            "expires_at": None if math.isinf(resident.expires_at) else resident.expires_at,
        }
        for key, resident in router.residents().items()
    ]
    return JSONResponse(
        {
            "version": __version__,
            "devices": [
                {"device": d.device, "name": d.name, "total_bytes": d.total_bytes, "free_bytes": d.free_bytes}
                for d in devices
            ],
            "limits": {
                "memory_share": limits.memory_share,
                "max_loaded_models": limits.max_loaded,
                "parallel_requests_per_model": limits.parallel or "auto",
                "max_queue_per_model": limits.max_queue,
                "load_timeout_seconds": limits.load_timeout,
                "default_keep_alive_seconds": router.default_keep_alive,
            },
            "loaded": loaded,
            "apis": ["openai", "ollama"],
        }
    )


async def metrics(request: Request) -> Response:
    exposition = request.app.state.metrics.exposition()
    return Response(exposition, media_type=CONTENT_TYPE)


async def performance(request: Request) -> Response:
    """Per model: tokens evaluated and generated, speed, time to first token, requests holding
    and awaiting it; and the batches still running."""
    families = request.app.state.metrics.registry.collect()
    running = await anyio.to_thread.run_sync(request.app.state.batch_store.active)
    return JSONResponse(performance_body(families, running[::-1]))  # newest first


routes = [
    Route("/health", health, methods=["GET"]),
    Route("/v1/performance", performance, methods=["GET"]),
    Route("/v1/capabilities", capabilities, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
]
