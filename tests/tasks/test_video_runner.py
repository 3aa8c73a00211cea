"""VideoRunner behind a real batcher: decodes of different sizes queued together are never stacked together."""

import asyncio

import torch

from perceiver_serve.engine import BatchingConfig, DynamicBatcher
from perceiver_serve.modeling import load_model
from perceiver_serve.tasks.video import DecodeChunk, EncodeWindow, VideoOptions, VideoRunner

from ..numerics import FP32, assert_close, assert_distinct
from ..reactive import reactive_models


async def test_chunks_of_different_sizes_queued_together_each_get_their_own_decode():
    model = load_model(reactive_models() / "video-autoencoder" / "checkpoint")
    config = model.config
    # A long fill delay: the three decodes below are surely queued together when a batch forms.
    batcher = DynamicBatcher("video", VideoRunner(model, VideoOptions()),
                             BatchingConfig(max_batch_size=8, max_delay_ms=300, max_queue=64, timeout_ms=60_000))
    batcher.start()
    try:
        generator = torch.Generator().manual_seed(0)
        frames, size = config.num_frames, config.image_size
        window = EncodeWindow(torch.rand(frames, 3, size, size, generator=generator),
                              torch.rand(frames * config.audio_samples_per_frame, generator=generator) * 2 - 1)
        latents = await batcher.submit(window)
        none = torch.zeros(0, dtype=torch.long)
        chunks = [DecodeChunk(latents, torch.arange(0, 10), none), DecodeChunk(latents, torch.arange(10, 23), none),
                  DecodeChunk(latents, none, torch.arange(0, 3)), DecodeChunk(latents, none, none, label=True)]
        first, second, sound, labels = await asyncio.gather(*(batcher.submit(chunk) for chunk in chunks))
    finally:
        batcher.stop()
    with torch.no_grad():
        whole = model.decode(latents[None], torch.arange(0, 23), torch.arange(0, 3), label=True)
    assert_close(first["image"], whole["image"][0, :10], FP32, "the first chunk")
    assert_close(second["image"], whole["image"][0, 10:23], FP32, "the second chunk")
    assert_distinct(second["image"][:10], first["image"], FP32, "the other chunk's pixels")
    assert_close(sound["audio"], whole["audio"][0], FP32, "the audio chunk")
    assert_close(labels["label"], whole["label"][0], FP32, "the labels")
