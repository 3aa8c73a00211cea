"""The baselines of the server benchmark: what a user would write with transformers or ONNX Runtime and FastAPI.

``python -m benchmarks.baseline_server --checkpoint DIR --port P [--engine E]`` serves one
``PerceiverForSequenceClassification`` checkpoint at ``POST /classify/text`` (the same JSON
request and answer shape as perceiver-serve, so one load generator drives both). Texts are
tokenised by transformers' ``PerceiverTokenizer`` ([CLS], UTF-8 bytes shifted by the 6
special ids, [SEP]: the ids perceiver-serve uses) without padding, and each request runs its
own forward pass under a lock: one request at a time, no batching.

Engines: ``transformers`` (the model as transformers runs it), ``onnxruntime`` (that model
exported with ``torch.onnx.export`` and run by ONNX Runtime with ``OMP_NUM_THREADS`` threads)
and ``onnxruntime-int8`` (the export after ``onnxruntime.quantization.quantize_dynamic``): the
peer a performance-minded user would pick (see :mod:`benchmarks.peers`).
"""

from __future__ import annotations

import argparse
import threading
from collections.abc import Callable
from pathlib import Path

import torch
import uvicorn
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel


class ClassifyText(BaseModel):
    text: str
    model: str | None = None
    top_k: int = 5


ENGINES = ("transformers", "onnxruntime", "onnxruntime-int8")


def _transformers_model(checkpoint: Path) -> torch.nn.Module:
    import transformers

    return transformers.PerceiverForSequenceClassification.from_pretrained(checkpoint).eval()


def onnx_model(checkpoint: Path, engine: str) -> Path:
    """The ONNX file ``engine`` runs for ``checkpoint``: exported (and quantized) once, then cached; the
    transformers model is loaded only to export it. The benchmark makes it before it starts the servers,
    which then only read it."""
    from .peers import ONNX_CACHE, TEXT_AXES, export, quantized

    path = ONNX_CACHE / f"{checkpoint.name}.onnx"
    if not path.is_file():
        example = (torch.tensor([[1, 70, 80, 2]]), torch.ones(1, 4, dtype=torch.long))
        export(_transformers_model(checkpoint), example, ("inputs", "attention_mask"), TEXT_AXES, path)
    return quantized(path) if engine == "onnxruntime-int8" else path


def _forward(engine: str, checkpoint: Path) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``(input ids, attention mask) → logits`` of one text through ``engine``: ONNX Runtime's engines hold
    no torch model."""
    if engine == "transformers":
        model = _transformers_model(checkpoint)
        return lambda ids, mask: model(inputs=ids, attention_mask=mask).logits
    from .peers import OnnxModel

    return OnnxModel(onnx_model(checkpoint, engine), torch.get_num_threads())


def create_app(checkpoint: Path, engine: str = "transformers") -> FastAPI:
    import transformers

    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; known: {ENGINES}")
    tokenizer = transformers.PerceiverTokenizer()
    forward = _forward(engine, checkpoint)
    labels = transformers.PerceiverConfig.from_pretrained(checkpoint).id2label
    lock = threading.Lock()
    app = FastAPI()

    @app.post("/classify/text")
    def classify(body: ClassifyText) -> dict:  # a sync route: FastAPI runs it on its thread pool
        if not body.text:
            raise HTTPException(400, "text is empty")
        encoded = tokenizer(body.text, return_tensors="pt")
        with lock, torch.inference_mode():
            logits = forward(encoded["input_ids"], encoded["attention_mask"])[0]
        scores, indices = logits.softmax(-1).topk(min(body.top_k, logits.numel()))
        predictions = [{"label": labels[i], "index": i, "score": s} for s, i in zip(scores.tolist(), indices.tolist())]
        return {"model": checkpoint.name, "results": [{"predictions": predictions}]}

    @app.get("/health/ready")
    @app.get("/health/live")
    def health() -> dict:
        return {"status": "ok"}

    return app


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", type=Path, required=True, help="HF-layout PerceiverForSequenceClassification")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8100)
    p.add_argument("--engine", choices=ENGINES, default="transformers")
    args = p.parse_args(argv)
    # The asyncio event loop, as perceiver-serve runs uvicorn, so both servers differ only in their
    # application code.
    uvicorn.run(create_app(args.checkpoint, args.engine), host=args.host, port=args.port, log_level="warning",
                loop="asyncio")


if __name__ == "__main__":
    main()
