"""Generation settings, declared once: one row each, with its name in each API, in models.yaml and
on the command line, its type, bounds, default and help. Both APIs' readers, the alias checks,
what goes on to remote upstreams, what a model's generation_config.json may recommend, and the
flags of `create`, `run` and `chat` are all derived from this table: adding a setting is adding a
row (and teaching the sampler what it means).

Imports nothing of heylook's: everything else builds on it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["number", "integer", "boolean", "stops"]
Api = Literal["openai", "ollama", "models.yaml"]
MAX_STOP_SEQUENCES = 16
MAX_STOP_LENGTH = 1000


@dataclass(frozen=True)
class Setting:
    name: str  # SamplingOptions' attribute, and the key under an alias's `options` in models.yaml
    kind: Kind
    help: str
    default: Any = None  # heylook's own, under the request's, the alias's and the model's; None: unset
    minimum: float | None = None
    maximum: float | None = None
    above_minimum: bool = False  # the minimum itself is refused (typical_p must be above 0)
    openai: str | None = None  # the OpenAI request field; None: not on that API
    # Further OpenAI fields meaning the same, read first (max_completion_tokens before max_tokens).
    openai_also: tuple[str, ...] = ()
    ollama: str | None = None  # the key under Ollama's `options`
    ollama_bounds: tuple[float | None, float | None] | None = None  # Ollama's, where they differ
    in_yaml: bool = True  # an alias may set it under `options`
    flag: str | None = None  # the command-line flag (without --); None: no flag
    flag_also: tuple[str, ...] = ()  # older spellings of the flag, still taken
    forward: bool = True  # sent on to OpenAI-compatible upstreams, under its OpenAI name
    from_generation_config: bool = False  # a model's generation_config.json may recommend it
    # What a value read from a wire becomes (e.g. top_k -1, "off", is 0); takes the value and the
    # API; raises ValueError, with what is wrong, for a value in bounds that still means nothing.
    normalize: Callable[[Any, Api], Any] | None = None

    def key(self, api: Api) -> str | None:
        """The setting's name on that API (None: the API has no such setting)."""
        if api == "openai":
            return self.openai
        if api == "ollama":
            return self.ollama
        return self.name if self.in_yaml else None

    def bounds(self, api: Api) -> tuple[float | None, float | None]:
        if api == "ollama" and self.ollama_bounds is not None:
            return self.ollama_bounds
        return self.minimum, self.maximum


def _top_k(value: int, api: Api) -> int:
    return max(value, 0)  # -1 and 0 both turn it off (llama.cpp: any top_k <= 0)


def _seed(value: int, api: Api) -> int | None:
    return None if api == "ollama" and value < 0 else value  # Ollama: a negative seed is a random one


def _num_predict(value: int, api: Api) -> int | None:
    if value == 0:
        raise ValueError("must be positive, or -1 for no limit")
    return value if value > 0 else None  # Ollama's -1 (and -2): no limit of the request's own


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "temperature", "number", "Sampling temperature; 0 is greedy.", default=1.0, minimum=0.0,
        maximum=100.0, openai="temperature", ollama="temperature", flag="temperature",
        from_generation_config=True,
    ),
    Setting(
        "top_p", "number", "Nucleus sampling: keep the likeliest tokens up to this mass.", default=1.0,
        minimum=0.0, maximum=1.0, openai="top_p", ollama="top_p", flag="top-p", from_generation_config=True,
    ),
    Setting(
        "top_k", "integer", "Keep only the k likeliest tokens; 0 or -1 turns it off.", default=0, minimum=-1,
        openai="top_k", ollama="top_k", ollama_bounds=(None, None), flag="top-k", from_generation_config=True,
        normalize=_top_k,
    ),
    Setting(
        "min_p", "number", "Drop tokens less likely than this share of the likeliest.", default=0.0,
        minimum=0.0, maximum=1.0, openai="min_p", ollama="min_p", flag="min-p", from_generation_config=True,
    ),
    Setting(
        "typical_p", "number", "Locally typical sampling; 1 turns it off.", default=1.0, minimum=0.0,
        maximum=1.0, above_minimum=True, openai="typical_p", ollama="typical_p", flag="typical-p",
        from_generation_config=True,
    ),
    Setting(
        "repetition_penalty", "number", "Divides the scores of tokens seen; 1 turns it off.", default=1.0,
        minimum=0.01, maximum=100.0, openai="repetition_penalty", ollama="repeat_penalty",
        flag="repetition-penalty", from_generation_config=True,
    ),
    Setting(
        "presence_penalty", "number", "Subtracted from the score of every token seen.", default=0.0,
        minimum=-2.0, maximum=2.0, openai="presence_penalty", ollama="presence_penalty",
        ollama_bounds=(-100.0, 100.0), flag="presence-penalty",
    ),
    Setting(
        "frequency_penalty", "number", "Subtracted once for every time a token was seen.", default=0.0,
        minimum=-2.0, maximum=2.0, openai="frequency_penalty", ollama="frequency_penalty",
        ollama_bounds=(-100.0, 100.0), flag="frequency-penalty",
    ),
    Setting(
        "penalty_last_n", "integer", "How many of the latest tokens the penalties look at; -1 all.",
        default=64, minimum=-1, ollama="repeat_last_n", flag="penalty-last-n", forward=False,
    ),
    Setting(
        "seed", "integer", "The same seed and request give the same reply.", openai="seed", ollama="seed",
        flag="seed", normalize=_seed,
    ),
    Setting(
        "max_tokens", "integer", "Most tokens in a reply.", minimum=1, openai="max_tokens",
        openai_also=("max_completion_tokens",), ollama="num_predict", ollama_bounds=(-2, None),
        flag="max-tokens", flag_also=("max-new-tokens",), normalize=_num_predict,
    ),
    Setting(
        "stop", "stops", "A stop sequence (the reply ends before it); repeat for more.", openai="stop",
        ollama="stop", flag="stop",
    ),
    Setting(
        "ignore_eos", "boolean", "Go on past the end-of-turn token, to the token limit.", default=False,
        openai="ignore_eos", flag=None,
    ),
    Setting(
        "context_length", "integer", "A prompt-plus-reply limit below the model's own.", minimum=1,
        ollama="num_ctx", in_yaml=False, flag="context-length", forward=False,
    ),
)  # fmt: skip


def setting_names() -> tuple[str, ...]:
    return tuple(row.name for row in SETTINGS)


def generation_config_keys() -> tuple[str, ...]:
    """The settings a model's generation_config.json may recommend (transformers spells them as
    heylook does)."""
    return tuple(row.name for row in SETTINGS if row.from_generation_config)


def defaults() -> dict[str, Any]:
    """heylook's own defaults, the lowest layer: OpenAI's, and llama.cpp's 64-token penalty window."""
    return {row.name: row.default for row in SETTINGS if row.default is not None}


def find(name: str) -> Setting | None:
    return next((row for row in SETTINGS if row.name == name), None)
