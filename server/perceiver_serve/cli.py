"""``perceiver-serve [serve] [flags]``: every flag is also a ``PERCEIVER_*`` environment variable."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from pydantic import ValidationError

from .engine import RepositoryError
from .logs import configure_logging
from .settings import Settings

_FLAGS: list[tuple[str, dict]] = [
    ("--model-repository", dict(type=Path, help="model repository directory (default: the bundled demo models)")),
    ("--host", dict(help="interface to listen on (default 127.0.0.1)")),
    ("--http-port", dict(type=int, help="REST port (default 8000)")),
    ("--http-parser", dict(choices=["auto", "h11", "httptools"],
                           help="HTTP/1.1 implementation (default auto: httptools where installed)")),
    ("--grpc-port", dict(type=int, help="gRPC port (default 50051; -1 disables)")),
    ("--api-key", dict(help="require 'Authorization: Bearer KEY' on model routes")),
    ("--max-body-mb", dict(type=float, help="largest REST body in MiB (default 64)")),
    ("--grpc-max-message-mb", dict(type=float, help="largest gRPC message in MiB (default 64)")),
    ("--max-image-pixels", dict(type=int, help="largest decoded image in pixels (default 40M)")),
    ("--max-image-mb", dict(type=float, help="largest encoded image in MiB (default 20)")),
    ("--max-audio-seconds", dict(type=float, help="longest audio clip (default 120)")),
    ("--log-format", dict(choices=["text", "json"], help="log line format (default text)")),
    ("--log-level", dict(choices=["debug", "info", "warning", "error"])),
    ("--tls-cert", dict(type=Path, help="PEM certificate; with --tls-key serves both ports over TLS")),
    ("--tls-key", dict(type=Path, help="PEM private key")),
    ("--grace-period", dict(type=float, dest="grace_period_s", help="seconds to drain on SIGTERM (default 30)")),
    ("--preprocess-threads", dict(type=int, help="media decoding threads (default min(4, cores))")),
    ("--malloc-mmap-threshold-mb", dict(type=float, help="glibc: allocations from this size up go back to the "
                                                          "system when freed (default 4; 0 = glibc's default)")),
]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="perceiver-serve", description="Serve Perceiver IO models over REST and gRPC.")
    p.add_argument("command", nargs="?", default="serve", choices=["serve"], help="what to do (default: serve)")
    for flag, options in _FLAGS:
        p.add_argument(flag, default=argparse.SUPPRESS, **options)
    p.add_argument("--no-docs", dest="docs", action="store_false", default=argparse.SUPPRESS,
                   help="do not serve /docs and /openapi.json")
    return p


def main(argv: list[str] | None = None) -> int:
    args = vars(parser().parse_args(argv))
    args.pop("command")
    try:
        settings = Settings(**args)
    except ValidationError as exc:
        print(f"perceiver-serve: invalid settings: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_format, settings.log_level)
    from .server import serve  # imports torch: after argument errors have had their say

    try:
        return asyncio.run(serve(settings))
    except RepositoryError as exc:
        print(f"perceiver-serve: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
