"""Decoders: output queries cross-attend to the latents.

Every output query is decoded independently of the others (cross-attention from queries
to latents, then a per-query MLP), so any subset of queries — a chunk of pixels, the
masked bytes of a text — can be decoded on its own with the same result as decoding all
of them. The task heads rely on that to decode in bounded chunks.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .attention import PerceiverLayer
from .config import PerceiverConfig
from .cross_attention import PaddedQueries, Queries
from .kernels import Linear
from .position import FourierPositionEncoding, TrainablePositionEncoding, point_positions


def gather_rows(table: torch.Tensor, index: torch.Tensor | None, batch_size: int) -> torch.Tensor:
    """Rows of a ``(N, C)`` or ``(B, N, C)`` array for ``index`` of shape ``(P,)`` or ``(B, P)``."""
    if table.ndim == 2:
        table = table.unsqueeze(0)
    if index is None:
        return table.expand(batch_size, -1, -1)
    if index.ndim == 1:
        return table[:, index].expand(batch_size, -1, -1)
    if table.shape[0] == 1:
        return table[0][index]
    return torch.gather(table, 1, index[..., None].expand(-1, -1, table.shape[-1]))


class CrossAttentionDecoder(nn.Module):
    """Queries → cross-attention to the latents → optional final projection (HF: ``PerceiverBasicDecoder``).

    With ``position_only`` the module only owns the query position encoding, as the
    per-modality query builders of the multimodal decoder do.
    """

    def __init__(
        self,
        config: PerceiverConfig,
        *,
        num_channels: int,
        output_num_channels: int | None = None,
        queries: TrainablePositionEncoding | None = None,
        qk_channels: int | None = None,
        v_channels: int | None = None,
        num_heads: int = 1,
        use_query_residual: bool = False,
        final_project: bool = True,
        position_only: bool = False,
    ) -> None:
        super().__init__()
        if queries is not None:
            self.output_position_encodings = queries
        if position_only:
            return
        self.decoding_cross_attention = PerceiverLayer(
            config, is_cross=True, q_dim=num_channels, kv_dim=config.d_latents, num_heads=num_heads,
            widening_factor=1, qk_channels=qk_channels, v_channels=v_channels,
            use_query_residual=use_query_residual,
        )
        if final_project:
            self.final_layer = Linear(num_channels, output_num_channels)

    def learned_queries(self, index: torch.Tensor | None, batch_size: int) -> torch.Tensor:
        return gather_rows(self.output_position_encodings.position_embeddings, index, batch_size)

    def forward(self, queries: Queries, latents: torch.Tensor,
                head: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Decoded queries; ``head`` (weight, bias) is a linear map applied after the final layer.

        Passing the task's output layer as ``head`` lets the decoder multiply it into its own
        last layers when that is cheaper (narrow outputs such as pixels or flow).
        """
        projection = head
        if hasattr(self, "final_layer"):
            weight, bias = self.final_layer.weight, self.final_layer.bias
            if head is not None:
                weight, bias = torch.matmul(head[0], weight), torch.addmv(head[1], head[0], bias)
            projection = (weight, bias)
        return self.decoding_cross_attention.decode(queries, latents, projection)


class ClassificationDecoder(nn.Module):
    """One learned query → class logits (HF: ``PerceiverClassificationDecoder``)."""

    def __init__(self, config: PerceiverConfig, *, num_channels: int, use_query_residual: bool = True,
                 position_only: bool = False) -> None:
        super().__init__()
        self.decoder = CrossAttentionDecoder(
            config, num_channels=num_channels, output_num_channels=config.num_labels,
            queries=TrainablePositionEncoding(1, num_channels), use_query_residual=use_query_residual,
            position_only=position_only,
        )

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        queries = self.decoder.learned_queries(None, latents.shape[0])
        return self.decoder(queries, latents)[:, 0]


class FlowDecoder(nn.Module):
    """Queries are the encoder's own input tokens; outputs are 2-channel flow, rescaled."""

    def __init__(self, config: PerceiverConfig, *, num_channels: int, rescale_factor: float = 100.0) -> None:
        super().__init__()
        self.rescale_factor = rescale_factor
        self.decoder = CrossAttentionDecoder(
            config, num_channels=num_channels, output_num_channels=2, use_query_residual=False,
        )

    def forward(self, queries: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        return self.decoder(queries, latents) / self.rescale_factor


class FourierQueries(nn.Module):
    """Fourier-feature queries for points of a fixed output grid, chosen by flat index."""

    def __init__(self, index_dims: Sequence[int], encoding: FourierPositionEncoding) -> None:
        super().__init__()
        self.index_dims = tuple(index_dims)
        self.encoding = encoding

    @property
    def num_channels(self) -> int:
        return self.encoding.output_size()

    def forward(self, index: torch.Tensor, batch_size: int, dtype: torch.dtype) -> torch.Tensor:
        feats = self.encoding.features(point_positions(index, self.index_dims)).to(dtype)
        return feats.expand(batch_size, -1, -1) if index.ndim == 1 else feats


class _QueryHolder(nn.Module):
    """Holds a query builder under the attribute name the checkpoint layout expects."""

    def __init__(self, decoder: nn.Module) -> None:
        super().__init__()
        self.decoder = decoder


class MultimodalDecoder(nn.Module):
    """Per-modality queries, padded to one width with learned vectors, decoded by one shared layer."""

    def __init__(self, config: PerceiverConfig, *, audio: FourierQueries, image: FourierQueries,
                 min_padding_size: int = 2) -> None:
        super().__init__()
        label = ClassificationDecoder(
            config, num_channels=config.label_trainable_num_channels, use_query_residual=False, position_only=True
        )
        widths = {"audio": audio.num_channels, "image": image.num_channels,
                  "label": config.label_trainable_num_channels}
        self.modalities = nn.ModuleDict({"audio": audio, "image": _QueryHolder(image), "label": label})
        self.num_channels = max(widths.values()) + min_padding_size
        self.padding = nn.ParameterDict({
            name: nn.Parameter(torch.zeros(1, self.num_channels - width)) for name, width in widths.items()
        })
        self.decoder = CrossAttentionDecoder(
            config, num_channels=self.num_channels, output_num_channels=config.output_num_channels,
            use_query_residual=False,
        )

    def queries(self, name: str, index: torch.Tensor | None, batch_size: int, dtype: torch.dtype) -> PaddedQueries:
        """The queries of one modality: its own features, then that modality's learned padding."""
        if name == "label":
            q = self.modalities["label"].decoder.learned_queries(None, 1)
        elif name == "image":
            q = self.modalities["image"].decoder(index, 1, dtype)
        else:
            q = self.modalities["audio"](index, 1, dtype)
        return PaddedQueries(q.to(dtype), self.padding[name][0], batch_size)

    def forward(self, queries: Queries, latents: torch.Tensor,
                head: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        return self.decoder(queries, latents, head)
