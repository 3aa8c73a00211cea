import numpy as np
import pytest
from perceiver_serve.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType
from perceiver_serve.media import AUDIO_FORMATS, MediaLimits, decode_audio, pcm_from_f32le

from .samples import patched, rejected, sound, tone

LIMITS = MediaLimits()
RATE = 16_000


@pytest.mark.parametrize(
    ("fmt", "subtype", "tolerance"),
    [("WAV", "PCM_16", 1e-4), ("WAV", "FLOAT", 0), ("FLAC", None, 1e-4), ("OGG", None, 0.05)],
)
def test_audio_files_decode_to_float32_mono(fmt, subtype, tolerance):
    samples = decode_audio(sound(tone(), fmt=fmt, subtype=subtype), LIMITS, sample_rate=RATE)
    assert samples.dtype == np.float32 and samples.shape == (1600,)
    assert np.abs(samples - tone()).max() <= tolerance


def test_channels_are_averaged_to_mono():
    stereo = np.stack([np.full(100, 0.5), np.full(100, -0.25)], axis=1).astype(np.float32)
    samples = decode_audio(sound(stereo, subtype="FLOAT"), LIMITS, sample_rate=RATE)
    assert samples.shape == (100,) and np.allclose(samples, 0.125)


def test_callers_may_require_mono():
    with rejected(InvalidInput, "invalid_input", "audio has 2 channels, but this model needs mono audio"):
        decode_audio(sound(tone(channels=2)), LIMITS, sample_rate=RATE, require_mono=True)
    assert decode_audio(sound(tone()), LIMITS, sample_rate=RATE, require_mono=True).shape == (1600,)


def test_too_many_channels_are_rejected_from_the_header():
    header_says_1000_channels = patched(sound(tone()), 22, "<H", 1000)
    with rejected(InvalidInput, "invalid_input", "audio has 1000 channels; between 1 and 8 are accepted"):
        decode_audio(header_says_1000_channels, LIMITS, sample_rate=RATE)


def test_sample_rate_must_match_and_is_not_resampled():
    with rejected(InvalidInput, "invalid_input", "audio is sampled at 44100 Hz, but this model needs 16000 Hz"):
        decode_audio(sound(tone(rate=44_100), rate=44_100), LIMITS, sample_rate=RATE)


def test_samples_beyond_full_scale_are_clipped():
    loud = np.array([0.5, 1.5, -3.0, 1.0], dtype=np.float32)
    assert decode_audio(sound(loud, subtype="FLOAT"), LIMITS, sample_rate=RATE).tolist() == [0.5, 1.0, -1.0, 1.0]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples_are_invalid(bad):
    with rejected(InvalidInput, "invalid_input", "audio contains NaN or infinite samples"):
        decode_audio(sound(np.array([0.0, bad], dtype=np.float32), subtype="FLOAT"), LIMITS, sample_rate=RATE)


def test_longer_than_the_limit_is_too_large():
    with rejected(PayloadTooLarge, "too_large", "audio is 0.10 s long; the limit is 0.05 s"):
        decode_audio(sound(tone(0.1)), MediaLimits(max_audio_seconds=0.05), sample_rate=RATE)


def test_more_bytes_than_the_limit_is_too_large():
    with rejected(PayloadTooLarge, "too_large", "the limit is 1000 bytes"):
        decode_audio(sound(tone()), MediaLimits(max_audio_bytes=1000), sample_rate=RATE)


@pytest.mark.parametrize(
    ("data", "fragment"), [(b"", "audio is empty"), (sound(np.zeros(0, np.float32)), "audio has no samples")]
)
def test_empty_audio_is_invalid(data, fragment):
    with rejected(InvalidInput, "invalid_input", fragment):
        decode_audio(data, LIMITS, sample_rate=RATE)


@pytest.mark.parametrize(
    "data", [b"not audio at all", b"RIFF" + bytes(60), sound(tone(), fmt="AU")], ids=["text", "riff", "au"]
)
def test_unrecognised_or_unlisted_containers_are_unsupported(data):
    with rejected(UnsupportedMediaType, "unsupported_media_type", "supported format (AIFF, FLAC, MP3, OGG"):
        decode_audio(data, LIMITS, sample_rate=RATE)


def test_recognised_but_broken_container_is_invalid():
    with rejected(InvalidInput, "invalid_input", "audio is corrupt or truncated"):
        decode_audio(sound(tone())[:20], LIMITS, sample_rate=RATE)


def test_supported_containers_are_listed():
    assert {"WAV", "FLAC", "OGG"} <= AUDIO_FORMATS


def f32le(samples: np.ndarray) -> bytes:
    return samples.astype("<f4").tobytes()


def test_raw_pcm_is_read_as_little_endian_float32():
    samples = pcm_from_f32le(f32le(tone()), LIMITS, sample_rate=RATE)
    assert samples.dtype == np.float32 and np.array_equal(samples, tone())


def test_raw_pcm_channels_are_interleaved_and_averaged():
    interleaved = f32le(np.array([[0.5, -0.5], [1.0, 0.0]]))
    assert pcm_from_f32le(interleaved, LIMITS, sample_rate=RATE, channels=2).tolist() == [0.0, 0.5]


def test_raw_pcm_is_clipped_to_full_scale():
    assert pcm_from_f32le(f32le(np.array([2.0, -0.25])), LIMITS, sample_rate=RATE).tolist() == [1.0, -0.25]


@pytest.mark.parametrize(
    ("data", "channels", "fragment"),
    [
        (bytes(10), 1, "audio is 10 bytes, not a whole number of 1-channel float32 frames (4 bytes each)"),
        (bytes(12), 2, "not a whole number of 2-channel float32 frames (8 bytes each)"),
        (f32le(np.array([0.0, np.nan])), 1, "NaN or infinite"),
        (bytes(8), 0, "audio has 0 channels"),
        (b"", 1, "audio is empty"),
    ],
)
def test_bad_raw_pcm_is_invalid(data, channels, fragment):
    with rejected(InvalidInput, "invalid_input", fragment):
        pcm_from_f32le(data, LIMITS, sample_rate=RATE, channels=channels)


def test_raw_pcm_longer_than_the_limit_is_too_large():
    with rejected(PayloadTooLarge, "too_large", "audio is 0.10 s long"):
        pcm_from_f32le(f32le(tone(0.1)), MediaLimits(max_audio_seconds=0.05), sample_rate=RATE)
