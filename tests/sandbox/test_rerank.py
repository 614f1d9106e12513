from __future__ import annotations

import math

import pytest

from gateway.sandbox import rerank
from gateway.sandbox.errors import SandboxInvalidRequest

DOCS = [
    "Carson City is the capital city of the American state of Nevada.",
    "The Commonwealth of the Northern Mariana Islands is a group of islands in the Pacific Ocean. Its capital is Saipan.",
    "Washington, D.C. is the capital of the United States. It is a federal district.",
    "Capital punishment has existed in the United States since before it was a country.",
    "The recipe needs two eggs, a cup of flour and some butter.",
]


def test_relevant_document_ranks_first():
    results = rerank.rerank("Which city is the capital of Nevada?", DOCS)
    assert results[0]["index"] == 0
    # BM25 is lexical: the other "capital" documents come next, the recipe last.
    assert {r["index"] for r in results[1:4]} == {1, 2, 3}
    assert len(results) == len(DOCS)
    scores = [r["relevance_score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    assert scores[0] == 1.0
    assert all(0.0 <= s <= 1.0 for s in scores)
    # The recipe shares no term with the query.
    assert next(r for r in results if r["index"] == 4)["relevance_score"] == 0.0


def test_top_n_and_return_documents():
    results = rerank.rerank("eggs and flour", DOCS, top_n=2, return_documents=True)
    assert len(results) == 2
    assert results[0]["index"] == 4
    assert results[0]["document"] == {"text": DOCS[4]}
    assert set(results[0]) == {"index", "relevance_score", "document"}
    assert set(rerank.rerank("eggs", DOCS, top_n=1)[0]) == {"index", "relevance_score"}


def test_bm25_matches_the_okapi_formula():
    docs = ["apple banana", "apple apple cherry date", "banana cherry"]
    scores = rerank.bm25_scores("apple", docs)
    n, df, avgdl = 3, 2, 8 / 3
    idf = math.log(1 + (n - df + 0.5) / (df + 0.5))

    def term(tf, dl):
        return idf * tf * (1.5 + 1) / (tf + 1.5 * (1 - 0.75 + 0.75 * dl / avgdl))

    assert scores == pytest.approx([term(1, 2), term(2, 4), 0.0])


def test_term_frequency_and_length_normalisation():
    docs = ["solar power", "solar power solar power solar panels", "solar " + "filler " * 30]
    results = rerank.rerank("solar power", docs)
    assert results[0]["index"] == 1
    assert results[-1]["index"] == 2


def test_ties_keep_document_order_and_dict_documents_work():
    results = rerank.rerank("zebra", [{"text": "zebra"}, {"text": "zebra"}, "horse"])
    assert [r["index"] for r in results] == [0, 1, 2]


def test_no_match_gives_zero_scores():
    results = rerank.rerank("quantum chromodynamics", DOCS)
    assert all(r["relevance_score"] == 0.0 for r in results)
    assert [r["index"] for r in results] == list(range(len(DOCS)))


@pytest.mark.parametrize(
    ("query", "documents", "top_n"),
    [("", DOCS, None), ("q", [], None), ("q", "not a list", None), ("q", DOCS, 0), ("q", [42], None)],
)
def test_invalid_requests(query, documents, top_n):
    with pytest.raises(SandboxInvalidRequest):
        rerank.rerank(query, documents, top_n=top_n)
