"""A request body validated against its wire type in one pass; the first thing wrong becomes the
400 heylook has always answered: InvalidRequest naming the field ("messages[0].role") and saying
what it must be."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from heylook.errors import InvalidRequest
from heylook.wire.fields import BRANCH, json_type

M = TypeVar("M", bound=BaseModel)

_EXPECTED = {
    "string_type": "a string",
    "bool_type": "a boolean",
    "int_type": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "list_type": "an array",
    "dict_type": "an object",
    "model_type": "an object",
    "model_attributes_type": "an object",
}


def validate(model: type[M], body: Any, *, prefix: str = "") -> M:
    """`body` as `model`, or InvalidRequest for the first error (`prefix` names where the body
    sits, e.g. "options.")."""
    try:
        return model.model_validate(body)
    except ValidationError as error:
        raise invalid_request(error.errors(include_url=False)[0], prefix) from None


def field_path(loc: tuple[int | str, ...], prefix: str = "") -> str:
    """("messages", 0, "content") as messages[0].content; a one_of's branch names are left out."""
    path = prefix.rstrip(".")
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif not part.startswith(BRANCH):
            path = f"{path}.{part}" if path else part
    return path


def invalid_request(error: ErrorDetails, prefix: str = "") -> InvalidRequest:
    param = field_path(error["loc"], prefix) or None
    name = f"'{param}'" if param else "the request body"
    kind, value, context = error["type"], error.get("input"), error.get("ctx") or {}
    if kind == "missing":
        message = f"{name} is required"
    elif kind in _EXPECTED:
        message = f"{name} must be {_EXPECTED[kind]}, not {json_type(value)}"
    elif kind == "wrong_value":
        message = f"{name} {error['msg']}"
    elif kind == "wrong_type":
        message = f"{name} {error['msg']}, not {json_type(value)}"
    elif kind == "finite_number":
        message = f"{name} must be a finite number, not {value}"
    elif kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        message = f"{name} must be {_bound_words(kind, context)}, got {value}"
    elif kind == "literal_error":
        message = f"{name} must be {_choices(str(context.get('expected', '')))}, not {_shown(value)}"
    elif kind == "too_short":
        message = f"{name} must not be empty"
    elif kind == "too_long":
        message = f"{name} may hold at most {context.get('max_length')} items"
    elif kind == "string_too_short":  # an empty name is as good as none
        message = f"{name} is required" if context.get("min_length") == 1 else f"{name} is too short"
    elif kind == "string_too_long":
        message = f"{name} may be at most {context.get('max_length')} characters"
    else:  # a value error from a validator: its own words
        message = f"{name} {_reason(error)}"
    return InvalidRequest(message, param=param)


def _bound_words(kind: str, context: dict[str, Any]) -> str:
    words = {
        "greater_than_equal": "at least",
        "less_than_equal": "at most",
        "greater_than": "above",
        "less_than": "below",
    }[kind]
    bound = next(iter(context.values()), "")
    return f"{words} {bound}"


def _reason(error: ErrorDetails) -> str:
    message = error["msg"]
    for lead in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(lead)
    return message


def _choices(expected: str) -> str:
    """pydantic's "'a', 'b' or 'c'" as JSON spells them: one of "a", "b" or "c"."""
    spelled = expected.replace("'", '"')
    return f"one of {spelled}" if " or " in spelled or "," in spelled else spelled


def _shown(value: Any) -> str:
    return json.dumps(value) if isinstance(value, str) else json_type(value)
