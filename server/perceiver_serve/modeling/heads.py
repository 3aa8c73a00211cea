"""The seven Perceiver IO task heads, each split into ``encode`` (inputs → latents) and ``decode``.

Class names equal the ``architectures`` entry of a Hugging Face ``config.json`` and the module
tree equals the reference's, so ``load_state_dict(strict=True)`` takes official checkpoints.
``forward`` composes ``encode`` and ``decode`` and returns what the reference returns as
``logits``; the split lets a server compute latents once and decode only what it needs
(masked bytes, one chunk of video) as many times as it likes.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch
from torch import nn

from .attention import Latents, PerceiverEncoder
from .config import PerceiverConfig
from .decoders import (
    ClassificationDecoder,
    CrossAttentionDecoder,
    FlowDecoder,
    FourierQueries,
    MultimodalDecoder,
    gather_rows,
)
from .kernels import Linear
from .position import FourierPositionEncoding, TrainablePositionEncoding
from .preprocessors import (
    AudioPreprocessor,
    ImagePreprocessor,
    MultimodalPreprocessor,
    OneHotPreprocessor,
    TextPreprocessor,
)


class PerceiverBody(nn.Module):
    """Preprocessor, latent array, encoder and decoder (HF: ``PerceiverModel``)."""

    def __init__(self, config: PerceiverConfig, input_preprocessor: nn.Module, decoder: nn.Module,
                 output_postprocessor: nn.Module | None = None) -> None:
        super().__init__()
        self.input_preprocessor = input_preprocessor
        self.embeddings = Latents(config.num_latents, config.d_latents)
        self.encoder = PerceiverEncoder(config, kv_dim=input_preprocessor.num_channels)
        self.decoder = decoder
        if output_postprocessor is not None:
            self.output_postprocessor = output_postprocessor

    def encode_tokens(self, tokens: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.encoder(self.embeddings(tokens.shape[0]), tokens, key_mask)


class PerceiverTaskModel(nn.Module):
    """Common surface of the task heads."""

    architecture: ClassVar[str]
    perceiver: PerceiverBody
    #: The precision it computes in (``load_model`` sets it: float32, bfloat16, float16 or int8) and,
    #: for a reduced one, how it compared with its float32 self (a ``precision.PrecisionCheck``).
    precision: str = "float32"
    precision_check = None
    #: Whether its encoder runs through ``torch.compile`` (see ``compiled``).
    compiled: bool = False

    def __init__(self, config: PerceiverConfig) -> None:
        super().__init__()
        self.config = config

    @property
    def dtype(self) -> torch.dtype:
        return self.perceiver.embeddings.latents.dtype

    def output_projections(self) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """Weights multiplied as linear maps outside any ``Linear`` module, with their biases (an int8
        model quantizes them too, see ``loading.quantize_int8``)."""
        return []

    @property
    def device(self) -> torch.device:
        return self.perceiver.embeddings.latents.device

    def probe(self) -> tuple[torch.Tensor | None, torch.Tensor]:
        """The output for a fixed, seeded input of the served size, as (logits or None, all values).

        A reduced-precision model is checked against its float32 self on it (see ``precision``).
        """
        out = self.probe_output(torch.Generator().manual_seed(0))
        if isinstance(out, dict):
            return out.get("label"), torch.cat([v.float().flatten() for v in out.values()])
        return (None if self.regression else out), out.float().flatten()

    #: Whether the output is a regression (no arg-max to compare), not logits.
    regression: ClassVar[bool] = False

    def probe_output(self, generator: torch.Generator) -> torch.Tensor | dict[str, torch.Tensor]:
        raise NotImplementedError


def _classification_decoder(config: PerceiverConfig) -> ClassificationDecoder:
    return ClassificationDecoder(config, num_channels=config.d_latents)


class _TextModel(PerceiverTaskModel):
    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Latents for byte ids ``(B, L)``; ``attention_mask`` (1 = real byte) hides padding."""
        tokens, _ = self.perceiver.input_preprocessor(input_ids)
        key_mask = None if attention_mask is None else attention_mask.bool()
        return self.perceiver.encode_tokens(tokens, key_mask)

    def probe_output(self, generator: torch.Generator) -> torch.Tensor:
        """Four texts of random bytes, up to 256 long, three of them padded."""
        length = min(256, self.config.max_position_embeddings)
        ids = torch.randint(6, self.config.vocab_size, (4, length), generator=generator)
        mask = torch.ones(4, length, dtype=torch.long)
        for row in range(1, 4):
            mask[row, length * (4 - row) // 4:] = 0
        return self(ids.to(self.device), mask.to(self.device))


class PerceiverForMaskedLM(_TextModel):
    architecture = "PerceiverForMaskedLM"

    def __init__(self, config: PerceiverConfig) -> None:
        super().__init__(config)
        self.perceiver = PerceiverBody(
            config,
            TextPreprocessor(config),
            CrossAttentionDecoder(
                config, num_channels=config.d_model,
                queries=TrainablePositionEncoding(config.max_position_embeddings, config.d_model),
                qk_channels=8 * 32, v_channels=config.d_model, num_heads=8, final_project=False,
            ),
        )
        self.embedding_decoder = EmbeddingDecoder(config.vocab_size)

    def output_projections(self) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """The byte embedding, transposed, maps the decoder's output to logits."""
        return [self.embedding_decoder.head(self.perceiver.input_preprocessor.embeddings.weight)]

    def decode(self, latents: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        """Byte logits ``(B, P, vocab)`` at ``positions`` (``(P,)`` or ``(B, P)``; default: all)."""
        decoder = self.perceiver.decoder
        (head,) = self.output_projections()
        return decoder(decoder.learned_queries(positions, latents.shape[0]), latents, head)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                positions: torch.Tensor | None = None) -> torch.Tensor:
        return self.decode(self.encode(input_ids, attention_mask), positions)


class EmbeddingDecoder(nn.Module):
    """Logits from hidden states through the transposed input embedding, plus a bias."""

    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def head(self, embedding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The output layer as (weight, bias), for the decoder to apply (see ``CrossAttentionDecoder``)."""
        return embedding, self.bias


class PerceiverForSequenceClassification(_TextModel):
    architecture = "PerceiverForSequenceClassification"

    def __init__(self, config: PerceiverConfig) -> None:
        super().__init__(config)
        self.perceiver = PerceiverBody(config, TextPreprocessor(config), _classification_decoder(config))

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.perceiver.decoder(latents)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.decode(self.encode(input_ids, attention_mask))


class _ImageClassifier(PerceiverTaskModel):
    def __init__(self, config: PerceiverConfig) -> None:
        super().__init__(config)
        self.perceiver = PerceiverBody(config, self._preprocessor(config), _classification_decoder(config))

    @staticmethod
    def _preprocessor(config: PerceiverConfig) -> ImagePreprocessor:
        raise NotImplementedError

    def encode(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Latents for normalised images ``(B, 3, H, W)``."""
        tokens, _ = self.perceiver.input_preprocessor(pixel_values)
        return self.perceiver.encode_tokens(tokens)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.perceiver.decoder(latents)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(pixel_values))

    def served_size(self) -> int:
        """The side of the square images this head serves (the learned one: its config's)."""
        return 224

    def probe_output(self, generator: torch.Generator) -> torch.Tensor:
        size = self.served_size()
        pixels = torch.randn(2, 3, size, size, generator=generator)
        return self(pixels.to(self.device, self.dtype))


class PerceiverForImageClassificationLearned(_ImageClassifier):
    architecture = "PerceiverForImageClassificationLearned"

    def served_size(self) -> int:
        return self.config.image_size

    @staticmethod
    def _preprocessor(config: PerceiverConfig) -> ImagePreprocessor:
        return ImagePreprocessor(
            prep_type="conv1x1", out_channels=256, project_pos_dim=256,
            position_embeddings=TrainablePositionEncoding(config.image_size**2, 256),
        )


class PerceiverForImageClassificationFourier(_ImageClassifier):
    architecture = "PerceiverForImageClassificationFourier"

    @staticmethod
    def _preprocessor(config: PerceiverConfig) -> ImagePreprocessor:
        return ImagePreprocessor(prep_type="pixels", position_embeddings=FourierPositionEncoding(64, (224, 224)))


class PerceiverForImageClassificationConvProcessing(_ImageClassifier):
    architecture = "PerceiverForImageClassificationConvProcessing"

    @staticmethod
    def _preprocessor(config: PerceiverConfig) -> ImagePreprocessor:
        return ImagePreprocessor(prep_type="conv", position_embeddings=FourierPositionEncoding(64, (56, 56)))


@dataclasses.dataclass
class FlowEncoding:
    """Latents of a frame pair plus the input tokens that serve as its decoder queries."""

    latents: torch.Tensor
    queries: torch.Tensor
    image_shape: tuple[int, int]


class PerceiverForOpticalFlow(PerceiverTaskModel):
    architecture = "PerceiverForOpticalFlow"

    def __init__(self, config: PerceiverConfig) -> None:
        super().__init__(config)
        preprocessor = ImagePreprocessor(
            prep_type="patches", temporal_downsample=2, conv_after_patching_in_channels=54,
            position_embeddings=FourierPositionEncoding(64, config.train_size),
        )
        decoder = FlowDecoder(config, num_channels=preprocessor.num_channels)
        self.perceiver = PerceiverBody(config, preprocessor, decoder)

    def encode(self, patches: torch.Tensor) -> FlowEncoding:
        """``patches``: ``(B, 2, 27, H, W)``, the 3×3 neighbourhood of every pixel of both frames."""
        tokens, _ = self.perceiver.input_preprocessor(patches)
        latents = self.perceiver.encode_tokens(tokens)
        return FlowEncoding(latents, tokens, (patches.shape[-2], patches.shape[-1]))

    def decode(self, encoding: FlowEncoding, index: torch.Tensor | None = None) -> torch.Tensor:
        """Flow ``(B, P, 2)`` at flat pixel indices ``index`` (``(P,)`` or ``(B, P)``), model units."""
        queries = gather_rows(encoding.queries, index, encoding.latents.shape[0])
        return self.perceiver.decoder(queries, encoding.latents)

    def decode_all(self, encoding: FlowEncoding, chunk_size: int = 16384) -> torch.Tensor:
        """The whole flow field ``(B, H, W, 2)``, decoded ``chunk_size`` pixels at a time."""
        n = encoding.queries.shape[1]
        parts = [
            self.decode(encoding, torch.arange(s, min(s + chunk_size, n), device=encoding.queries.device))
            for s in range(0, n, chunk_size)
        ]
        return torch.cat(parts, dim=1).reshape(-1, *encoding.image_shape, 2)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        return self.decode_all(self.encode(patches))

    regression = True

    def probe_output(self, generator: torch.Generator) -> torch.Tensor:
        """One frame pair at the training size; the flow of its first 4,096 pixels."""
        h, w = self.config.train_size
        patches = torch.randn(1, 2, 27, h, w, generator=generator).to(self.device, self.dtype)
        return self.decode(self.encode(patches), torch.arange(min(4096, h * w), device=self.device))


class PerceiverForMultimodalAutoencoding(PerceiverTaskModel):
    """Video + audio + label autoencoder; decoding any subset of output points from one encoding."""

    architecture = "PerceiverForMultimodalAutoencoding"

    def __init__(self, config: PerceiverConfig) -> None:
        super().__init__(config)
        n_audio = config.num_frames * config.audio_samples_per_frame
        video_grid = (config.num_frames, config.image_size, config.image_size)
        preprocessor = MultimodalPreprocessor(
            {
                "audio": AudioPreprocessor(
                    samples_per_patch=config.samples_per_patch,
                    position_embeddings=FourierPositionEncoding(192, (n_audio,)),
                ),
                "image": ImagePreprocessor(
                    prep_type="patches", spatial_downsample=4,
                    position_embeddings=FourierPositionEncoding(32, video_grid),
                ),
                "label": OneHotPreprocessor(config.num_labels),
            },
            min_padding_size=4,
            masked=("label",),
        )
        decoder = MultimodalDecoder(
            config,
            audio=FourierQueries((n_audio // config.samples_per_patch,), FourierPositionEncoding(192, (n_audio,))),
            image=FourierQueries(tuple(config.output_shape[1:]), FourierPositionEncoding(32, video_grid)),
        )
        postprocessor = MultimodalPostprocessor(config)
        self.perceiver = PerceiverBody(config, preprocessor, decoder, postprocessor)

    @property
    def num_image_points(self) -> int:
        return self.config.output_shape[1] * self.config.output_shape[2] * self.config.output_shape[3]

    @property
    def num_audio_points(self) -> int:
        return self.config.num_frames * self.config.audio_samples_per_frame // self.config.samples_per_patch

    def encode(self, images: torch.Tensor, audio: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        """``images`` ``(B, T, 3, H, W)`` in [0, 1]; ``audio`` ``(B, S)`` or ``(B, S, 1)`` in [-1, 1].

        The label input is always replaced by the learned mask token (as in the released model),
        so it may be omitted.
        """
        if label is None:
            label = images.new_zeros(images.shape[0], self.config.num_labels)
        tokens, _ = self.perceiver.input_preprocessor({"audio": audio, "image": images, "label": label})
        return self.perceiver.encode_tokens(tokens)

    def decode(
        self,
        latents: torch.Tensor,
        image_points: torch.Tensor | None = None,
        audio_points: torch.Tensor | None = None,
        label: bool = False,
    ) -> dict[str, torch.Tensor]:
        """Decode chosen output points from one encoding.

        ``image_points`` index the flattened ``(T, H, W)`` output video, ``audio_points`` the audio
        patches; each ``(P,)`` or ``(B, P)``. Returns ``image`` ``(B, P, 3)``, ``audio``
        ``(B, P · samples_per_patch)`` and, with ``label``, ``label`` logits ``(B, num_labels)``.
        """
        decoder, post = self.perceiver.decoder, self.perceiver.output_postprocessor
        batch, dtype = latents.shape[0], latents.dtype
        wanted = {"audio": audio_points, "image": image_points, "label": True if label else None}
        out = {}
        for name in ("audio", "image", "label"):
            if wanted[name] is None:
                continue
            queries = decoder.queries(name, wanted[name] if name != "label" else None, batch, dtype)
            head = post.modalities[name]
            out[name] = head.arrange(decoder(queries, latents, (head.classifier.weight, head.classifier.bias)))
        return out

    def forward(self, images: torch.Tensor, audio: torch.Tensor, label: torch.Tensor | None = None,
                image_points: torch.Tensor | None = None, audio_points: torch.Tensor | None = None
                ) -> dict[str, torch.Tensor]:
        return self.decode(self.encode(images, audio, label), image_points, audio_points, label=True)

    def probe_output(self, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """One clip; its labels and its first 4,096 pixels and 64 audio patches."""
        c = self.config
        images = torch.rand(1, c.num_frames, 3, c.image_size, c.image_size, generator=generator)
        audio = torch.rand(1, c.num_frames * c.audio_samples_per_frame, generator=generator) * 2 - 1
        latents = self.encode(images.to(self.device, self.dtype), audio.to(self.device, self.dtype))
        return self.decode(latents, torch.arange(min(4096, self.num_image_points), device=self.device),
                           torch.arange(min(64, self.num_audio_points), device=self.device), label=True)


class _Projection(nn.Module):
    """A linear map to the modality's outputs; the decoder applies it (folded into its own last
    layers where that is cheaper), :meth:`arrange` shapes the result."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.classifier = Linear(in_channels, out_channels)

    def arrange(self, projected: torch.Tensor) -> torch.Tensor:
        return projected

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.arrange(self.classifier(hidden))


class _AudioOut(_Projection):
    def arrange(self, projected: torch.Tensor) -> torch.Tensor:
        return projected.reshape(projected.shape[0], -1)


class _ImageOut(_Projection):
    pass


class _LabelOut(_Projection):
    def arrange(self, projected: torch.Tensor) -> torch.Tensor:
        return projected[:, 0]


class MultimodalPostprocessor(nn.Module):
    def __init__(self, config: PerceiverConfig) -> None:
        super().__init__()
        c = config.output_num_channels
        self.modalities = nn.ModuleDict({
            "audio": _AudioOut(c, config.samples_per_patch),
            "image": _ImageOut(c, 3),
            "label": _LabelOut(c, config.num_labels),
        })


ARCHITECTURES: dict[str, type[PerceiverTaskModel]] = {
    cls.architecture: cls
    for cls in (
        PerceiverForMaskedLM,
        PerceiverForSequenceClassification,
        PerceiverForImageClassificationLearned,
        PerceiverForImageClassificationFourier,
        PerceiverForImageClassificationConvProcessing,
        PerceiverForOpticalFlow,
        PerceiverForMultimodalAutoencoding,
    )
}
