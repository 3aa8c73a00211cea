"""Input preprocessors: raw modality tensors → ``(B, N, C)`` token arrays for the encoder.

Each ``forward`` returns ``(tokens, tokens_without_position)``; the second is what decoders
that reuse input features (optical flow) or the multimodal padding need.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import PerceiverConfig
from .kernels import Linear
from .position import FourierPositionEncoding, TrainablePositionEncoding

PositionEncoding = FourierPositionEncoding | TrainablePositionEncoding


def space_to_depth(frames: torch.Tensor, temporal_block: int = 1, spatial_block: int = 1) -> torch.Tensor:
    """Fold blocks of pixels (and frames) into channels, channels last.

    ``(B, C, H, W)`` → ``(B, H/s, W/s, s·s·C)``; ``(B, T, C, H, W)`` → ``(B, T/t, H/s, W/s, t·s·s·C)``,
    the block offsets ordered (t, y, x) before the channel.
    """
    s, t = spatial_block, temporal_block
    if frames.ndim == 4:
        b, c, h, w = frames.shape
        x = frames.reshape(b, c, h // s, s, w // s, s).permute(0, 2, 4, 3, 5, 1)
        return x.reshape(b, h // s, w // s, s * s * c)
    if frames.ndim == 5:
        b, n, c, h, w = frames.shape
        x = frames.reshape(b, n // t, t, c, h // s, s, w // s, s).permute(0, 1, 4, 6, 2, 5, 7, 3)
        return x.reshape(b, n // t, h // s, w // s, t * s * s * c)
    raise ValueError(f"expected frames of rank 4 or 5, got shape {tuple(frames.shape)}")


class TextPreprocessor(nn.Module):
    """Byte embeddings plus learned absolute positions."""

    def __init__(self, config: PerceiverConfig) -> None:
        super().__init__()
        self.embeddings = nn.Embedding(config.vocab_size, config.d_model)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.d_model)
        self.num_channels = config.d_model

    def forward(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.embeddings(input_ids)
        positions = self.position_embeddings.weight[: input_ids.shape[1]]
        return tokens + positions, tokens


class Conv2DDownsample(nn.Module):
    """7×7/2 convolution, batch norm, ReLU and 3×3/2 max-pool: 4× spatial downsampling."""

    def __init__(self, in_channels: int = 3, out_channels: int = 64) -> None:
        super().__init__()
        # padding=3 is TF "SAME" padding for this odd kernel, as the reference pads.
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=7, stride=2, padding=3, bias=False)
        self.batchnorm = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()
        self.max_pool = nn.MaxPool2d(kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.max_pool(self.relu(self.batchnorm(self.conv(x))))


class ImagePreprocessor(nn.Module):
    """Images or video → tokens, by one of four featurisations, plus a position encoding.

    ``conv1x1`` (1×1 convolution), ``conv`` (conv + max-pool, 4× smaller), ``pixels`` (raw
    values) and ``patches`` (space-to-depth, optionally followed by a linear layer: optical flow).
    """

    def __init__(
        self,
        *,
        prep_type: str,
        position_embeddings: PositionEncoding,
        spatial_downsample: int = 1,
        temporal_downsample: int = 1,
        in_channels: int = 3,
        out_channels: int = 64,
        conv_after_patching_in_channels: int | None = None,
        project_pos_dim: int | None = None,
    ) -> None:
        super().__init__()
        if prep_type not in ("conv", "conv1x1", "pixels", "patches"):
            raise ValueError(f"unknown prep_type {prep_type!r}")
        self.prep_type = prep_type
        self.spatial_downsample = spatial_downsample
        self.temporal_downsample = temporal_downsample
        if prep_type == "conv":
            self.convnet = Conv2DDownsample(in_channels, out_channels)
        elif prep_type == "conv1x1":
            self.convnet_1x1 = nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=spatial_downsample)
        if conv_after_patching_in_channels is not None:
            self.conv_after_patches = Linear(conv_after_patching_in_channels, out_channels)
        self.position_embeddings = position_embeddings
        pos_dim = position_embeddings.output_size()
        if project_pos_dim:
            self.positions_projection = Linear(pos_dim, project_pos_dim)
            pos_dim = project_pos_dim
        if prep_type in ("conv", "conv1x1") or conv_after_patching_in_channels is not None:
            feature_dim = out_channels
        elif prep_type == "pixels":
            feature_dim = in_channels
        else:
            temporal = position_embeddings.num_dimensions > 2 if isinstance(
                position_embeddings, FourierPositionEncoding) else False
            feature_dim = in_channels * spatial_downsample**2 * (temporal_downsample if temporal else 1)
        self.num_channels = feature_dim + pos_dim

    def featurize(self, x: torch.Tensor) -> torch.Tensor:
        """Pixels → channels-last features on the token grid."""
        if self.prep_type == "conv":
            return self.convnet(x).permute(0, 2, 3, 1)
        if self.prep_type == "conv1x1":
            return self.convnet_1x1(x).permute(0, 2, 3, 1)
        if self.prep_type == "pixels":
            s, t = self.spatial_downsample, self.temporal_downsample
            if x.ndim == 4:
                return x[:, :, ::s, ::s].permute(0, 2, 3, 1)
            return x[:, ::t, :, ::s, ::s].permute(0, 1, 3, 4, 2)
        x = space_to_depth(x, self.temporal_downsample, self.spatial_downsample)
        if x.ndim == 5 and x.shape[1] == 1:
            x = x.squeeze(1)  # a frame pair folded into channels (optical flow)
        if hasattr(self, "conv_after_patches"):
            x = self.conv_after_patches(x)
        return x

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.featurize(x)
        batch, index_dims = feats.shape[0], feats.shape[1:-1]
        feats = feats.reshape(batch, math.prod(index_dims), feats.shape[-1])
        projected = hasattr(self, "positions_projection")
        if isinstance(self.position_embeddings, FourierPositionEncoding) and not projected:
            # Fourier positions go straight into the token array (no separate position array).
            tokens = feats.new_empty(batch, feats.shape[1], self.num_channels)
            tokens[..., : feats.shape[-1]] = feats
            self.position_embeddings(index_dims, batch, device=feats.device, dtype=feats.dtype,
                                     out=tokens[..., feats.shape[-1]:])
            return tokens, feats
        if isinstance(self.position_embeddings, TrainablePositionEncoding):
            pos = self.position_embeddings(batch)
        else:
            pos = self.position_embeddings(index_dims, batch, device=feats.device, dtype=feats.dtype)
        if projected:
            pos = self.positions_projection(pos)
        return torch.cat([feats, pos], dim=-1), feats


class AudioPreprocessor(nn.Module):
    """Raw audio → patches of ``samples_per_patch`` samples with Fourier positions."""

    def __init__(self, *, samples_per_patch: int, position_embeddings: FourierPositionEncoding) -> None:
        super().__init__()
        self.samples_per_patch = samples_per_patch
        self.position_embeddings = position_embeddings
        self.num_channels = samples_per_patch + position_embeddings.output_size()

    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        patches = audio.reshape(audio.shape[0], -1, self.samples_per_patch)
        pos = self.position_embeddings(patches.shape[1:2], patches.shape[0], device=patches.device,
                                       dtype=patches.dtype)
        return torch.cat([patches, pos], dim=-1), patches


class OneHotPreprocessor(nn.Module):
    """A label vector as a single token."""

    def __init__(self, num_labels: int) -> None:
        super().__init__()
        self.num_channels = num_labels

    def forward(self, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return label[:, None, :], label[:, None, :]


class MultimodalPreprocessor(nn.Module):
    """Preprocess each modality, pad all to one width with learned vectors, concatenate.

    Modalities listed in ``masked`` are replaced by their learned mask token: the released
    autoencoder always masks the label this way (mask probability 1), which makes it a
    video classifier; the others are never masked at inference (probability 0).
    """

    def __init__(self, modalities: dict[str, nn.Module], *, min_padding_size: int, masked: tuple[str, ...]) -> None:
        super().__init__()
        self.modalities = nn.ModuleDict(modalities)
        self.masked = masked
        self.num_channels = max(m.num_channels for m in modalities.values()) + min_padding_size
        self.padding = nn.ParameterDict({
            name: nn.Parameter(torch.zeros(1, self.num_channels - m.num_channels)) for name, m in modalities.items()
        })
        self.mask = nn.ParameterDict({name: nn.Parameter(torch.zeros(1, self.num_channels)) for name in modalities})

    def forward(self, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, int]]:
        parts, sizes = [], {}
        for name in sorted(self.modalities):
            tokens, _ = self.modalities[name](inputs[name])
            b, n, _ = tokens.shape
            if name in self.masked:
                tokens = self.mask[name].expand(b, n, -1)
            else:
                tokens = torch.cat([tokens, self.padding[name].expand(b, n, -1)], dim=-1)
            parts.append(tokens)
            sizes[name] = n
        return torch.cat(parts, dim=1), sizes
