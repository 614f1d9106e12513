"""Typed readers for settings that come from environment variables.

Each helper raises ImproperlyConfigured-style ValueError with the variable's name when the
value cannot be parsed, so a typo never turns into a silent default.
"""

from __future__ import annotations

import json
import os
from decimal import Decimal, InvalidOperation

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class EnvError(ValueError):
    pass


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise EnvError(f"{name} must be a boolean (1/0, true/false), got {raw!r}")


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise EnvError(f"{name} must be an integer, got {raw!r}") from exc


def env_decimal(name: str, default: str) -> Decimal:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return Decimal(default)
    try:
        value = Decimal(raw)
    except InvalidOperation as exc:
        raise EnvError(f"{name} must be a decimal number, got {raw!r}") from exc
    if not value.is_finite():
        raise EnvError(f"{name} must be finite, got {raw!r}")
    return value


def env_list(name: str, default: str = "") -> list[str]:
    raw = os.environ.get(name, default)
    return [part.strip() for part in raw.split(",") if part.strip()]


def env_json(name: str) -> dict:
    """A JSON object from the environment ({} when unset)."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise EnvError(f"{name} must be a JSON object, got {raw!r}") from exc
    if not isinstance(value, dict):
        raise EnvError(f"{name} must be a JSON object, got {raw!r}")
    return value
