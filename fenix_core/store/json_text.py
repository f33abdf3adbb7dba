"""JSON columns' text: ``json.dumps(value)`` exactly, without its per-call set-up.

``json.dumps`` builds a new encoder (and, in C, a new encoding object) for
every value; the database binds several JSON values per engine step (the
components' state, the operations, the notifications), and that set-up was
about half of each encoding. :func:`dumps` keeps one C encoder with
``json.dumps``'s defaults (``ensure_ascii``, ``", "`` and ``": "``,
``allow_nan``, keys as given) and gives the same text. Where the C encoder
is missing (another Python implementation) it is ``json.dumps`` itself.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from json import encoder as _encoder
from typing import Any

__all__ = ["dumps", "parts"]


def _not_serializable(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _c_encoder() -> Callable[[Any, int], Any] | None:
    make = getattr(_encoder, "c_make_encoder", None)
    if make is None:
        return None
    # (markers, default, encoder, indent, key separator, item separator,
    # sort_keys, skipkeys, allow_nan): json.dumps's defaults, except that no
    # markers are kept: a value containing itself fails by recursion, not
    # by ValueError (neither is ever written).
    encode: Callable[[Any, int], Any] = make(
        None, _not_serializable, _encoder.encode_basestring_ascii, None, ": ", ", ",
        False, False, True,
    )  # fmt: skip
    return encode


_ENCODE = _c_encoder()

#: The kept C encoder itself, for a caller that joins its pieces inline
#: (``"".join(parts(value, 0)) == dumps(value)``: no Python frame per
#: value); None where there is no C encoder.
parts: Callable[[Any, int], Any] | None = _ENCODE


# A plain function, not a closure: psycopg caches its JSON dumpers by the
# function's code and logs "may cause a resource leak" for a closure, once
# per value bound on PostgreSQL.
def _kept_dumps(value: Any) -> str:
    assert _ENCODE is not None
    return "".join(_ENCODE(value, 0))


#: ``json.dumps(value)``'s text for every value json.dumps encodes.
dumps: Callable[[Any], str] = _kept_dumps if _ENCODE is not None else json.dumps
