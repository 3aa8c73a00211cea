"""``perceiver-client``: the server's calls from a shell, built on :class:`Client`.

Exit codes: 0 success, 1 the server failed the call (or could not be reached), 2 bad usage
or bad input (a missing or unreadable file, or the server refusing the input as invalid).
``--json`` prints the server's answer as JSON for every command. Ctrl-C cancels the call
(exit 130) and leaves no output file behind.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import struct
import sys
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from ..answers import ClassificationResponse, FillMaskResponse
from .client import Client
from .connection import API_KEY_ENV, Connection
from .errors import InputError, PerceiverError
from .files import replacing
from .progress import Progress

FLOW_SUFFIXES = {".npy": "npy", ".flo": "flo", ".png": "png"}
EXIT_OK, EXIT_SERVER, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def _print_json(value: Any) -> None:
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json", exclude_unset=True)
    print(json.dumps(value, ensure_ascii=False))


def _predictions(result: ClassificationResponse, names: list[str] | None = None) -> None:
    for position, item in enumerate(result.results):
        indent = ""
        if names is not None:
            print(names[position])
            indent = "  "
        for p in item.predictions:
            print(f"{indent}{p.score:8.4f}  {p.label}")


# -- commands -------------------------------------------------------------------------------------

def classify_text(client: Client, args: argparse.Namespace) -> int:
    texts = [sys.stdin.read() if text == "-" else text for text in args.texts]
    answer = client.classify_text(texts, top_k=args.top_k, model=args.model, return_logits=args.logits)
    if args.json:
        _print_json(answer)
    else:
        _predictions(answer, texts if len(texts) > 1 else None)
    return EXIT_OK


def fill_mask(client: Client, args: argparse.Namespace) -> int:
    text = sys.stdin.read() if args.text == "-" else args.text
    answer: FillMaskResponse = client.fill_mask(text, top_k=args.top_k, model=args.model, truncate=args.truncate)
    if args.json:
        _print_json(answer)
        return EXIT_OK
    print(answer.text)
    for masked in answer.masked:
        options = ", ".join(f"{repr(p.char) if p.char is not None else f'0x{p.byte:02x}'} {p.score:.3f}"
                            for p in masked.predictions)
        print(f"  byte {masked.position}: {options}")
    return EXIT_OK


def classify_image(client: Client, args: argparse.Namespace) -> int:
    answer = client.classify_image(args.image, top_k=args.top_k, model=args.model, return_logits=args.logits)
    if args.json:
        _print_json(answer)
    else:
        _predictions(answer)
    return EXIT_OK


def flo_bytes(flow: np.ndarray) -> bytes:
    """The Middlebury .flo file: "PIEH", width, height, then u, v float32 per pixel."""
    height, width, _ = flow.shape
    return b"PIEH" + struct.pack("<ii", width, height) + np.ascontiguousarray(flow, "<f4").tobytes()


def npy_bytes(flow: np.ndarray) -> bytes:
    import io

    out = io.BytesIO()
    np.save(out, flow.astype(np.float32), allow_pickle=False)
    return out.getvalue()


def flow(client: Client, args: argparse.Namespace) -> int:
    output = Path(args.output)
    fmt = FLOW_SUFFIXES.get(output.suffix.lower())
    if fmt is None:
        raise InputError(f"{output}: name the output .png, .flo or .npy")
    if fmt == "png":  # the colour coding is drawn by the server
        if client.connection.use_grpc:
            raise InputError("the colour-coded .png comes from the REST endpoint: drop --grpc, or write .flo/.npy")
        data = client.flow_file(args.frame1, args.frame2, "png", model=args.model)
        shape = None
    else:
        field = client.estimate_flow(args.frame1, args.frame2, model=args.model)
        data, shape = (npy_bytes if fmt == "npy" else flo_bytes)(field), field.shape[:2]
    with replacing(output) as partial:
        partial.write_bytes(data)
    if args.json:
        _print_json({"output": str(output), "format": fmt, "bytes": len(data),
                     **({"height": shape[0], "width": shape[1]} if shape else {})})
    else:
        print(f"wrote {output} ({len(data)} bytes)")
    return EXIT_OK


def models(client: Client, args: argparse.Namespace) -> int:
    answer = client.list_models()
    if args.json:
        _print_json(answer)
        return EXIT_OK
    defaults = set(answer.defaults.values())
    for m in answer.models:
        mark = "*" if m.name in defaults else " "
        extra = f"  {m.reason}" if m.reason else ""
        print(f"{mark} {m.name:24} {m.task or '?':22} {m.state:8} {m.device or '':8} {m.dtype or ''}{extra}")
    return EXIT_OK


def health(client: Client, args: argparse.Namespace) -> int:
    answer = client.health()
    if args.json:
        _print_json(answer)
    else:
        print(answer.status)
        for name, model in answer.models.items():
            print(f"  {name:24} {model.state}" + (f"  {model.reason}" if model.reason else ""))
    return EXIT_OK if answer.status == "ready" else EXIT_SERVER


def reconstruct(client: Client, args: argparse.Namespace) -> int:
    progress = Progress(sys.stderr, args.input)
    try:
        done = client.reconstruct_file(args.input, args.output, labels=args.labels, model=args.model,
                                       chunks_per_window=args.chunks_per_window, top_k=args.top_k,
                                       timeout=args.timeout, progress=progress)
    finally:
        progress.close()
    if args.json:
        _print_json({**dataclasses.asdict(done), "output": str(done.output)})
    else:
        print(f"wrote {done.output}: {done.frames} frames of {done.width}×{done.height} at {done.fps:g} fps, "
              f"{done.windows} windows" + (f"; labels in {args.labels}" if args.labels else ""))
    return EXIT_OK


# -- the parser -------------------------------------------------------------------------------------

def _connection_flags(parser: argparse.ArgumentParser, defaults: bool) -> None:
    """The common flags, accepted before or after the command (given after, they win)."""
    def default(value: Any) -> Any:
        return value if defaults else argparse.SUPPRESS

    group = parser.add_argument_group("connection")
    group.add_argument("--url", default=default(os.environ.get("PERCEIVER_URL", Connection.url)),
                       help="REST base URL (env PERCEIVER_URL; https:// for TLS)")
    group.add_argument("--grpc-address", default=default(os.environ.get("PERCEIVER_GRPC", Connection.grpc_address)),
                       metavar="HOST:PORT", help="gRPC address, for reconstruct and --grpc (env PERCEIVER_GRPC)")
    group.add_argument("--grpc", action="store_true", default=default(False), help="use gRPC for every call")
    group.add_argument("--api-key", default=default(None), help=f"API key (or env {API_KEY_ENV})")
    group.add_argument("--tls", action="store_true", default=default(False), help="gRPC over TLS")
    group.add_argument("--ca", default=default(None), metavar="PEM", help="CA bundle to trust (REST and gRPC)")
    group.add_argument("--timeout", type=float, default=default(None), metavar="S",
                       help="deadline per call in seconds (default 60; reconstruct: none, else the whole stream's)")
    group.add_argument("--json", action="store_true", default=default(False), help="print machine-readable JSON")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="perceiver-client", description="Call a perceiver-serve server.",
                                     epilog="Exit codes: 0 ok, 1 server error, 2 bad usage or input.")
    _connection_flags(parser, defaults=True)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler: Any, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        _connection_flags(sub, defaults=False)
        sub.set_defaults(handler=handler)
        sub.add_argument("--model", help="model name (default: the server's default for the task)")
        return sub

    def top_k(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--top-k", type=int, help="how many best labels (server default 5)")

    sub = command("classify-text", classify_text, "classify texts ('-' reads stdin)")
    sub.add_argument("texts", nargs="+", metavar="TEXT")
    top_k(sub)
    sub.add_argument("--logits", action="store_true", help="also return every label's logit")
    sub = command("fill-mask", fill_mask, "predict the bytes marked [MASK] ('-' reads stdin)")
    sub.add_argument("text", metavar="TEXT")
    top_k(sub)
    sub.add_argument("--truncate", action="store_true", help="cut texts over the model's limit")
    sub = command("classify-image", classify_image, "classify an image file")
    sub.add_argument("image", metavar="IMAGE")
    top_k(sub)
    sub.add_argument("--logits", action="store_true", help="also return every label's logit")
    sub = command("flow", flow, "optical flow between two frames, written as .png, .flo or .npy")
    sub.add_argument("frame1")
    sub.add_argument("frame2")
    sub.add_argument("-o", "--output", required=True)
    sub = command("reconstruct", reconstruct, "stream a video file through the video model; write the reconstruction")
    sub.add_argument("input", metavar="VIDEO", help="any container and codec FFmpeg reads")
    sub.add_argument("-o", "--output", required=True, help="the reconstructed video (MP4)")
    sub.add_argument("--labels", metavar="JSON", help="write the per-window labels here")
    sub.add_argument("--chunks-per-window", type=int, help="decode chunks per window (server default)")
    top_k(sub)
    command("models", models, "list the server's models")
    command("health", health, "is every model ready? (exit 1 if not)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    options = {"api_key": args.api_key} if args.api_key else {}  # else the environment's, if any
    if args.timeout is not None:
        options["timeout"] = args.timeout
    try:
        with Client(args.url, grpc_address=args.grpc_address, use_grpc=args.grpc, tls=args.tls, ca=args.ca,
                    **options) as client:
            return args.handler(client, args)
    except PerceiverError as exc:  # InputError (a local file) too
        print(f"perceiver-client: {exc}", file=sys.stderr)
        return EXIT_USAGE if exc.bad_input else EXIT_SERVER
    except KeyboardInterrupt:
        print("perceiver-client: cancelled", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `perceiver-client models | head`
        return EXIT_OK
    except (OSError, UnicodeError) as exc:  # an output that can't be written, input that isn't text: the user's to fix
        print(f"perceiver-client: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
