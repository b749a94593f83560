"""The sticky percentage split, computed exactly as nginx's `split_clients` computes it.

A canary sends a share of users to the service and keeps each user on one side. The Python
proxy and an nginx edge exported from the same routing.toml (`strangler export nginx`) must
put a user on the same side, or moving the edge from one to the other would move users
between the monolith and the service mid-rollout. nginx cannot run our hash, so the proxy runs
nginx's: `ngx_murmur_hash2` (src/core/ngx_murmurhash.c) over the string nginx evaluates,
`"<capability>:<key>"`, compared with the boundary `ngx_http_split_clients_module.c` derives
from a percentage written with two decimals (`percent * 100 * 0xffffffff / 10000`, in integer
arithmetic). Both sides of that comparison are fixed here, once, for the proxy and the
exporter.
"""

from __future__ import annotations

import struct
from typing import Final

__all__ = [
    "HASH_SPACE",
    "hundredths_of",
    "murmur2",
    "percent_text",
    "split_key",
    "split_threshold",
    "sticky_hash",
]

HASH_SPACE: Final = 1 << 32
"""murmur2 values lie in [0, HASH_SPACE)."""

_M: Final = 0x5BD1E995
_MASK: Final = 0xFFFFFFFF
# One unpacker per word count: the keys hashed here are short (a subject, a 32-hex cookie).
_WORDS = tuple(struct.Struct(f"<{n}I") for n in range(33))


def murmur2(data: bytes) -> int:
    """nginx's `ngx_murmur_hash2`: 32-bit MurmurHash2 with seed 0, little-endian words."""
    length = len(data)
    h = length
    count = length >> 2
    body = count << 2
    words = _WORDS[count] if count < len(_WORDS) else struct.Struct(f"<{count}I")
    for k in words.unpack_from(data):
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ (((k ^ (k >> 24)) * _M) & _MASK)
    rest = length - body
    if rest:
        if rest == 3:
            h ^= data[body + 2] << 16
        if rest >= 2:
            h ^= data[body + 1] << 8
        h = ((h ^ data[body]) * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    return h ^ (h >> 15)


def split_key(capability: str, key: str) -> str:
    """The string both edges hash for a user of a capability.

    A colon, not a NUL, between the two: an nginx config cannot write a NUL into the
    split_clients template.
    """
    return f"{capability}:{key}"


def sticky_hash(capability: str, key: str) -> int:
    """murmur2 of the split key's UTF-8 bytes, as nginx hashes the njs-computed variable.

    A subject read from a token may hold a lone surrogate (JSON allows `"\\ud800"`), which
    has no UTF-8 form: njs hands nginx U+FFFD in its place, and so do we, instead of failing
    the request.
    """
    text = split_key(capability, key)
    try:
        data = text.encode()
    except UnicodeEncodeError:
        data = "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in text).encode()
    return murmur2(data)


def hundredths_of(percent: float) -> int:
    """A percentage as nginx reads it from the config: whole hundredths of a percent."""
    return round(percent * 100)


def percent_text(percent: float) -> str:
    """The percentage as written into a split_clients block (`12.50%`), two decimals."""
    hundredths = hundredths_of(percent)
    return f"{hundredths // 100}.{hundredths % 100:02d}%"


def split_threshold(percent: float) -> int:
    """Users whose hash is below this land in the first part of a split of `percent` %.

    nginx's boundary for a first part of p hundredths is p * 0xffffffff // 10000. At 100 % that
    leaves out the one hash 0xffffffff; both the proxy and the exporter treat 100 % as "every
    user" instead (the exporter then writes no split at all), so it is HASH_SPACE here.
    """
    hundredths = hundredths_of(percent)
    if hundredths >= 10_000:
        return HASH_SPACE
    return hundredths * _MASK // 10_000
