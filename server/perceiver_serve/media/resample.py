"""One stream's audio, arriving in pieces at the client's rate, at the model's rate.

A stream's pieces are resampled as one signal (soxr's streaming resampler keeps the filter
state between pieces), so piece boundaries leave no seams; the resampler holds back a few
milliseconds of output, which :meth:`StreamResampler.flush` returns at the end of the stream.
"""

from __future__ import annotations

import numpy as np
import soxr

from ..errors import InvalidInput


class StreamResampler:
    def __init__(self, target_rate: int) -> None:
        self.target_rate = target_rate
        self.source_rate: int | None = None
        self._stream: soxr.ResampleStream | None = None

    def __call__(self, samples: np.ndarray, rate: int) -> np.ndarray:
        """``samples`` (mono float32 at ``rate``) at the target rate; every piece of a stream shares one rate."""
        if self.source_rate is None:
            self.source_rate = rate
            if rate != self.target_rate:
                self._stream = soxr.ResampleStream(rate, self.target_rate, 1, dtype="float32", quality="HQ")
        elif rate != self.source_rate:
            raise InvalidInput(f"audio of one stream must keep one sample rate: it began at {self.source_rate} Hz, "
                               f"this piece is at {rate} Hz")
        if self._stream is None:
            return samples
        return self._stream.resample_chunk(np.ascontiguousarray(samples, dtype=np.float32))

    def flush(self) -> np.ndarray:
        """The samples still held back, once the stream has ended (none without resampling)."""
        if self._stream is None:
            return np.zeros(0, dtype=np.float32)
        return self._stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
