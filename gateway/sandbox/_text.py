"""Small text utilities shared by the sandbox engines (word splitting, stop words, stable hashing)."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Mapping
from typing import Any

_WORD_RE = re.compile(r"\w+(?:['’]\w+)*", re.UNICODE)

STOPWORDS: frozenset[str] = frozenset(
    """
    a about above after again against all also am an and any are as at be because been before being
    below between both but by can could did do does doing down during each either else ever every few
    for from further had has have having he her here hers herself him himself his how i if in into is
    it its itself just let me might more most must my myself no nor not now of off on once only or
    other our ours ourselves out over own please same shall she should so some such than that the
    their theirs them themselves then there these they this those through to too under until up upon
    us very was we were what when where which while who whom whose why will with within without would
    you your yours yourself yourselves tell explain describe give show want need know like get make
    i'm it's don't can't what's there's let's i'd i'll you're
    """.split()
)


def normalize(text: str) -> str:
    """NFKC-normalised, case-folded text with runs of whitespace collapsed."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def words(text: str) -> list[str]:
    """Lower-cased words of ``text`` (letters, digits, underscores and inner apostrophes)."""
    return [w.replace("’", "'") for w in _WORD_RE.findall(normalize(text))]


def original_words(text: str) -> list[str]:
    """Words of ``text`` as written (NFKC-normalised, case kept)."""
    return _WORD_RE.findall(unicodedata.normalize("NFKC", text))


def content_words(text: str) -> list[str]:
    """Words of ``text`` without stop words and one-character tokens."""
    return [w for w in words(text) if w not in STOPWORDS and len(w) > 1]


def stem(word: str) -> str:
    """A deliberately light English stemmer (plural and a few verb endings)."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 5 and word.endswith("ing"):
        return word[:-3]
    if len(word) > 4 and word.endswith("ed") and not word.endswith("eed"):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def stable_hash(data: str | bytes, *, person: bytes = b"", digest_size: int = 8) -> int:
    """A process-independent hash (BLAKE2b), unlike Python's salted ``hash()``."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return int.from_bytes(hashlib.blake2b(raw, digest_size=digest_size, person=person).digest(), "big")


def message_text(content: Any) -> str:
    """Plain text of an OpenAI message ``content`` (a string or a list of content parts)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, Mapping):
                if isinstance(part.get("text"), str):
                    parts.append(part["text"])
            elif isinstance(part, str):
                parts.append(part)
        return "\n".join(parts)
    return str(content)
