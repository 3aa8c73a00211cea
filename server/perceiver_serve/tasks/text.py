"""Byte-level text tasks: classification and fill-mask.

Texts are never padded beyond what their batch needs: each batch is padded to its own
longest member with a key mask, and fill-mask decodes only the masked positions.
"""

from __future__ import annotations

import bisect
import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from ..answers import ClassificationResponse, FillMaskResponse
from ..engine import ServedModel
from ..errors import InvalidInput, PayloadTooLarge
from ..modeling import ByteTokenizer, PerceiverTaskModel
from ..modeling.compiled import bucket_length, length_buckets
from .common import (DEFAULT_TOP_K, Classification, TaskOptions, TopK, classification, classifications_json,
                     softmax, top_k)
from .definition import Call, RequestSchema, RestRoute, Signature, Task, TensorSpec, utf8


class TextOptions(TaskOptions):
    pass


class FillMaskOptions(TaskOptions):
    context_bytes: int = Field(
        0, ge=0,
        description="0: every masked byte is answered from the whole text (the published model reads up to "
                    "2,046 bytes). A model trained on shorter windows names their length: each group of nearby "
                    "masked bytes is then answered from a window of that many bytes centred on it.",
    )


def _tokenizer(model: PerceiverTaskModel) -> ByteTokenizer:
    return ByteTokenizer(max_length=model.config.max_position_embeddings)


class _TextRunner:
    def __init__(self, model: PerceiverTaskModel, options: TextOptions) -> None:
        self.model = model
        self.tokenizer = _tokenizer(model)

    def batch_key(self, payload: object) -> str:
        return "text"

    def geometry(self) -> dict[str, Any]:
        return {"max_text_bytes": self.tokenizer.max_text_bytes}

    def _ids(self, sequences: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor | None]:
        ids, mask = self.tokenizer.batch(sequences)
        device = self.model.device
        if self.model.compiled:  # a length bucket, and always a mask: only shapes the warm-up ran
            extra = bucket_length(ids.shape[1], self.tokenizer.max_length) - ids.shape[1]
            ids, mask = F.pad(ids, (0, extra), value=ByteTokenizer.PAD), F.pad(mask, (0, extra))
            return ids.to(device), mask.to(device)
        if bool(mask.all()):
            return ids.to(device), None  # no padding in this batch: skip the mask entirely
        return ids.to(device), mask.to(device)


class TextClassificationRunner(_TextRunner):
    """Payload: token ids of one text. Result: its logits as float32."""

    labelled = True

    def run(self, payloads: Sequence[list[int]]) -> list[np.ndarray]:
        ids, mask = self._ids(payloads)
        logits = self.model(ids, mask).float().cpu().numpy()
        return list(logits)

    def warmup_payloads(self) -> list[list[int]]:
        return [self.tokenizer.encode("warm-up"), self.tokenizer.encode("a somewhat longer warm-up text")]

    def warmup_shapes(self) -> list[list[int]]:
        """One text per length bucket (compiled models)."""
        return [[ByteTokenizer.CLS] * length for length in length_buckets(self.tokenizer.max_length)]


@dataclasses.dataclass(frozen=True)
class MaskedText:
    ids: list[int]
    positions: list[int]


class FillMaskRunner(_TextRunner):
    """Payload: :class:`MaskedText`. Result: logits ``(P, vocab)`` at the masked positions."""

    labelled = False  # it predicts bytes; the checkpoint's label table means nothing

    def __init__(self, model: PerceiverTaskModel, options: FillMaskOptions) -> None:
        super().__init__(model, options)
        self.options = options

    def run(self, payloads: Sequence[MaskedText]) -> list[np.ndarray]:
        ids, mask = self._ids([p.ids for p in payloads])
        longest = max(len(p.positions) for p in payloads)
        # Items with fewer masked bytes repeat their first position; the extra rows are dropped.
        positions = torch.tensor([p.positions + [p.positions[0]] * (longest - len(p.positions)) for p in payloads])
        latents = self.model.encode(ids, mask)
        logits = self.model.decode(latents, positions.to(ids.device)).float().cpu().numpy()
        return [logits[i, : len(p.positions)] for i, p in enumerate(payloads)]

    def warmup_payloads(self) -> list[MaskedText]:
        ids = self.tokenizer.encode("warm-up")
        return [MaskedText([*ids[:2], ByteTokenizer.MASK, *ids[3:]], [2])]

    def warmup_shapes(self) -> list[MaskedText]:
        """One text per length bucket (compiled models)."""
        return [MaskedText([ByteTokenizer.CLS] * length, [0]) for length in length_buckets(self.tokenizer.max_length)]


# -- request-level operations (shared by REST and gRPC) ---------------------------------------

def _encode(tokenizer: ByteTokenizer, text: str | bytes, *, truncate: bool | None = None,
            field: str = "text") -> list[int]:
    """Byte ids of a text; ``truncate`` None means the operation offers no truncation."""
    data = text.encode("utf-8") if isinstance(text, str) else text
    if not data:
        raise InvalidInput(f"{field} is empty", code="empty_text")
    limit = tokenizer.max_text_bytes
    if len(data) > limit:
        if not truncate:
            hint = ' (set "truncate" to true to cut it)' if truncate is False else ""
            raise PayloadTooLarge(f"{field} is {len(data)} UTF-8 bytes; this model takes at most {limit}{hint}",
                                  code="text_too_long")
        data = data[:_character_start(data, limit)]
    return tokenizer.encode(data)


def _continues_a_character(data: bytes, offset: int) -> bool:
    """Whether the byte at ``offset`` continues a UTF-8 character begun before it (``10xxxxxx``)."""
    return offset < len(data) and data[offset] & 0xC0 == 0x80


def _character_start(data: bytes, offset: int) -> int:
    """``offset``, moved back to the first byte of the UTF-8 character it falls in: a text cut there
    keeps whole characters (a cut inside one would leave bytes that decode to U+FFFD)."""
    while offset > 0 and _continues_a_character(data, offset):
        offset -= 1
    return offset


async def classify_texts(served: ServedModel, texts: Sequence[str], *, top: int, return_logits: bool,
                         deadline: float | None = None) -> list[Classification]:
    tokenizer = served.runner.tokenizer
    sequences = [_encode(tokenizer, t, field=f"texts[{i}]" if len(texts) > 1 else "text") for i, t in enumerate(texts)]
    logits = await served.batcher.submit_all(sequences, deadline=deadline)
    labels = served.model.config.id2label
    return [classification(row, labels, top, return_logits) for row in logits]


MASK_MARKER = "[MASK]"
_MARKER = re.compile(re.escape(MASK_MARKER))


@dataclasses.dataclass(frozen=True)
class MaskedByte:
    position: int  # byte offset in the (possibly truncated) input
    original: int | None  # None for a [MASK] marker: no byte of the text was there
    candidates: list[tuple[int, float]]  # (byte value, probability), best first


@dataclasses.dataclass(frozen=True)
class FillMaskResult:
    filled: bytes
    masked: list[MaskedByte]
    logits: np.ndarray  # (P, vocab) float32, one row per masked byte


def apply_mask_markers(text: str) -> tuple[bytes, list[tuple[int, int]]]:
    """``"The [MASK][MASK]t"`` → the text with each marker replaced by one space byte, and spans.

    Each ``[MASK]`` stands for exactly one byte to predict; consecutive markers mask
    consecutive bytes (as the released checkpoint was trained on bytes).
    """
    out, spans, last = bytearray(), [], 0
    for match in _MARKER.finditer(text):
        out += text[last:match.start()].encode("utf-8")
        spans.append((len(out), len(out) + 1))
        out += b" "
        last = match.end()
    out += text[last:].encode("utf-8")
    return bytes(out), spans


def _masked_positions(data: bytes, spans: Sequence[Sequence[int]]) -> list[int]:
    positions: set[int] = set()
    for i, span in enumerate(spans):
        if len(span) != 2:
            raise InvalidInput(f"mask_spans[{i}] must be [start, end]")
        start, end = span
        if not 0 <= start < end <= len(data):
            raise InvalidInput(
                f"mask_spans[{i}] = [{start}, {end}] is not a non-empty byte range within the text's "
                f"{len(data)} UTF-8 bytes"
            )
        cut = next((offset for offset in (start, end) if _continues_a_character(data, offset)), None)
        if cut is not None:
            raise InvalidInput(f"mask_spans[{i}] = [{start}, {end}] cuts a character in two at byte {cut}: a span "
                               "must start and end at character boundaries of the UTF-8 text")
        positions.update(range(start, end))
    if not positions:
        raise InvalidInput("nothing to predict: give mask_spans or put [MASK] markers in the text", code="no_mask")
    return sorted(positions)


def context_windows(length: int, positions: Sequence[int], width: int) -> list[tuple[int, int, list[int]]]:
    """``(start, end, answered positions)`` of each window that a text of ``length`` bytes is read in.

    ``width`` 0, or a text no longer than it: one window, the whole text. Otherwise the sorted masked
    ``positions`` are grouped, a group spanning at most ``width // 2`` bytes, and each group is
    answered from the ``width`` bytes centred on it (moved inside the text at its ends): at least
    ``width // 2`` bytes of context around every masked byte, as in the model's training windows.
    """
    if width <= 0 or length <= width:
        return [(0, length, list(positions))]
    reach = max(1, width // 2)
    groups: list[list[int]] = []
    for p in positions:
        if groups and p - groups[-1][0] < reach:
            groups[-1].append(p)
        else:
            groups.append([p])
    windows = []
    for group in groups:
        start = group[0] - (width - (group[-1] - group[0] + 1)) // 2
        start = min(max(0, start), length - width)
        windows.append((start, start + width, group))
    return windows


async def _masked_logits(served: ServedModel, tokenizer: ByteTokenizer, data: bytes, ids: list[int],
                         positions: list[int], deadline: float | None) -> np.ndarray:
    """Logits ``(P, vocab)`` at the sorted ``positions`` of ``data`` (``ids``: its token ids), every
    masked byte masked in every window it falls in; the windows are one request to the batcher."""
    pieces = []
    for start, end, answered in context_windows(len(data), positions, served.runner.options.context_bytes):
        window_ids = ids if (start, end) == (0, len(data)) else tokenizer.encode(data[start:end])
        for p in positions[bisect.bisect_left(positions, start):bisect.bisect_left(positions, end)]:
            window_ids[p - start + 1] = ByteTokenizer.MASK  # +1: [CLS] comes first
        pieces.append(MaskedText(window_ids, [p - start + 1 for p in answered]))
    return np.concatenate(await served.batcher.submit_all(pieces, deadline=deadline))


async def fill_mask(served: ServedModel, text: str, spans: Sequence[Sequence[int]] | None, *, top: int,
                    truncate: bool = False, deadline: float | None = None) -> FillMaskResult:
    markers = MASK_MARKER in text
    if markers:
        if spans:
            raise InvalidInput("use either [MASK] markers or mask_spans, not both")
        data, spans = apply_mask_markers(text)
    else:
        data = text.encode("utf-8")
    tokenizer: ByteTokenizer = served.runner.tokenizer
    ids = _encode(tokenizer, data, truncate=truncate)
    data = data[: len(ids) - 2]
    if markers:
        cut = next((i for i, (start, _) in enumerate(spans) if start >= len(data)), None)
        if cut is not None:
            raise InvalidInput(f"[MASK] marker {cut + 1} of {len(spans)} lies beyond the {len(data)} bytes that "
                               "truncate kept (the model's limit): move it into the text's beginning")
    positions = _masked_positions(data, spans or [])
    logits = await _masked_logits(served, tokenizer, data, ids, positions, deadline)
    probs = softmax(logits)
    byte_ids = np.arange(ByteTokenizer.NUM_SPECIAL, probs.shape[-1])
    filled = bytearray(data)
    masked = []
    for row, position in zip(probs, positions):
        best = [(i - ByteTokenizer.NUM_SPECIAL, score) for i, score in top_k(row, top, byte_ids)]
        filled[position] = best[0][0]
        masked.append(MaskedByte(position, None if markers else data[position], best))
    return FillMaskResult(bytes(filled), masked, logits)



def fill_mask_json(model: str, result: FillMaskResult) -> dict[str, Any]:
    def char(byte: int) -> str | None:
        return chr(byte) if 32 <= byte < 127 else None

    return {
        "model": model,
        "text": result.filled.decode("utf-8", errors="replace"),
        "masked": [
            {"position": m.position, "original": m.original,
             "predictions": [{"byte": b, "char": char(b), "score": s} for b, s in m.candidates]}
            for m in result.masked
        ],
    }


# -- the task definitions -------------------------------------------------------------------------

MAX_TEXTS = 256
MAX_MASK_SPANS = 4096


class ClassifyTextRequest(RequestSchema):
    text: str | None = Field(None, description="One text (UTF-8).")
    texts: list[str] | None = Field(None, min_length=1, max_length=MAX_TEXTS, description="Several texts.")
    model: str | None = Field(None, description="Model name; default: the repository's text classifier.")
    top_k: TopK = DEFAULT_TOP_K
    return_logits: bool = False

    @model_validator(mode="after")
    def _one_of(self) -> "ClassifyTextRequest":
        if (self.text is None) == (self.texts is None):
            raise ValueError("give exactly one of 'text' and 'texts'")
        return self


class FillMaskRequest(RequestSchema):
    text: str = Field(description="Text to complete; '[MASK]' marks one byte to predict.")
    mask_spans: list[tuple[int, int]] | None = Field(
        None, max_length=MAX_MASK_SPANS, description="[start, end) UTF-8 byte ranges to mask and predict.")
    model: str | None = None
    top_k: TopK = DEFAULT_TOP_K
    truncate: bool = Field(False, description="Cut texts longer than the model's limit instead of refusing.")


async def _classify(served: ServedModel, request: ClassifyTextRequest, call: Call) -> list[Classification]:
    texts = [request.text] if request.text is not None else request.texts
    return await classify_texts(served, texts, top=request.top_k, return_logits=request.return_logits,
                                deadline=call.deadline)


async def _fill_mask(served: ServedModel, request: FillMaskRequest, call: Call) -> FillMaskResult:
    return await fill_mask(served, request.text, request.mask_spans, top=request.top_k, truncate=request.truncate,
                           deadline=call.deadline)


LOGITS = TensorSpec("LOGITS", "FP32", (-1, "labels"))
LABEL = TensorSpec("LABEL", "BYTES", (-1,))


def classification_tensors(results: Sequence[list[Classification]]) -> dict[str, np.ndarray]:
    """LOGITS ``(N, labels)`` and LABEL (each item's best label), over every item of every answer."""
    items = [item for result in results for item in result]
    labels = np.empty(len(items), dtype=object)
    labels[:] = [item.predictions[0].label.encode("utf-8") for item in items]
    return {"LOGITS": np.array([item.logits for item in items], dtype=np.float32), "LABEL": labels}


def _texts(arrays: Mapping[str, np.ndarray]) -> list[dict[str, Any]]:
    texts = [utf8(item, f"TEXT[{i}]") for i, item in enumerate(arrays["TEXT"].ravel())]
    return [{"texts": texts, "return_logits": True}]


def _masked_text(arrays: Mapping[str, np.ndarray]) -> list[dict[str, Any]]:
    fields: dict[str, Any] = {"text": utf8(arrays["TEXT"].ravel()[0], "TEXT")}
    if "MASK_SPANS" in arrays:
        fields["mask_spans"] = [(int(start), int(end)) for start, end in arrays["MASK_SPANS"]]
    return [fields]


def _filled(results: Sequence[FillMaskResult]) -> dict[str, np.ndarray]:
    (result,) = results
    text = np.empty(1, dtype=object)
    text[0] = result.filled
    return {"TEXT": text, "LOGITS": result.logits.astype(np.float32)}

TEXT_CLASSIFICATION = Task(
    name="text-classification",
    architectures=("PerceiverForSequenceClassification",),
    options=TextOptions,
    runner=TextClassificationRunner,
    request=ClassifyTextRequest,
    execute=_classify,
    answer=classifications_json,
    response=ClassificationResponse,
    rest=RestRoute("/classify/text", "Classify one or more texts (JSON, or a text/plain body)",
                   raw=("text/plain", "text")),
    grpc_method="ClassifyText",
    signature=Signature(inputs=(TensorSpec("TEXT", "BYTES", (-1,)),), outputs=(LOGITS, LABEL), requests=_texts,
                        tensors=classification_tensors, fields={"texts": "TEXT"}),
)

FILL_MASK = Task(
    name="fill-mask",
    architectures=("PerceiverForMaskedLM",),
    options=FillMaskOptions,
    runner=FillMaskRunner,
    request=FillMaskRequest,
    execute=_fill_mask,
    answer=fill_mask_json,
    response=FillMaskResponse,
    rest=RestRoute("/fill-mask", "Predict masked bytes of a text"),
    grpc_method="FillMask",
    signature=Signature(
        inputs=(TensorSpec("TEXT", "BYTES", (1,)), TensorSpec("MASK_SPANS", "INT64", (-1, 2), optional=True)),
        outputs=(TensorSpec("TEXT", "BYTES", (1,)), TensorSpec("LOGITS", "FP32", (-1, 262), optional=True)),
        requests=_masked_text,
        tensors=_filled,
        fields={"text": "TEXT", "mask_spans": "MASK_SPANS"},
    ),
)
