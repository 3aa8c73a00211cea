"""Decoding and validating untrusted media bytes, and encoding flow outputs.

Every decoder takes bytes and a :class:`MediaLimits`, and either returns clean arrays or
raises :class:`~perceiver_serve.errors.InvalidInput`, :class:`~perceiver_serve.errors.PayloadTooLarge`
or :class:`~perceiver_serve.errors.UnsupportedMediaType` with a message naming the input;
never anything else, whatever the bytes hold.
"""

from .audio import AUDIO_FORMATS, OpenedAudio, check_channels, check_duration, decode_audio, open_audio, pcm_from_f32le
from .budget import DecodeBudget
from .flow_colour import colour_wheel, flow_to_rgb
from .flow_formats import FLOW_FORMATS, FlowFormat, from_flo, from_npy, to_flo, to_json, to_npy, to_png
from .image import (
    IMAGE_FORMATS,
    OpenedImage,
    check_image_size,
    decode_frame_pair,
    decode_image,
    decode_opened_pair,
    open_frame_pair,
    open_image,
    rgb_frame_from_raw,
)
from .limits import MediaLimits

__all__ = [
    "AUDIO_FORMATS",
    "DecodeBudget",
    "FLOW_FORMATS",
    "IMAGE_FORMATS",
    "FlowFormat",
    "MediaLimits",
    "OpenedAudio",
    "OpenedImage",
    "check_channels",
    "check_duration",
    "check_image_size",
    "colour_wheel",
    "decode_audio",
    "decode_frame_pair",
    "decode_image",
    "decode_opened_pair",
    "flow_to_rgb",
    "from_flo",
    "from_npy",
    "open_audio",
    "open_frame_pair",
    "open_image",
    "pcm_from_f32le",
    "rgb_frame_from_raw",
    "to_flo",
    "to_json",
    "to_npy",
    "to_png",
]
