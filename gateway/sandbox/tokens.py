"""BPE token counting that works offline.

tiktoken normally downloads its rank files from a blob store on first use, which fails on machines
without internet access. The PyPI package ``bpe-openai`` ships the very same files (gzip-compressed,
SHA-256 identical to the ones tiktoken pins after decompression), so this module reads them from
there, checks the hash tiktoken expects, and builds ``tiktoken.Encoding`` objects directly. No
network access and no cache directory (``TIKTOKEN_CACHE_DIR``) are involved.

Chat counting follows OpenAI's published rules (the "How to count tokens with tiktoken" cookbook):
every message costs 3 tokens of framing plus the tokens of each of its values, a ``name`` costs one
more, and the reply is primed with 3 tokens.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import importlib.util
import json
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import tiktoken

from gateway.sandbox.errors import SandboxInvalidRequest

DEFAULT_ENCODING = "o200k_base"

_ENDOFTEXT = "<|endoftext|>"
_FIM_PREFIX = "<|fim_prefix|>"
_FIM_MIDDLE = "<|fim_middle|>"
_FIM_SUFFIX = "<|fim_suffix|>"
_ENDOFPROMPT = "<|endofprompt|>"

# Split patterns, special tokens and pinned hashes as defined by tiktoken_ext/openai_public.py
# (tiktoken 0.14). tests/sandbox/test_tokens.py checks them against tiktoken's own constructors.
_SPECS: dict[str, dict[str, Any]] = {
    "cl100k_base": {
        "sha256": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
        "pat_str": r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s""",
        "special_tokens": {
            _ENDOFTEXT: 100257,
            _FIM_PREFIX: 100258,
            _FIM_MIDDLE: 100259,
            _FIM_SUFFIX: 100260,
            _ENDOFPROMPT: 100276,
        },
    },
    "o200k_base": {
        "sha256": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
        "pat_str": "|".join(
            [
                r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
                r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
                r"""\p{N}{1,3}""",
                r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
                r"""\s*[\r\n]+""",
                r"""\s+(?!\S)""",
                r"""\s+""",
            ]
        ),
        "special_tokens": {_ENDOFTEXT: 199999, _ENDOFPROMPT: 200018},
    },
}

ENCODINGS: tuple[str, ...] = tuple(_SPECS)

# OpenAI's chat framing: <|start|>{role/name}\n{content}<|end|>\n costs 3 tokens per message,
# a name 1 more, and every reply is primed with <|start|>assistant<|message|> (3 tokens).
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING_TOKENS = 3
# A low-detail image costs a flat 85 tokens; the sandbox does not fetch images to size them.
TOKENS_PER_IMAGE = 85

# Model-name prefixes that use cl100k_base; everything newer (gpt-4o, gpt-4.1, o1/o3/o4, gpt-5...)
# and every unknown model uses o200k_base.
_CL100K_PREFIXES = ("gpt-4-", "gpt-3.5", "gpt-35", "text-embedding-ada", "text-embedding-3")
_CL100K_EXACT = frozenset({"gpt-4", "gpt-4-32k", "gpt-4-turbo"})


class TokenizerDataError(RuntimeError):
    """The bundled BPE rank files are missing or corrupt."""


def _data_dir() -> Path:
    # find_spec locates the package without importing it (and its Rust extension).
    spec = importlib.util.find_spec("bpe_openai")
    if spec is None or not spec.submodule_search_locations:
        raise TokenizerDataError("The 'bpe-openai' package is not installed; it ships the BPE rank files.")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _load_ranks(name: str) -> dict[bytes, int]:
    path = _data_dir() / f"{name}.tiktoken.gz"
    try:
        contents = gzip.decompress(path.read_bytes())
    except (OSError, EOFError) as exc:
        raise TokenizerDataError(f"Cannot read BPE ranks {path}: {exc}") from exc
    digest = hashlib.sha256(contents).hexdigest()
    if digest != _SPECS[name]["sha256"]:
        raise TokenizerDataError(f"BPE ranks {path} have sha256 {digest}, expected {_SPECS[name]['sha256']}")
    ranks: dict[bytes, int] = {}
    for line in contents.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


@lru_cache(maxsize=4)
def get_encoding(name: str = DEFAULT_ENCODING) -> tiktoken.Encoding:
    """Return the named encoding (``cl100k_base`` or ``o200k_base``), loading it once per process."""
    if name not in _SPECS:
        raise SandboxInvalidRequest(f"Unknown encoding {name!r}; supported: {', '.join(ENCODINGS)}")
    spec = _SPECS[name]
    return tiktoken.Encoding(
        name=name,
        pat_str=spec["pat_str"],
        mergeable_ranks=_load_ranks(name),
        special_tokens=dict(spec["special_tokens"]),
    )


def encoding_name_for_model(model: str) -> str:
    """Pick the encoding an OpenAI model family uses; unknown models get ``o200k_base``."""
    m = model.lower().rsplit("/", 1)[-1]
    if m in _CL100K_EXACT or m.startswith(_CL100K_PREFIXES):
        return "cl100k_base"
    return DEFAULT_ENCODING


def encode(text: str, encoding: str = DEFAULT_ENCODING) -> list[int]:
    """Token ids of ``text``. Special-token markers in user text are encoded as ordinary text."""
    return get_encoding(encoding).encode(text, disallowed_special=())


def decode(tokens: Sequence[int], encoding: str = DEFAULT_ENCODING) -> str:
    """Text of ``tokens``; an incomplete UTF-8 sequence at a cut becomes U+FFFD."""
    return get_encoding(encoding).decode(list(tokens), errors="replace")


def count_text(text: str, encoding: str = DEFAULT_ENCODING) -> int:
    """Number of tokens in ``text``."""
    if not text:
        return 0
    return len(encode(text, encoding))


def truncate(text: str, max_tokens: int, encoding: str = DEFAULT_ENCODING) -> str:
    """Longest prefix of ``text`` (cut on a token boundary) that counts at most ``max_tokens`` tokens.

    Never splits a multi-byte character: a cut inside one backs off to the previous whole character.
    """
    if max_tokens < 0:
        raise SandboxInvalidRequest("max_tokens must be >= 0")
    enc = get_encoding(encoding)
    tokens = enc.encode(text, disallowed_special=())
    if len(tokens) <= max_tokens:
        return text
    keep = max_tokens
    while keep > 0:
        # A prefix of valid UTF-8 can only be broken at its very end; drop those trailing bytes.
        prefix = enc.decode_bytes(tokens[:keep]).decode("utf-8", errors="ignore")
        # Re-encoding a prefix can, at the cut, split differently from the full text: re-check.
        if len(enc.encode(prefix, disallowed_special=())) <= max_tokens:
            return prefix
        keep -= 1
    return ""


def _value_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _count_content(content: Any, encoding: str) -> int:
    """Tokens of a message's ``content``: a string, or a list of OpenAI content parts."""
    if content is None:
        return 0
    if isinstance(content, str):
        return count_text(content, encoding)
    if isinstance(content, list):
        total = 0
        for part in content:
            if isinstance(part, Mapping):
                kind = part.get("type")
                if kind in ("text", "input_text", "output_text") or (kind is None and "text" in part):
                    total += count_text(str(part.get("text", "")), encoding)
                elif kind in ("image_url", "input_image", "image"):
                    total += TOKENS_PER_IMAGE
                elif kind == "refusal":
                    total += count_text(str(part.get("refusal", "")), encoding)
                else:
                    total += count_text(_value_text(part), encoding)
            else:
                total += count_text(_value_text(part), encoding)
        return total
    return count_text(_value_text(content), encoding)


def count_tools(tools: Iterable[Any] | None, encoding: str = DEFAULT_ENCODING) -> int:
    """Tokens of a ``tools`` (or legacy ``functions``) list, serialised as compact JSON."""
    if not tools:
        return 0
    return count_text(json.dumps(list(tools), ensure_ascii=False, separators=(",", ":")), encoding)


def count_messages(
    messages: Sequence[Mapping[str, Any]] | str,
    tools: Sequence[Any] | None = None,
    encoding: str = DEFAULT_ENCODING,
) -> int:
    """Prompt tokens of a chat request, following OpenAI's counting rules.

    ``messages`` may also be a plain string: a legacy completions prompt, counted as bare text
    (no chat framing, no reply priming). ``tools`` are counted as their JSON serialisation.
    """
    if isinstance(messages, str):
        return count_text(messages, encoding) + count_tools(tools, encoding)
    total = 0
    for message in messages:
        total += TOKENS_PER_MESSAGE
        for key, value in message.items():
            if key == "content":
                total += _count_content(value, encoding)
            elif value is not None:
                total += count_text(_value_text(value), encoding)
            if key == "name":
                total += TOKENS_PER_NAME
    total += REPLY_PRIMING_TOKENS
    return total + count_tools(tools, encoding)
