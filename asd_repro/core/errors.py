"""The one error type the command line turns into a one-line message and a non-zero exit, and its checks.

Every configurable validates the values it is built with: ``check_types`` against its annotations (an
``epochs = 'ten'`` is caught before any arithmetic), ``require`` for ranges and relations. Both raise a
``UserError`` that names the gin binding and says where to fix it.
"""

from __future__ import annotations

import inspect
import math
import os
import numbers
import types
import typing
from pathlib import Path, PurePath
from typing import Any, Callable


class UserError(Exception):
    """A problem with the user's input (a file, a name, a binding) that they can fix.

    The message is a single line that names the offending file or value and says how to fix it.
    """


class Diverged(UserError):
    """A training loss became NaN or infinite: the run stops, writes no output and keeps its last checkpoint."""


class StepLosses:
    """The loss of every step of an epoch, kept on the training device and read once (``check``).

    ``check`` is the divergence guard of every training loop: a NaN or infinite loss stops the run with one
    line naming the phase and epoch (``desc``) and the first bad step. Nothing is synchronised per step.
    """

    def __init__(self, desc: str):
        self.desc = desc
        self.values: list = []  # 0-d tensors

    def add(self, loss) -> None:
        self.values.append(loss.detach().reshape(()))

    def check(self) -> None:
        if not self.values:
            return
        import torch

        values = torch.stack(self.values).float()
        bad = torch.nonzero(~torch.isfinite(values)).flatten()
        if len(bad):
            step = int(bad[0])
            raise Diverged(f"{self.desc}: the training loss is {values[step].item()} at step {step + 1} of "
                           f"{len(values)}")


FIX = "fix the binding (its gin file, a bindings list in params.yaml or --bind)"


def is_integer(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def is_range(value: object, low: float = 0.0, high: float = 1.0) -> bool:
    """A (min, max) pair of numbers with low <= min <= max <= high."""
    return (isinstance(value, (tuple, list)) and len(value) == 2 and all(is_number(v) for v in value)
            and low <= value[0] <= value[1] <= high)


def require(binding: str, value: object, ok: bool, expected: str) -> None:
    """Raise the one-line error naming gin binding ``binding`` (e.g. 'defenses.ASD.gamma') unless ``ok``."""
    if not ok:
        raise UserError(f"{binding} = {value!r} is invalid: expected {expected}; {FIX}")


SEED_LIMIT = 2**32  # numpy's legacy global seed (seeded with torch's and python's in every stage) takes < 2**32


def check_seed(binding: str, seed: object) -> None:
    """A seed every RNG of a stage accepts: an integer in [0, 2**32)."""
    require(binding, seed, is_integer(seed) and 0 <= seed < SEED_LIMIT, f"an integer from 0 to {SEED_LIMIT - 1}")


def _matches(value: object, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return is_integer(value)
    if hint is float:
        return is_number(value)
    if hint is str:
        return isinstance(value, str)
    if hint is PurePath or (isinstance(hint, type) and issubclass(hint, PurePath)):
        return isinstance(value, (str, os.PathLike))
    if hint is tuple or origin in (tuple, list, typing.Sequence):
        if not isinstance(value, (tuple, list)):
            return False
        args = typing.get_args(hint)
        if origin is tuple and args and args[-1] is not Ellipsis:  # tuple[float, float]: that many, each its type
            return len(value) == len(args) and all(_matches(v, h) for v, h in zip(value, args))
        return not args or all(_matches(v, args[0]) for v in value)
    if hint is dict or origin is dict:
        return isinstance(value, dict)
    if _collaborator(hint):
        return isinstance(value, hint)
    return True  # anything else (tensors, modules, callables) is not a binding's type


_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string", Path: "a path (a string)"}


def _collaborator(hint: Any) -> bool:
    """A class of this package that a binding passes by gin reference (``@asd/engine.Optimizer()``)."""
    return isinstance(hint, type) and hint.__module__.startswith("asd_repro.")


def _describe(hint: Any) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_describe(h) for h in typing.get_args(hint))
    if hint is type(None):
        return "None"
    if hint is dict or typing.get_origin(hint) is dict:
        return "a mapping"
    if _collaborator(hint):
        module = hint.__module__.split(".")[1]
        return f"a reference @<scope>/{module}.{hint.__name__}()"
    args = typing.get_args(hint)
    if typing.get_origin(hint) is tuple and args and args[-1] is not Ellipsis:
        return f"a list of {len(args)}: " + ", ".join(_describe(h) for h in args)
    if args:
        return f"a list of {_describe(args[0]).removeprefix('an ').removeprefix('a ')}s"
    return _NAMES.get(hint, "a list or tuple")


def _hints(fn: Callable[..., Any]) -> dict[str, Any]:
    """``fn``'s annotations evaluated; one that names something not importable at run time is left out."""
    try:
        return typing.get_type_hints(fn)
    except (NameError, TypeError):
        hints = {}
        for name, annotation in getattr(fn, "__annotations__", {}).items():
            try:
                hints[name] = eval(annotation, fn.__globals__) if isinstance(annotation, str) else annotation
            except Exception:  # noqa: BLE001 - an annotation for readers only
                continue
        return hints


def check_types(prefix: str, fn: Callable[..., Any], values: dict[str, Any]) -> None:
    """Check each argument in ``values`` against ``fn``'s annotation; ``prefix`` + name is the gin binding.

    Call it first in a configurable, ``check_types('defenses.NoDefense', NoDefense.__init__, locals())``, so
    that a wrong type gets the one-line error instead of a TypeError deep inside training.
    """
    hints = _hints(inspect.unwrap(fn))
    for name, value in values.items():
        hint = hints.get(name)
        if hint is not None and name != "self" and not _matches(value, hint):
            require(f"{prefix}.{name}", value, False, _describe(hint))
        if isinstance(value, float) and not math.isfinite(value):
            require(f"{prefix}.{name}", value, False, "a finite number")
