"""Models from the Hub and the Hugging Face cache: pull, import, cache scan, cache clear."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated, Literal

import cyclopts
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from heylook.cli.common import (
    EXIT_FAILED,
    EXIT_USAGE,
    CommandFailed,
    ModelsOption,
    QuantizeOption,
    app,
    console,
    human_bytes,
    open_registry,
    registry_path,
    write_registry,
)
from heylook.errors import HeylookError
from heylook.models.discover import Found, in_hf_cache, under_folder
from heylook.models.profiles import PROFILES, apply_profile
from heylook.models.pull import PullProgress, alias_entry, parse_pull_name, pull_model
from heylook.registry.aliases import RegistryError, parse_registry
from heylook.registry.edits import add_alias, add_aliases

Opt = cyclopts.Parameter
Profile = Literal["fast", "balanced", "quality", "memory", "interactive"]


@app.command
def pull(
    model: Annotated[str, Opt(help="org/name, org/name:revision, or hf.co/org/name:QUANT for a GGUF repo.")],
    /,
    *,
    revision: Annotated[str | None, Opt(help="Branch, tag or commit to pull.")] = None,
    alias: Annotated[str | None, Opt(help="Name of the alias to add (default: the model as given).")] = None,
    force: Annotated[bool, Opt(help="Replace an alias of that name that points elsewhere.")] = False,
    quantize: QuantizeOption = None,
    models: ModelsOption = None,
) -> int:
    """Download a model from the Hugging Face Hub, then add an alias for it.

    Interrupted, it resumes where it stopped the next time. Files land in the Hugging Face cache.
    """
    try:
        target = parse_pull_name(model)
    except HeylookError as error:
        raise CommandFailed(error.message, EXIT_USAGE) from None
    if revision:
        target = replace(target, revision=revision)
    name = alias or target.name
    path = registry_path(models)
    existing = open_registry(models).aliases.get(name)
    if existing and existing.source.model != target.repo_id and not force:
        raise CommandFailed(f"alias {name!r} already names {existing.source.describe()}; --force replaces it")
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bars:
        tasks: dict[str, TaskID] = {}

        def report(progress: PullProgress) -> None:
            if progress.digest is None or progress.total is None:
                console.print(progress.status)
                return
            if progress.digest not in tasks:
                tasks[progress.digest] = bars.add_task(progress.status, total=progress.total)
            bars.update(tasks[progress.digest], completed=progress.completed or 0)

        try:
            source = pull_model(target, report)
        except HeylookError as error:
            raise CommandFailed(error.message, EXIT_USAGE if error.status == 400 else EXIT_FAILED) from None
    entry = alias_entry(source)
    if quantize:
        entry["load"] = {**entry.get("load", {}), "quantization": quantize}
    write_registry(lambda: add_alias(path, name, entry))
    console.print(f"pulled {source.describe()}; alias [bold]{name}[/bold] added to {path}")
    return 0


@app.command(name="import")
def import_models(
    *,
    hf_cache: Annotated[bool, Opt(help="Look in the Hugging Face cache.")] = False,
    folder: Annotated[
        Path | None, Opt(help="Look under this folder (model directories and .gguf files).")
    ] = None,
    profile: Annotated[Profile, Opt(help=f"Settings for every alias: {', '.join(PROFILES)}.")] = "balanced",
    override: Annotated[
        list[str] | None, Opt(help="KEY=VALUE on top of the profile, e.g. options.temperature=0.5.")
    ] = None,
    dry_run: Annotated[bool, Opt(help="Show what would be created; write nothing.")] = False,
    force: Annotated[bool, Opt(help="Replace aliases that already exist.")] = False,
    quantize: QuantizeOption = None,
    models: ModelsOption = None,
) -> int:
    """Find models heylook can serve and create an alias for each, with a profile's settings."""
    override = [*(override or []), *([f"load.quantization={quantize}"] if quantize else [])]
    if hf_cache == (folder is not None):
        raise CommandFailed("give exactly one of --hf-cache and --folder DIR", EXIT_USAGE)
    if folder is not None and not folder.is_dir():
        raise CommandFailed(f"{folder} is not a folder", EXIT_USAGE)
    found = list(in_hf_cache() if hf_cache else under_folder(folder))  # type: ignore[arg-type]
    path = registry_path(models)
    existing = set(open_registry(models).aliases)
    entries: dict[str, dict] = {}
    for item in found:
        if item.skipped is None:
            entries[_unique(item.name, entries)] = _profiled(item, profile, override or [])
    _validate(entries, path)
    written: list[str] = []
    if entries and not dry_run:
        _, written = write_registry(lambda: add_aliases(path, entries, replace=force))
    table = Table(
        title=f"{'Would import' if dry_run else 'Imported'} into {path} ({profile} profile)",
        title_justify="left",
    )
    for column in ("alias", "model", "result"):
        table.add_column(column)
    names = iter(entries)
    for item in found:
        if item.skipped:
            table.add_row(item.name, item.where, f"[dim]skipped: {item.skipped}[/dim]")
            continue
        name = next(names)
        taken = name in existing
        if dry_run:
            result = (
                "would replace"
                if taken and force
                else "exists: kept (--force replaces)"
                if taken
                else "would create"
            )
        else:
            result = (
                ("replaced" if taken else "created") if name in written else "exists: kept (--force replaces)"
            )
        table.add_row(name, item.where, result)
    console.print(table if found else "No models found.")
    return 0


def _profiled(item: Found, profile: str, overrides: list[str]) -> dict:
    try:
        return apply_profile(item.entry, profile, overrides)
    except ValueError as error:
        raise CommandFailed(str(error), EXIT_USAGE) from None


def _validate(entries: dict[str, dict], path: Path) -> None:
    """An override that makes an alias invalid stops the import before anything is written."""
    import yaml

    try:
        parse_registry(yaml.safe_dump({"models": entries}, sort_keys=False), path)
    except RegistryError as error:
        raise CommandFailed(f"the imported aliases would be invalid: {error}", EXIT_USAGE) from None


def _unique(name: str, taken: dict[str, dict]) -> str:
    candidate, number = name, 2
    while candidate in taken:
        candidate, number = f"{name}-{number}", number + 1
    return candidate


cache = cyclopts.App(name="cache", help="The Hugging Face cache: what is in it, and clearing it.")
app.command(cache)


@cache.command
def scan() -> int:
    """Every repo in the Hugging Face cache, with its size."""
    from huggingface_hub import CacheNotFound, scan_cache_dir

    try:
        info = scan_cache_dir()
    except CacheNotFound as error:
        console.print(f"The Hugging Face cache ({error.cache_dir}) is empty.")
        return 0
    table = Table(title=f"{info.repos and next(iter(info.repos)).repo_path.parent}", title_justify="left")
    for column in ("repo", "type", "size", "files", "revisions", "refs", "last used"):
        table.add_column(column, justify="right" if column in ("size", "files") else "left")
    for repo in sorted(info.repos, key=lambda r: r.repo_id):
        refs = ", ".join(sorted(r for revision in repo.revisions for r in revision.refs))
        table.add_row(repo.repo_id, repo.repo_type, human_bytes(repo.size_on_disk), str(repo.nb_files),
                      str(len(repo.revisions)), refs, repo.last_accessed_str)  # fmt: skip
    console.print(table)
    console.print(f"{len(info.repos)} repos, {human_bytes(info.size_on_disk)} in all")
    return 0


@cache.command
def clear(
    repos: Annotated[list[str] | None, Opt(help="Repos to delete (default: every model repo).")] = None,
    /,
    *,
    yes: Annotated[bool, Opt(help="Do not ask for confirmation.")] = False,
    models: ModelsOption = None,
) -> int:
    """Delete repos from the Hugging Face cache, after confirmation."""
    from huggingface_hub import CacheNotFound, scan_cache_dir

    try:
        info = scan_cache_dir()
    except CacheNotFound:
        console.print("The Hugging Face cache is empty: nothing to delete.")
        return 0
    by_id = {repo.repo_id: repo for repo in info.repos}
    unknown = [name for name in repos or [] if name not in by_id]
    if unknown:
        raise CommandFailed(f"not in the Hugging Face cache: {', '.join(unknown)}")
    chosen = [by_id[name] for name in repos] if repos else [r for r in info.repos if r.repo_type == "model"]
    if not chosen:
        console.print("No model repos in the Hugging Face cache: nothing to delete.")
        return 0
    hashes = [revision.commit_hash for repo in chosen for revision in repo.revisions]
    plan = info.delete_revisions(*hashes)
    console.print(f"This deletes {len(chosen)} repo(s): {', '.join(r.repo_id for r in chosen)}")
    users = sorted(
        a.name
        for a in open_registry(models).aliases.values()
        if a.source.model in {r.repo_id for r in chosen}
    )
    if users:
        console.print(
            f"[yellow]These aliases will have no files until pulled again: {', '.join(users)}[/yellow]"
        )
    if not yes and not _confirm(f"Free {human_bytes(plan.expected_freed_size)}? [y/N] "):
        console.print("Nothing deleted.")
        return EXIT_FAILED
    plan.execute()
    console.print(f"Deleted; freed {human_bytes(plan.expected_freed_size)}.")
    return 0


def _confirm(question: str) -> bool:
    try:
        return input(question).strip().lower() in ("y", "yes")
    except EOFError:  # no one to answer: the safe answer
        return False
