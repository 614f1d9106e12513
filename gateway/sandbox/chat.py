"""A deterministic sandbox chat "model".

The reply depends on the prompt: it picks the key words of the last user message and answers in a
short templated paragraph (templates chosen by a stable hash of the prompt, so the same prompt always
gets the same reply). ``response_format`` ``json_object`` yields a valid JSON object and
``json_schema`` an instance of the given schema. ``max_tokens`` is honoured with the real tokenizer
(``finish_reason`` "length"). :func:`stream_reply` yields the same text as deltas, paced with
``asyncio.sleep`` at ``tokens_per_second``.

Failure injection is driven by the model name (see :func:`parse_directive`)::

    sandbox-fail-429         SandboxRateLimited (status 429)
    sandbox-fail-500         SandboxServerError (any 5xx; other 4xx give SandboxClientError)
    sandbox-timeout          SandboxTimeout
    sandbox-cut-stream       the stream raises SandboxStreamCut after 5 deltas
    sandbox-cut-stream-12    ... after 12 deltas
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from gateway.sandbox import tokens
from gateway.sandbox._text import content_words, message_text, original_words, stable_hash, words
from gateway.sandbox.errors import (
    SandboxClientError,
    SandboxInvalidRequest,
    SandboxRateLimited,
    SandboxServerError,
    SandboxStreamCut,
    SandboxTimeout,
)

__all__ = [
    "ChatChunk",
    "ChatResult",
    "Directive",
    "SandboxClientError",
    "SandboxRateLimited",
    "SandboxServerError",
    "SandboxStreamCut",
    "SandboxTimeout",
    "Usage",
    "compose_reply",
    "generate_reply",
    "parse_directive",
    "stream_reply",
]

DEFAULT_MODEL = "sandbox-chat"
DEFAULT_TOKENS_PER_SECOND = 50.0
DEFAULT_CUT_AFTER = 5
MAX_KEYWORDS = 4

FinishReason = Literal["stop", "length"]

_SEP = r"(?:^|[-_:/.])"
_END = r"(?=$|[-_:/.])"
_FAIL_RE = re.compile(_SEP + r"fail-(\d{3})" + _END)
_TIMEOUT_RE = re.compile(_SEP + r"timeout" + _END)
_CUT_RE = re.compile(_SEP + r"cut-stream(?:-(\d+))?" + _END)


@dataclass(frozen=True)
class Directive:
    """A failure to inject, parsed from the model name."""

    kind: Literal["none", "fail", "timeout", "cut_stream"] = "none"
    status: int | None = None
    cut_after: int | None = None

    def raise_if_failing(self) -> None:
        """Raise the injected error for ``fail`` and ``timeout`` directives (no-op otherwise)."""
        if self.kind == "timeout":
            raise SandboxTimeout("Sandbox upstream timed out (injected)")
        if self.kind == "fail" and self.status is not None:
            if self.status == 429:
                raise SandboxRateLimited()
            if self.status >= 500:
                raise SandboxServerError(f"Sandbox upstream failed with {self.status} (injected)", self.status)
            raise SandboxClientError(
                f"Sandbox upstream rejected the request with {self.status} (injected)", self.status
            )


def parse_directive(model: str) -> Directive:
    """Parse the failure-injection directive in a model name (``sandbox-fail-429`` ...).

    A name without a directive (``sandbox-chat``) yields ``Directive(kind="none")``.
    """
    name = model.strip().lower()
    if m := _FAIL_RE.search(name):
        status = int(m.group(1))
        if not 400 <= status <= 599:
            raise SandboxInvalidRequest(f"Injected failure status must be 4xx or 5xx, got {status}")
        return Directive(kind="fail", status=status)
    if _TIMEOUT_RE.search(name):
        return Directive(kind="timeout")
    if m := _CUT_RE.search(name):
        return Directive(kind="cut_stream", cut_after=int(m.group(1)) if m.group(1) else DEFAULT_CUT_AFTER)
    return Directive()


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def as_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }


@dataclass(frozen=True)
class ChatResult:
    text: str
    finish_reason: FinishReason
    usage: Usage
    model: str


@dataclass(frozen=True)
class ChatChunk:
    """One streamed item: a text delta, or (last) an empty delta with finish_reason and usage."""

    delta: str
    finish_reason: FinishReason | None = None
    usage: Usage | None = None


@dataclass(frozen=True)
class _Prompt:
    text: str
    keywords: list[str] = field(default_factory=list)
    is_question: bool = False
    is_greeting: bool = False


_WH_WORDS = frozenset("what why how when where who whom whose which is are can could should would does do did".split())
_REQUEST_VERBS = frozenset(
    "explain describe tell give list show write summarize summarise compare define help translate suggest".split()
)
_GREETINGS = frozenset("hi hello hey hiya howdy greetings morning evening afternoon good there yo".split())


def _analyse(messages: Sequence[Mapping[str, Any]] | str) -> _Prompt:
    if isinstance(messages, str):
        text = messages
    else:
        text = ""
        for message in reversed(messages):
            if message.get("role") == "user":
                text = message_text(message.get("content"))
                break
        else:
            if messages:
                text = message_text(messages[-1].get("content"))
    text = text.strip()
    all_words = words(text)
    candidates = content_words(text)
    # Keep each key word as first written (``France``, not ``france``).
    original: dict[str, str] = {}
    for raw in original_words(text):
        original.setdefault(raw.casefold().replace("’", "'"), raw)
    # Rank by frequency x length (longer words carry more meaning), ties by first position, then put
    # the chosen ones back in reading order.
    first_pos: dict[str, int] = {}
    counts: dict[str, int] = {}
    for i, w in enumerate(candidates):
        first_pos.setdefault(w, i)
        counts[w] = counts.get(w, 0) + 1
    ranked = sorted(first_pos, key=lambda w: (-counts[w] * len(w), first_pos[w]))[:MAX_KEYWORDS]
    keywords = [original.get(w, w) for w in sorted(ranked, key=first_pos.__getitem__)]
    is_question = "?" in text or "？" in text or (bool(all_words) and all_words[0] in _WH_WORDS | _REQUEST_VERBS)
    is_greeting = bool(all_words) and len(all_words) <= 4 and all(w in _GREETINGS for w in all_words)
    return _Prompt(text=text, keywords=keywords, is_question=is_question, is_greeting=is_greeting)


def _join(items: Sequence[str]) -> str:
    if not items:
        return ""
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " and " + items[-1]


_QUESTION_OPENINGS = (
    "You asked about {topic}.",
    "Good question about {topic}.",
    "Here is a short answer on {topic}.",
    "Let's look at {topic}.",
)
_STATEMENT_OPENINGS = (
    "You mentioned {topic}.",
    "Noted: this is about {topic}.",
    "Thanks for the note on {topic}.",
)
_PAIR_BODIES = (
    "In short, {a} and {b} are closely linked: understanding {a} first usually makes {b} much clearer.",
    "The key point is how {a} relates to {b}; once that relationship is clear, the rest follows.",
    "A useful way to think about it is to start from {a} and then see what it implies for {b}.",
)
_SINGLE_BODIES = (
    "In short, {a} is best understood by starting from its basics and building up step by step.",
    "The key point about {a} is to be clear about what it is for before going into the details.",
    "A useful way to think about {a} is through a small, concrete example.",
)
_EXTRA = (
    "It also helps to keep {rest} in mind.",
    "Do not forget about {rest}, either.",
)
_CLOSINGS = (
    "This reply comes from the Infrai sandbox model, so it is simulated rather than generated by a real model.",
    "(Simulated answer from the Infrai sandbox: no upstream model was called.)",
)


def _prose(prompt: _Prompt) -> str:
    h = stable_hash(prompt.text, person=b"sandbox-chat")
    kws = prompt.keywords
    if prompt.is_greeting:
        return "Hello! I am the Infrai sandbox model. Ask me anything and I will answer with a short simulated reply."
    if not kws:
        return "I did not catch a topic in your message. Could you tell me a little more about what you need?"
    topic = _join([f"“{k}”" for k in kws])
    openings = _QUESTION_OPENINGS if prompt.is_question else _STATEMENT_OPENINGS
    sentences = [openings[h % len(openings)].format(topic=topic)]
    if len(kws) >= 2:
        sentences.append(_PAIR_BODIES[(h >> 8) % len(_PAIR_BODIES)].format(a=kws[0], b=kws[1]))
    else:
        sentences.append(_SINGLE_BODIES[(h >> 8) % len(_SINGLE_BODIES)].format(a=kws[0]))
    if len(kws) >= 3:
        rest = _join(kws[2:])
        sentences.append(_EXTRA[(h >> 16) % len(_EXTRA)].format(rest=rest))
    sentences.append(_CLOSINGS[(h >> 24) % len(_CLOSINGS)])
    return " ".join(sentences)


_CONSTRAINTS = frozenset({"enum", "const", "maxLength", "minLength", "pattern", "format"})
_PROSE_FIELDS = ("answer", "reply", "response", "text", "content", "summary", "message", "description")


def _schema_instance(
    schema: Any, root: Mapping[str, Any], prompt: _Prompt, answer: str, name: str = "", depth: int = 0
) -> Any:
    """A deterministic instance of a (subset of) JSON Schema, filled from the prompt."""
    if not isinstance(schema, Mapping) or depth > 8:
        return None
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for part in ref[2:].split("/"):
            target = target.get(part, {}) if isinstance(target, Mapping) else {}
        return _schema_instance(target, root, prompt, answer, name, depth + 1)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            non_null = [o for o in options if not (isinstance(o, Mapping) and o.get("type") == "null")]
            return _schema_instance((non_null or options)[0], root, prompt, answer, name, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "string"
    if kind == "object":
        props = schema.get("properties") or {}
        return {
            key: _schema_instance(sub, root, prompt, answer, key, depth + 1)
            for key, sub in props.items()
            if isinstance(key, str)
        }
    if kind == "array":
        min_items = int(schema.get("minItems") or 0)
        max_items = int(schema.get("maxItems") or max(min_items, 3))
        count = max(min_items, min(max(len(prompt.keywords), 1), max_items))
        items = schema.get("items", {"type": "string"})
        values = []
        for i in range(count):
            value = _schema_instance(items, root, prompt, answer, name, depth + 1)
            plain_strings = (
                isinstance(items, Mapping) and items.get("type") == "string" and not _CONSTRAINTS & set(items)
            )
            if plain_strings and isinstance(value, str) and prompt.keywords:
                value = prompt.keywords[i % len(prompt.keywords)]
            values.append(value)
        return values
    if kind in ("integer", "number"):
        value = float(len(prompt.keywords))
        if "minimum" in schema:
            value = max(value, float(schema["minimum"]))
        if "maximum" in schema:
            value = min(value, float(schema["maximum"]))
        return int(value) if kind == "integer" else value
    if kind == "boolean":
        return prompt.is_question
    if kind == "null":
        return None
    lowered = name.lower()
    if any(k in lowered for k in _PROSE_FIELDS):
        text = answer
    elif prompt.keywords:
        text = prompt.keywords[stable_hash(name) % len(prompt.keywords)]
    else:
        text = "sandbox"
    max_length = schema.get("maxLength")
    if isinstance(max_length, int) and max_length >= 0:
        text = text[:max_length]
    min_length = schema.get("minLength")
    if isinstance(min_length, int) and len(text) < min_length:
        text = text.ljust(min_length, ".")
    return text


def compose_reply(
    messages: Sequence[Mapping[str, Any]] | str,
    response_format: Mapping[str, Any] | None = None,
) -> str:
    """The full (untruncated) reply text for ``messages``."""
    prompt = _analyse(messages)
    answer = _prose(prompt)
    kind = (response_format or {}).get("type", "text")
    if kind == "json_object":
        return json.dumps(
            {
                "answer": answer,
                "keywords": prompt.keywords,
                "is_question": prompt.is_question,
                "sandbox": True,
            },
            ensure_ascii=False,
        )
    if kind == "json_schema":
        spec = (response_format or {}).get("json_schema") or {}
        schema = spec.get("schema") if isinstance(spec, Mapping) else None
        if not isinstance(schema, Mapping):
            raise SandboxInvalidRequest("response_format json_schema requires json_schema.schema")
        return json.dumps(_schema_instance(schema, schema, prompt, answer), ensure_ascii=False)
    if kind != "text":
        raise SandboxInvalidRequest(f"Unsupported response_format type {kind!r}")
    return answer


def _validate_max_tokens(max_tokens: int | None) -> None:
    if max_tokens is not None and max_tokens < 1:
        raise SandboxInvalidRequest("max_tokens must be at least 1")


def generate_reply(
    messages: Sequence[Mapping[str, Any]] | str,
    *,
    model: str = DEFAULT_MODEL,
    max_tokens: int | None = None,
    response_format: Mapping[str, Any] | None = None,
    tools: Sequence[Any] | None = None,
    encoding: str = tokens.DEFAULT_ENCODING,
) -> ChatResult:
    """A complete (non-streamed) reply. Raises the injected error when the model name asks for one.

    A ``cut-stream`` directive does not affect non-streamed replies.
    """
    parse_directive(model).raise_if_failing()
    _validate_max_tokens(max_tokens)
    prompt_tokens = tokens.count_messages(messages, tools=tools, encoding=encoding)
    text = compose_reply(messages, response_format)
    finish_reason: FinishReason = "stop"
    if max_tokens is not None and tokens.count_text(text, encoding) > max_tokens:
        text = tokens.truncate(text, max_tokens, encoding)
        finish_reason = "length"
    usage = Usage(prompt_tokens=prompt_tokens, completion_tokens=tokens.count_text(text, encoding))
    return ChatResult(text=text, finish_reason=finish_reason, usage=usage, model=model)


def _deltas(text: str, encoding: str) -> list[tuple[str, int]]:
    """Split ``text`` into (delta, token count) pieces, one token each unless a character spans tokens."""
    enc = tokens.get_encoding(encoding)
    pieces: list[tuple[str, int]] = []
    pending = b""
    pending_tokens = 0
    for token in enc.encode(text, disallowed_special=()):
        pending += enc.decode_single_token_bytes(token)
        pending_tokens += 1
        try:
            piece = pending.decode("utf-8")
        except UnicodeDecodeError:
            continue
        pieces.append((piece, pending_tokens))
        pending, pending_tokens = b"", 0
    if pending:
        pieces.append((pending.decode("utf-8", errors="replace"), pending_tokens))
    return pieces


async def stream_reply(
    messages: Sequence[Mapping[str, Any]] | str,
    *,
    model: str = DEFAULT_MODEL,
    max_tokens: int | None = None,
    response_format: Mapping[str, Any] | None = None,
    tools: Sequence[Any] | None = None,
    tokens_per_second: float | None = DEFAULT_TOKENS_PER_SECOND,
    timeout_after: float = 0.0,
    encoding: str = tokens.DEFAULT_ENCODING,
) -> AsyncIterator[ChatChunk]:
    """Stream the reply of :func:`generate_reply` as text deltas, then one final chunk with usage.

    Deltas are paced at ``tokens_per_second`` (``None`` or ``0`` for no delay) against the loop clock,
    so sleep overhead does not accumulate. Injected ``fail`` errors are raised before the first
    delta; ``timeout`` waits ``timeout_after`` seconds first; ``cut_stream`` raises
    :class:`SandboxStreamCut` after the given number of deltas.
    """
    directive = parse_directive(model)
    if directive.kind == "timeout" and timeout_after > 0:
        await asyncio.sleep(timeout_after)
    directive.raise_if_failing()
    result = generate_reply(
        messages,
        model=model,
        max_tokens=max_tokens,
        response_format=response_format,
        tools=tools,
        encoding=encoding,
    )
    loop = asyncio.get_running_loop()
    start = loop.time()
    tokens_sent = 0
    sent: list[str] = []
    for piece, n_tokens in _deltas(result.text, encoding):
        if directive.kind == "cut_stream" and directive.cut_after is not None and len(sent) >= directive.cut_after:
            raise SandboxStreamCut(deltas_sent=len(sent), partial_text="".join(sent))
        if tokens_per_second:
            delay = start + tokens_sent / tokens_per_second - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
        tokens_sent += n_tokens
        sent.append(piece)
        yield ChatChunk(delta=piece)
    if directive.kind == "cut_stream":
        # A reply shorter than the cut point still ends in a dropped connection, never a clean finish.
        raise SandboxStreamCut(deltas_sent=len(sent), partial_text="".join(sent))
    yield ChatChunk(delta="", finish_reason=result.finish_reason, usage=result.usage)
