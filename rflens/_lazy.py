"""Names of a package imported on first use: ``rflens --help`` answers before torch is imported.

A package calls ``install(__name__, {"name": ".submodule", ...})``; ``package.name`` then imports
the submodule when first read.  The names are properties of the package's module class, so a
submodule of the same name (``rflens.models.adapt``) does not hide the function once imported,
as ``from .adapt import adapt`` in an ``__init__`` never let it.

>>> import rflens.models
>>> type(rflens.models).__name__, callable(rflens.models.adapt)
('LazyPackage', True)
"""

from __future__ import annotations

import importlib
import sys
import types


def install(package: str, names: dict[str, str]) -> None:
    module = sys.modules[package]

    def prop(name: str, where: str) -> property:
        def get(self):
            if name in self.__dict__.get("_set", {}):
                return self.__dict__["_set"][name]
            return getattr(importlib.import_module(where, package), name)

        def put(self, value):
            # the import system binds a submodule of the same name here: the name stays the function
            if not (isinstance(value, types.ModuleType) and value.__name__ == f"{package}.{name}"):
                self.__dict__.setdefault("_set", {})[name] = value  # monkeypatching still works

        def drop(self):
            self.__dict__.get("_set", {}).pop(name, None)
        return property(get, put, drop)

    module.__class__ = type("LazyPackage", (types.ModuleType,), {n: prop(n, w) for n, w in names.items()})
