"""Module paths of rflens 0.1, before the package was split into layers (engine, methods, models):
importing one still works for one release, with a ``DeprecationWarning`` naming the new path.

>>> import sys, warnings
>>> _ = sys.modules.pop("rflens.checkpoints", None)   # as in a new session
>>> with warnings.catch_warnings(record=True) as caught:
...     warnings.simplefilter("always")
...     from rflens.checkpoints import load_weights
>>> str(caught[0].message).split(";")[0]
'rflens.checkpoints moved to rflens.models.checkpoints'
>>> load_weights.__module__
'rflens.models.checkpoints'

``rflens.adapt`` and ``rflens.segment`` are not here: those names were always the functions.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types
import warnings

MOVED = {
    "rflens.api": "rflens.engine.analyze",
    "rflens.field": "rflens.engine.field",
    "rflens.geometry": "rflens.engine.geometry",
    "rflens.layout": "rflens.engine.layout",
    "rflens.ops": "rflens.engine.ops",
    "rflens.probe": "rflens.engine.probe",
    "rflens.trace": "rflens.engine.trace",
    "rflens.gradient": "rflens.methods.gradient",
    "rflens.images": "rflens.methods.images",
    "rflens.incremental": "rflens.methods.incremental",
    "rflens.occlusion": "rflens.methods.occlusion",
    "rflens.running": "rflens.methods.running",
    "rflens.scan": "rflens.methods.scan",
    "rflens.spread": "rflens.methods.spread",
    "rflens.checkpoints": "rflens.models.checkpoints",
    "rflens.sources": "rflens.models.sources",
}


class _Moved(types.ModuleType):
    """Stands at an old path and reads every attribute from the module's new home."""

    def __getattr__(self, name: str):
        return getattr(importlib.import_module(MOVED[self.__name__]), name)

    def __dir__(self):
        return dir(importlib.import_module(MOVED[self.__name__]))


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        return importlib.util.spec_from_loader(fullname, self) if fullname in MOVED else None

    def create_module(self, spec):
        return _Moved(spec.name)

    def exec_module(self, module):
        warnings.warn(f"{module.__name__} moved to {MOVED[module.__name__]}; the old path goes away in the "
                      "next release", DeprecationWarning, stacklevel=_importer_level())
        importlib.import_module(MOVED[module.__name__])  # a broken new home fails here, at the import


def _importer_level() -> int:
    """The stack level of the code that wrote the import, past importlib's frames."""
    frame, level = sys._getframe(1), 1
    while frame is not None and (frame.f_code.co_filename.startswith("<frozen importlib")
                                 or frame.f_code.co_filename == __file__):
        frame, level = frame.f_back, level + 1
    return level


def install() -> None:
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.append(_Finder())
