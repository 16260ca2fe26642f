"""JSON on the hot path: the stdlib's own C encoder and decoder, built once instead of per call.

``json.dumps`` with any argument changed from its defaults builds a new C encoder on every call,
and ``json.loads`` of bytes first guesses their encoding: together ~8 µs of a row's CPU at bench
scenario b. :func:`encoder` builds the encoder once; :func:`loads` decodes UTF-8 text straight.
The text is byte for byte what ``json.dumps`` gives for the same arguments (the same C code), so
stored input hashes stay valid; the one difference is that circular references are not looked
for (callers pass table rows and request bodies; a cycle ends in ``RecursionError``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from json.encoder import encode_basestring, encode_basestring_ascii
from typing import Any

_DECODER = json.JSONDecoder()
#: The _json accelerator's encoder factory (None without it); not in typeshed's stubs.
c_make_encoder: Any = getattr(json.encoder, "c_make_encoder", None)


def _not_serialisable(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def encoder(
    *,
    sort_keys: bool = False,
    ensure_ascii: bool = True,
    allow_nan: bool = True,
    separators: tuple[str, str] = (", ", ": "),
    default: Callable[[Any], Any] | None = None,
) -> Callable[[Any], str]:
    """``lambda obj: json.dumps(obj, **these_arguments)``, without the per-call setup."""
    item_separator, key_separator = separators
    if c_make_encoder is None:  # an interpreter without the _json accelerator
        plain = json.JSONEncoder(
            sort_keys=sort_keys,
            ensure_ascii=ensure_ascii,
            allow_nan=allow_nan,
            separators=separators,
            default=default,
            check_circular=False,
        )
        return plain.encode
    chunks = c_make_encoder(
        None,  # no circular-reference markers
        default or _not_serialisable,
        encode_basestring_ascii if ensure_ascii else encode_basestring,
        None,  # no indent
        key_separator,
        item_separator,
        sort_keys,
        False,  # skipkeys
        allow_nan,
    )

    def encode(obj: Any) -> str:
        return "".join(chunks(obj, 0))

    return encode


def loads(data: bytes) -> Any:
    """``json.loads(data)``: UTF-8 decoded straight; anything else (a BOM, UTF-16, bad JSON) goes
    through ``json.loads`` itself, so errors and edge cases are the stdlib's."""
    try:
        return _DECODER.decode(data.decode())
    except ValueError:  # UnicodeDecodeError is one
        return json.loads(data)


__all__ = ["encoder", "loads"]
