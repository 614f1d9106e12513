"""Public identifiers: UUID v7 request ids and prefixed random ids for objects in URLs."""

from __future__ import annotations

import os
import secrets
import string
import time
import uuid

BASE62 = string.digits + string.ascii_letters


def random_base62(length: int) -> str:
    return "".join(secrets.choice(BASE62) for _ in range(length))


def public_id(prefix: str) -> str:
    """An unguessable id such as ``proj_3kT9...``; never a sequential primary key."""
    return f"{prefix}_{random_base62(20)}"


def uuid7() -> uuid.UUID:
    """A time-ordered UUID v7 (RFC 9562): 48-bit milliseconds, then random bits."""
    unix_ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (unix_ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= ((rand >> 68) & 0xFFF) << 64
    value |= 0b10 << 62
    value |= rand & ((1 << 62) - 1)
    return uuid.UUID(int=value)
