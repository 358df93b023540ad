"""Checked config values: Literal choices, numeric ranges and list lengths, with one-line errors.

A config field's annotation says what it accepts, and `coerce` enforces it when the config
is built (from a preset, a file or `--set`), so a bad value fails before any data is read:

    jepa_loss: Literal["smooth_l1", "mse"] = "smooth_l1"
    batch_size: Annotated[int, Range(ge=1)] = 128        # or the alias PositiveInt
    k: Annotated[list[PositiveInt], Length(min=1)] = ...
    crop_scale: Annotated[tuple[Fraction, Fraction], Ascending()] = (0.3, 1.0)

Written by hand because the config is plain dataclasses read from YAML and `--set`
strings; pydantic would bring a second model layer (and its own error text) for what a
hundred lines do here.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from djepa_bench.errors import UserError


@dataclass(frozen=True)
class Range:
    """The interval a number must lie in (None: unbounded on that side)."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def contains(self, value: float) -> bool:
        if isinstance(value, float) and math.isnan(value):
            return False
        return not (
            (self.ge is not None and value < self.ge)
            or (self.gt is not None and value <= self.gt)
            or (self.le is not None and value > self.le)
            or (self.lt is not None and value >= self.lt)
        )

    def describe(self) -> str:
        low = (f">= {self.ge:g}" if self.ge is not None else None) or (
            f"> {self.gt:g}" if self.gt is not None else None
        )
        high = (f"<= {self.le:g}" if self.le is not None else None) or (
            f"< {self.lt:g}" if self.lt is not None else None
        )
        return " and ".join(part for part in (low, high) if part) or "any number"


@dataclass(frozen=True)
class Length:
    """How many items a list must hold."""

    min: int = 0
    max: int | None = None

    def describe(self) -> str:
        if self.max is None:
            return f"at least {self.min} value{'s' if self.min != 1 else ''}"
        return f"{self.min} to {self.max} values"


@dataclass(frozen=True)
class Ascending:
    """A pair (low, high) with low <= high."""


@dataclass(frozen=True)
class Pattern:
    """A string matching a regular expression (whole string); `hint` names valid forms."""

    regex: str
    hint: str


PositiveInt = Annotated[int, Range(ge=1)]
NonNegativeInt = Annotated[int, Range(ge=0)]
PositiveFloat = Annotated[float, Range(gt=0)]
NonNegativeFloat = Annotated[float, Range(ge=0)]
Fraction = Annotated[float, Range(gt=0, le=1)]  # a share of something: (0, 1]
OpenFraction = Annotated[float, Range(gt=0, lt=1)]  # (0, 1), e.g. a validation split
Probability = Annotated[float, Range(ge=0, le=1)]
DeviceName = Annotated[str, Pattern(r"auto|cpu|cuda(:\d+)?|mps", "auto, cpu, cuda or cuda:N")]


def field_types(cls: type) -> dict[str, Any]:
    """Each dataclass field's annotation, with Annotated metadata kept."""
    hints = typing.get_type_hints(cls, include_extras=True)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def is_section(tp: Any) -> bool:
    """Whether a field holds a nested config section (a dataclass)."""
    return dataclasses.is_dataclass(_strip(tp)[0])


def _strip(tp: Any) -> tuple[Any, tuple[Any, ...]]:
    """(the bare type, its Annotated constraints)."""
    if typing.get_origin(tp) is Annotated:
        base, *extras = typing.get_args(tp)
        return base, tuple(extras)
    return tp, ()


def describe(tp: Any) -> str:
    """What a value of type `tp` looks like, in words ('an integer >= 1')."""
    base, extras = _strip(tp)
    origin, args = typing.get_origin(base), typing.get_args(base)
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else describe(a) for a in args)
    if origin is list:
        text = f"a list of {_plural(describe(args[0]))}"
    elif origin is tuple:
        text = "[" + ", ".join(describe(a) for a in args) + "]"
    else:
        words = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
        text = words.get(base, getattr(base, "__name__", str(base)))
    for extra in extras:
        if isinstance(extra, Range):
            text += f" {extra.describe()}"
        elif isinstance(extra, Length):
            text += f" ({extra.describe()})"
        elif isinstance(extra, Ascending):
            text += " (low <= high)"
        elif isinstance(extra, Pattern):
            text = extra.hint
    return text


def _plural(text: str) -> str:
    for article in ("an ", "a "):
        if text.startswith(article):
            noun, _, rest = text[len(article) :].partition(" ")
            return f"{noun}s {rest}".strip()
    return text


def coerce(value: Any, tp: Any, key: str, section: Any = None) -> Any:
    """Return `value` converted to type `tp`, or raise a one-line UserError naming `key`.

    `section(cls, data, prefix)` builds nested dataclass sections (config.from_dict).
    """
    base, extras = _strip(tp)
    out = _coerce_base(value, base, key, section)
    for extra in extras:
        _check(out, extra, key, tp)
    return out


def _fail(key: str, tp: Any, value: Any) -> UserError:
    return UserError(f"config key '{key}' expects {describe(tp)}, got {value!r}")


def _coerce_base(value: Any, tp: Any, key: str, section: Any) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        if value in args and not isinstance(value, bool):
            return value
        close = difflib.get_close_matches(str(value), [str(a) for a in args], n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]}?" if close else ""
        choices = ", ".join(str(a) for a in args)
        raise UserError(f"config key '{key}' must be one of {choices}, got {value!r}{hint}")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, key, section)
            except UserError as err:
                last = err
        if len([a for a in args if a is not type(None)]) == 1:
            raise last
        raise _fail(key, tp, value)
    if origin in (list, tuple):
        if isinstance(value, (int, float, str)) and not isinstance(value, bool) and origin is list:
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise _fail(key, tp, value)
        if origin is tuple:
            if len(args) == 2 and args[1] is Ellipsis:
                return tuple(coerce(v, args[0], key, section) for v in value)
            if len(value) != len(args):
                raise UserError(
                    f"config key '{key}' expects {len(args)} values like {describe(tp)}, "
                    f"got {value!r}"
                )
            return tuple(coerce(v, a, key, section) for v, a in zip(value, args, strict=True))
        return [coerce(v, args[0], key, section) for v in value]
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise UserError(f"config key '{key}' expects true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise UserError(f"config key '{key}' expects an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise UserError(f"config key '{key}' expects a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise UserError(f"config key '{key}' expects a string, got {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise UserError(f"config key '{key}' is a section; set its fields as '{key}.FIELD'")
        return section(tp, value, key + ".")
    return value


def _check(value: Any, extra: Any, key: str, tp: Any) -> None:
    if isinstance(extra, Range) and not extra.contains(value):
        raise UserError(f"config key '{key}' must be {extra.describe()}, got {value!r}")
    if isinstance(extra, Length):
        too_many = extra.max is not None and len(value) > extra.max
        if len(value) < extra.min or too_many:
            raise UserError(f"config key '{key}' needs {extra.describe()}, got {list(value)!r}")
    if isinstance(extra, Ascending) and value[0] > value[1]:
        raise UserError(f"config key '{key}' needs low <= high, got {list(value)!r}")
    if isinstance(extra, Pattern) and not re.fullmatch(extra.regex, value):
        raise UserError(f"config key '{key}' expects {extra.hint}, got {value!r}")
