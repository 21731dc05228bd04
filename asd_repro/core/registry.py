"""A small timm-style plug-in registry: ``@register`` fills a dict, ``create(name, **kwargs)`` builds, and
``meta(name)`` returns what the plug-in declared about itself at registration (as timm records a model's config).

Plug-in packages (datasets, attacks, defenses) import every module in their folder on first use,
so adding a plug-in is one new file (plus its gin file), with nothing else edited.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
from typing import Any, Callable

from asd_repro.core.errors import UserError


class Registry:
    """Name -> class mapping for one kind of plug-in (e.g. ``attack``)."""

    def __init__(self, kind: str, package: str):
        self.kind = kind
        self.package = package
        self._entries: dict[str, Callable[..., Any]] = {}
        self._meta: dict[str, dict[str, Any]] = {}
        self._loaded = False

    def register(self, name: str, **meta: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """A decorator registering its class or function under ``name``, with the plug-in's metadata ``meta``."""
        def wrap(obj: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._entries and self._entries[name] is not obj:
                raise RuntimeError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = obj
            self._meta[name] = dict(meta)
            return obj

        return wrap

    def load_all(self) -> None:
        """Import every module of the plug-in package so that its decorators run."""
        if self._loaded:
            return
        pkg = importlib.import_module(self.package)
        for info in pkgutil.iter_modules(pkg.__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"{self.package}.{info.name}")
        self._loaded = True

    def names(self) -> list[str]:
        self.load_all()
        return sorted(self._entries)

    def get(self, name: str) -> Callable[..., Any]:
        self.load_all()
        if name not in self._entries:
            raise UserError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}")
        return self._entries[name]

    def meta(self, name: str) -> dict[str, Any]:
        """What the plug-in ``name`` declared when it registered (a copy)."""
        self.get(name)
        return dict(self._meta[name])

    def create(self, name: str, **kwargs: Any) -> Any:
        return self.get(name)(**kwargs)


def module_names(package: str) -> list[str]:
    """Plug-in names of a package from its file names, without importing it (cheap)."""
    spec = importlib.util.find_spec(package)
    assert spec is not None and spec.submodule_search_locations is not None
    return sorted(i.name for i in pkgutil.iter_modules(spec.submodule_search_locations) if not i.name.startswith("_"))
