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

Upgrading a proxy that bucketed users with its earlier hash (blake2b, before this module) moves
users of a running canary between the monolith and the service, once: finish the canary (100 %
or reads_cutover) or restart it (back to 0 %, raised again after the upgrade) before deploying
(docs/scale-out.md, "Upgrading during a canary"). A canary at 0 % or 100 % moves nobody.

A key longer than KEY_BYTES_LIMIT bytes is not a key: both edges treat such a subject or cookie
as absent (proxy/decision.py, the njs module of strangler.nginx_njs), so that no request makes
an edge hash kilobytes of pure-Python murmur2 on the event loop.
"""

from __future__ import annotations

import struct
from typing import Final

__all__ = [
    "HASH_SPACE",
    "KEY_BYTES_LIMIT",
    "hundredths_of",
    "key_bytes",
    "murmur2",
    "percent_text",
    "split_key",
    "split_threshold",
    "sticky_hash",
]

HASH_SPACE: Final = 1 << 32
"""murmur2 values lie in [0, HASH_SPACE)."""

KEY_BYTES_LIMIT: Final = 256
"""A token subject or sticky cookie value longer than this (UTF-8 bytes) counts as absent."""

_M: Final = 0x5BD1E995
_MASK: Final = 0xFFFFFFFF
# One unpacker per word count: the keys hashed here are short (a capability's name and a
# subject or cookie of at most KEY_BYTES_LIMIT bytes).
_WORDS = tuple(struct.Struct(f"<{n}I") for n in range(129))


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


def key_bytes(text: str) -> bytes:
    """The UTF-8 bytes njs hands nginx for a string: a lone surrogate becomes U+FFFD.

    A subject read from a token may hold a lone surrogate (JSON allows `"\\ud800"`), which
    has no UTF-8 form: njs turns it into U+FFFD, and so do we, instead of failing the request.
    """
    try:
        return text.encode()
    except UnicodeEncodeError:
        return "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in text).encode()


def sticky_hash(capability: str, key: str) -> int:
    """murmur2 of the split key's UTF-8 bytes, as nginx hashes the njs-computed variable."""
    return murmur2(key_bytes(split_key(capability, key)))


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
