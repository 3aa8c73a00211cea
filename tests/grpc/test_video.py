"""ReconstructVideo against an in-process server, whose decoding the tests can watch."""

from __future__ import annotations

import gc
import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
import soundfile
import torch
from PIL import Image

from perceiver_serve.modeling import load_model, video_frames
from perceiver_serve.pb.perceiver.v1 import perceiver_pb2 as pb

from ..numerics import FP32, assert_close, distinguishable
from ..reactive import reactive_models
from ..support import wait_for
from .conftest import AUTH

MODEL = "video-autoencoder"
FRAMES_PER_WINDOW, SIZE, SAMPLES_PER_FRAME, RATE = 4, 32, 64, 1600
SAMPLES_PER_WINDOW = FRAMES_PER_WINDOW * SAMPLES_PER_FRAME
MAX_FRAMES = 64  # max_frames_per_stream of the in-process repository
PRODUCER, READER = "reconstruct.<locals>.produce", "reconstruct.<locals>.read"  # the stream's tasks


def clip(frames: int, seed: int = 0, height: int = 40, width: int = 48) -> tuple[list[np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    pictures = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(frames)]
    return pictures, rng.uniform(-0.9, 0.9, frames * SAMPLES_PER_FRAME).astype(np.float32)


def raw_frame(picture: np.ndarray) -> pb.Frame:
    return pb.Frame(raw=pb.RawFrame(height=picture.shape[0], width=picture.shape[1], rgb=picture.tobytes()))


def png_frame(picture: np.ndarray) -> pb.Frame:
    out = io.BytesIO()
    Image.fromarray(picture).save(out, format="PNG")
    return pb.Frame(encoded=out.getvalue())


def raw_audio(samples: np.ndarray, rate: int = RATE) -> pb.Audio:
    return pb.Audio(raw=pb.RawAudio(pcm_f32le=samples.astype("<f4").tobytes(), sample_rate=rate))


def wav_audio(samples: np.ndarray, rate: int = RATE) -> pb.Audio:
    out = io.BytesIO()
    soundfile.write(out, samples, rate, format="WAV", subtype="FLOAT")
    return pb.Audio(encoded=out.getvalue())


def config(**fields) -> pb.ReconstructVideoRequest:
    return pb.ReconstructVideoRequest(config=pb.StreamConfig(**fields))


def media(frames=(), audio: pb.Audio | None = None) -> pb.ReconstructVideoRequest:
    return pb.ReconstructVideoRequest(media=pb.MediaPiece(frames=list(frames), audio=audio))


def plain_stream(frames: int, chunks: int, seed: int = 0):
    """Config declaring no audio, then the frames four at a time as raw RGB."""
    pictures, _ = clip(frames, seed, SIZE, SIZE)
    yield config(chunks_per_window=chunks, audio=pb.StreamConfig.NO_AUDIO)
    for start in range(0, frames, 4):
        yield media([raw_frame(p) for p in pictures[start:start + 4]])


# -- what the model computes directly ---------------------------------------------------------------

@pytest.fixture(scope="module")
def model():
    return load_model(reactive_models() / MODEL / "checkpoint")


def direct_windows(model, pictures: list[np.ndarray], audio: np.ndarray) -> list[dict[str, np.ndarray]]:
    """Each window encoded once and decoded whole (padded as the server pads the last one)."""
    images = video_frames(np.stack(pictures), SIZE)
    out = []
    for start in range(0, len(pictures), FRAMES_PER_WINDOW):
        window = images[start:start + FRAMES_PER_WINDOW]
        window = torch.cat([window, window[-1:].expand(FRAMES_PER_WINDOW - len(window), -1, -1, -1)])
        sound = np.zeros(SAMPLES_PER_WINDOW, np.float32)
        piece = audio[start * SAMPLES_PER_FRAME:(start + FRAMES_PER_WINDOW) * SAMPLES_PER_FRAME]
        sound[:len(piece)] = piece
        with torch.no_grad():
            latents = model.encode(window[None], torch.from_numpy(sound)[None])
            decoded = model.decode(latents, torch.arange(model.num_image_points), torch.arange(model.num_audio_points),
                                   label=True)
        probs = torch.softmax(decoded["label"][0].double(), -1).numpy()
        out.append({"image": decoded["image"][0].numpy(), "audio": decoded["audio"][0].numpy(), "probs": probs})
    return out


def reassemble(responses) -> tuple[pb.StreamStarted, list[dict]]:
    """The client's side: place every chunk by its pixel and sample ranges."""
    started, windows = None, {}
    for message in responses:
        kind = message.WhichOneof("kind")
        if kind == "started":
            started = message.started
            continue
        assert started is not None, "chunks before started"
        grid = started.grid
        points = grid.frames * grid.height * grid.width
        event = getattr(message, kind)
        window = windows.setdefault(event.window, {"image": np.full((points, 3), np.nan, np.float32),
                                                   "audio": np.full(started.audio_samples_per_window, np.nan,
                                                                    np.float32), "chunks": []})
        if kind == "labels":
            window["labels"] = event
            continue
        assert (event.grid.frames, event.grid.height, event.grid.width) == (grid.frames, grid.height, grid.width)
        rgb = np.frombuffer(event.rgb, "<f4").reshape(-1, 3)
        sound = np.frombuffer(event.audio, "<f4")
        assert (len(rgb), len(sound)) == (event.pixel_count, event.audio_count)
        window["image"][event.pixel_start:event.pixel_start + event.pixel_count] = rgb
        window["audio"][event.audio_start:event.audio_start + event.audio_count] = sound
        window["chunks"].append(event)
    return started, [windows[i] for i in sorted(windows)]


def interleaved(pictures, audio, fields):
    return [
        config(model=MODEL, chunks_per_window=3, top_k=3, **fields),
        media([raw_frame(p) for p in pictures[:3]], raw_audio(audio[:100])),
        media([png_frame(p) for p in pictures[3:7]], raw_audio(audio[100:300])),
        media(audio=raw_audio(audio[300:400])),
        media([raw_frame(p) for p in pictures[7:]], wav_audio(audio[400:])),
    ]


def frames_then_audio(pictures, audio, fields):
    """As the README's example: every frame first, then the audio."""
    return [config(model=MODEL, chunks_per_window=3, top_k=3, **fields),
            *(media([raw_frame(p) for p in pictures[i:i + 4]]) for i in range(0, len(pictures), 4)),
            media(audio=raw_audio(audio[:300])), media(audio=wav_audio(audio[300:]))]


def audio_then_frames(pictures, audio, fields):
    return [config(model=MODEL, chunks_per_window=3, top_k=3, **fields), media(audio=raw_audio(audio)),
            *(media([png_frame(p) for p in pictures[i:i + 3]]) for i in range(0, len(pictures), 3))]


def reconstruct_and_compare(stub, model, seed: int, order=interleaved, **fields) -> None:
    pictures, audio = clip(10, seed)  # two whole windows and a padded one of two frames
    requests = order(pictures, audio, fields)
    started, windows = reassemble(stub.ReconstructVideo(iter(requests), metadata=AUTH, timeout=60))
    assert (started.model, started.sample_rate, started.chunks_per_window) == (MODEL, RATE, 3)
    assert (started.grid.frames, started.grid.height, started.grid.width) == (FRAMES_PER_WINDOW, SIZE, SIZE)
    expected = direct_windows(model, pictures, audio)
    assert len(windows) == len(expected) == 3
    for kind in ("image", "audio"):  # a chunk placed in another window would show
        assert distinguishable(np.stack([w[kind] for w in expected]), FP32 * np.abs(expected[0][kind]).max()) == 1.0
    for index, (got, want) in enumerate(zip(windows, expected)):
        padded = index == 2
        assert [c.chunk for c in got["chunks"]] == [0, 1, 2]
        assert all(c.padded == padded for c in got["chunks"])
        assert_close(got["image"], want["image"], FP32, f"window {index} image")
        assert_close(got["audio"], want["audio"], FP32, f"window {index} audio")
        labels = got["labels"]
        assert (labels.window, labels.padded, labels.real_frames) == (index, padded, 2 if padded else 4)
        best = np.lexsort((np.arange(len(want["probs"])), -want["probs"]))[:3]
        assert [p.index for p in labels.predictions] == best.tolist()
        assert [p.score for p in labels.predictions] == pytest.approx(want["probs"][best].tolist(), abs=1e-6)
        assert [p.label for p in labels.predictions] == [model.config.id2label[i] for i in best]


def test_streamed_reconstruction_equals_whole_window_decode(local, model):
    reconstruct_and_compare(local, model, seed=1)


@pytest.mark.parametrize("order", [frames_then_audio, audio_then_frames])
@pytest.mark.parametrize("mode", ["AUDIO_MAY_FOLLOW", "AUDIO_FOLLOWS"])
def test_frames_and_audio_may_come_in_any_order(local, model, order, mode):
    reconstruct_and_compare(local, model, seed=4, order=order, audio=getattr(pb.StreamConfig, mode))


def test_audio_at_another_rate_is_resampled_on_the_server(local, model):
    """16 kHz audio, in pieces, as one stream resampled to the model's 1,600 Hz."""
    import soxr

    pictures, _ = clip(8, 6)
    fast = np.random.default_rng(6).uniform(-0.5, 0.5, 8 * SAMPLES_PER_FRAME * 10).astype(np.float32)
    requests = [config(model=MODEL, chunks_per_window=1), media([raw_frame(p) for p in pictures]),
                media(audio=raw_audio(fast[:3000], 16_000)), media(audio=wav_audio(fast[3000:], 16_000))]
    _, windows = reassemble(local.ReconstructVideo(iter(requests), metadata=AUTH, timeout=60))
    expected = direct_windows(model, pictures, soxr.resample(fast, 16_000, RATE, quality="HQ"))
    assert len(windows) == len(expected) == 2
    for got, want in zip(windows, expected):
        assert not got["labels"].padded
        np.testing.assert_allclose(got["audio"], want["audio"], atol=1e-3, rtol=0)


def test_without_audio_declared_windows_are_decoded_as_their_frames_arrive(local):
    pictures, _ = clip(8, 7, SIZE, SIZE)
    first_window_done = threading.Event()

    def requests():
        yield config(chunks_per_window=1, audio=pb.StreamConfig.NO_AUDIO)
        yield media([raw_frame(p) for p in pictures[:4]])
        first_window_done.wait(60)  # the stream is still open: the window was cut on its frames alone
        yield media([raw_frame(p) for p in pictures[4:]])

    kinds = []
    for message in local.ReconstructVideo(requests(), metadata=AUTH, timeout=60):
        kinds.append(message.WhichOneof("kind"))
        if kinds[-1] == "labels":
            first_window_done.set()
    assert kinds == ["started"] + ["chunk", "labels"] * 2


def test_a_stream_that_may_have_audio_but_sends_none_is_silent(local, model):
    pictures, _ = clip(4, 8)
    requests = [config(model=MODEL, chunks_per_window=1), media([raw_frame(p) for p in pictures])]
    _, (window,) = reassemble(local.ReconstructVideo(iter(requests), metadata=AUTH, timeout=60))
    (want,) = direct_windows(model, pictures, np.zeros(0, np.float32))
    np.testing.assert_allclose(window["audio"], want["audio"], atol=1e-4, rtol=0)


def test_concurrent_streams_each_equal_their_direct_decode(local, model):
    with ThreadPoolExecutor(2) as pool:
        for done in [pool.submit(reconstruct_and_compare, local, model, seed) for seed in (2, 3)]:
            done.result()


def test_modalities_can_be_turned_off(local):
    pictures, _ = clip(4, 0, SIZE, SIZE)
    requests = [config(chunks_per_window=2, return_image=False), media([raw_frame(p) for p in pictures])]
    _, (window,) = reassemble(local.ReconstructVideo(iter(requests), metadata=AUTH, timeout=60))
    assert all(c.pixel_count == 0 and not c.rgb and c.audio_count for c in window["chunks"])
    requests[0] = config(return_image=False, return_audio=False)
    kinds = [m.WhichOneof("kind") for m in local.ReconstructVideo(iter(requests), metadata=AUTH, timeout=60)]
    assert kinds == ["started", "labels"]


# -- streaming, cancellation, flow control -----------------------------------------------------------

def test_first_chunk_arrives_before_the_last_is_decoded(local, inproc):
    runner = inproc.served(MODEL).runner
    chunks, windows = 64, 2
    total = windows * (chunks + 1)  # each window: its chunks and one label decode
    before = runner.decoded_chunks
    started = time.perf_counter()
    responses = local.ReconstructVideo(plain_stream(windows * FRAMES_PER_WINDOW, chunks), metadata=AUTH, timeout=60)
    first = next(m for m in responses if m.WhichOneof("kind") == "chunk")
    decoded_at_first = runner.decoded_chunks - before
    seconds = time.perf_counter() - started
    rest = sum(1 for m in responses if m.WhichOneof("kind") == "chunk")
    assert (first.chunk.window, first.chunk.chunk) == (0, 0)
    assert rest == windows * chunks - 1
    assert runner.decoded_chunks - before == total
    assert decoded_at_first < chunks, f"first chunk came after {decoded_at_first} of {total} decodes ({seconds:.3f} s)"


def settled(count, quiet: float = 0.75, timeout: float = 60.0) -> int:
    """``count()`` once it has not changed for ``quiet`` seconds: waits on the state, however slow
    the machine, instead of guessing how long the work in flight takes."""
    deadline = time.monotonic() + timeout
    value, since = count(), time.monotonic()
    while time.monotonic() - since < quiet:
        assert time.monotonic() < deadline, f"still changing after {timeout:.0f} s (at {value})"
        time.sleep(0.05)
        if (now := count()) != value:
            value, since = now, time.monotonic()
    return value


def test_cancelling_stops_decoding(local, inproc):
    # A task that is parked for good (waiting on a queue nothing feeds) can vanish from
    # asyncio.all_tasks() when the cyclic garbage collector frees it (asyncio holds tasks weakly),
    # which would hide exactly the leak this test looks for: no collection while it looks.
    gc.disable()
    try:
        _cancel_and_check(local, inproc)
    finally:
        gc.enable()


def _cancel_and_check(local, inproc):
    runner = inproc.served(MODEL).runner
    before = runner.decoded_chunks
    responses = local.ReconstructVideo(plain_stream(MAX_FRAMES, 64), metadata=AUTH, timeout=60)
    for _ in range(5):
        next(responses)
    responses.cancel()
    stopped = settled(lambda: runner.decoded_chunks)  # work already in a batch finishes, then nothing
    assert stopped - before < 16 * 65 // 2, "decoding ran on after the cancel"
    assert inproc.metric("perceiver_inflight_requests", {"protocol": "grpc"}) == 0
    # The backlog bound alone would also stop decoding; the stream's tasks must be gone, not parked.
    for task in PRODUCER, READER:
        assert settled(lambda task=task: inproc.tasks_named(task)) == 0, f"{task} still runs after the cancel"
    assert inproc.metric("perceiver_requests_total", {"model": MODEL, "endpoint": "ReconstructVideo",
                                                      "protocol": "grpc", "status": "CANCELLED"}) >= 1


def test_a_client_that_stops_reading_holds_the_server_at_a_bounded_backlog(make_stub, inproc):
    """With the client's HTTP/2 window fixed at 64 KiB (no BDP growth), ~50 KB chunks back up at once."""
    stub = make_stub({"grpc.http2.bdp_probe": 0})
    runner = inproc.served(MODEL).runner
    windows = MAX_FRAMES // FRAMES_PER_WINDOW
    total = windows * 2  # one chunk and one label decode per window
    before = runner.decoded_chunks
    responses = stub.ReconstructVideo(plain_stream(MAX_FRAMES, 1), metadata=AUTH, timeout=60)
    next(responses)  # started; then read nothing
    backlog = settled(lambda: runner.decoded_chunks) - before  # it stops by itself, or this times out
    max_undelivered = runner.options.max_undelivered_chunks
    assert backlog <= 2 * max_undelivered + 4 < total
    assert sum(1 for m in responses if m.WhichOneof("kind") == "chunk") == windows  # reading resumes it


def test_a_client_that_stops_reading_is_ended_and_lets_its_model_go(make_stub, inproc, monkeypatch):
    """Still connected but reading nothing: after max_stream_idle_s the server ends the stream (its
    tasks, its model copy and the in-flight gauge let go) instead of holding it while the client stays."""
    runner = inproc.served(MODEL).runner
    monkeypatch.setattr(runner, "options", runner.options.model_copy(update={"max_stream_idle_s": 0.5}))
    stub = make_stub({"grpc.http2.bdp_probe": 0})

    def ended() -> float:
        return inproc.metric("perceiver_requests_total", {"model": MODEL, "endpoint": "ReconstructVideo",
                                                          "protocol": "grpc", "status": "DEADLINE_EXCEEDED"})

    before = ended()
    responses = stub.ReconstructVideo(plain_stream(MAX_FRAMES, 1), metadata=AUTH, timeout=60)
    assert next(responses).WhichOneof("kind") == "started"  # then read nothing
    wait_for(lambda: ended() > before, 30, "the server ending the stream nobody reads")
    assert inproc.metric("perceiver_inflight_requests", {"protocol": "grpc"}) == 0
    for task in PRODUCER, READER:
        assert settled(lambda task=task: inproc.tasks_named(task)) == 0, f"{task} still runs after the stream ended"
    with pytest.raises(grpc.RpcError) as info:
        for _ in responses:  # what was written before the stall still arrives, then the status
            pass
    error = info.value
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED, error.details()
    assert "read nothing" in error.details() and "max_stream_idle_s" in error.details()


# -- bad streams -------------------------------------------------------------------------------------

def frames_of(count: int, height: int = SIZE, width: int = SIZE) -> list[pb.Frame]:
    return [raw_frame(p) for p in clip(count, 5, height, width)[0]]


BAD_STREAMS = {
    "no messages": ([], grpc.StatusCode.INVALID_ARGUMENT, "no_config"),
    "no config": ([media(frames_of(4))], grpc.StatusCode.INVALID_ARGUMENT, "no_config"),
    "config twice": ([config(), config()], grpc.StatusCode.INVALID_ARGUMENT, "invalid_request"),
    "empty message": ([config(), pb.ReconstructVideoRequest()], grpc.StatusCode.INVALID_ARGUMENT, "invalid_request"),
    "unknown model": ([config(model="nope"), media(frames_of(4))], grpc.StatusCode.NOT_FOUND, "model_not_found"),
    "model of another task": ([config(model="text-sentiment")], grpc.StatusCode.NOT_FOUND, "wrong_task"),
    "zero chunks": ([config(chunks_per_window=0)], grpc.StatusCode.INVALID_ARGUMENT, "invalid_request"),
    "top_k too big": ([config(top_k=5000)], grpc.StatusCode.INVALID_ARGUMENT, "invalid_request"),
    "no frames": ([config()], grpc.StatusCode.INVALID_ARGUMENT, "no_frames"),
    "frames of two sizes": ([config(), media(frames_of(2) + frames_of(1, SIZE, SIZE + 2))],
                            grpc.StatusCode.INVALID_ARGUMENT, "invalid_input"),
    "raw frame of the wrong length": ([config(), media([pb.Frame(raw=pb.RawFrame(height=8, width=8, rgb=bytes(100)))])],
                                      grpc.StatusCode.INVALID_ARGUMENT, "invalid_input"),
    "raw frame without a size": ([config(), media([pb.Frame(raw=pb.RawFrame(rgb=bytes(12)))])],
                                 grpc.StatusCode.INVALID_ARGUMENT, "invalid_input"),
    "frame that is no image": ([config(), media([pb.Frame(encoded=b"GIF89a but not really")])],
                               grpc.StatusCode.INVALID_ARGUMENT, "invalid_input"),
    "frame that is no format at all": ([config(), media([pb.Frame(encoded=b"hello")])],
                                       grpc.StatusCode.INVALID_ARGUMENT, "unsupported_media_type"),
    "frame without data": ([config(), media([pb.Frame()])], grpc.StatusCode.INVALID_ARGUMENT, "invalid_input"),
    "audio at two rates": ([config(), media(frames_of(4), wav_audio(np.zeros(2560, np.float32), 16_000)),
                            media(audio=raw_audio(np.zeros(256, np.float32)))],
                           grpc.StatusCode.INVALID_ARGUMENT, "invalid_input"),
    "resampled audio too short": ([config(), media(frames_of(4), raw_audio(np.zeros(256, np.float32), 8_000))],
                                  grpc.StatusCode.INVALID_ARGUMENT, "audio_length"),
    "audio after declaring none": ([config(audio=pb.StreamConfig.NO_AUDIO),
                                    media(frames_of(4), raw_audio(np.zeros(256, np.float32)))],
                                   grpc.StatusCode.INVALID_ARGUMENT, "unexpected_audio"),
    "declared audio never sent": ([config(audio=pb.StreamConfig.AUDIO_FOLLOWS), media(frames_of(4))],
                                  grpc.StatusCode.INVALID_ARGUMENT, "audio_length"),
    "raw audio without a rate": ([config(), media(frames_of(4), raw_audio(np.zeros(256, np.float32), 0))],
                                 grpc.StatusCode.INVALID_ARGUMENT, "invalid_input"),
    "raw audio of partial samples": ([config(), media(frames_of(4), pb.Audio(raw=pb.RawAudio(
        pcm_f32le=bytes(10), sample_rate=RATE)))], grpc.StatusCode.INVALID_ARGUMENT, "invalid_input"),
    "audio too short": ([config(), media(frames_of(6), raw_audio(np.zeros(200, np.float32)))],
                        grpc.StatusCode.INVALID_ARGUMENT, "audio_length"),
    "audio too long": ([config(), media(frames_of(2), raw_audio(np.zeros(1000, np.float32)))],
                       grpc.StatusCode.INVALID_ARGUMENT, "audio_length"),
    "unknown audio mode": ([config(audio=7)], grpc.StatusCode.INVALID_ARGUMENT, "invalid_request"),
    "audio without samples": ([config(), media(frames_of(4), pb.Audio())], grpc.StatusCode.INVALID_ARGUMENT,
                              "invalid_input"),
    "too many frames": ([config(), media(frames_of(MAX_FRAMES + 1, 8, 8))], grpc.StatusCode.INVALID_ARGUMENT,
                        "too_many_frames"),
}


@pytest.mark.parametrize("name", list(BAD_STREAMS))
def test_bad_stream_ends_with_the_right_status(local, name):
    requests, code, error_code = BAD_STREAMS[name]
    with pytest.raises(grpc.RpcError) as info:
        for _ in local.ReconstructVideo(iter(requests), metadata=AUTH, timeout=60):
            pass
    error = info.value
    assert (error.code(), dict(error.trailing_metadata()).get("x-error-code")) == (code, error_code), error.details()
    assert error.details()


def test_a_stream_that_goes_quiet_is_ended_and_lets_its_model_go(local, inproc, monkeypatch):
    """A client that stops sending without closing its stream is ended after the model's
    max_stream_idle_s (DEADLINE_EXCEEDED), not held open for as long as it stays connected."""
    runner = inproc.served(MODEL).runner
    monkeypatch.setattr(runner, "options", runner.options.model_copy(update={"max_stream_idle_s": 0.5}))
    resume = threading.Event()

    def stalls():
        yield config(chunks_per_window=2, audio=pb.StreamConfig.NO_AUDIO)
        yield media(frames_of(4))
        resume.wait(30)  # the client goes quiet, its stream still open

    started = time.monotonic()
    kinds = []
    try:
        with pytest.raises(grpc.RpcError) as info:
            for message in local.ReconstructVideo(stalls(), metadata=AUTH, timeout=60):
                kinds.append(message.WhichOneof("kind"))
    finally:
        resume.set()
    error = info.value
    assert (error.code(), dict(error.trailing_metadata()).get("x-error-code")) == \
        (grpc.StatusCode.DEADLINE_EXCEEDED, "deadline_exceeded"), error.details()
    assert "max_stream_idle_s" in error.details() and time.monotonic() - started < 20
    assert kinds == ["started", "chunk", "chunk", "labels"]  # what came before the silence was answered


def test_malformed_stream_message_is_invalid_argument(inproc):
    with grpc.insecure_channel(inproc.address) as ch:
        raw = ch.stream_stream("/perceiver.v1.Perceiver/ReconstructVideo")
        with pytest.raises(grpc.RpcError) as info:
            list(raw(iter([b"\x0a\x00", b"\x12\x05\x0a"]), metadata=AUTH, timeout=30))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "ReconstructVideoRequest" in info.value.details()


def test_chunks_sent_before_a_bad_message_reach_the_client(local):
    requests = [config(chunks_per_window=2, audio=pb.StreamConfig.NO_AUDIO), media(frames_of(4)),
                media([pb.Frame(encoded=b"junk")])]
    kinds = []
    with pytest.raises(grpc.RpcError) as info:
        for message in local.ReconstructVideo(_slowly(requests), metadata=AUTH, timeout=60):
            kinds.append(message.WhichOneof("kind"))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert kinds == ["started", "chunk", "chunk", "labels"]


def _slowly(requests):
    """Hold the last message back until the first window has surely been decoded."""
    *head, last = requests
    yield from head
    threading.Event().wait(1.0)
    yield last


def test_work_dropped_for_a_refused_stream_is_not_counted_as_cancelled(local, make_stub, inproc, monkeypatch):
    """Stream B's window waits behind stream A's held batch; B's next piece is bad, so B ends
    INVALID_ARGUMENT and its queued window is dropped: that is ``request_failed``, not a client's cancel."""
    served = inproc.served(MODEL)
    entered, gate = threading.Event(), threading.Event()
    run = served.runner.run

    def held(payloads):
        entered.set()
        gate.wait(60)
        return run(payloads)

    monkeypatch.setattr(served.runner, "run", held)

    def rejected(reason: str) -> float:
        return inproc.metric("perceiver_rejected_requests_total", {"model": MODEL, "reason": reason})

    before = {reason: rejected(reason) for reason in ("cancelled", "request_failed")}
    first = make_stub({}).ReconstructVideo(plain_stream(4, 1), metadata=AUTH, timeout=60)
    assert next(first).WhichOneof("kind") == "started"
    assert entered.wait(60)

    def bad_after_queued():
        yield config(chunks_per_window=1, audio=pb.StreamConfig.NO_AUDIO)
        yield media(frames_of(4))
        deadline = time.monotonic() + 60
        while served.batcher.queue_depth == 0 and time.monotonic() < deadline:  # B's window is queued
            time.sleep(0.02)
        yield media([pb.Frame(encoded=b"junk")])

    with pytest.raises(grpc.RpcError) as info:
        list(local.ReconstructVideo(bad_after_queued(), metadata=AUTH, timeout=60))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    gate.set()
    assert [m.WhichOneof("kind") for m in first] == ["chunk", "labels"]
    settled(lambda: served.batcher.queue_depth)
    assert rejected("request_failed") - before["request_failed"] == 1
    assert rejected("cancelled") == before["cancelled"]
