"""Gin configuration: parse composed files with one-line errors, record what was asked and used.

Files are composed in a fixed order (base, dataset, attack, defense, profile), later files
overriding earlier ones, then the bindings from ``params.yaml`` and the command line.
"""

from __future__ import annotations

import importlib.util  # noqa: F401  (gin 0.5 needs it loaded before resolving `include`)
import re
import tokenize
from pathlib import Path
from typing import Any, Callable, Iterable

import gin

from asd_repro.core.errors import UserError

_GIN_ERRORS = (ValueError, SyntaxError, tokenize.TokenError, KeyError, TypeError, AttributeError, IndexError)


def configurable(module: str, name: str | None = None) -> Callable[[Any], Any]:
    """``gin.configurable(name, module=module)`` whose every call first checks each argument it is given against its
    annotation (``errors.check_types``): a binding of the wrong type is one line naming it (``attacks.IAB.epochs``),
    before any work, for every plug-in and stage root alike. Ranges stay with each configurable (``require``)."""
    import functools
    import inspect

    from asd_repro.core.errors import check_types

    def decorate(obj: Any) -> Any:
        target = obj.__init__ if inspect.isclass(obj) else obj
        selector = f"{module}.{name or obj.__name__}"
        signature = inspect.signature(target)

        packed = {p.name for p in signature.parameters.values()
                  if p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)}

        @functools.wraps(target)
        def checked(*args: Any, **kwargs: Any) -> Any:
            given = signature.bind_partial(*args, **kwargs).arguments
            check_types(scoped(selector), target, {k: v for k, v in given.items()
                                           if k != "self" and k not in packed and v is not gin.REQUIRED})
            return target(*args, **kwargs)

        checked.__signature__ = signature  # gin reads the parameters with getfullargspec, which does not unwrap
        if inspect.isclass(obj):
            obj.__init__ = checked
            return gin.configurable(name, module=module)(obj)
        return gin.configurable(name, module=module)(checked)

    return decorate


def scoped(selector: str) -> str:
    """``selector`` as the binding that reached it: ``asd/engine.Optimizer`` inside gin scope ``asd``."""
    scope = gin.current_scope_str()
    return f"{scope}/{selector}" if scope else selector


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    msg = text[0] if text else type(e).__name__
    loc = next((ln.strip() for ln in text[1:] if ln.strip().startswith(("In file", "In bindings"))), "")
    line = re.search(r"line (\d+)", loc)
    return f"{msg.rstrip('.')}" + (f" (line {line.group(1)})" if line else "")


def parse(files: Iterable[str | Path], bindings: Iterable[str] = (), bindings_source: str | list[str] = "bindings") -> None:
    """Parse gin files then bindings, turning any gin failure into a UserError naming its source.

    ``bindings_source`` names where the bindings came from: one name for all, or one per binding.
    """
    bindings = list(bindings)
    sources = [bindings_source] * len(bindings) if isinstance(bindings_source, str) else list(bindings_source)
    gin.clear_config()
    for f in files:
        path = Path(f)
        if not path.is_file():
            raise UserError(f"{path}: gin file not found; check the dataset/attack/defense/profile names "
                            "in params.yaml")
        try:
            gin.parse_config_file(str(path))
        except _GIN_ERRORS as e:
            raise UserError(f"{path}: {_first_line(e)}; fix or remove that binding "
                            "(run `asd-repro configurables` for the valid names)") from None
    for b, source in zip(bindings, sources):
        try:
            gin.parse_config(b)
        except _GIN_ERRORS as e:
            raise UserError(f"{source}: bad gin binding {b!r}: {_first_line(e)}; "
                            "run `asd-repro configurables` for the valid names") from None


def call_with_config(fn, *args, **kwargs):
    """Call a configurable; report a missing required value or unbound macro as a one-line error."""
    try:
        return fn(*args, **kwargs)
    except RuntimeError as e:
        if "Required bindings" in str(e):
            raise UserError(f"missing gin value: {_first_line(e)}; "
                            "bind it in the profile or dataset gin file") from None
        raise
    except TypeError as e:
        macro = re.search(r"configurable 'macro' .* in scope '([^']+)'", str(e))
        if macro:
            raise UserError(f"gin macro {macro.group(1)} has no value; bind it (e.g. `{macro.group(1)} = ...` in a gin "
                            "file, or --seed for SEED)") from None
        raise


def strip_comments(text: str) -> str:
    """Gin text without comments and blank lines (a ``#`` inside a quoted string is kept)."""
    kept = []
    for line in text.splitlines():
        quote, cut = None, len(line)
        for i, ch in enumerate(line):
            if quote:
                quote = None if ch == quote else quote
            elif ch in "'\"":
                quote = ch
            elif ch == "#":
                cut = i
                break
        line = line[:cut].rstrip()
        if line.strip():
            kept.append(line)
    return "\n".join(kept)


def asked_config(files: Iterable[str | Path], bindings: Iterable[str]) -> str:
    """The configuration as asked: each file's statements in order, then the extra bindings.

    Comments and blank lines are dropped, so that editing a comment changes no stage output (the text is
    written into the outputs, whose hashes DVC follows downstream).
    """
    parts = []
    for f in files:
        parts.append(f"# ---- {Path(f).as_posix()}\n{strip_comments(Path(f).read_text())}\n")
    bindings = list(bindings)
    if bindings:
        parts.append("# ---- bindings (params.yaml / command line)\n" + "\n".join(bindings) + "\n")
    return "\n".join(parts)


def bindings_from_params(params_file: str | Path, key: str) -> list[str]:
    """Read a list of gin bindings stored under a dotted key of params.yaml (e.g. ``bindings.train``)."""
    from asd_repro.core.matrix import read_params

    path = Path(params_file)
    data = read_params(path)
    node = data
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise UserError(f"{path}: missing key {key!r}; add it (a list of gin bindings, [] for none)")
        node = node[part]
    if node is None:
        return []
    if not isinstance(node, list) or not all(isinstance(b, str) for b in node):
        raise UserError(f"{path}: {key} must be a list of gin binding strings, "
                        "such as \"engine.Augment.crop_padding = 2\"")
    return node
