"""An alias served by several replicas (`replicas:` in models.yaml): what each replica is, and how
requests are spread over them. Read and checked here; balanced by heylook.providers.replicas."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal
from urllib.parse import urlsplit

Strategy = Literal["least-outstanding", "latency", "weighted", "in-order"]
STRATEGIES: tuple[Strategy, ...] = ("least-outstanding", "latency", "weighted", "in-order")
REPLICA_KEYS = ("name", "alias", "base_url", "model", "provider", "token_env", "weight", "max_concurrent")
# The keys an alias with replicas may hold besides `replicas`; where each replica runs is its own.
BALANCING_KEYS = ("strategy", "max_failures", "cooldown", "retry_budget")
REPLICA_PROVIDERS = ("openai", "huggingface")
MAX_REPLICAS = 64
DEFAULT_MAX_FAILURES = 3  # failures in a row before a replica rests
DEFAULT_COOLDOWN = 30.0  # seconds it rests, before it is probed
DEFAULT_RETRY_BUDGET = 30.0  # seconds a request may spend trying replicas before giving up

Fail = Callable[..., Exception]


@dataclass(frozen=True)
class Replica:
    """One place an alias's requests can go: another alias of the registry (local or remote), or
    an OpenAI-compatible upstream at `base_url`."""

    name: str  # how /health, /metrics and the X-Heylook-Replica header name it
    alias: str | None = None
    base_url: str | None = None
    model: str | None = None  # what the upstream is asked for (base_url replicas)
    provider: str = "openai"
    token_env: str | None = None
    weight: float = 1.0
    max_concurrent: int | None = None  # requests it serves at once; None: no limit of heylook's


@dataclass(frozen=True)
class Balancing:
    replicas: tuple[Replica, ...]
    strategy: Strategy = "least-outstanding"
    max_failures: int = DEFAULT_MAX_FAILURES
    cooldown: float = DEFAULT_COOLDOWN
    retry_budget: float = DEFAULT_RETRY_BUDGET


def parse_balancing(entry: dict[str, Any], model: str | None, fail: Fail) -> Balancing:
    """`replicas` and the balancing keys of one alias's entry; `fail(message, *keys)` makes the
    error that names the line."""
    given = entry["replicas"]
    if not isinstance(given, list) or not given:
        raise fail("'replicas' must be a list of replicas (each a base_url or an alias)", "replicas")
    if len(given) > MAX_REPLICAS:
        raise fail(f"'replicas' holds {len(given)}; at most {MAX_REPLICAS}", "replicas")
    replicas = [
        _parse_replica(item, model, lambda message, *keys, i=str(i): fail(message, "replicas", i, *keys))
        for i, item in enumerate(given)
    ]
    names = [r.name for r in replicas]
    for index, replica in enumerate(replicas):
        seen = names[: index + 1].count(replica.name)
        if seen > 1 and "name" not in given[index]:
            # Two replicas on one host: numbered in order (box:8000, box:8000#2).
            replicas[index] = replace(replica, name=f"{replica.name}#{seen}")
    names = [r.name for r in replicas]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise fail(f"two replicas are named {duplicate!r}: give each its own 'name'", "replicas")
    strategy = entry.get("strategy", "least-outstanding")
    if strategy not in STRATEGIES:
        raise fail(f"'strategy' must be one of {', '.join(STRATEGIES)}, not {strategy!r}", "strategy")
    max_failures = entry.get("max_failures", DEFAULT_MAX_FAILURES)
    if isinstance(max_failures, bool) or not isinstance(max_failures, int) or max_failures < 1:
        raise fail("'max_failures' must be a whole number of at least 1", "max_failures")
    return Balancing(
        tuple(replicas),
        strategy,
        max_failures,
        _seconds(entry, "cooldown", DEFAULT_COOLDOWN, fail),
        _seconds(entry, "retry_budget", DEFAULT_RETRY_BUDGET, fail),
    )


def _parse_replica(item: Any, model: str | None, fail: Fail) -> Replica:
    if not isinstance(item, dict):
        raise fail("each replica must be a mapping with 'base_url' or 'alias'")
    unknown = [key for key in item if key not in REPLICA_KEYS]
    if unknown:
        raise fail(f"unknown replica key {unknown[0]!r} (known: {', '.join(REPLICA_KEYS)})", str(unknown[0]))
    for key in ("name", "alias", "base_url", "model", "provider", "token_env"):
        if item.get(key) is not None and not (isinstance(item[key], str) and item[key]):
            raise fail(f"a replica's '{key}' must be a non-empty string", key)
    alias, base_url = item.get("alias"), item.get("base_url")
    if (alias is None) == (base_url is None):
        raise fail("each replica names either 'alias' (another alias here) or 'base_url'")
    provider = item.get("provider", "openai")
    if alias is not None:
        mixed = [key for key in ("model", "provider", "token_env") if key in item]
        if mixed:
            raise fail(f"a replica that names an alias takes that alias's {mixed[0]!r}")
    else:
        if provider not in REPLICA_PROVIDERS:
            raise fail(f"a replica's 'provider' must be openai or huggingface, not {provider!r}", "provider")
        if not re.match(r"https?://[^/\s]+", str(base_url)):
            raise fail(f"a replica's 'base_url' must be an http(s) URL, not {base_url!r}", "base_url")
        if not (item.get("model") or model):
            raise fail("a base_url replica needs a 'model': its own, or the alias's")
    name = item.get("name")
    if name is not None and (len(name) > 128 or not name.isprintable() or name != name.strip()):
        raise fail("a replica's 'name' must be printable text of at most 128 characters", "name")
    token_env = item.get("token_env")
    if token_env and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", token_env):
        raise fail(
            f"a replica's 'token_env' must name an environment variable, not {token_env!r}", "token_env"
        )
    weight = item.get("weight", 1)
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0 < weight < 1e6:
        raise fail("a replica's 'weight' must be a number above 0", "weight")
    limit = item.get("max_concurrent")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise fail("a replica's 'max_concurrent' must be a whole number of at least 1", "max_concurrent")
    url = base_url.rstrip("/") if base_url else None
    return Replica(
        name=item.get("name") or alias or urlsplit(url).netloc,  # type: ignore[arg-type]
        alias=alias,
        base_url=url,
        model=item.get("model") or (model if url else None),
        provider=provider,
        token_env=token_env,
        weight=float(weight),
        max_concurrent=limit,
    )


def _seconds(entry: dict[str, Any], key: str, default: float, fail: Fail) -> float:
    value = entry.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 86400:
        raise fail(f"'{key}' must be a number of seconds from 0 to 86400", key)
    return float(value)
