"""Offline engines behind the built-in ``sandbox`` vendor.

Framework-free: nothing in this package imports Django. Every engine runs without network access
and is deterministic for the same input, so the gateway can serve realistic responses (token counts,
chat replies, embeddings, rerank scores, images, image descriptions, speech and transcripts) in tests,
demos and local development without any upstream vendor.

Modules:
    tokens      BPE token counting (tiktoken with the cl100k_base/o200k_base ranks shipped by bpe-openai)
    chat        deterministic chat replies, streaming and failure injection
    embeddings  signed feature hashing embeddings
    rerank      Okapi BM25 reranking
    images      Pillow-rendered PNGs and LANCZOS upscaling
    vision      factual image descriptions (format, size, dominant colours, brightness)
    speech      espeak-ng text-to-speech and pocketsphinx speech recognition
    errors      the typed exceptions raised by all engines

Heavy resources (BPE ranks, the espeak library, the pocketsphinx model) load lazily on first use.
"""
