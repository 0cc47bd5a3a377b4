"""The generation settings as wire fields, made from the settings table (heylook.options): the
fields each API's request model carries, with the table's bounds and help in its JSON schema, and
one check of a value that every reader shares."""

from __future__ import annotations

import functools
import math
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, Field, WithJsonSchema, create_model

from heylook import options as settings_table
from heylook.options import MAX_STOP_LENGTH, MAX_STOP_SEQUENCES, Api, Setting
from heylook.types import SamplingOptions
from heylook.wire.fields import Body, json_type
from heylook.wire.validate import validate


def checked(row: Setting, api: Api, value: Any) -> Any:
    """A setting's value as `api` sends it, in internal form (the row's normalize applied), or
    ValueError saying what is wrong with it (the caller names the field)."""
    low, high = row.bounds(api)
    if row.kind == "number":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"must be a number, not {json_type(value)}")
        if not math.isfinite(value):
            raise ValueError(f"must be a finite number, not {value}")
        if (low is not None and value < low) or (high is not None and value > high):
            raise ValueError(f"must be {_bounds(low, high)}, got {value}")
        value = float(value)
    elif row.kind == "integer":
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # JSON clients often send 5.0 for 5
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"must be an integer, not {json_type(value)}")
        if low is not None and value < low:
            raise ValueError(f"must be at least {int(low)}, got {value}")
        if high is not None and value > high:
            raise ValueError(f"must be at most {high:g}, got {value}")
    elif row.kind == "boolean":
        if not isinstance(value, bool):
            raise ValueError(f"must be a boolean, not {json_type(value)}")
    else:
        value = _stops(value)
    if row.above_minimum and value == low:
        raise ValueError(f"must be above {low:g}")
    return row.normalize(value, api) if row.normalize is not None else value


def _bounds(low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        return f"between {float(low)} and {float(high)}"
    return f"at least {float(low)}" if low is not None else f"at most {float(high or 0)}"


def _stops(value: Any) -> tuple[str, ...]:
    """A stop sequence or a list of them, as both APIs accept."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
        raise ValueError(f"must be a string or an array of strings, not {json_type(value)}")
    if len(items) > MAX_STOP_SEQUENCES:
        raise ValueError(f"may hold at most {MAX_STOP_SEQUENCES} sequences")
    if any(s == "" for s in items):
        raise ValueError("must not contain an empty string")
    if any(len(s) > MAX_STOP_LENGTH for s in items):
        raise ValueError(f"sequences may be at most {MAX_STOP_LENGTH} characters")
    return tuple(items)


def _schema(row: Setting, api: Api) -> dict[str, Any]:
    low, high = row.bounds(api)
    # null is taken too: the setting is unsaid, as if left out.
    if row.kind == "stops":
        text = {"type": "string", "minLength": 1, "maxLength": MAX_STOP_LENGTH}
        stops = {"type": "array", "items": text, "maxItems": MAX_STOP_SEQUENCES}
        schema: dict[str, Any] = {"anyOf": [text, stops, {"type": "null"}]}
    else:
        schema = {"type": [row.kind, "null"]}
        if low is not None:
            schema["exclusiveMinimum" if row.above_minimum else "minimum"] = low
        if high is not None:
            schema["maximum"] = high
    unsaid = f" Unsaid: the alias's, else the model's, else {row.default}." if row.default is not None else ""
    return {**schema, "description": row.help + unsaid}


def _field(row: Setting, api: Api) -> Any:
    def check(value: Any) -> Any:
        return None if value is None else checked(row, api, value)

    annotation = Annotated[Any, BeforeValidator(check), WithJsonSchema(_schema(row, api))]
    return (annotation, Field(default=None))


def with_settings(base: type[BaseModel], api: Api) -> type[BaseModel]:
    """`base` with a field for every setting `api` carries (OpenAI's further names too): what the
    table says at the time of the call, so a row added is a field."""
    return _with_settings(base, api, settings_table.SETTINGS)


@functools.cache
def _with_settings(base: type[BaseModel], api: Api, rows: tuple[Setting, ...]) -> type[BaseModel]:
    fields: dict[str, Any] = {}
    for row in rows:
        key = row.key(api)
        if key is None:
            continue
        for name in (key, *(row.openai_also if api == "openai" else ())):
            fields[name] = _field(row, api)
    made: type[BaseModel] = create_model(
        base.__name__.removesuffix("Base"), __base__=base, __module__=base.__module__, **fields
    )
    return made


class _Settings(Body):
    """Only the settings: models.yaml's `options`, or a body read for them alone."""


def read_settings(body: Any, api: Api, *, prefix: str = "") -> SamplingOptions:
    """The settings a body (or an alias's options) states under the names `api` gives them, each
    checked for its type and bounds: a wrong one is InvalidRequest naming the field (`prefix` says
    where the body sits, e.g. "options.")."""
    return stated_settings(validate(with_settings(_Settings, api), body, prefix=prefix), api)


def stated_settings(body: BaseModel, api: Api) -> SamplingOptions:
    """The settings a validated body states, by internal name (OpenAI's further names first:
    max_completion_tokens before max_tokens)."""
    values: dict[str, Any] = {}
    for row in settings_table.SETTINGS:
        key = row.key(api)
        if key is None:
            continue
        names = (*row.openai_also, key) if api == "openai" else (key,)
        given = [getattr(body, name, None) for name in names]
        values[row.name] = next((value for value in given if value is not None), None)
    return SamplingOptions(**values)
