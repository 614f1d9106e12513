"""Taking a secret out of text that may quote it: an upstream's error body, an exception message."""

from __future__ import annotations

import re

REDACTED = "[redacted]"
# Upstreams often quote a key cut short ("sk-abc...") or masked at one end: any word sharing this
# many characters in a row with the secret goes too, not only the whole secret.
SHARED_RUN = 8
_WORD = re.compile(rf"[^\s\"'`,;:()\[\]{{}}<>]{{{SHARED_RUN},}}")


def redact_secret(text: str, secret: str) -> str:
    """`text` with the secret, and every word that shares SHARED_RUN characters in a row with it, replaced."""
    if not secret:
        return text
    text = text.replace(secret, REDACTED)
    return _WORD.sub(lambda word: REDACTED if _shares_a_run(word.group(0), secret) else word.group(0), text)


def _shares_a_run(word: str, secret: str) -> bool:
    return any(word[i : i + SHARED_RUN] in secret for i in range(len(word) - SHARED_RUN + 1))
