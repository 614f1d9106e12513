"""Okapi BM25 reranking over the documents of one request.

The documents of the request are the corpus: document frequencies and the average length come from
them. Terms are case-folded words without stop words, lightly stemmed. The IDF is the non-negative
variant ``ln(1 + (N - n + 0.5) / (n + 0.5))`` (as in Lucene), so a term present in every document
still counts a little instead of being penalised.

Scores are normalised to 0..1 by dividing by the best score of the request: the best match gets
1.0, documents sharing no term with the query get 0.0.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

from gateway.sandbox._text import STOPWORDS, stem, words
from gateway.sandbox.errors import SandboxInvalidRequest

K1 = 1.5
B = 0.75
MAX_DOCUMENTS = 10_000


class RerankResult(TypedDict, total=False):
    index: int
    relevance_score: float
    document: dict[str, str]


def terms(text: str) -> list[str]:
    """Index terms of ``text``: words without stop words, lightly stemmed.

    Falls back to all words when a text consists of stop words only (``"who are you"``).
    """
    all_words = words(text)
    kept = [w for w in all_words if w not in STOPWORDS] or all_words
    return [stem(w) for w in kept]


def _document_text(doc: Any) -> str:
    if isinstance(doc, str):
        return doc
    if isinstance(doc, Mapping):
        if isinstance(doc.get("text"), str):
            return doc["text"]
        return " ".join(str(v) for v in doc.values() if isinstance(v, str))
    raise SandboxInvalidRequest("documents must be strings or objects with a 'text' field")


def bm25_scores(query: str, documents: Sequence[str], k1: float = K1, b: float = B) -> list[float]:
    """Raw BM25 score of every document for ``query``, in document order."""
    doc_terms = [Counter(terms(d)) for d in documents]
    lengths = [sum(c.values()) for c in doc_terms]
    n_docs = len(documents)
    avgdl = (sum(lengths) / n_docs) if n_docs else 0.0
    query_terms = Counter(terms(query))
    df = {t: sum(1 for c in doc_terms if t in c) for t in query_terms}
    scores = []
    for counts, dl in zip(doc_terms, lengths, strict=True):
        score = 0.0
        norm = k1 * (1.0 - b + b * (dl / avgdl)) if avgdl else k1
        for term, qtf in query_terms.items():
            tf = counts.get(term, 0)
            if not tf:
                continue
            idf = math.log(1.0 + (n_docs - df[term] + 0.5) / (df[term] + 0.5))
            score += qtf * idf * tf * (k1 + 1.0) / (tf + norm)
        scores.append(score)
    return scores


def rerank(
    query: str,
    documents: Sequence[str | Mapping[str, Any]],
    top_n: int | None = None,
    return_documents: bool = False,
) -> list[RerankResult]:
    """Rank ``documents`` for ``query``: ``[{index, relevance_score}]``, best first.

    ``top_n`` keeps the best ``top_n`` results; ties keep the documents' order. With
    ``return_documents`` each result also carries ``document: {"text": ...}``.
    """
    if not isinstance(query, str) or not query.strip():
        raise SandboxInvalidRequest("query must be a non-empty string")
    if isinstance(documents, str) or not documents:
        raise SandboxInvalidRequest("documents must be a non-empty list")
    if len(documents) > MAX_DOCUMENTS:
        raise SandboxInvalidRequest(f"at most {MAX_DOCUMENTS} documents per request")
    if top_n is not None and (isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1):
        raise SandboxInvalidRequest("top_n must be a positive integer")
    texts = [_document_text(d) for d in documents]
    scores = bm25_scores(query, texts)
    best = max(scores)
    order = sorted(range(len(texts)), key=lambda i: (-scores[i], i))
    if top_n is not None:
        order = order[:top_n]
    results: list[RerankResult] = []
    for i in order:
        item: RerankResult = {"index": i, "relevance_score": round(scores[i] / best, 6) if best > 0 else 0.0}
        if return_documents:
            item["document"] = {"text": texts[i]}
        results.append(item)
    return results
