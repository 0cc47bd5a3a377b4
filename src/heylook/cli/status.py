"""heylook ps: what a running server has loaded, and the standing of its aliases' replicas."""

from __future__ import annotations

import time
from datetime import datetime, timezone

import httpx
from rich.table import Table

from heylook.cli.common import CommandFailed, UrlOption, app, auth_headers, console, human_bytes, server_url


@app.command
def ps(*, url: UrlOption = None) -> int:
    """Models a running heylook server has loaded, their memory and when they unload."""
    base = server_url(url)
    try:
        headers = auth_headers()
        loaded = httpx.get(f"{base}/api/ps", headers=headers, timeout=5).raise_for_status().json()["models"]
        machine = httpx.get(f"{base}/v1/capabilities", headers=headers, timeout=5).raise_for_status().json()
        health = httpx.get(f"{base}/health", timeout=10).raise_for_status().json()
    except httpx.HTTPError as error:
        raise CommandFailed(
            f"no heylook server answers at {base} ({error}); start one with `heylook serve`"
        ) from None
    table = Table(title=f"Loaded in {base}", title_justify="left")
    numbers = ("size", "weights", "KV cache", "prefix cache", "grammars", "context")
    for column in ("name", *numbers, "processor", "until"):
        table.add_column(column, justify="right" if column in numbers else "left")
    for model in loaded:
        processor = "GPU" if model.get("size_vram") else "CPU"
        parts = model.get("memory") or {}
        sizes = [
            human_bytes(parts[key]) if key in parts else ""
            for key in ("weights_bytes", "kv_cache_bytes", "prefix_cache_bytes", "grammar_cache_bytes")
        ]
        context = str(model.get("context_length", ""))
        table.add_row(
            model["name"], human_bytes(model["size"]), *sizes, context, processor, until(model["expires_at"])
        )
    for device in machine["devices"]:
        free, total = human_bytes(device["free_bytes"]), human_bytes(device["total_bytes"])
        console.print(f"{device['name']} ({device['device']}): {free} free of {total}")
    if process := health.get("memory"):
        console.print(
            f"heylook's process: {human_bytes(process['resident_bytes'])} resident, "
            f"{human_bytes(process['models_bytes'])} of it its models', "
            f"{human_bytes(process['runtime_bytes'])} its runtime (Python, torch, the server)"
        )
    console.print(table if loaded else f"{base} has no model loaded.")
    for replicas in health.get("replicas", []):
        console.print(replica_table(replicas))
    for provider in health.get("providers", []):
        if provider["provider"] == "replicas":
            continue  # in their tables
        where = f" at {provider['base_url']}" if provider.get("base_url") else ""
        detail = f" ({provider['detail']})" if provider.get("detail") else ""
        console.print(f"provider {provider['provider']}{where}: {provider['status']}{detail}")
    return 0


def replica_table(replicas: dict) -> Table:
    """An alias's replicas: where each is, whether it takes traffic, what it is doing."""
    waiting = f", {replicas['waiting']} waiting" if replicas.get("waiting") else ""
    title = f"Replicas of {replicas['alias']} ({replicas['strategy']}{waiting})"
    table = Table(title=title, title_justify="left")
    numbers = ("in flight", "latency", "served", "errors")
    for column in ("replica", "target", "state", *numbers):
        table.add_column(column, justify="right" if column in numbers else "left")
    for replica in replicas["replicas"]:
        state = replica["state"]
        if replica.get("cooling_until"):
            state += f" ({max(0, replica['cooling_until'] - time.time()):.0f} s left)"
        limit = f"/{replica['max_concurrent']}" if replica.get("max_concurrent") else ""
        latency = f"{replica['latency_ms']:.0f} ms" if replica.get("latency_ms") is not None else ""
        in_flight = f"{replica['in_flight']}{limit}"
        served, errors = str(replica["served"]), str(replica["errors"])
        table.add_row(replica["name"], str(replica["target"]), state, in_flight, latency, served, errors)
    return table


def until(expires_at: str) -> str:
    """ "4 minutes from now", "forever" (Ollama reports a far-off date for that)."""
    moment = datetime.fromisoformat(expires_at.replace("Z", "+00:00"))
    seconds = (moment - datetime.now(timezone.utc)).total_seconds()
    if seconds > 100 * 365 * 86400:
        return "forever"
    if seconds < 60:
        return f"{max(seconds, 0):.0f} seconds from now"
    if seconds < 3600:
        return f"{seconds / 60:.0f} minutes from now"
    return f"{seconds / 3600:.1f} hours from now"
