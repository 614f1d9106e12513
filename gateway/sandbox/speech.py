"""Text-to-speech with espeak-ng and speech recognition with pocketsphinx, both fully offline.

TTS drives the espeak-ng C library through ctypes. The library and its voice data come from the
PyPI package ``espeakng-loader`` (a plain ``pip install`` suffices); a system ``libespeak-ng`` (Debian
package ``libespeak-ng1``) is used as a fallback when that package is absent.

Audio is encoded and decoded with ``soundfile``, whose wheels bundle libsndfile with FLAC, Ogg
Vorbis/Opus and MP3 support. Formats: ``wav``, ``mp3``, ``ogg`` (Vorbis), ``opus`` (Ogg Opus, 24 kHz),
``flac`` and ``pcm`` (raw signed 16-bit little-endian mono at 24 kHz, as OpenAI's ``pcm``).

ASR uses ``pocketsphinx`` and the US English acoustic model, language model and dictionary that its
wheel ships. Input in any sample rate and channel count is mixed to mono and resampled to 16 kHz
with a windowed-sinc resampler.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import io
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, TypedDict

import numpy as np

from gateway.sandbox.errors import SandboxInvalidAudio, SandboxInvalidRequest, SandboxUnavailable

AudioFormat = Literal["wav", "mp3", "ogg", "opus", "flac", "pcm"]
AUDIO_FORMATS: tuple[str, ...] = ("wav", "mp3", "ogg", "opus", "flac", "pcm")
MIME_TYPES: dict[str, str] = {
    "wav": "audio/wav",
    "mp3": "audio/mpeg",
    "ogg": "audio/ogg",
    "opus": "audio/ogg",
    "flac": "audio/flac",
    "pcm": "audio/pcm",
}
_MIME_ALIASES: dict[str, str] = {
    "audio/wav": "wav",
    "audio/wave": "wav",
    "audio/x-wav": "wav",
    "audio/vnd.wave": "wav",
    "audio/mpeg": "mp3",
    "audio/mp3": "mp3",
    "audio/mpeg3": "mp3",
    "audio/ogg": "ogg",
    "audio/vorbis": "ogg",
    "audio/opus": "opus",
    "audio/flac": "flac",
    "audio/x-flac": "flac",
    "audio/pcm": "pcm",
    "audio/l16": "pcm",
    "oga": "ogg",
    "wave": "wav",
    "mpga": "mp3",
    "mpeg": "mp3",
}

PCM_SAMPLE_RATE = 24_000
OPUS_SAMPLE_RATE = 24_000
ASR_SAMPLE_RATE = 16_000
MAX_TTS_CHARS = 4096
MAX_ASR_SECONDS = 600.0
DEFAULT_VOICE = "en-us"
BASE_WORDS_PER_MINUTE = 175  # espeak-ng's default speaking rate, used for speed=1.0

# OpenAI's voice names mapped onto espeak-ng voices (language + variant).
OPENAI_VOICES: dict[str, str] = {
    "alloy": "en-us",
    "ash": "en-us+m3",
    "ballad": "en-gb-x-rp+m2",
    "coral": "en-us+f2",
    "echo": "en-us+m1",
    "fable": "en-gb-x-rp",
    "onyx": "en-us+m7",
    "nova": "en-us+f3",
    "sage": "en-us+f4",
    "shimmer": "en-us+f5",
    "verse": "en-gb+m4",
}

# espeak-ng constants (speak_lib.h).
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PARAM_RATE = 1
_PARAM_VOLUME = 2
_PARAM_PITCH = 3
_EE_OK = 0
_DEFAULT_PITCH = 50
TTS_RANDOM_SEED = 1


@dataclass(frozen=True)
class Voice:
    id: str
    name: str
    language: str
    gender: str  # "male", "female" or "neutral"


@dataclass(frozen=True)
class SpeechResult:
    audio: bytes
    format: str
    mime_type: str
    sample_rate: int
    duration: float  # seconds


class Segment(TypedDict):
    id: int
    start: float
    end: float
    text: str


class Word(TypedDict):
    word: str
    start: float
    end: float


class Transcript(TypedDict):
    text: str
    language: str
    duration: float
    segments: list[Segment]
    words: list[Word]


# --------------------------------------------------------------------------------------------------
# espeak-ng through ctypes


class _EspeakVoice(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.POINTER(ctypes.c_ubyte)),
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)
_GENDERS = {0: "neutral", 1: "male", 2: "female"}


def _locate_espeak() -> tuple[str, str | None]:
    """Path of libespeak-ng and of its data directory (None: the library's compiled-in default)."""
    try:
        import espeakng_loader
    except ImportError:
        found = ctypes.util.find_library("espeak-ng")
        if not found:
            raise SandboxUnavailable(
                "espeak-ng is not available: pip install espeakng-loader (or apt-get install libespeak-ng1)"
            ) from None
        return found, None
    return espeakng_loader.get_library_path(), espeakng_loader.get_data_path()


class _Espeak:
    """One espeak-ng instance. The library keeps global state, so every call holds ``self.lock``."""

    def __init__(self) -> None:
        lib_path, data_path = _locate_espeak()
        try:
            lib = ctypes.CDLL(lib_path)
        except OSError as exc:
            raise SandboxUnavailable(f"cannot load {lib_path}: {exc}") from exc
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_Synchronize.argtypes = []
        lib.espeak_Synchronize.restype = ctypes.c_int
        # espeak-ng's own random generator (used by some variants) is reseeded before each call.
        # Output is still not bit-exact across calls: the pitch flutter phase is a global that
        # carries over from one utterance to the next (repeats differ by a few milliseconds).
        self._set_seed = getattr(lib, "espeak_ng_SetRandSeed", None)
        if self._set_seed is not None:
            self._set_seed.argtypes = [ctypes.c_long]
            self._set_seed.restype = None
        lib.espeak_ListVoices.argtypes = [ctypes.POINTER(_EspeakVoice)]
        lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_EspeakVoice))
        rate = lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path.encode() if data_path else None, _INITIALIZE_DONT_EXIT
        )
        if rate <= 0:
            raise SandboxUnavailable(f"espeak-ng failed to initialise (data path {data_path})")
        self.lib = lib
        self.sample_rate = int(rate)
        self.lock = threading.Lock()
        self._chunks: list[bytes] = []
        self._callback = _SynthCallback(self._on_audio)  # keep a reference: C holds only the pointer
        lib.espeak_SetSynthCallback(self._callback)

    def _on_audio(self, wav: Any, count: int, _events: Any) -> int:
        if wav and count > 0:
            self._chunks.append(ctypes.string_at(wav, count * 2))
        return 0  # 0 = continue synthesis

    def synth(self, text: str, voice: str, words_per_minute: int, pitch: int | None = None) -> np.ndarray:
        raw = text.encode("utf-8") + b"\0"
        with self.lock:
            if self.lib.espeak_SetVoiceByName(voice.encode("utf-8")) != _EE_OK:
                raise SandboxInvalidRequest(f"unknown voice {voice!r}")
            self.lib.espeak_SetParameter(_PARAM_RATE, words_per_minute, 0)
            self.lib.espeak_SetParameter(_PARAM_VOLUME, 100, 0)
            if pitch is not None:
                self.lib.espeak_SetParameter(_PARAM_PITCH, pitch, 0)
            else:
                # Parameters persist across calls: go back to the voice's own pitch.
                self.lib.espeak_SetParameter(_PARAM_PITCH, _DEFAULT_PITCH, 0)
            if self._set_seed is not None:
                self._set_seed(TTS_RANDOM_SEED)
            self._chunks = []
            status = self.lib.espeak_Synth(raw, len(raw), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            self.lib.espeak_Synchronize()
            data, self._chunks = b"".join(self._chunks), []
        if status != _EE_OK:
            raise SandboxUnavailable(f"espeak-ng synthesis failed with status {status}")
        return np.frombuffer(data, dtype="<i2").copy()

    def list_voices(self, variants: bool = False) -> list[tuple[str, str, list[str], int]]:
        """(name, identifier, languages, gender) of each voice, or of each variant."""
        spec = None
        key = ctypes.create_string_buffer(b"variant")  # must outlive the call below
        if variants:
            spec = _EspeakVoice()
            spec.languages = ctypes.cast(key, ctypes.POINTER(ctypes.c_ubyte))
        with self.lock:
            array = self.lib.espeak_ListVoices(ctypes.byref(spec) if spec is not None else None)
            found = []
            i = 0
            while array[i]:
                v = array[i].contents
                # languages: (priority byte, NUL-terminated language) pairs, ending with a 0 priority.
                languages: list[str] = []
                j = 0
                while v.languages and v.languages[j]:
                    j += 1
                    code = bytearray()
                    while v.languages[j]:
                        code.append(v.languages[j])
                        j += 1
                    j += 1
                    languages.append(code.decode("utf-8", errors="replace"))
                found.append(
                    (
                        (v.name or b"").decode("utf-8", errors="replace"),
                        (v.identifier or b"").decode("utf-8", errors="replace"),
                        languages,
                        int(v.gender),
                    )
                )
                i += 1
        return found


_INIT_LOCK = threading.Lock()


@lru_cache(maxsize=1)
def _espeak_instance() -> _Espeak:
    return _Espeak()


def _espeak() -> _Espeak:
    """The process's espeak-ng instance, created on first use (never two: the library is global)."""
    with _INIT_LOCK:
        return _espeak_instance()


def _has_dictionary(identifier: str, language: str) -> bool:
    """Whether the voice's pronunciation dictionary is installed (some bundles omit a few)."""
    data = espeak_data_path()
    if data is None:
        return True  # a system espeak-ng: trust its packaging
    dictionary = language.split("-")[0]
    try:
        for line in (data / "lang" / identifier).read_text(encoding="utf-8", errors="replace").splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "dictionary":
                dictionary = parts[1]
    except OSError:
        pass
    return (data / f"{dictionary}_dict").is_file()


@lru_cache(maxsize=1)
def _voice_table() -> tuple[tuple[Voice, ...], dict[str, str]]:
    """The usable voices, and a lookup from voice id or primary language code to voice id."""
    found: list[Voice] = []
    lookup: dict[str, str] = {}
    for name, identifier, languages, gender in _espeak().list_voices():
        if not languages or not identifier or not _has_dictionary(identifier, languages[0]):
            continue
        # SetVoiceByName accepts the voice file's name ("en" for English (Great Britain)), not
        # always its language code ("en-gb"): the id is the file name, the language its code.
        vid = identifier.split("/")[-1].lower()
        found.append(Voice(id=vid, name=name, language=languages[0], gender=_GENDERS.get(gender, "neutral")))
        lookup[vid] = vid
    for v in found:
        lookup.setdefault(v.language.lower(), v.id)
    return tuple(sorted(found, key=lambda v: v.id)), lookup


def voices() -> list[Voice]:
    """The espeak-ng voices: one per language/dialect. ``id`` is what :func:`synthesize` accepts.

    Any id can take a variant suffix, e.g. ``en-us+f3`` (see :func:`voice_variants`); primary
    language codes (``en-gb``) and OpenAI voice names (``alloy``, ``nova``...) are accepted too.
    """
    return list(_voice_table()[0])


def voice_variants() -> list[Voice]:
    """The espeak-ng voice variants (``m1``..``m7``, ``f1``..``f5``, ``klatt``...), usable as ``LANG+ID``."""
    found = []
    for name, identifier, _languages, gender in _espeak().list_voices(variants=True):
        vid = identifier.split("/")[-1]
        found.append(Voice(id=vid, name=name, language="", gender=_GENDERS.get(gender, "neutral")))
    return sorted(found, key=lambda v: v.id)


_VOICE_RE = re.compile(r"^[A-Za-z0-9_\-]+(?:\+[A-Za-z0-9_\-]+)?$")


def resolve_voice(voice: str | None) -> str:
    """The espeak-ng voice name for an OpenAI voice name, a voice id or a language (``en-gb+f2``)."""
    key = (voice or DEFAULT_VOICE).strip()
    key = OPENAI_VOICES.get(key.lower(), key)
    if not _VOICE_RE.match(key):
        raise SandboxInvalidRequest(f"invalid voice {voice!r}")
    language, plus, variant = key.partition("+")
    vid = _voice_table()[1].get(language.lower())
    if vid is None:
        raise SandboxInvalidRequest(f"unknown voice {voice!r}; see the voices list")
    return vid + plus + variant  # variant file names are case-sensitive ("Alex")


# --------------------------------------------------------------------------------------------------
# Signal processing and audio codecs


def resample(samples: np.ndarray, src_rate: int, dst_rate: int, half_width: int = 16) -> np.ndarray:
    """Band-limited resampling by windowed-sinc interpolation (Hann window, ``half_width`` zero crossings).

    ``samples`` is 1-D (mono) or 2-D ``(frames, channels)``; returns float64 of the same layout.
    When downsampling, the kernel is widened so it also acts as the anti-aliasing low-pass filter.
    """
    x = np.asarray(samples, dtype=np.float64)
    if src_rate <= 0 or dst_rate <= 0:
        raise ValueError("sample rates must be positive")
    if src_rate == dst_rate or x.shape[0] == 0:
        return x.copy()
    if x.ndim == 2:
        return np.stack([resample(x[:, c], src_rate, dst_rate, half_width) for c in range(x.shape[1])], axis=1)
    ratio = dst_rate / src_rate
    cutoff = min(1.0, ratio)  # as a fraction of the input's Nyquist frequency
    width = int(np.ceil(half_width / cutoff))
    n_out = int(round(x.shape[0] * ratio))
    padded = np.concatenate([np.zeros(width), x, np.zeros(width + 1)])
    offsets = np.arange(-width + 1, width + 1)
    out = np.empty(n_out)
    block = 8192
    for start in range(0, n_out, block):
        t = np.arange(start, min(start + block, n_out)) / ratio  # output instants in input samples
        base = np.floor(t).astype(np.int64)
        k = base[:, None] + offsets[None, :]
        d = t[:, None] - k
        window = 0.5 * (1.0 + np.cos(np.pi * np.clip(d / width, -1.0, 1.0)))
        kernel = cutoff * np.sinc(cutoff * d) * window
        out[start : start + t.shape[0]] = (padded[k + width] * kernel).sum(axis=1)
    return out


def _to_int16(samples: np.ndarray) -> np.ndarray:
    """Float samples in -1..1 to int16 with clipping."""
    return (np.clip(samples, -1.0, 1.0) * 32767.0).round().astype("<i2")


def normalize_format(fmt: str | None) -> str | None:
    """``wav``/``mp3``/... from a format name or a MIME type (``audio/mpeg``); ``None`` stays ``None``."""
    if fmt is None:
        return None
    key = fmt.strip().lower().split(";")[0].strip()
    key = _MIME_ALIASES.get(key, key)
    if key.startswith("audio/"):
        key = key[len("audio/") :]
        key = _MIME_ALIASES.get(key, key)
    if key not in AUDIO_FORMATS:
        raise SandboxInvalidRequest(f"unsupported audio format {fmt!r}; supported: {', '.join(AUDIO_FORMATS)}")
    return key


def encode_audio(samples: np.ndarray, sample_rate: int, fmt: str = "wav") -> tuple[bytes, int]:
    """Encode float samples (-1..1, mono or ``(frames, channels)``) as ``fmt``; returns (bytes, rate)."""
    import soundfile

    key = normalize_format(fmt) or "wav"
    data = np.asarray(samples, dtype=np.float64)
    if key == "pcm":
        mono = data.mean(axis=1) if data.ndim == 2 else data
        return _to_int16(resample(mono, sample_rate, PCM_SAMPLE_RATE)).tobytes(), PCM_SAMPLE_RATE
    if key == "opus":
        data = resample(data, sample_rate, OPUS_SAMPLE_RATE)
        sample_rate = OPUS_SAMPLE_RATE
    container, subtype = {
        "wav": ("WAV", "PCM_16"),
        "flac": ("FLAC", "PCM_16"),
        "mp3": ("MP3", "MPEG_LAYER_III"),
        "ogg": ("OGG", "VORBIS"),
        "opus": ("OGG", "OPUS"),
    }[key]
    buffer = io.BytesIO()
    try:
        soundfile.write(
            buffer, np.clip(data, -1.0, 1.0).astype(np.float32), sample_rate, format=container, subtype=subtype
        )
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise SandboxUnavailable(f"cannot encode {key}: {exc}") from exc
    return buffer.getvalue(), sample_rate


def decode_audio(data: bytes, fmt: str | None = None, pcm_sample_rate: int = PCM_SAMPLE_RATE) -> tuple[np.ndarray, int]:
    """Decode audio bytes into float64 samples ``(frames, channels)`` in -1..1 and their sample rate.

    ``fmt`` (a format name or MIME type) is only needed for headerless ``pcm`` (s16le mono at
    ``pcm_sample_rate``); containers are recognised from their content.
    """
    import soundfile

    if not isinstance(data, bytes | bytearray | memoryview) or not data:
        raise SandboxInvalidAudio("audio data is empty")
    try:
        hint = normalize_format(fmt)
    except SandboxInvalidRequest:
        hint = None  # e.g. application/octet-stream from a multipart upload: sniff the content
    if hint == "pcm":
        raw = bytes(data)
        if len(raw) % 2:
            raise SandboxInvalidAudio("pcm audio must be 16-bit samples (even byte count)")
        return (np.frombuffer(raw, dtype="<i2").astype(np.float64) / 32768.0)[:, None], pcm_sample_rate
    try:
        samples, rate = soundfile.read(io.BytesIO(bytes(data)), dtype="float64", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError, EOFError) as exc:
        raise SandboxInvalidAudio(
            f"not decodable audio ({type(exc).__name__}); supported: WAV, FLAC, Ogg Vorbis/Opus, MP3, raw pcm"
        ) from exc
    return samples, int(rate)


def convert(
    audio: bytes, to_format: str, from_format: str | None = None, pcm_sample_rate: int = PCM_SAMPLE_RATE
) -> bytes:
    """Re-encode audio bytes into ``to_format`` (wav/mp3/ogg/opus/flac/pcm)."""
    samples, rate = decode_audio(audio, from_format, pcm_sample_rate)
    return encode_audio(samples, rate, to_format)[0]


# --------------------------------------------------------------------------------------------------
# TTS


def synthesize(
    text: str,
    voice: str | None = DEFAULT_VOICE,
    speed: float = 1.0,
    response_format: str = "wav",
    pitch: int | None = None,
) -> SpeechResult:
    """Speak ``text`` with espeak-ng and encode it as ``response_format``.

    ``speed`` follows OpenAI (0.25..4.0, 1.0 = normal; espeak-ng itself caps the rate at 450 words
    per minute). ``voice`` is an OpenAI voice name or an espeak-ng voice id. ``pitch`` is espeak's
    0..99 (default 50).
    """
    if not isinstance(text, str) or not text.strip():
        raise SandboxInvalidRequest("input must be a non-empty string")
    if len(text) > MAX_TTS_CHARS:
        raise SandboxInvalidRequest(f"input is longer than {MAX_TTS_CHARS} characters")
    if not 0.25 <= speed <= 4.0:
        raise SandboxInvalidRequest("speed must be between 0.25 and 4.0")
    if pitch is not None and not 0 <= pitch <= 99:
        raise SandboxInvalidRequest("pitch must be between 0 and 99")
    fmt = normalize_format(response_format) or "wav"
    engine = _espeak()
    words_per_minute = int(round(min(max(BASE_WORDS_PER_MINUTE * speed, 80), 450)))
    pcm = engine.synth(text, resolve_voice(voice), words_per_minute, pitch)
    samples = pcm.astype(np.float64) / 32768.0
    audio, rate = encode_audio(samples, engine.sample_rate, fmt)
    return SpeechResult(
        audio=audio,
        format=fmt,
        mime_type=MIME_TYPES[fmt],
        sample_rate=rate,
        duration=len(samples) / engine.sample_rate,
    )


# --------------------------------------------------------------------------------------------------
# ASR


class _Recognizer:
    def __init__(self) -> None:
        try:
            from pocketsphinx import Decoder
        except ImportError as exc:
            raise SandboxUnavailable("pocketsphinx is not installed") from exc
        self.decoder = Decoder(samprate=ASR_SAMPLE_RATE, loglevel="FATAL")
        self.frame_rate = int(self.decoder.config["frate"])
        self.lock = threading.Lock()

    def recognise(self, pcm16: bytes) -> list[tuple[str, float, float]]:
        with self.lock:
            self.decoder.start_utt()
            self.decoder.process_raw(pcm16, no_search=False, full_utt=True)
            self.decoder.end_utt()
            return [
                (s.word, s.start_frame / self.frame_rate, (s.end_frame + 1) / self.frame_rate)
                for s in self.decoder.seg()
            ]


@lru_cache(maxsize=1)
def _recognizer_instance() -> _Recognizer:
    return _Recognizer()


def _recognizer() -> _Recognizer:
    """The process's pocketsphinx decoder, loaded on first use."""
    with _INIT_LOCK:
        return _recognizer_instance()


_ALT_PRONUNCIATION = re.compile(r"\(\d+\)$")
ASR_PEAK = 0.9  # normalise the input's peak to this level
ASR_PADDING = 0.3  # seconds of silence added before and after the audio
ASR_NOISE_DBFS = -55.0  # level of the seeded white-noise floor
ASR_NOISE_SEED = 20240601
SEGMENT_PAUSE = 0.5  # seconds of silence that start a new segment
SEGMENT_MAX_WORDS = 40


def _is_filler(word: str) -> bool:
    return not word or word[0] in "<[+" or word.startswith("++")


def _segments(words: Sequence[Word]) -> list[Segment]:
    segments: list[Segment] = []
    current: list[Word] = []
    for word in words:
        if current and (word["start"] - current[-1]["end"] >= SEGMENT_PAUSE or len(current) >= SEGMENT_MAX_WORDS):
            segments.append(_segment(len(segments), current))
            current = []
        current.append(word)
    if current:
        segments.append(_segment(len(segments), current))
    return segments


def _segment(index: int, words: Sequence[Word]) -> Segment:
    return {
        "id": index,
        "start": words[0]["start"],
        "end": words[-1]["end"],
        "text": " ".join(w["word"] for w in words),
    }


def _asr_input(mono16k: np.ndarray) -> bytes:
    """Condition 16 kHz mono audio for the recogniser: level, padding and a noise floor.

    The acoustic model was trained on recordings: speech at a normal level, starting after a bit of
    silence, over a noise floor. Synthetic or edited audio breaks all three (digital silence makes
    the noise estimation and the silence model misfire), which costs a lot of accuracy: on espeak-ng
    speech, word recall goes from about 0.2 to about 0.7 with this conditioning. The noise is
    seeded, so transcripts stay deterministic.
    """
    peak = float(np.max(np.abs(mono16k))) if mono16k.size else 0.0
    if peak > 1e-4:
        mono16k = mono16k * (ASR_PEAK / peak)
    pad = np.zeros(int(ASR_PADDING * ASR_SAMPLE_RATE))
    padded = np.concatenate([pad, mono16k, pad])
    noise = np.random.default_rng(ASR_NOISE_SEED).standard_normal(padded.shape[0]) * 10 ** (ASR_NOISE_DBFS / 20)
    return _to_int16(padded + noise).tobytes()


def transcribe(audio: bytes, fmt: str | None = None, language: str | None = "en") -> Transcript:
    """Recognise English speech: ``{text, language, duration, segments: [{id, start, end, text}], words}``.

    ``audio`` is WAV (any sample rate, channel count and sample format), FLAC, Ogg, MP3, or raw
    ``pcm`` (s16le mono 24 kHz, which needs ``fmt="pcm"``). ``fmt`` may also be a MIME type.
    """
    if language and language.lower().split("-")[0] not in ("en", "english"):
        raise SandboxInvalidRequest("the sandbox recogniser only supports English ('en')")
    samples, rate = decode_audio(audio, fmt)
    duration = samples.shape[0] / rate
    if duration > MAX_ASR_SECONDS:
        raise SandboxInvalidRequest(f"audio is longer than {int(MAX_ASR_SECONDS)} seconds")
    words: list[Word] = []
    if samples.shape[0]:
        pcm16 = _asr_input(resample(samples.mean(axis=1), rate, ASR_SAMPLE_RATE))
        for token, start, end in _recognizer().recognise(pcm16):
            if _is_filler(token):
                continue
            # Timestamps back on the caller's timeline (without the added padding).
            start = min(max(start - ASR_PADDING, 0.0), duration)
            end = min(max(end - ASR_PADDING, start), duration)
            words.append({"word": _ALT_PRONUNCIATION.sub("", token), "start": round(start, 2), "end": round(end, 2)})
    segments = _segments(words)
    return {
        "text": " ".join(s["text"] for s in segments),
        "language": "en",
        "duration": round(duration, 3),
        "segments": segments,
        "words": words,
    }


def espeak_data_path() -> Path | None:
    """Where the espeak-ng voice data in use lives (``None``: the system library's default)."""
    path = _locate_espeak()[1]
    return Path(path) if path else None


def die_with_parent() -> None:
    """Initializer of a recognition worker process: end it when the server that spawned it dies
    (even by SIGKILL) instead of leaving it behind. A watcher thread, not PR_SET_PDEATHSIG: that
    fires when the spawning *thread* ends, and event loops in short-lived threads spawn these."""
    import os
    import time

    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()
