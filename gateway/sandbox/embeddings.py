"""Deterministic text embeddings by signed feature hashing.

Features are the word unigrams of the NFKC-normalised, case-folded text plus the character trigrams
of the text (with a space on either side, so word boundaries form trigrams too). Each feature is
hashed with BLAKE2b into a bucket in ``0..dimensions-1`` and a sign (the "hashing trick" of
Weinberger et al.), which keeps collisions unbiased. The vector is L2-normalised, so the dot product
of two embeddings is their cosine similarity, and texts sharing words and spellings score higher
than unrelated ones.
"""

from __future__ import annotations

import base64
import hashlib
import math
from collections import Counter
from collections.abc import Sequence

import numpy as np

from gateway.sandbox._text import normalize, words
from gateway.sandbox.errors import SandboxInvalidRequest

DEFAULT_DIMENSIONS = 1536
MAX_DIMENSIONS = 4096
WORD_WEIGHT = 1.0
TRIGRAM_WEIGHT = 0.5
_PERSON = b"infrai-embed-v1"


def _features(text: str) -> Counter[str]:
    norm = normalize(text)
    feats: Counter[str] = Counter()
    for w in words(norm):
        feats["w:" + w] += 1
    padded = f" {norm} "
    for i in range(len(padded) - 2):
        feats["c:" + padded[i : i + 3]] += 1
    return feats


def _bucket(feature: str, dimensions: int) -> tuple[int, float]:
    digest = hashlib.blake2b(feature.encode("utf-8"), digest_size=8, person=_PERSON).digest()
    value = int.from_bytes(digest, "big")
    return (value >> 1) % dimensions, (1.0 if value & 1 else -1.0)


def _check_dimensions(dimensions: int) -> None:
    if isinstance(dimensions, bool) or not isinstance(dimensions, int) or not 1 <= dimensions <= MAX_DIMENSIONS:
        raise SandboxInvalidRequest(f"dimensions must be an integer between 1 and {MAX_DIMENSIONS}")


def embed_array(text: str, dimensions: int = DEFAULT_DIMENSIONS) -> np.ndarray:
    """The embedding of ``text`` as a float64 numpy array of unit length."""
    _check_dimensions(dimensions)
    if not isinstance(text, str) or not text.strip():
        raise SandboxInvalidRequest("input must be a non-empty string")
    vec = np.zeros(dimensions, dtype=np.float64)
    for feature, count in _features(text).items():
        index, sign = _bucket(feature, dimensions)
        weight = WORD_WEIGHT if feature.startswith("w:") else TRIGRAM_WEIGHT
        # Sublinear term frequency, so one repeated word does not dominate the vector.
        vec[index] += sign * weight * (1.0 + math.log(count))
    norm = float(np.linalg.norm(vec))
    if norm == 0.0:
        # Every feature cancelled out (only plausible for tiny dimensions): fall back to a basis vector.
        index, sign = _bucket("t:" + normalize(text), dimensions)
        vec[index] = sign
        return vec
    return vec / norm


def embed(text: str, dimensions: int = DEFAULT_DIMENSIONS) -> list[float]:
    """The embedding of ``text``: ``dimensions`` floats, L2 norm 1, identical on every call."""
    return [float(x) for x in embed_array(text, dimensions)]


def embed_many(texts: Sequence[str], dimensions: int = DEFAULT_DIMENSIONS) -> list[list[float]]:
    """Embeddings of several texts (an OpenAI ``input`` list)."""
    if isinstance(texts, str):
        raise SandboxInvalidRequest("embed_many expects a list of strings")
    if not texts:
        raise SandboxInvalidRequest("input must not be empty")
    return [embed(t, dimensions) for t in texts]


def cosine_similarity(a: Sequence[float], b: Sequence[float]) -> float:
    """Cosine similarity of two vectors of the same length."""
    va, vb = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if va.shape != vb.shape:
        raise ValueError("vectors differ in length")
    denom = float(np.linalg.norm(va) * np.linalg.norm(vb))
    return float(va @ vb / denom) if denom else 0.0


def to_base64(vector: Sequence[float]) -> str:
    """OpenAI's ``encoding_format="base64"``: little-endian float32 values, base64-encoded."""
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")


def from_base64(data: str) -> list[float]:
    """Inverse of :func:`to_base64` (float32 precision)."""
    return [float(x) for x in np.frombuffer(base64.b64decode(data), dtype="<f4")]
