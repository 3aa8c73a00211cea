"""The hostile input corpus: what strangers send, and what each must get back.

Each entry names its input once and the answer both protocols owe it: REST's status and
error code, and for gRPC the status that code maps to (every 4xx of ours is INVALID_ARGUMENT,
NOT_FOUND or RESOURCE_EXHAUSTED there). ``OK`` entries are unusual but valid inputs that must
be served, not refused.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable

import numpy as np
from PIL import Image

from perceiver_serve.pb.perceiver.v1 import perceiver_pb2 as pb

from ..media.samples import animation, encode, patched, png_with_header, solid, sound, tone

OK = (200, None)
TEXT_LIMIT = 2046  # bytes of UTF-8 the demo text models take
VIDEO_RATE, SAMPLES_PER_FRAME = 1600, 64  # the demo video model (at most 64 frames a stream here)
RNG = np.random.default_rng(2024)


def noise(height: int, width: int) -> Image.Image:
    return Image.fromarray(RNG.integers(0, 256, (height, width, 3), dtype=np.uint8))


def png(picture: Image.Image) -> bytes:
    return encode(picture, "PNG")


def exif_rotated() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(noise(24, 40), "JPEG", exif=exif)


def half(data: bytes) -> bytes:
    return data[: len(data) // 2]


# -- decompression: small files that are big once decoded ----------------------------------------------------

# Exactly the default --max-image-pixels: 160 MB decoded from about 100 KB of PNG or 500 KB of JPEG.
AT_PIXEL_LIMIT = (8000, 5000)
PNG_AT_LIMIT = png(solid((0, 0, 0), AT_PIXEL_LIMIT))
JPEG_AT_LIMIT = encode(solid((0, 0, 0), AT_PIXEL_LIMIT), "JPEG")
STREAMINFO_TOTAL = 8 + 10  # FLAC: "fLaC", the block header, then rate, channels, depth and 36-bit total


def flac_with_total(samples: np.ndarray, total: int) -> bytes:
    """A FLAC at the demo video model's rate whose STREAMINFO claims ``total`` samples per channel."""
    data = sound(samples, rate=VIDEO_RATE, fmt="FLAC")
    fields = int.from_bytes(data[STREAMINFO_TOTAL:STREAMINFO_TOTAL + 8], "big")
    fields = (fields & ~(2**36 - 1)) | total
    return data[:STREAMINFO_TOTAL] + fields.to_bytes(8, "big") + data[STREAMINFO_TOTAL + 8:]


def wav_claiming_frames(samples: np.ndarray, frames: int) -> bytes:
    """A 16-bit mono WAV whose data chunk claims ``frames`` frames, whatever it holds."""
    data = sound(samples, rate=VIDEO_RATE, subtype="PCM_16")
    return patched(data, data.index(b"data") + 4, "<I", min(frames * 2, 2**32 - 1))


# Two minutes of 8-channel silence at the model's rate, 1.5 million samples, in under 2 KB.
FLAC_LONG_SILENCE = np.zeros((VIDEO_RATE * 120, 8), np.float32)


# -- images: (name, bytes, (REST status, error code)) ------------------------------------------------------

IMAGES: list[tuple[str, bytes, tuple[int, str | None]]] = [
    ("truncated_png", half(png(noise(64, 64))), (400, "invalid_input")),
    ("truncated_jpeg", half(encode(noise(64, 64), "JPEG")), (400, "invalid_input")),
    ("truncated_gif", half(encode(noise(64, 64), "GIF")), (400, "invalid_input")),
    ("zero_sized_png", png_with_header(0, 5), (400, "invalid_input")),
    ("empty", b"", (400, "invalid_input")),
    ("signature_only", b"\x89PNG\r\n\x1a\n", (400, "invalid_input")),
    ("nul_bytes", b"\x00" * 4096, (415, "unsupported_media_type")),
    ("plain_text", b"definitely not a picture", (415, "unsupported_media_type")),
    ("svg", b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>', (415, "unsupported_media_type")),
    ("ico", encode(solid((1, 2, 3), (16, 16)), "ICO"), (415, "unsupported_media_type")),
    ("bomb_png_30000x30000", png_with_header(30_000, 30_000), (413, "too_large")),
    ("bomb_gif_30000x30000", patched(encode(solid((9, 9, 9), (1, 1)), "GIF"), 6, "<HH", 30_000, 30_000),
     (413, "too_large")),
    ("bomb_bmp_30000x30000", patched(encode(solid((9, 9, 9), (1, 1)), "BMP"), 18, "<ii", 30_000, 30_000),
     (413, "too_large")),
    ("over_the_image_byte_limit", b"\x89PNG\r\n\x1a\n" + bytes(21 << 20), (413, "too_large")),
    ("one_by_one", png(solid((200, 10, 10), (1, 1))), OK),
    ("animated_gif", animation("GIF"), OK),
    ("animated_webp", animation("WEBP"), OK),
    ("animated_png", animation("PNG"), OK),
    ("cmyk_jpeg", encode(noise(30, 30).convert("CMYK"), "JPEG"), OK),
    ("cmyk_tiff", encode(noise(30, 30).convert("CMYK"), "TIFF"), OK),
    ("sixteen_bit_png", png(solid(0x9A7F, (30, 20), mode="I;16")), OK),
    ("float_tiff", encode(solid(0.5, (30, 20), mode="F"), "TIFF"), OK),
    ("palette_png_with_transparency", encode(noise(30, 30).convert("P"), "PNG", transparency=3), OK),
    ("rgba_png", png(noise(30, 30).convert("RGBA")), OK),
    ("la_png", png(noise(30, 30).convert("LA")), OK),
    ("exif_rotated_jpeg", exif_rotated(), OK),
    ("tall_thin", png(noise(900, 2)), OK),
    ("png_at_the_pixel_limit", PNG_AT_LIMIT, OK),
    ("jpeg_at_the_pixel_limit", JPEG_AT_LIMIT, OK),
    ("png_one_row_past_the_pixel_limit", png_with_header(AT_PIXEL_LIMIT[0], AT_PIXEL_LIMIT[1] + 1), (413, "too_large")),
]

# -- frame pairs for optical flow ---------------------------------------------------------------------------

FRAME = png(noise(48, 64))
FRAME_PAIRS: list[tuple[str, bytes, bytes, tuple[int, str | None]]] = [
    ("different_sizes", FRAME, png(noise(48, 66)), (400, "frame_size_mismatch")),
    ("different_modes_same_size", FRAME, png(noise(48, 64).convert("L")), OK),
    ("png_and_jpeg", FRAME, encode(noise(48, 64), "JPEG"), OK),
    ("rgba_and_palette", png(noise(48, 64).convert("RGBA")), png(noise(48, 64).convert("P")), OK),
    ("second_truncated", FRAME, half(FRAME), (400, "invalid_input")),
    ("first_empty", b"", FRAME, (400, "invalid_input")),
    ("first_not_an_image", b"%PDF-1.4", FRAME, (415, "unsupported_media_type")),
    ("too_small_to_tile", png(noise(8, 8)), png(noise(8, 8)), (400, "frame_too_small")),
    ("bomb_header", png_with_header(30_000, 30_000), FRAME, (413, "too_large")),
    # Decodable, but more tiles than one request may need (the flow option max_tiles, 4096): refused as too
    # large before tiling, not 429. (More tiles than the queue holds are admitted in parts: tests/api/test_flow.py.)
    ("more_tiles_than_a_request_may_need", png(solid((5, 5, 5), (48, 64 + 44 * 4096))),
     png(solid((5, 5, 5), (48, 64 + 44 * 4096))), (413, "too_large")),
]

# -- REST bodies ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RestCase:
    name: str
    path: str
    expect: tuple[int, str | None]
    content: bytes | None = None
    content_type: str | None = None
    files: list | None = None
    data: dict | None = None
    query: str = ""

    def request_kwargs(self) -> dict:
        headers = {"content-type": self.content_type} if self.content_type else {}
        kwargs: dict = {"headers": headers}
        if self.content is not None:
            kwargs["content"] = self.content
        if self.files is not None:
            kwargs["files"] = self.files
        if self.data is not None:
            kwargs["data"] = self.data
        return kwargs


def as_json(obj: object) -> bytes:
    return json.dumps(obj).encode()


def text_case(name: str, body: bytes, expect, content_type: str = "application/json", query: str = "") -> RestCase:
    return RestCase(name, "/classify/text", expect, body, content_type, query=query)


def mask_case(name: str, body: object, expect) -> RestCase:
    raw = body if isinstance(body, bytes) else as_json(body)
    return RestCase(name, "/fill-mask", expect, raw, "application/json")


AT_LIMIT = "a" * TEXT_LIMIT
REST_TEXT: list[RestCase] = [
    text_case("malformed_json", b'{"text": "a"', (400, "malformed_json")),
    text_case("json_with_trailing_garbage", b'{"text": "a"} x', (400, "malformed_json")),
    text_case("empty_body", b"", (400, "malformed_json")),
    text_case("deeply_nested_json", b'{"text": "a", "x": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
              (400, "malformed_json")),
    text_case("invalid_utf8_in_json", b'{"text": "a\xff\xfe"}', (400, "malformed_json")),
    text_case("lone_surrogate_escape", b'{"text": "\\ud800"}', (400, "malformed_json")),
    text_case("top_level_array", b"[1, 2, 3]", (422, "invalid_request")),
    text_case("top_level_null", b"null", (422, "invalid_request")),
    text_case("text_is_a_number", as_json({"text": 42}), (422, "invalid_request")),
    text_case("texts_of_numbers", as_json({"texts": [1, 2]}), (422, "invalid_request")),
    text_case("texts_is_an_object", as_json({"texts": {"a": "b"}}), (422, "invalid_request")),
    text_case("top_k_is_a_string", as_json({"text": "a", "top_k": "5"}), (422, "invalid_request")),
    text_case("top_k_is_a_bool", as_json({"text": "a", "top_k": True}), (422, "invalid_request")),
    text_case("top_k_is_1e400", b'{"text": "a", "top_k": 1e400}', (422, "invalid_request")),
    text_case("top_k_is_10_pow_400", b'{"text": "a", "top_k": 1' + b"0" * 400 + b"}", (422, "invalid_request")),
    text_case("top_k_is_negative", as_json({"text": "a", "top_k": -1}), (422, "invalid_request")),
    text_case("top_k_is_nan", b'{"text": "a", "top_k": NaN}', (422, "invalid_request")),
    text_case("return_logits_is_a_string", as_json({"text": "a", "return_logits": "yes"}), (422, "invalid_request")),
    text_case("model_is_a_list", as_json({"text": "a", "model": ["x"]}), (422, "invalid_request")),
    text_case("unknown_field", as_json({"text": "a", "admin": True}), (422, "invalid_request")),
    text_case("too_many_texts", as_json({"texts": ["a"] * 257}), (422, "invalid_request")),
    text_case("empty_text", as_json({"text": ""}), (400, "empty_text")),
    text_case("nul_bytes_in_text", as_json({"text": "a\x00b\x00"}), OK),
    text_case("only_nul_bytes", as_json({"text": "\x00" * 64}), OK),
    text_case("text_at_the_byte_limit", as_json({"text": AT_LIMIT}), OK),
    text_case("multibyte_text_at_the_byte_limit", as_json({"text": "é" * (TEXT_LIMIT // 2)}), OK),
    text_case("text_one_byte_past_the_limit", as_json({"text": AT_LIMIT + "a"}), (413, "text_too_long")),
    text_case("multibyte_char_straddling_the_limit", as_json({"text": "a" * (TEXT_LIMIT - 1) + "é"}),
              (413, "text_too_long")),
    text_case("huge_text", as_json({"text": "x" * (8 << 20)}), (413, "text_too_long")),
    text_case("plain_invalid_utf8", b"abc\xc3\x28", (400, "invalid_utf8"), "text/plain"),
    text_case("plain_empty", b"", (400, "empty_text"), "text/plain"),
    text_case("plain_nul_bytes", b"a\x00b", OK, "text/plain"),
    text_case("plain_past_the_limit", b"z" * (TEXT_LIMIT + 1), (413, "text_too_long"), "text/plain"),
    text_case("plain_top_k_not_a_number", b"a", (422, "invalid_request"), "text/plain", "?top_k=lots"),
    text_case("plain_top_k_huge", b"a", (422, "invalid_request"), "text/plain", "?top_k=" + "9" * 50),
    text_case("query_parameter_misspelt", as_json({"text": "a"}), (422, "invalid_request"), query="?topk=3"),
    text_case("plain_query_parameter_twice", b"a", (422, "invalid_request"), "text/plain", "?top_k=1&top_k=2"),
    text_case("query_parameter_without_a_name", b"a", (422, "invalid_request"), "text/plain", "?=1"),
    text_case("xml_body", b"<text>a</text>", (415, "unsupported_media_type"), "application/xml"),
    text_case("no_content_type", b'{"text": "a"}', (415, "unsupported_media_type"), ""),
    text_case("path_traversal_model", as_json({"text": "a", "model": "../../../etc/passwd"}),
              (404, "model_not_found")),
]

REST_FILL_MASK: list[RestCase] = [
    mask_case("no_mask", {"text": "abc"}, (400, "no_mask")),
    mask_case("span_past_the_end", {"text": "abc", "mask_spans": [[0, 10**30]]}, (400, "invalid_input")),
    mask_case("span_reversed", {"text": "abc", "mask_spans": [[2, 1]]}, (400, "invalid_input")),
    mask_case("span_negative", {"text": "abc", "mask_spans": [[-5, 1]]}, (400, "invalid_input")),
    mask_case("span_of_floats", {"text": "abc", "mask_spans": [[0, 1.5]]}, (422, "invalid_request")),
    mask_case("span_of_three", {"text": "abc", "mask_spans": [[0, 1, 2]]}, (422, "invalid_request")),
    mask_case("too_many_spans", {"text": "abc", "mask_spans": [[0, 1]] * 4097}, (422, "invalid_request")),
    mask_case("markers_and_spans", {"text": "a[MASK]", "mask_spans": [[0, 1]]}, (400, "invalid_input")),
    mask_case("empty_text", {"text": "", "mask_spans": [[0, 1]]}, (400, "empty_text")),
    mask_case("malformed_json", b'{"text": ', (400, "malformed_json")),
    mask_case("nul_bytes_and_marker", {"text": "\x00[MASK]\x00"}, OK),
    mask_case("at_the_limit", {"text": "b" * (TEXT_LIMIT - 1) + "[MASK]"}, OK),
    mask_case("past_the_limit", {"text": "b" * TEXT_LIMIT + "[MASK]"}, (413, "text_too_long")),
    mask_case("past_the_limit_truncated", {"text": "[MASK]" + "b" * TEXT_LIMIT, "truncate": True}, OK),
    mask_case("every_byte_masked", {"text": "[MASK]" * 300, "top_k": 3}, OK),
    RestCase("plain_text_body", "/fill-mask", (415, "unsupported_media_type"), b"a[MASK]", "text/plain"),
]

REST_MULTIPART: list[RestCase] = [
    RestCase("image_field_missing", "/classify/image", (400, "missing_field"), files=[("picture", ("a.png", FRAME))]),
    RestCase("image_is_a_plain_field", "/classify/image", (422, "invalid_request"),
             files=[("x", ("x", b"x"))], data={"image": "not a file"}),
    RestCase("too_many_files", "/classify/image", (400, "malformed_multipart"),
             files=[("image", ("a.png", FRAME))] * 6),
    RestCase("too_many_fields", "/classify/image", (400, "malformed_multipart"),
             files=[("image", ("a.png", FRAME))], data={f"f{i}": "1" for i in range(20)}),
    RestCase("no_boundary", "/classify/image", (400, "malformed_multipart"), b"--x\r\n", "multipart/form-data"),
    RestCase("broken_multipart", "/classify/image", (400, "missing_field"), b"--x\r\nbroken",
             "multipart/form-data; boundary=x"),
    RestCase("json_instead_of_multipart", "/classify/image", (415, "unsupported_media_type"), b"{}",
             "application/json"),
    RestCase("top_k_with_5000_digits", "/classify/image", (422, "invalid_request"),
             files=[("image", ("a.png", FRAME))], data={"top_k": "9" * 5000}),
    RestCase("top_k_is_a_file", "/classify/image", (422, "invalid_request"),
             files=[("image", ("a.png", FRAME)), ("top_k", ("k", b"3"))]),
    RestCase("path_traversal_model_field", "/classify/image", (404, "model_not_found"),
             files=[("image", ("a.png", FRAME))], data={"model": "../text-sentiment"}),
    RestCase("flow_format_unknown", "/flow", (422, "invalid_request"),
             files=[("frame1", ("a.png", FRAME)), ("frame2", ("b.png", FRAME))], data={"format": "exe"}),
    RestCase("flow_frame2_missing", "/flow", (400, "missing_field"), files=[("frame1", ("a.png", FRAME))]),
]


def rest_image_cases() -> list[RestCase]:
    cases = []
    for name, data, expect in IMAGES:
        cases.append(RestCase(f"image-multipart-{name}", "/classify/image", expect, files=[("image", ("x", data))]))
        cases.append(RestCase(f"image-raw-{name}", "/classify/image", expect, data, "image/png"))
    for name, first, second, expect in FRAME_PAIRS:
        cases.append(RestCase(f"flow-{name}", "/flow", expect,
                              files=[("frame1", ("1.png", first)), ("frame2", ("2.png", second))]))
    return cases


REST_CASES: list[RestCase] = [*REST_TEXT, *REST_FILL_MASK, *REST_MULTIPART, *rest_image_cases()]

# -- gRPC -----------------------------------------------------------------------------------------------------

GRPC_CODE_OF = {200: "OK", 400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 413: "INVALID_ARGUMENT",
                415: "INVALID_ARGUMENT", 422: "INVALID_ARGUMENT", 429: "RESOURCE_EXHAUSTED"}


@dataclasses.dataclass(frozen=True)
class GrpcCase:
    """``request`` is a message, raw bytes (sent unparsed), or a factory of a stream's messages."""

    name: str
    rpc: str
    request: object
    expect: tuple[int, str | None]  # as REST would answer; mapped with GRPC_CODE_OF


def raw_frame(height: int, width: int, rgb: bytes | None = None) -> pb.Frame:
    return pb.Frame(raw=pb.RawFrame(height=height, width=width, rgb=bytes(height * width * 3) if rgb is None else rgb))


def pcm(samples: np.ndarray, rate: int = VIDEO_RATE, channels: int = 0) -> pb.Audio:
    return pb.Audio(raw=pb.RawAudio(pcm_f32le=samples.astype("<f4").tobytes(), sample_rate=rate, channels=channels))


def stream(*pieces: pb.MediaPiece | pb.StreamConfig | None, config: pb.StreamConfig | None = None
           ) -> Callable[[], list[pb.ReconstructVideoRequest]]:
    """A video stream: its config (unless the first piece replaces it), then media pieces."""
    def messages() -> list[pb.ReconstructVideoRequest]:
        out = [pb.ReconstructVideoRequest(config=config or pb.StreamConfig(chunks_per_window=1))]
        for piece in pieces:
            if isinstance(piece, pb.StreamConfig):
                out.append(pb.ReconstructVideoRequest(config=piece))
            elif piece is None:
                out.append(pb.ReconstructVideoRequest())
            else:
                out.append(pb.ReconstructVideoRequest(media=piece))
        return out

    return messages


def frames(count: int, height: int = 32, width: int = 32) -> pb.MediaPiece:
    return pb.MediaPiece(frames=[raw_frame(height, width) for _ in range(count)])


def with_audio(count: int, audio: pb.Audio) -> pb.MediaPiece:
    return pb.MediaPiece(frames=frames(count).frames, audio=audio)


SILENCE = np.zeros(4 * SAMPLES_PER_FRAME, np.float32)
WAV_WRONG_RATE = pb.Audio(encoded=sound(tone(0.1, rate=16_000), rate=16_000))
WAV_NAN = pb.Audio(encoded=sound(np.full(256, np.nan, np.float32), rate=VIDEO_RATE, subtype="FLOAT"))

VIDEO_STREAMS: list[GrpcCase] = [
    GrpcCase("video-first_message_not_config",
             "ReconstructVideo", lambda: [pb.ReconstructVideoRequest(media=frames(4))], (422, "no_config")),
    GrpcCase("video-empty_stream", "ReconstructVideo", lambda: [], (422, "no_config")),
    GrpcCase("video-no_frames", "ReconstructVideo", stream(), (400, "no_frames")),
    GrpcCase("video-only_empty_pieces", "ReconstructVideo", stream(pb.MediaPiece(), pb.MediaPiece()),
             (400, "no_frames")),
    GrpcCase("video-too_many_frames", "ReconstructVideo", stream(*[frames(8)] * 9), (413, "too_many_frames")),
    GrpcCase("video-frames_of_different_sizes", "ReconstructVideo", stream(frames(2), frames(2, 40, 32)),
             (400, "invalid_input")),
    GrpcCase("video-raw_frame_wrong_byte_count", "ReconstructVideo",
             stream(pb.MediaPiece(frames=[raw_frame(32, 32, b"\x00" * 10)])), (400, "invalid_input")),
    GrpcCase("video-raw_frame_huge_header", "ReconstructVideo",
             stream(pb.MediaPiece(frames=[raw_frame(65_535, 65_535, b"")])), (413, "too_large")),
    GrpcCase("video-frame_without_data", "ReconstructVideo", stream(pb.MediaPiece(frames=[pb.Frame()])),
             (400, "invalid_input")),
    GrpcCase("video-encoded_frame_bomb", "ReconstructVideo",
             stream(pb.MediaPiece(frames=[pb.Frame(encoded=png_with_header(30_000, 30_000))])), (413, "too_large")),
    GrpcCase("video-encoded_frame_truncated", "ReconstructVideo",
             stream(pb.MediaPiece(frames=[pb.Frame(encoded=half(FRAME))])), (400, "invalid_input")),
    GrpcCase("video-audio_empty", "ReconstructVideo", stream(with_audio(4, pcm(np.zeros(0, np.float32)))),
             (400, "invalid_input")),
    # Audio at another rate is resampled: 4 frames' samples at 1,600 Hz, sent as if at 48 kHz, are 30 times too few.
    GrpcCase("video-audio_of_another_rate_too_short", "ReconstructVideo",
             stream(with_audio(4, pcm(SILENCE, rate=48_000))), (400, "audio_length")),
    GrpcCase("video-audio_at_two_rates", "ReconstructVideo",
             stream(with_audio(4, pcm(SILENCE)), pb.MediaPiece(audio=pcm(SILENCE, rate=8_000))),
             (400, "invalid_input")),
    GrpcCase("video-audio_without_rate", "ReconstructVideo", stream(with_audio(4, pcm(SILENCE, rate=0))),
             (400, "invalid_input")),
    GrpcCase("video-audio_nan", "ReconstructVideo", stream(with_audio(4, pcm(np.full(256, np.nan, np.float32)))),
             (400, "invalid_input")),
    GrpcCase("video-audio_inf", "ReconstructVideo", stream(with_audio(4, pcm(np.full(256, np.inf, np.float32)))),
             (400, "invalid_input")),
    GrpcCase("video-audio_nine_channels", "ReconstructVideo",
             stream(with_audio(4, pcm(np.zeros(9 * 256, np.float32), channels=9))), (400, "invalid_input")),
    GrpcCase("video-audio_odd_bytes_for_two_channels", "ReconstructVideo",
             stream(with_audio(4, pcm(np.zeros(3, np.float32), channels=2))), (400, "invalid_input")),
    GrpcCase("video-audio_longer_than_the_limit", "ReconstructVideo",
             stream(with_audio(4, pcm(np.zeros(VIDEO_RATE * 200, np.float32)))), (413, "too_large")),
    GrpcCase("video-audio_longer_than_the_frames", "ReconstructVideo",
             stream(with_audio(4, pcm(np.zeros(VIDEO_RATE * 60, np.float32)))), (413, "too_much_audio")),
    GrpcCase("video-wav_of_another_rate_too_short", "ReconstructVideo", stream(with_audio(4, WAV_WRONG_RATE)),
             (400, "audio_length")),
    GrpcCase("video-wav_with_nan", "ReconstructVideo", stream(with_audio(4, WAV_NAN)), (400, "invalid_input")),
    GrpcCase("video-audio_not_a_sound_file", "ReconstructVideo",
             stream(with_audio(4, pb.Audio(encoded=b"RIFF garbage"))), (415, "unsupported_media_type")),
    GrpcCase("video-second_config", "ReconstructVideo", stream(frames(4), pb.StreamConfig()),
             (422, "invalid_request")),
    GrpcCase("video-message_with_neither", "ReconstructVideo", stream(None), (422, "invalid_request")),
    GrpcCase("video-zero_chunks_per_window", "ReconstructVideo",
             stream(frames(4), config=pb.StreamConfig(chunks_per_window=0)), (422, "invalid_request")),
    GrpcCase("video-huge_chunks_per_window", "ReconstructVideo",
             stream(frames(4), config=pb.StreamConfig(chunks_per_window=2**32 - 1)), (422, "invalid_request")),
    GrpcCase("video-path_traversal_model", "ReconstructVideo",
             stream(frames(4), config=pb.StreamConfig(model="../video-autoencoder")), (404, "model_not_found")),
    GrpcCase("video-sixteen_frames_at_the_pixel_limit_in_one_message", "ReconstructVideo",
             stream(pb.MediaPiece(frames=[pb.Frame(encoded=PNG_AT_LIMIT)] * 4 + [pb.Frame(encoded=JPEG_AT_LIMIT)] * 12)),
             OK),
    GrpcCase("video-flac_claiming_2**36_samples", "ReconstructVideo",
             stream(with_audio(4, pb.Audio(encoded=flac_with_total(SILENCE, 2**36 - 1)))), (413, "too_large")),
    GrpcCase("video-flac_of_unknown_length", "ReconstructVideo",
             stream(with_audio(4, pb.Audio(encoded=flac_with_total(SILENCE, 0)))), (413, "too_large")),
    GrpcCase("video-flac_two_minutes_of_eight_channels_in_2_kb", "ReconstructVideo",
             stream(with_audio(4, pb.Audio(encoded=sound(FLAC_LONG_SILENCE, rate=VIDEO_RATE, fmt="FLAC")))),
             (413, "too_much_audio")),
    GrpcCase("video-wav_claiming_2**31_frames_read_as_what_it_holds", "ReconstructVideo",
             stream(with_audio(4, pb.Audio(encoded=wav_claiming_frames(SILENCE, 2**31)))), OK),
    GrpcCase("video-audio_with_frames_served", "ReconstructVideo",
             stream(with_audio(4, pcm(np.linspace(-2, 2, 4 * SAMPLES_PER_FRAME, dtype=np.float32)))), OK),
]

GRPC_TEXT: list[GrpcCase] = [
    GrpcCase("text-truncated_wire_format", "ClassifyText", b"\x0a\x09ab", (400, "malformed_message")),
    GrpcCase("text-invalid_utf8_string", "ClassifyText", b"\x0a\x02\xff\xfe", (400, "malformed_message")),
    GrpcCase("text-garbage_bytes", "ClassifyText", bytes(range(256)) * 4, (400, "malformed_message")),
    GrpcCase("text-no_texts", "ClassifyText", pb.ClassifyTextRequest(), (422, "invalid_request")),
    GrpcCase("text-too_many_texts", "ClassifyText", pb.ClassifyTextRequest(texts=["a"] * 257), (422, "invalid_request")),
    GrpcCase("text-empty_text", "ClassifyText", pb.ClassifyTextRequest(texts=["ok", ""]), (400, "empty_text")),
    GrpcCase("text-top_k_zero", "ClassifyText", pb.ClassifyTextRequest(texts=["a"], top_k=0), (422, "invalid_request")),
    GrpcCase("text-top_k_max_uint32", "ClassifyText", pb.ClassifyTextRequest(texts=["a"], top_k=2**32 - 1),
             (422, "invalid_request")),
    GrpcCase("text-nul_bytes", "ClassifyText", pb.ClassifyTextRequest(texts=["a\x00b"]), OK),
    GrpcCase("text-at_the_limit", "ClassifyText", pb.ClassifyTextRequest(texts=[AT_LIMIT]), OK),
    GrpcCase("text-past_the_limit", "ClassifyText", pb.ClassifyTextRequest(texts=[AT_LIMIT + "é"]),
             (413, "text_too_long")),
    GrpcCase("text-path_traversal_model", "ClassifyText",
             pb.ClassifyTextRequest(texts=["a"], model="/etc/passwd"), (404, "model_not_found")),
    GrpcCase("mask-empty", "FillMask", pb.FillMaskRequest(), (400, "empty_text")),
    GrpcCase("mask-no_mask", "FillMask", pb.FillMaskRequest(text="abc"), (400, "no_mask")),
    GrpcCase("mask-span_reversed", "FillMask", pb.FillMaskRequest(text="abc", mask_spans=[pb.ByteSpan(start=2, end=1)]),
             (400, "invalid_input")),
    GrpcCase("mask-span_huge", "FillMask",
             pb.FillMaskRequest(text="abc", mask_spans=[pb.ByteSpan(start=0, end=2**32 - 1)]), (400, "invalid_input")),
    GrpcCase("mask-too_many_spans", "FillMask",
             pb.FillMaskRequest(text="abc", mask_spans=[pb.ByteSpan(start=0, end=1)] * 4097), (422, "invalid_request")),
    GrpcCase("mask-past_the_limit", "FillMask", pb.FillMaskRequest(text="[MASK]" + "b" * TEXT_LIMIT),
             (413, "text_too_long")),
    GrpcCase("mask-nul_and_marker", "FillMask", pb.FillMaskRequest(text="\x00[MASK]"), OK),
    GrpcCase("flow-empty_request", "EstimateFlow", pb.EstimateFlowRequest(), (400, "invalid_input")),
    GrpcCase("list-garbage_bytes", "ListModels", b"\xff\xff\xff", (400, "malformed_message")),
]


def grpc_media_cases() -> list[GrpcCase]:
    cases = [GrpcCase(f"image-{name}", "ClassifyImage", pb.ClassifyImageRequest(image=data), expect)
             for name, data, expect in IMAGES]
    cases += [GrpcCase(f"flow-{name}", "EstimateFlow", pb.EstimateFlowRequest(frame1=first, frame2=second), expect)
              for name, first, second, expect in FRAME_PAIRS]
    return cases


GRPC_CASES: list[GrpcCase] = [*GRPC_TEXT, *grpc_media_cases(), *VIDEO_STREAMS]

