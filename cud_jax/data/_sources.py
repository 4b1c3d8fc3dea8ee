"""The one registry of data sources (vision and text), calling a source with user options,
and the check of the size arguments every loader takes."""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

import numpy as np


def check_count(field: str, value, upper: int, what: str, *, allow_zero: bool) -> None:
    """`value` (an example count such as `val_size`) is None or an int in
    `[0 or 1, upper]`; else a one-line error naming `field` and `what` bounds it."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"`{field}` must be an int or None, got {value!r}.")
    low = 0 if allow_zero else 1
    if not low <= value <= upper:
        raise ValueError(f"`{field}`={value} must lie in [{low}, {upper}]: {what}.")


def call_source(loader: str, name: str, source: Callable, data_dir, kwargs: dict) -> Any:
    """Calls `source(data_dir, **kwargs)`, turning a mistyped option into an error that lists
    the options the source accepts (`loader` names the public function, e.g. load_vision)."""
    try:
        inspect.signature(source).bind(data_dir, **kwargs)
    except TypeError:
        params = [p.name for p in list(inspect.signature(source).parameters.values())[1:]
                  if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
        raise TypeError(f"{loader}({name!r}) got unknown option(s) {sorted(kwargs)}; this "
                        f"source accepts {params}.") from None
    return source(data_dir, **kwargs)


#: kind -> {name: source(data_dir, **options)}; `load_vision` / `load_text` read it.
_REGISTRY: dict[str, dict[str, Callable]] = {"vision": {}, "text": {}}
#: Name prefixes the loaders resolve themselves (TFDS, the Hugging Face Hub).
_RESERVED = {"vision": ("tfds:",), "text": ("hf:", "tfds:")}
_LOADERS = {"vision": "load_vision", "text": "load_text"}


def register_source(kind: str, name: str, source: Callable, *, overwrite: bool = False
                    ) -> None:
    """Makes `load_<kind>(name, ...)` call `source(data_dir, **source_kwargs)`.

    A name ending in ":" registers a prefix: `load_<kind>(name + ARG)` then calls
    `source(ARG, data_dir, **source_kwargs)` (e.g. "csv:" with ARG a path).
    """
    if name.startswith(_RESERVED[kind]):
        raise ValueError(f"names starting with {' or '.join(map(repr, _RESERVED[kind]))} are "
                         "reserved.")
    if name in _REGISTRY[kind] and not overwrite:
        raise ValueError(f"{kind} source {name!r} is already registered; pass overwrite=True.")
    _REGISTRY[kind][name] = source


def source_names(kind: str) -> tuple[str, ...]:
    """Registered source names of `kind` (`vision` or `text`)."""
    return tuple(sorted(_REGISTRY[kind]))


def _lookup(kind: str, name: str) -> Callable | None:
    """The source for `name`: registered by that name, or by its prefix (`csv:` for
    `csv:PATH`, the rest of the name bound as the source's first argument)."""
    if name in _REGISTRY[kind]:
        return _REGISTRY[kind][name]
    prefix, sep, arg = name.partition(":")
    if sep and arg and prefix + sep in _REGISTRY[kind]:
        return functools.partial(_REGISTRY[kind][prefix + sep], arg)
    return None


def is_registered(kind: str, name: str) -> bool:
    """Whether `load_<kind>(name)` finds a registered source (by name or prefix)."""
    return _lookup(kind, name) is not None


def call_registered(kind: str, name: str, data_dir, kwargs: dict) -> Any:
    """Calls the registered source for `name` with checked options (`call_source`)."""
    return call_source(_LOADERS[kind], name, _lookup(kind, name), data_dir, kwargs)
