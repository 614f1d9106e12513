from __future__ import annotations

import math

import pytest

from gateway.sandbox import embeddings
from gateway.sandbox.errors import SandboxInvalidRequest


def _norm(vector):
    return math.sqrt(sum(x * x for x in vector))


def test_default_dimensions_and_unit_length():
    vector = embeddings.embed("The quick brown fox jumps over the lazy dog")
    assert len(vector) == 1536
    assert _norm(vector) == pytest.approx(1.0, abs=1e-9)
    assert all(isinstance(x, float) for x in vector)
    assert sum(1 for x in vector if x != 0.0) > 20


@pytest.mark.parametrize("dimensions", [1, 2, 3, 64, 256, 512, 1024, 3072, 4096])
def test_dimensions_are_honoured(dimensions):
    vector = embeddings.embed("feature hashing with signed buckets", dimensions=dimensions)
    assert len(vector) == dimensions
    assert _norm(vector) == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("dimensions", [0, -1, 4097, 1.5, True])
def test_invalid_dimensions_are_rejected(dimensions):
    with pytest.raises(SandboxInvalidRequest):
        embeddings.embed("text", dimensions=dimensions)


@pytest.mark.parametrize("text", ["", "   \n"])
def test_empty_input_is_rejected(text):
    with pytest.raises(SandboxInvalidRequest):
        embeddings.embed(text)


def test_deterministic():
    assert embeddings.embed("same text", 256) == embeddings.embed("same text", 256)
    assert embeddings.embed("same text", 256) != embeddings.embed("other text", 256)
    # Case and spacing are normalised away.
    assert embeddings.embed("Same   TEXT", 256) == embeddings.embed("same text", 256)


def test_similar_texts_are_closer_than_unrelated_ones():
    cos = embeddings.cosine_similarity
    cat = embeddings.embed("The cat sat on the mat")
    cats = embeddings.embed("A cat was sitting on the mat")
    finance = embeddings.embed("Quarterly revenue grew due to higher interest rates")
    assert cos(cat, cats) > cos(cat, finance) + 0.2
    query = embeddings.embed("how do I reset my password")
    docs = [
        "To reset your password, open settings and choose reset password.",
        "Our office is closed on public holidays.",
        "The recipe needs two eggs and a cup of flour.",
    ]
    scores = [cos(query, embeddings.embed(d)) for d in docs]
    assert scores.index(max(scores)) == 0
    # Character trigrams make spelling variants similar too.
    assert cos(embeddings.embed("colour"), embeddings.embed("color")) > cos(
        embeddings.embed("colour"), embeddings.embed("banana")
    )


def test_embed_many_and_base64_round_trip():
    vectors = embeddings.embed_many(["one", "two"], dimensions=8)
    assert [len(v) for v in vectors] == [8, 8]
    encoded = embeddings.to_base64(vectors[0])
    assert embeddings.from_base64(encoded) == pytest.approx(vectors[0], abs=1e-6)
    with pytest.raises(SandboxInvalidRequest):
        embeddings.embed_many([])
    with pytest.raises(SandboxInvalidRequest):
        embeddings.embed_many("not a list")
