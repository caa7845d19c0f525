"""Typed, frozen model configuration: one mechanism for every method.

Each model describes its options with two frozen dataclasses derived from :class:`Config`,
split the way scvi-tools splits them: the *architecture* (what the model is: neighbours,
widths, graphs, blends), fixed when the model is built, and the *schedule* (how it is
trained: steps, learning rates, batches), which :meth:`~spatialimpute.model._base.BaseImputer.train`
accepts. Every field declares its checker with one of the option helpers below (built on the
squidpy-style helpers of :mod:`spatialimpute._validation`), and a config checks all of its
fields when it is created, so no invalid value reaches training.

A *preset* names a set of values (``"fast"``, ``"paper"``) that user values override; the
dataclass defaults are the fast preset. A saved model stores the resolved values of both
configs with :data:`CONFIG_VERSION`, and a loaded model uses those values, not the defaults
of the library that loads it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from .._io import jsonable
from .._validation import (
    SpatialImputeInputError,
    check_bool,
    check_choice,
    check_int,
    check_number,
)

__all__ = [
    "CONFIG_VERSION",
    "Config",
    "boolean",
    "choice",
    "choice_list",
    "integer",
    "integer_list",
    "number",
    "split_options",
]

#: Version of the saved configuration layout (bump when a saved field changes meaning).
CONFIG_VERSION = 1

C = TypeVar("C", bound="Config")
Check = Callable[[Any, str], Any]


def _option(default, check: Check) -> Any:
    return dataclasses.field(default=default, metadata={"check": check})


def _optional(check: Check, optional: bool) -> Check:
    if not optional:
        return check
    return lambda value, name: None if value is None else check(value, name)


def integer(default: int | None, *, minimum: int | None = None, maximum: int | None = None,
            optional: bool = False) -> Any:
    """An integer option; ``optional=True`` also accepts ``None`` (resolved from the data)."""
    return _option(default, _optional(lambda v, n: check_int(v, n, minimum=minimum, maximum=maximum), optional))


def number(default: float | None, *, minimum: float | None = None, maximum: float | None = None,
           inclusive: bool = True, optional: bool = False) -> Any:
    """A finite real option (stored as ``float``); ``optional=True`` also accepts ``None``."""
    return _option(default, _optional(
        lambda v, n: check_number(v, n, minimum=minimum, maximum=maximum, inclusive=inclusive), optional))


def boolean(default: bool) -> Any:
    """A ``True``/``False`` option."""
    return _option(default, check_bool)


def choice(default: str, choices: Sequence[str]) -> Any:
    """One of a fixed set of strings."""
    options = list(choices)
    return _option(default, lambda v, n: check_choice(v, n, options))


def integer_list(default: Sequence[int], *, minimum: int = 1) -> Any:
    """A non-empty sequence of integers (stored as a tuple), e.g. layer widths."""

    def check(value, name):
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) == 0:
            raise SpatialImputeInputError(name, "a non-empty list of integers", repr(value),
                                          f"pass e.g. {name}={list(default)}")
        return tuple(check_int(v, f"{name}[{i}]", minimum=minimum) for i, v in enumerate(value))

    return dataclasses.field(default=tuple(default), metadata={"check": check})


def choice_list(default: Sequence[str], choices: Sequence[str]) -> Any:
    """A non-empty sequence of distinct strings from a fixed set (stored as a tuple), e.g. ensemble members."""
    options = list(choices)

    def check(value, name):
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) == 0:
            raise SpatialImputeInputError(name, f"a non-empty list of names among {options}", repr(value),
                                          f"pass e.g. {name}={list(default)}")
        values = tuple(check_choice(v, f"{name}[{i}]", options) for i, v in enumerate(value))
        if len(set(values)) != len(values):
            raise SpatialImputeInputError(name, "each name once", repr(list(value)), "list every name once")
        return values

    return dataclasses.field(default=tuple(default), metadata={"check": check})


@dataclasses.dataclass(frozen=True)
class Config:
    """Base of every model configuration: frozen, typed, checked on creation."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            check = f.metadata.get("check")
            if check is not None:
                object.__setattr__(self, f.name, check(getattr(self, f.name), f.name))
        self._check_together()

    def _check_together(self) -> None:
        """Rules that involve several fields (subclasses override)."""

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The option names."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_options(cls: type[C], preset: Mapping[str, Any], options: Mapping[str, Any]) -> C:
        """The preset's values for this config's fields, overridden by ``options``."""
        mine = set(cls.names())
        values = {k: v for k, v in preset.items() if k in mine}
        values.update({k: v for k, v in options.items() if k in mine})
        return cls(**values)

    def replace(self: C, **changes) -> C:
        """A copy with ``changes`` applied (and checked); unknown names are refused."""
        unknown = sorted(set(changes) - set(self.names()))
        if unknown:
            raise SpatialImputeInputError(
                "options", f"options of {type(self).__name__} ({', '.join(self.names())})", f"unknown {unknown}",
                "check the spelling",
            )
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """The values as JSON-ready Python objects."""
        return {f.name: jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls: type[C], values, where: str) -> C:
        """Rebuild a saved config: exactly this config's keys, each value checked like user input."""
        if not isinstance(values, Mapping):
            raise SpatialImputeInputError(where, f"an object with the options of {cls.__name__}",
                                          type(values).__name__, "the folder is damaged: save the model again")
        missing, unknown = sorted(set(cls.names()) - set(values)), sorted(set(values) - set(cls.names()))
        if missing or unknown:
            raise SpatialImputeInputError(where, f"exactly the options of {cls.__name__}",
                                          f"missing {missing}, unknown {unknown}",
                                          "save the model again with this version of spatialimpute")
        try:
            return cls(**values)
        except SpatialImputeInputError as err:
            raise SpatialImputeInputError(f"{where}: {err.argument}", err.expected, err.found,
                                          "the folder was edited or is damaged: save the model again") from err


def split_options(options: Mapping[str, Any], configs: Sequence[type[Config]], method: str) -> list[dict]:
    """Split keyword options between ``configs`` by field name; refuse names none of them has."""
    known: dict[str, int] = {}
    for i, cfg in enumerate(configs):
        for name in cfg.names():
            known.setdefault(name, i)
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise SpatialImputeInputError(
            "params", f"options of method {method!r} ({', '.join(sorted(known)) or 'none'})", f"unknown {unknown}",
            "check the spelling, or see the method's Architecture and Schedule options",
        )
    parts: list[dict] = [{} for _ in configs]
    for name, value in options.items():
        parts[known[name]][name] = value
    return parts
