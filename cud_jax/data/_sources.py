"""Calling a registered data source with user options (shared by vision and text)."""

from __future__ import annotations

import inspect
from typing import Any, Callable


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
