"""The baseline of the server benchmark: what a user would write with transformers and FastAPI.

``python -m benchmarks.baseline_server --checkpoint DIR --port P`` serves one
``PerceiverForSequenceClassification`` checkpoint at ``POST /classify/text`` (the same JSON
request and answer shape as perceiver-serve, so one load generator drives both). Texts are
tokenised by transformers' ``PerceiverTokenizer`` ([CLS], UTF-8 bytes shifted by the 6
special ids, [SEP]: the ids perceiver-serve uses) without padding, and each request runs its
own forward pass under a lock: one request at a time, no batching.
"""

from __future__ import annotations

import argparse
import threading
from pathlib import Path

import torch
import uvicorn
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel


class ClassifyText(BaseModel):
    text: str
    model: str | None = None
    top_k: int = 5


def create_app(checkpoint: Path) -> FastAPI:
    import transformers

    tokenizer = transformers.PerceiverTokenizer()
    model = transformers.PerceiverForSequenceClassification.from_pretrained(checkpoint).eval()
    labels = model.config.id2label
    lock = threading.Lock()
    app = FastAPI()

    @app.post("/classify/text")
    def classify(body: ClassifyText) -> dict:  # a sync route: FastAPI runs it on its thread pool
        if not body.text:
            raise HTTPException(400, "text is empty")
        encoded = tokenizer(body.text, return_tensors="pt")
        with lock, torch.inference_mode():
            logits = model(inputs=encoded["input_ids"], attention_mask=encoded["attention_mask"]).logits[0]
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
    args = p.parse_args(argv)
    # The asyncio event loop, as perceiver-serve runs uvicorn, so both servers differ only in their
    # application code.
    uvicorn.run(create_app(args.checkpoint), host=args.host, port=args.port, log_level="warning", loop="asyncio")


if __name__ == "__main__":
    main()
