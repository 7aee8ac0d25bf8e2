"""What declared models share: the `Choices` a text field takes, and pydantic's complaint as one sentence.

Everything digits reads from outside (a recipe's settings, a sweep's space file, a run folder's JSON files) is a
pydantic model that declares each field's type, range and finiteness. Pydantic then validates, and
`first_problem` turns its ValidationError into the parts of one sentence: which field, what it was given, and
what belongs there; each reader words that sentence for its own user (a parameter, or a file and its key).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import annotated_types
from pydantic import BaseModel, GetCoreSchemaHandler, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError, core_schema

UNKNOWN_NAME = "unknown_name"  # The error type `Choices` raises.
UNION_MEMBER = re.compile(r"^(int|float|str|bool|none|list|dict)$|\[")


@dataclass(frozen=True)
class Choices:
    """Field metadata: the values a field takes (`Annotated[str, Choices(LOSSES)]`); any other is refused before
    its type is checked, and the CLI lists them."""

    values: tuple[Any, ...]

    def __init__(self, values: Iterable[Any]) -> None:
        object.__setattr__(self, "values", tuple(values))

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_before_validator_function(self._check, handler(source))

    def _check(self, value: Any) -> Any:
        # Compared with their types, so that 1 is not taken for True (nor 1.0 for 1).
        if not any(type(value) is type(choice) and value == choice for choice in self.values):
            raise PydanticCustomError(UNKNOWN_NAME, "must be one of {choices}", {"choices": self.values})
        return value

    @property
    def words(self) -> str:
        """The values as a user writes them: "sgd, adam, adadelta, rmsprop" or "true, false, auto"."""
        return ", ".join(json.dumps(value) if isinstance(value, bool) else str(value) for value in self.values)


@dataclass(frozen=True)
class Problem:
    """The first thing pydantic refused: `field` (dotted for nested keys), the `value` given, what belongs there.

    `message` is set instead of `wanted` when a validator of the model wrote its own sentence.
    """

    kind: str  # pydantic's error type: "greater_than_equal", "extra_forbidden", UNKNOWN_NAME, ...
    field: str
    value: Any
    wanted: str = ""
    message: str = ""
    choices: Choices | None = None

    @property
    def shown(self) -> str:
        """The value as a short piece of text: 0.0, nan, 'three', [1, 2]."""
        text = repr(self.value) if isinstance(self.value, str | float | int) else _json_or_repr(self.value)
        return text if len(text) <= 40 else text[:37] + "..."


def first_problem(error: ValidationError, model: type[BaseModel]) -> Problem:
    """The first of pydantic's complaints about `model`, with what belongs in the field in words."""
    complaints = error.errors(include_url=False)
    # A value no member of a union (int | float) takes gets one complaint per member: the one about its range or
    # finiteness says more than "not an int".
    details = next((item for item in complaints if not item["type"].endswith("_type")), complaints[0])
    kind, value, context = details["type"], details.get("input"), details.get("ctx") or {}
    # The location names fields and keys; pydantic adds the union member it tried ("int", "function-after[...]").
    location = [part for part in details["loc"] if isinstance(part, str) and not UNION_MEMBER.search(part)]
    field = ".".join(location)
    if kind == "value_error":  # A model validator's own sentence (a check across fields).
        return Problem(kind, field, value, message=str(context.get("error", details["msg"])))
    info = _field_info(model, location)
    metadata = info.metadata if info else []
    choices = next((item for item in metadata if isinstance(item, Choices)), None)
    return Problem(kind, field, value, wanted=_wanted(kind, value, info, choices, details["msg"]), choices=choices)


def unit_of(info: FieldInfo) -> str | None:
    """A numeric field's unit ("pixels", "degrees"), declared as `Field(json_schema_extra={"unit": ...})`."""
    extra = info.json_schema_extra
    return str(extra["unit"]) if isinstance(extra, dict) and "unit" in extra else None


def _field_info(model: type[BaseModel], location: list[str]) -> FieldInfo | None:
    """The declaration of the field at `location`, following nested models."""
    holder: Any = model
    info = None
    for name in location:
        fields = getattr(holder, "model_fields", {})
        if name not in fields:
            return None
        info = fields[name]
        members = getattr(info.annotation, "__args__", (info.annotation,))
        holder = next((member for member in members if isinstance(member, type) and issubclass(member, BaseModel)),
                      None)
    return info


def _wanted(kind: str, value: Any, info: FieldInfo | None, choices: Choices | None, message: str) -> str:
    if kind == UNKNOWN_NAME and choices is not None:
        return f"one of {choices.words}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal") and info is not None:
        return bounds_in_words(info)
    if kind == "finite_number":
        return "a finite number"
    if kind == "int_type":
        return "a whole number" if isinstance(value, float) else "a number"
    if kind in ("float_type", "int_parsing", "float_parsing"):
        return "a number"
    if kind == "bool_type":
        return "true or false"
    if kind == "string_type":
        return "text"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return "an object"
    if kind == "list_type":
        return "a list"
    if kind == "too_short":
        return "a non-empty list"
    if kind == "missing":
        return "given"
    return message[0].lower() + message[1:] if message else "something else"


def bounds_in_words(info: FieldInfo) -> str:
    """The range a field's bounds allow: "at least 1", "above 0", "between 0 and 8 pixels", "at least 0 and below 1"."""
    metadata = info.metadata
    low = next(((item.ge, "[") for item in metadata if isinstance(item, annotated_types.Ge)), None) or next(
        ((item.gt, "(") for item in metadata if isinstance(item, annotated_types.Gt)), None)
    high = next(((item.le, "]") for item in metadata if isinstance(item, annotated_types.Le)), None) or next(
        ((item.lt, ")") for item in metadata if isinstance(item, annotated_types.Lt)), None)
    unit = unit_of(info)
    in_units = f" {unit}" if unit else ""
    lower = (f"at least {low[0]}" if low[1] == "[" else f"above {low[0]}") if low else ""
    upper = (f"at most {high[0]}" if high[1] == "]" else f"below {high[0]}") if high else ""
    if low and high and (low[1], high[1]) == ("[", "]"):
        return f"between {low[0]} and {high[0]}{in_units}"
    return " and ".join(part for part in (lower, upper) if part) + in_units if low or high else "any number"


def _json_or_repr(value: Any) -> str:
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)
