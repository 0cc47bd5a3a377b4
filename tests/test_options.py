"""The settings table (heylook.options): every reader, writer and flag is derived from it, so a row
added is a setting read by both APIs and models.yaml, sent upstream, and offered as a flag."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import cyclopts
import pytest

from heylook import options
from heylook.cli.flags import find_flag, flag_class, flag_rows, parse_flag_value, stated
from heylook.errors import InvalidRequest
from heylook.options import SETTINGS, Setting
from heylook.protocols.ollama import parameters_text, parse_options
from heylook.providers.remote import openai_fields
from heylook.registry.aliases import RegistryError, option_keys, parse_registry
from heylook.types import SamplingOptions
from heylook.wire.settings import read_settings

XTC = Setting(
    "xtc_probability", "number", "Exclude top choices this often.", default=0.0, minimum=0.0, maximum=1.0,
    openai="xtc_probability", ollama="xtc_probability", flag="xtc-probability", flag_also=("xtc",),
)  # fmt: skip


@pytest.fixture
def with_xtc(monkeypatch: pytest.MonkeyPatch) -> Setting:
    monkeypatch.setattr(options, "SETTINGS", (*SETTINGS, XTC))
    return XTC


def test_a_row_added_is_read_by_both_apis_and_models_yaml(with_xtc: Setting, tmp_path: Path) -> None:
    assert read_settings({"xtc_probability": 0.5}, "openai").xtc_probability == 0.5
    parsed, ignored = parse_options({"xtc_probability": 0.25, "mirostat": 1})
    assert parsed.xtc_probability == 0.25 and ignored == ("mirostat",)
    assert "xtc_probability" in option_keys()
    registry = parse_registry(
        "models:\n  a:\n    model: org/repo\n    options:\n      xtc_probability: 0.5\n", tmp_path / "m.yaml"
    )
    assert registry.aliases["a"].options.xtc_probability == 0.5
    with pytest.raises(InvalidRequest) as error:
        read_settings({"options": {}, "xtc_probability": 2}, "openai")
    assert error.value.param == "xtc_probability" and "between 0.0 and 1.0" in error.value.message


def test_a_row_added_goes_upstream_shows_in_ollama_and_has_defaults(with_xtc: Setting) -> None:
    assert openai_fields(SamplingOptions(xtc_probability=0.5, temperature=0.1)) == {
        "xtc_probability": 0.5,
        "temperature": 0.1,
    }
    assert "xtc_probability 0.5" in parameters_text(SamplingOptions(xtc_probability=0.5))
    assert options.defaults()["xtc_probability"] == 0.0


def test_a_row_added_is_a_flag_with_its_older_spellings(with_xtc: Setting) -> None:
    rows = flag_rows()
    assert with_xtc in rows
    flags_type = flag_class("Flags", "test", rows)
    app = cyclopts.App(result_action="return_value")
    seen: dict[str, Any] = {}

    def main(*, settings: Any = None) -> None:
        seen.update(stated(settings or flags_type(), rows))

    main.__annotations__["settings"] = flags_type | None  # a class made here: no string annotation
    app.default(main)
    app(["--xtc", "0.3", "--temperature", "0.2", "--stop", "a", "--stop", "b"])
    assert seen == {"xtc_probability": 0.3, "temperature": 0.2, "stop": ("a", "b")}
    assert find_flag("xtc-probability", rows) is with_xtc and find_flag("xtc", rows) is with_xtc


def test_unknown_settings_are_refused_everywhere(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        SamplingOptions(xtc_probability=0.5)
    with pytest.raises(RegistryError, match="unknown option 'xtc_probability'"):
        parse_registry(
            "models:\n  a:\n    model: org/repo\n    options:\n      xtc_probability: 0.5\n",
            tmp_path / "m.yaml",
        )


@pytest.mark.parametrize(
    ("body", "api", "expected"),
    [
        ({"top_k": -1}, "openai", {"top_k": 0}),
        ({"top_k": -5}, "ollama", {"top_k": 0}),
        ({"seed": -1}, "ollama", {}),
        ({"seed": -1}, "openai", {"seed": -1}),
        ({"num_predict": -1}, "ollama", {}),
        ({"num_predict": -2}, "ollama", {}),
        ({"num_predict": 7}, "ollama", {"max_tokens": 7}),
        ({"max_completion_tokens": 5, "max_tokens": 9}, "openai", {"max_tokens": 5}),
        (
            {"repeat_penalty": 1.1, "repeat_last_n": -1},
            "ollama",
            {"repetition_penalty": 1.1, "penalty_last_n": -1},
        ),
        ({"presence_penalty": 50}, "ollama", {"presence_penalty": 50}),
        ({"num_ctx": 2048}, "ollama", {"context_length": 2048}),
        ({"num_ctx": 2048}, "openai", {}),
        ({"stop": "x"}, "openai", {"stop": ("x",)}),
        ({"ignore_eos": True}, "openai", {"ignore_eos": True}),
        ({"ignore_eos": True}, "ollama", {}),
        ({"penalty_last_n": 8, "max_tokens": 3}, "models.yaml", {"penalty_last_n": 8, "max_tokens": 3}),
    ],
)
def test_each_api_reads_its_own_names(body: dict, api: options.Api, expected: dict) -> None:
    assert read_settings(body, api).stated() == expected


@pytest.mark.parametrize(
    ("body", "api", "param", "wording"),
    [
        ({"temperature": -0.1}, "openai", "temperature", "between 0.0 and 100.0"),
        ({"temperature": 101}, "openai", "temperature", "between 0.0 and 100.0"),
        ({"typical_p": 0}, "openai", "typical_p", "above 0"),
        ({"presence_penalty": 3}, "openai", "presence_penalty", "between -2.0 and 2.0"),
        ({"presence_penalty": 101}, "ollama", "options.presence_penalty", "between -100.0 and 100.0"),
        ({"num_predict": 0}, "ollama", "options.num_predict", "positive"),
        ({"num_predict": -3}, "ollama", "options.num_predict", "at least -2"),
        ({"max_tokens": 0}, "openai", "max_tokens", "at least 1"),
        ({"repeat_penalty": 0}, "ollama", "options.repeat_penalty", "between 0.01 and 100.0"),
        ({"top_k": "many"}, "openai", "top_k", "integer"),
        ({"ignore_eos": "yes"}, "openai", "ignore_eos", "boolean"),
    ],
)
def test_out_of_bounds_is_a_400_naming_the_field(
    body: dict, api: options.Api, param: str, wording: str
) -> None:
    prefix = "options." if api == "ollama" else ""
    with pytest.raises(InvalidRequest) as error:
        read_settings(body, api, prefix=prefix)
    assert error.value.param == param
    assert wording in error.value.message


def test_the_table_is_consistent() -> None:
    names = [row.name for row in SETTINGS]
    assert len(names) == len(set(names))
    for api in ("openai", "ollama"):
        keys = [row.key(api) for row in SETTINGS if row.key(api)]
        assert len(keys) == len(set(keys)), api
    flags = [flag for row in SETTINGS for flag in (row.flag, *row.flag_also) if flag]
    assert len(flags) == len(set(flags))
    for row in SETTINGS:
        low, high = row.bounds("openai")
        if row.default is not None and row.kind in ("number", "integer"):
            assert (low is None or row.default >= low) and (high is None or row.default <= high), row.name
        assert row.help.endswith("."), row.name


def test_chat_set_parses_by_kind() -> None:
    rows = {row.name: row for row in SETTINGS}
    assert parse_flag_value(rows["top_k"], "40", None) == 40
    assert parse_flag_value(rows["temperature"], "0.5", None) == 0.5
    assert parse_flag_value(rows["temperature"], "default", 0.5) is None
    assert parse_flag_value(rows["stop"], "x", ["a"]) == ["a", "x"]
    assert parse_flag_value(rows["ignore_eos"], "on", None) is True
    with pytest.raises(ValueError):
        parse_flag_value(rows["top_k"], "lots", None)
    assert find_flag("max_new_tokens", SETTINGS) is rows["max_tokens"]


def test_run_flags_are_those_the_openai_api_carries() -> None:
    from heylook.cli.talk import RUN_ROWS, Settings, openai_fields, sampling_options

    assert {row.name for row in RUN_ROWS} == {row.name for row in SETTINGS if row.flag and row.openai}
    settings = Settings(max_tokens=5, stop=["x"], json_mode=True)
    assert openai_fields(settings) == {
        "max_tokens": 5,
        "stop": ("x",),
        "response_format": {"type": "json_object"},
    }
    assert sampling_options(settings).max_tokens == 5
    assert dataclasses.replace(settings, system="s").system == "s"
