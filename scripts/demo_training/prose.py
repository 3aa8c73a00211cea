"""Fill-mask: a byte-level masked language model of English prose (Python's own documentation).

The text is ``pydoc_data/topics.py`` from the standard library of the Python that runs the
script (the reference topics of ``help()``, about 460 KB of English with code mixed in), its
whitespace collapsed to single spaces. The last 10% is held out.

Training windows are masked as the server masks a request: every byte of a chosen word
becomes ``[MASK]`` (id 3) and only those positions are decoded. Whole words of 3–8 bytes are
masked, plus some single bytes, so that both kinds of question a user asks are trained.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from perceiver_serve.modeling import ByteTokenizer

from .common import RunOptions, Trained, batching, build, checkpoint_mb, config, fit, minutes

NAME = "language-mlm"
SUMMARY = "Demo model: fills masked bytes of English prose (Python's documentation), trained here."
WINDOW = 64
WORD = re.compile(rb"(?<![A-Za-z])[A-Za-z]{3,8}(?![A-Za-z])")

CONFIG = config(
    "PerceiverForMaskedLM",
    num_latents=64, d_latents=128, d_model=64, num_blocks=1, num_self_attends_per_block=2,
    num_self_attention_heads=4, num_cross_attention_heads=4, max_position_embeddings=2048,
)

#: Sentences of the held-out tail used in the model card and the server test.
EXAMPLES = 5


def corpus() -> tuple[bytes, bytes]:
    """``(training text, held-out text)``: the topics in key order, whitespace collapsed, split 90/10."""
    from pydoc_data.topics import topics

    text = " ".join(re.sub(r"\s+", " ", topics[key]).strip() for key in sorted(topics)).encode("utf-8")
    split = int(len(text) * 0.9)
    return text[:split], text[split:]


def mask_words(window: bytes, rng: random.Random, rate: float = 0.15) -> list[int]:
    """Positions to mask: whole words of 3–8 bytes until about ``rate`` of the bytes, or one byte."""
    words = [m.span() for m in WORD.finditer(window)]
    rng.shuffle(words)
    positions: list[int] = []
    for start, end in words:
        if len(positions) >= rate * len(window):
            break
        positions.extend(range(start, end))
    if not positions or rng.random() < 0.2:
        positions.append(rng.randrange(len(window)))
    return sorted(set(positions))


def example(text: bytes, rng: random.Random) -> tuple[list[int], list[int], list[int]]:
    """``(ids with [MASK]s, masked token positions, true token ids)`` of one random window."""
    start = rng.randrange(len(text) - WINDOW)
    window = text[start:start + WINDOW]
    tokenizer = ByteTokenizer(CONFIG.max_position_embeddings)
    ids = tokenizer.encode(window)
    positions = [p + 1 for p in mask_words(window, rng)]  # +1: [CLS]
    targets = [ids[p] for p in positions]
    for p in positions:
        ids[p] = ByteTokenizer.MASK
    return ids, positions, targets


def _batch(examples: list[tuple[list[int], list[int], list[int]]]):
    tokenizer = ByteTokenizer(CONFIG.max_position_embeddings)
    ids, mask = tokenizer.batch([e[0] for e in examples])
    longest = max(len(e[1]) for e in examples)
    positions = torch.zeros(len(examples), longest, dtype=torch.long)
    targets = torch.full((len(examples), longest), -100, dtype=torch.long)
    for row, (_, pos, tgt) in enumerate(examples):
        positions[row, : len(pos)] = torch.tensor(pos)
        targets[row, : len(tgt)] = torch.tensor(tgt)
    return ids, mask, positions, targets


def loss(model: torch.nn.Module, batch) -> torch.Tensor:
    ids, mask, positions, targets = batch
    logits = model(ids, mask, positions)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)


def word_accuracy(model: torch.nn.Module, text: bytes, count: int, seed: int) -> float:
    """Top-1 byte accuracy on whole masked words of 3–8 bytes (one word per window)."""
    rng, right, total = random.Random(seed), 0, 0
    tokenizer = ByteTokenizer(CONFIG.max_position_embeddings)
    with torch.no_grad():
        for _ in range(count // 32):
            examples = []
            while len(examples) < 32:
                start = rng.randrange(len(text) - WINDOW)
                window = text[start:start + WINDOW]
                words = [m.span() for m in WORD.finditer(window)]
                if not words:  # code or punctuation only: no word to ask for
                    continue
                s, e = rng.choice(words)
                ids = tokenizer.encode(window)
                positions = list(range(s + 1, e + 1))
                targets = [ids[p] for p in positions]
                for p in positions:
                    ids[p] = ByteTokenizer.MASK
                examples.append((ids, positions, targets))
            ids, mask, positions, targets = _batch(examples)
            predicted = model(ids, mask, positions)[..., ByteTokenizer.NUM_SPECIAL:].argmax(-1) + ByteTokenizer.NUM_SPECIAL
            real = targets != -100
            right += int((predicted[real] == targets[real]).sum())
            total += int(real.sum())
    return right / total


def fill(model: torch.nn.Module, text: str, word: str) -> str:
    """``text`` with every byte of the first ``word`` predicted by the model (as the server does)."""
    data = text.encode("utf-8")
    start = data.index(word.encode("utf-8"))
    tokenizer = ByteTokenizer(CONFIG.max_position_embeddings)
    ids = tokenizer.encode(data)
    positions = list(range(start + 1, start + 1 + len(word.encode("utf-8"))))
    for p in positions:
        ids[p] = ByteTokenizer.MASK
    ids_t, mask = tokenizer.batch([ids])
    with torch.no_grad():
        logits = model(ids_t, mask, torch.tensor([positions]))[0, :, ByteTokenizer.NUM_SPECIAL:]
    filled = bytearray(data)
    for p, b in zip(positions, logits.argmax(-1).tolist()):
        filled[p - 1] = b
    return filled.decode("utf-8", errors="replace")


#: Held-out sentences for the card's examples (from the last 10% of the topics), with the word masked.
CARD_EXAMPLES = (
    ("The return value of the function is ignored.", "value"),
    ("This method is called when the object is created.", "called"),
    ("If the argument is not a string, a TypeError exception is raised.", "string"),
    ("The default value is None.", "default"),
    ("Each item in the list is evaluated from left to right.", "list"),
)


def train(run: RunOptions, say=print) -> Trained:
    started = time.monotonic()
    text, held = corpus()
    rng = random.Random(run.seed)

    def batches() -> Iterator:
        while True:
            yield _batch([example(text, rng) for _ in range(32)])

    model = build(CONFIG, run.seed + 3, unit_scale=True)
    steps = run.steps(2000)
    fit(model, batches(), loss, steps=steps, lr=1e-3, name=NAME, say=say)
    seconds = time.monotonic() - started
    count = 64 if run.quick else 2048
    figures = {
        "train_seconds": seconds,
        "train_windows": steps * 32,
        "word_accuracy_held_out": word_accuracy(model, held, count, run.seed + 200),
        "word_accuracy_train": word_accuracy(model, text, count, run.seed + 201),
        "corpus_bytes": len(text) + len(held),
        "checkpoint_mb": checkpoint_mb(model),
    }
    examples = [(sentence, word, fill(model, sentence, word)) for sentence, word in CARD_EXAMPLES]
    say(f"{NAME}: {figures}")
    for e in examples:
        say(f"{NAME}: {e}")
    return Trained(model, "fill-mask", batching(16), {}, card(figures, examples), figures)


def card(f: dict[str, float], examples: list[tuple[str, str, str]]) -> str:
    rows = "\n".join(
        f"| {s.replace(w, '[MASK]' * len(w), 1)} | `{w}` | {filled} |" for s, w, filled in examples
    )
    return f"""# language-mlm: filling masked bytes of English (demo model)

A small byte-level `PerceiverForMaskedLM` trained on this machine to fill in masked bytes of
English prose. It is a **demo model**: it shows the fill-mask endpoint doing its job offline.
The official `hf://deepmind/language-perceiver` (trained on a large web corpus) is the real
thing (see [models/README.md](../README.md)).

- **Network:** UTF-8 bytes (2048 positions × 64), 64 latents × 128, 2 self-attention layers;
  checkpoint {f['checkpoint_mb']:.1f} MB. Trained on windows of {WINDOW} bytes: longer texts work,
  but every byte is seen through the same 64 latents.

## Data

`pydoc_data/topics.py` from Python's standard library (the text of `help()` topics; Python
Software Foundation License), {f['corpus_bytes'] / 1e3:.0f} KB with whitespace collapsed. The first 90% is the
training text; **the last 10% is held out**. {f['train_windows']:,} windows were drawn, with whole words of
3–8 bytes (about 15% of the bytes) and single bytes masked.

## Training

```bash
make demo-models            # or: .venv/bin/python scripts/train_demo_models.py --only {NAME}
```

Seeded and deterministic on a given machine and thread count; it took {minutes(f['train_seconds'])} with one torch
thread on a 2-core machine shared with other work.

## Held-out results

Top-1 byte accuracy when one whole word of 3–8 bytes is masked in a {WINDOW}-byte window:

| text | byte accuracy |
| --- | --- |
| **held-out last 10%** | {f['word_accuracy_held_out']:.1%} |
| training text | {f['word_accuracy_train']:.1%} |

Five sentences written for this card, each with one word masked (every byte of it), and the
model's top-1 bytes:

| masked sentence | word | filled |
| --- | --- | --- |
{rows}

## Limits

It knows the vocabulary and phrasing of Python's reference documentation. Words from other
domains are guessed letter by letter from what is frequent there; other languages get bytes
that mean nothing.
"""
