"""The JSON value types request bodies are made of, as pydantic types: strict (a "5" is no number,
a 1 no boolean) as heylook has always read them, except that an integral 5.0 is the integer 5
(JSON clients often send one), and no number is NaN or infinite.

A field that takes more than one JSON type (a string or an array of strings) is a `one_of`: the
JSON type picks the branch, so a wrong value gets one error naming what the field takes."""

from __future__ import annotations

import json
from typing import Annotated, Any, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError

# Each model's own fields are checked; fields it does not declare are kept and ignored, as both
# APIs' servers do (OpenAI's SDK sends `user`, `metadata`, `store`; Ollama's clients send more).
OPEN = ConfigDict(strict=True, extra="allow", allow_inf_nan=False, populate_by_name=True)
# Bodies heylook writes: exactly these fields.
CLOSED = ConfigDict(extra="forbid")


def example(body: dict[str, Any]) -> ConfigDict:
    """A request model's configuration with an example body (shown in /docs, tried by schemathesis)."""
    return ConfigDict(**OPEN, json_schema_extra={"examples": [body]})


class Body(BaseModel):
    """A request body or a part of one."""

    model_config = OPEN


def _integral(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


Integer = Annotated[int, BeforeValidator(_integral)]
Number = Annotated[float, Field(allow_inf_nan=False)]
JsonObject = dict[str, Any]


def json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


# The names a one_of's branches carry in error locations; the error formatter leaves them out.
BRANCH = "~"


def one_of(what: str, **branches: Any) -> Any:
    """A union chosen by the value's JSON type (keys: string, number, boolean, array, object);
    any other type is one error: "'field' must be {what}, not {type}"."""

    def pick(value: Any) -> str | None:
        kind = json_type(value)
        return BRANCH + kind if kind in branches else None

    if len(branches) == 1:
        ((kind, annotation),) = branches.items()

        def check(value: Any) -> Any:
            if json_type(value) != kind:
                raise PydanticCustomError("wrong_type", f"must be {what}")
            return value

        return Annotated[annotation, BeforeValidator(check)]
    members = tuple(Annotated[annotation, Tag(BRANCH + kind)] for kind, annotation in branches.items())
    return Annotated[
        Union[members],  # noqa: UP007 (a Union of a tuple made at run time)
        Discriminator(pick, custom_error_type="wrong_type", custom_error_message=f"must be {what}"),
    ]


def choice(values: tuple[str, ...], what: str) -> Any:
    """One of `values` (an enum in the schema); another string is "'field' must be {what}"."""

    def check(value: str) -> str:
        if value not in values:
            raise PydanticCustomError("wrong_value", f"must be {what}, not {json.dumps(value)}")
        return value

    return Annotated[str, AfterValidator(check), WithJsonSchema({"type": "string", "enum": list(values)})]
