from __future__ import annotations

import io
import wave

import numpy as np
import pytest
import soundfile

from gateway.sandbox import speech
from gateway.sandbox.errors import SandboxInvalidAudio, SandboxInvalidRequest


def _words(text):
    return text.lower().split()


# --------------------------------------------------------------------------------------------------
# TTS


def test_voices_lists_espeak_voices():
    found = speech.voices()
    assert len(found) > 50
    by_id = {v.id: v for v in found}
    assert by_id["en-us"].name == "English (America)"
    assert by_id["en-us"].language == "en-us"
    assert by_id["en"].language == "en-gb"
    assert by_id["de"].name == "German"
    # Voices whose pronunciation dictionary is not installed are left out (Faroese in this bundle).
    assert all(v.language != "fo" for v in found) or (speech.espeak_data_path() / "fo_dict").exists()
    assert all(v.gender in ("male", "female", "neutral") for v in found)
    variants = {v.id: v for v in speech.voice_variants()}
    assert variants["f3"].gender == "female"
    assert variants["m3"].gender == "male"


def test_synthesize_produces_a_valid_wav():
    result = speech.synthesize("Hello world, this is the sandbox speaking.")
    assert result.format == "wav"
    assert result.mime_type == "audio/wav"
    with wave.open(io.BytesIO(result.audio)) as wav:
        assert wav.getnchannels() == 1
        assert wav.getsampwidth() == 2
        assert wav.getframerate() == result.sample_rate == 22050
        frames = wav.getnframes()
        samples = np.frombuffer(wav.readframes(frames), dtype="<i2")
    assert frames / result.sample_rate == pytest.approx(result.duration, abs=0.01)
    assert 1.0 < result.duration < 6.0
    # Real speech, not silence: loud enough and varying.
    assert np.abs(samples).max() > 5000
    assert samples.astype(np.float64).std() > 500


def test_speed_and_voices_change_the_audio():
    text = "this is a longer sentence spoken at different speeds"
    normal = speech.synthesize(text, speed=1.0)
    fast = speech.synthesize(text, speed=2.0)
    assert fast.duration < normal.duration * 0.75
    assert speech.synthesize(text, voice="nova").audio != normal.audio
    assert speech.synthesize(text, voice="de").audio != normal.audio
    # espeak-ng's pitch flutter keeps a global phase, so a repeat differs by up to a few tens of ms.
    assert speech.synthesize(text).duration == pytest.approx(normal.duration, abs=0.05)


@pytest.mark.parametrize(
    ("fmt", "container", "subtype"),
    [("mp3", "MP3", None), ("ogg", "OGG", "VORBIS"), ("opus", "OGG", "OPUS"), ("flac", "FLAC", "PCM_16")],
)
def test_synthesize_encodes_other_formats(fmt, container, subtype):
    result = speech.synthesize("one two three", response_format=fmt)
    info = soundfile.info(io.BytesIO(result.audio))
    assert info.format == container
    if subtype:
        assert info.subtype == subtype
    assert info.samplerate == result.sample_rate
    assert info.duration == pytest.approx(result.duration, abs=0.1)
    assert result.mime_type == speech.MIME_TYPES[fmt]


def test_pcm_is_raw_24khz_s16le():
    result = speech.synthesize("one two three", response_format="pcm")
    assert result.sample_rate == 24_000
    assert result.mime_type == "audio/pcm"
    assert not result.audio.startswith(b"RIFF")
    assert len(result.audio) % 2 == 0
    assert len(result.audio) / 2 / 24_000 == pytest.approx(result.duration, abs=0.01)


def test_convert_between_formats():
    wav = speech.synthesize("convert me").audio
    for fmt in ("mp3", "ogg", "opus", "flac", "pcm"):
        encoded = speech.convert(wav, fmt)
        back = speech.convert(encoded, "wav", from_format=fmt)
        samples, rate = soundfile.read(io.BytesIO(back))
        duration = len(samples) / rate
        assert duration == pytest.approx(len(soundfile.read(io.BytesIO(wav))[0]) / 22050, abs=0.1), fmt


@pytest.mark.parametrize(
    "kwargs",
    [
        {"text": ""},
        {"text": "x" * 5000},
        {"text": "hi", "speed": 5.0},
        {"text": "hi", "response_format": "aac"},
        {"text": "hi", "voice": "no-such-voice"},
        {"text": "hi", "voice": "../../etc"},
        {"text": "hi", "pitch": 120},
    ],
)
def test_synthesize_rejects_invalid_requests(kwargs):
    with pytest.raises(SandboxInvalidRequest):
        speech.synthesize(**kwargs)


def test_normalize_format_accepts_mime_types():
    assert speech.normalize_format("audio/mpeg") == "mp3"
    assert speech.normalize_format("audio/wav; codecs=1") == "wav"
    assert speech.normalize_format("audio/x-wav") == "wav"
    assert speech.normalize_format("OGG") == "ogg"
    assert speech.normalize_format(None) is None


def test_resample_preserves_a_tone_and_removes_aliases():
    rate = 22050
    t = np.arange(rate) / rate
    tone = np.sin(2 * np.pi * 1000 * t)
    out = speech.resample(tone, rate, 16000)
    assert len(out) == 16000
    expected = np.sin(2 * np.pi * 1000 * np.arange(16000) / 16000)
    assert np.abs(out[200:-200] - expected[200:-200]).max() < 1e-3
    # 10 kHz is above the new Nyquist (8 kHz): it must be filtered, not folded down to 6 kHz.
    assert np.abs(speech.resample(np.sin(2 * np.pi * 10_000 * t), rate, 16000)[200:-200]).max() < 0.01


# --------------------------------------------------------------------------------------------------
# ASR on our own TTS


def _recall(expected, got):
    want = _words(expected)
    have = set(_words(got))
    return sum(1 for w in want if w in have) / len(want)


@pytest.mark.parametrize(
    ("phrase", "key_words"),
    [
        ("hello world", {"hello", "world"}),
        ("good morning everyone", {"morning", "everyone"}),
        ("please open the door", {"open", "door"}),
        ("one two three four five", {"two", "three", "four", "five"}),
        ("I would like a cup of coffee", {"cup", "coffee"}),
    ],
)
def test_asr_recognises_tts_speech(phrase, key_words):
    spoken = speech.synthesize(phrase)
    result = speech.transcribe(spoken.audio, "audio/wav")
    text = result["text"]
    assert key_words <= set(_words(text)), text
    assert _recall(phrase, text) >= 0.75, text
    # Not a padded hallucination either.
    assert len(_words(text)) <= len(_words(phrase)) + 2, text
    assert result["language"] == "en"
    assert result["duration"] == pytest.approx(spoken.duration, abs=0.001)


def test_asr_timestamps_are_ordered_and_inside_the_audio():
    result = speech.transcribe(speech.synthesize("one two three four five").audio)
    words = result["words"]
    assert [w["word"] for w in words][-3:] == ["three", "four", "five"]
    starts = [w["start"] for w in words]
    assert starts == sorted(starts)
    assert all(0.0 <= w["start"] <= w["end"] <= result["duration"] for w in words)
    segments = result["segments"]
    assert segments and segments[0]["id"] == 0
    assert " ".join(s["text"] for s in segments) == result["text"]
    assert all(0.0 <= s["start"] < s["end"] <= result["duration"] for s in segments)


def test_asr_accepts_any_rate_and_channels():
    samples, rate = soundfile.read(io.BytesIO(speech.synthesize("please open the door").audio))
    stereo = speech.resample(np.stack([samples, 0.5 * samples], axis=1), rate, 44_100)
    buffer = io.BytesIO()
    soundfile.write(buffer, stereo, 44_100, format="WAV", subtype="FLOAT")
    text = speech.transcribe(buffer.getvalue())["text"]
    assert {"open", "door"} <= set(_words(text)), text
    buffer = io.BytesIO()
    soundfile.write(buffer, speech.resample(samples, rate, 8_000), 8_000, format="WAV", subtype="PCM_U8")
    text = speech.transcribe(buffer.getvalue())["text"]
    assert _recall("please open the door", text) >= 0.5, text


@pytest.mark.parametrize("fmt", ["mp3", "ogg", "flac", "pcm"])
def test_asr_accepts_compressed_and_raw_audio(fmt):
    audio = speech.synthesize("hello world", response_format=fmt).audio
    text = speech.transcribe(audio, fmt)["text"]
    assert {"hello", "world"} <= set(_words(text)), text


def test_asr_on_silence_is_empty():
    buffer = io.BytesIO()
    soundfile.write(buffer, np.zeros(32_000), 16_000, format="WAV")
    assert speech.transcribe(buffer.getvalue()) == {
        "text": "",
        "language": "en",
        "duration": 2.0,
        "segments": [],
        "words": [],
    }


@pytest.mark.parametrize("data", [b"", b"this is not audio at all", b"RIFF\x00\x00\x00\x00WAVEjunk"])
def test_asr_refuses_non_audio(data):
    with pytest.raises(SandboxInvalidAudio):
        speech.transcribe(data)


def test_asr_only_speaks_english():
    with pytest.raises(SandboxInvalidRequest):
        speech.transcribe(speech.synthesize("hello").audio, language="fr")


def test_asr_sniffs_the_container_when_the_mime_type_is_generic():
    audio = speech.synthesize("hello world", response_format="mp3").audio
    assert "hello" in speech.transcribe(audio, "application/octet-stream")["text"]
    with pytest.raises(SandboxInvalidAudio):
        speech.transcribe(b"\x1aE\xdf\xa3 not really webm", "audio/webm")


def test_resolve_voice():
    assert speech.resolve_voice(None) == "en-us"
    assert speech.resolve_voice("Alloy") == speech.OPENAI_VOICES["alloy"]
    # "en-gb" is the language of the voice file "en"; variant file names are case-sensitive.
    assert speech.resolve_voice("EN-GB+Alex") == "en+Alex"
    assert speech.resolve_voice("en-gb-x-rp") == "en-gb-x-rp"
    # Every listed voice resolves to itself.
    assert all(speech.resolve_voice(v.id) == v.id for v in speech.voices())
    for voice in speech.OPENAI_VOICES:
        assert speech.synthesize("hi", voice=voice).duration > 0.1
