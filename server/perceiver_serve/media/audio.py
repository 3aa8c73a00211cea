"""Untrusted audio bytes → float32 mono samples in [-1, 1], checked against :class:`MediaLimits`.

Files are read with libsndfile (through ``soundfile``) in the containers listed in
:data:`AUDIO_FORMATS`; raw PCM comes from gRPC clients as little-endian float32.

Choices every path shares:

- bytes libsndfile does not recognise as any audio container are a 415
  (``unsupported_media_type``), as are recognised containers outside
  :data:`AUDIO_FORMATS`; a recognised container whose contents are broken is a 400;
- the rate must equal the model's where a caller names one; the video stream accepts any
  rate (``sample_rate=None``) and resamples (:mod:`.resample`), since its clients send what
  their capture produced and the stream announces the model's rate;
- several channels are averaged to mono, unless the caller asks for mono input
  (``require_mono=True``) and then they are a 400;
- NaN or infinite samples are a 400 (they mean a broken producer, not loud audio);
  finite samples beyond full scale are clipped to [-1, 1], as a DAC would, since float
  files legitimately overshoot slightly after mixing or resampling.
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import soundfile

from ..errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType
from .limits import MediaLimits
from .untrusted import check_byte_count, translated_errors

AUDIO_FORMATS: frozenset[str] = frozenset({"WAV", "WAVEX", "RF64", "FLAC", "OGG", "MP3", "AIFF"})
_SUPPORTED = ", ".join(sorted(AUDIO_FORMATS))
# libsndfile's SF_ERR_UNRECOGNISED_FORMAT: the bytes are no audio container it knows.
_UNRECOGNISED_FORMAT = 1


@dataclasses.dataclass(eq=False)
class OpenedAudio:
    """An audio file whose header is read and checked against the limits, no sample decoded yet.

    :attr:`decoded_bytes` is what :meth:`decode` will hold, known before it runs, so the
    caller can take it from the decode budget first.
    """

    sound: soundfile.SoundFile

    @property
    def rate(self) -> int:
        return self.sound.samplerate

    @property
    def decoded_bytes(self) -> int:
        # The interleaved float32 read, and the mono mix beside it.
        return self.sound.frames * (self.sound.channels + 1) * 4

    def decode(self) -> np.ndarray:
        """``(samples,)`` float32 mono in [-1, 1] (see the module docstring)."""
        with translated_errors("audio"), self.sound as sound:
            samples = sound.read(dtype="float32", always_2d=True)
        return _to_mono(samples)


def open_audio(data: bytes, limits: MediaLimits, *, sample_rate: int | None,
               require_mono: bool = False) -> OpenedAudio:
    """Open an audio file and check its rate (unless ``sample_rate`` is None), channels and length from the header."""
    check_byte_count(data, limit=limits.max_audio_bytes, subject="audio")
    with translated_errors("audio"):
        sound = _open_sound(data)
        try:
            if sound.format not in AUDIO_FORMATS:
                raise UnsupportedMediaType(f"audio is {sound.format}, which is not a supported format ({_SUPPORTED})")
            if sample_rate is not None and sound.samplerate != sample_rate:
                raise InvalidInput(f"audio is sampled at {sound.samplerate} Hz, but this model needs {sample_rate} Hz; "
                                   "resample it first")
            check_channels(sound.channels, limits, require_mono=require_mono)
            check_duration(sound.frames, sound.samplerate, limits)
        except BaseException:
            sound.close()
            raise
        return OpenedAudio(sound)


def decode_audio(data: bytes, limits: MediaLimits, *, sample_rate: int, require_mono: bool = False) -> np.ndarray:
    """Decode an audio file into ``(samples,)`` float32 at ``sample_rate`` (see the module docstring).

    The header's rate, channel count and length are checked before any sample is read, so
    the read never allocates more than the limits allow.
    """
    return open_audio(data, limits, sample_rate=sample_rate, require_mono=require_mono).decode()


def pcm_from_f32le(data: bytes, limits: MediaLimits, *, sample_rate: int, channels: int = 1) -> np.ndarray:
    """Read raw interleaved little-endian float32 PCM into ``(samples,)`` float32 mono.

    Raw PCM has no header, so the caller states ``channels`` and the ``sample_rate`` the
    client declared; the rate only serves to enforce ``max_audio_seconds``.
    """
    check_byte_count(data, limit=limits.max_audio_bytes, subject="audio")
    check_channels(channels, limits)
    frame_bytes = 4 * channels
    if len(data) % frame_bytes:
        raise InvalidInput(
            f"audio is {len(data)} bytes, not a whole number of {channels}-channel float32 frames "
            f"({frame_bytes} bytes each)"
        )
    check_duration(len(data) // frame_bytes, sample_rate, limits)
    return _to_mono(np.frombuffer(data, dtype="<f4").reshape(-1, channels))


def check_channels(channels: int, limits: MediaLimits, *, require_mono: bool = False) -> None:
    """Enforce the channel-count limit, and mono input when the caller's model needs it."""
    if require_mono and channels != 1:
        raise InvalidInput(f"audio has {channels} channels, but this model needs mono audio")
    if not 1 <= channels <= limits.max_audio_channels:
        raise InvalidInput(f"audio has {channels} channels; between 1 and {limits.max_audio_channels} are accepted")


def check_duration(frames: int, sample_rate: int, limits: MediaLimits) -> None:
    """Reject audio longer than ``max_audio_seconds``, from the frame count a header states."""
    seconds = frames / sample_rate
    if seconds > limits.max_audio_seconds:
        raise PayloadTooLarge(f"audio is {seconds:.2f} s long; the limit is {limits.max_audio_seconds:g} s")


def _open_sound(data: bytes) -> soundfile.SoundFile:
    """Parse the header, telling bytes that are no audio at all (415) from a broken file (400)."""
    try:
        return soundfile.SoundFile(io.BytesIO(data))
    except soundfile.LibsndfileError as exc:
        if exc.code == _UNRECOGNISED_FORMAT:
            raise UnsupportedMediaType(f"audio is not a file in a supported format ({_SUPPORTED})") from None
        raise InvalidInput(f"audio is corrupt or truncated: {exc.error_string}") from None


def _to_mono(samples: np.ndarray) -> np.ndarray:
    """``(frames, channels)`` float32 → finite ``(frames,)`` float32 in [-1, 1]."""
    # Checked on what was read: a header may promise frames that a broken stream never yields.
    if not samples.size:
        raise InvalidInput("audio has no samples")
    if not np.isfinite(samples).all():
        raise InvalidInput("audio contains NaN or infinite samples")
    return np.clip(samples.mean(axis=1, dtype=np.float32), -1.0, 1.0)
