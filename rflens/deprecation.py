"""Keyword arguments renamed in the public API: for one release the old name still works, with a
``DeprecationWarning`` that names the new one."""

from __future__ import annotations

import functools
import inspect
import warnings
from typing import Callable, TypeVar

from .errors import RFLensError

F = TypeVar("F", bound=Callable)


def renamed(**old_names: str | tuple[str, str]) -> Callable[[F], F]:
    """Accept each ``old=`` keyword as the parameter it was renamed to, with a warning.

    Each keyword maps an old name to the new one, or to ``(new name, why)`` where the reason
    helps the caller (``units=("channels", "they are channels")``).  Giving both names is an
    ``RFLensError``: neither can be guessed to win.

    >>> import warnings
    >>> @renamed(images="inputs")
    ... def count(inputs=()):
    ...     return len(inputs)
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     count(images=[1, 2]), str(caught[0].message)
    (2, 'count: images= is deprecated, use inputs=')
    """
    table = {old: (new, "") if isinstance(new, str) else new for old, new in old_names.items()}

    def wrap(func: F) -> F:
        params = list(inspect.signature(func).parameters.values())
        names = [p.name for p in params]
        for old, (new, _) in table.items():
            if new not in names or old in names:  # a mistake in rflens itself: fail at import
                raise TypeError(f"renamed({old}={new!r}) does not fit {func.__qualname__}{tuple(names)}: "
                                "the new name must be a parameter and the old one must not")
        # where the new name may also come positionally, a positional value counts as giving it
        position = {p.name: i for i, p in enumerate(params)
                    if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)}

        @functools.wraps(func)
        def call(*args, **kwargs):
            for old, (new, why) in table.items():
                if old not in kwargs:
                    continue
                because = f" ({why})" if why else ""
                if new in kwargs or position.get(new, len(args)) < len(args):
                    raise RFLensError(f"{func.__qualname__} got both {old}= and {new}=; {old}= is the old name of "
                                      f"{new}={because}: give only {new}=")
                warnings.warn(f"{func.__qualname__}: {old}= is deprecated, use {new}={because}",
                              DeprecationWarning, stacklevel=2)
                kwargs[new] = kwargs.pop(old)
            return func(*args, **kwargs)
        return call  # type: ignore[return-value]
    return wrap
