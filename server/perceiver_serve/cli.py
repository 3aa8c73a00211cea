"""``perceiver-serve [serve] [flags]``: every flag is also a ``PERCEIVER_*`` environment variable.

``--help`` and ``--version`` answer without importing torch or the model code (a fraction of
a second); the server itself is imported only once the settings are valid.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from . import __version__

_FLAGS: list[tuple[str, dict]] = [
    ("--model-repository", dict(type=Path, help="model repository directory (default: the bundled demo models)")),
    ("--host", dict(help="interface to listen on (default 127.0.0.1)")),
    ("--http-port", dict(type=int, help="REST port (default 8000)")),
    ("--http-parser", dict(choices=["auto", "h11", "httptools"],
                           help="HTTP/1.1 implementation (default auto: httptools where installed)")),
    ("--grpc-port", dict(type=int, help="gRPC port (default 50051; -1 disables)")),
    ("--api-key", dict(help="require 'Authorization: Bearer KEY' on model routes")),
    ("--admin-key", dict(help="require 'Authorization: Bearer KEY' on model control (the API key alone is "
                              "refused there)")),
    ("--model-control", dict(choices=["none", "explicit", "poll"],
                             help="none (default): models change only on restart; explicit: the repository "
                                  "API loads, reloads and unloads; poll: the repository on disk does too")),
    ("--repository-poll-s", dict(type=float, help="with --model-control poll: seconds between scans (default 5)")),
    ("--load-model", dict(action="append", help="with --model-control explicit/poll: load only this model at "
                                                 "start (repeatable)")),
    ("--max-body-mb", dict(type=float, help="largest REST body in MiB (default 64)")),
    ("--grpc-max-message-mb", dict(type=float, help="largest gRPC message in MiB (default 64)")),
    ("--max-image-pixels", dict(type=int, help="largest decoded image in pixels (default 40M)")),
    ("--max-image-mb", dict(type=float, help="largest encoded image in MiB (default 20)")),
    ("--max-audio-seconds", dict(type=float, help="longest audio clip (default 120)")),
    ("--max-decode-mb", dict(type=float, help="decoded media held at once by all requests, in MiB (default 4096); "
                                              "work waits for its share, work larger than all of it is refused")),
    ("--log-format", dict(choices=["text", "json"], help="log line format (default text)")),
    ("--log-level", dict(choices=["debug", "info", "warning", "error"],
                         help="least severe log messages shown (default info)")),
    ("--tls-cert", dict(type=Path, help="PEM certificate; with --tls-key serves both ports over TLS")),
    ("--tls-key", dict(type=Path, help="PEM private key")),
    ("--grace-period", dict(type=float, dest="grace_period_s", help="seconds to drain on SIGTERM (default 30)")),
    ("--keep-alive", dict(type=float, dest="keep_alive_s", help="seconds an idle HTTP keep-alive connection stays "
                                                                "open (default 75)")),
    ("--body-timeout", dict(type=float, dest="body_timeout_s", help="seconds a REST request body may pause "
                                                                    "while arriving; longer is a 408 (default 30)")),
    ("--preprocess-threads", dict(type=int, help="media decoding threads (default min(4, cores))")),
    ("--malloc-mmap-threshold-mb", dict(type=float, help="glibc: allocations from this size up go back to the "
                                                          "system when freed (default 32; 0 = glibc's default)")),
    ("--malloc-arenas", dict(type=int, help="glibc: most malloc heaps shared by the threads (default: one per core, "
                                            "at least 2; 0 = glibc's eight per core)")),
    ("--omp-spin-count", dict(type=int, help="libgomp: spins of an idle OpenMP thread before it sleeps (default "
                                             "30000 unless GOMP_SPINCOUNT or OMP_WAIT_POLICY is set; 0 = libgomp's)")),
]

# Kept equal to server.EXIT_PORT_BUSY / EXIT_MODEL_FAILED / EXIT_NO_GPU (a test checks), written here so that
# --help needs no server import.
EPILOG = """\
Every flag is also an environment variable, named in [brackets] after it
(--http-port 9000 is PERCEIVER_HTTP_PORT=9000; --no-docs is PERCEIVER_DOCS=false,
--strict is PERCEIVER_STRICT=true). A flag wins over its variable.

exit codes:
  0    stopped after a drain (SIGTERM or Ctrl-C)
  2    invalid flags, settings or model repository
  3    the REST or gRPC port cannot be bound (in use, or not permitted)
  4    --strict, and a model failed to load
  5    --require-gpu, and a model asking for device auto or cuda would get no GPU
  128+N  a second signal N during the drain quit at once (130 for Ctrl-C, 143 for SIGTERM)
"""


def _env_name(dest: str) -> str:
    return "PERCEIVER_" + dest.upper()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="perceiver-serve", description="Serve Perceiver IO models over REST and gRPC.",
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", nargs="?", default="serve", choices=["serve"], help="what to do (default: serve)")
    p.add_argument("--version", action="version", version=f"perceiver-serve {__version__}")
    for flag, options in _FLAGS:
        dest = options.get("dest", flag[2:].replace("-", "_"))
        options = {**options, "help": f"{options['help']} [{_env_name(dest)}]"}
        p.add_argument(flag, default=argparse.SUPPRESS, **options)
    p.add_argument("--require-gpu", action="store_true", default=argparse.SUPPRESS,
                   help="exit with code 5 at start if a model asking for device auto or cuda would get no GPU "
                        f"(a GPU node whose driver or runtime failed) [{_env_name('require_gpu')}]")
    p.add_argument("--no-docs", dest="docs", action="store_false", default=argparse.SUPPRESS,
                   help=f"do not serve /docs, /redoc and /openapi.json [{_env_name('docs')}=false]")
    p.add_argument("--strict", action="store_true", default=argparse.SUPPRESS,
                   help="exit with code 4 when a model fails to load, instead of serving the others and "
                        f"answering 503 on /health/ready [{_env_name('strict')}]")
    return p


def main(argv: list[str] | None = None) -> int:
    args = vars(parser().parse_args(argv))
    args.pop("command")
    from pydantic import ValidationError

    from .logs import configure_logging
    from .settings import Settings

    try:
        settings = Settings(**args)
    except ValidationError as exc:
        print(f"perceiver-serve: invalid settings: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_format, settings.log_level)
    from .allocator import configure_allocator
    from .openmp import limit_spinning

    limit_spinning(settings.omp_spin_count)  # before torch loads libgomp, which reads it once

    configure_allocator(settings.malloc_arenas, settings.malloc_mmap_threshold_mb)  # before any thread starts
    from .engine import RepositoryError  # these import torch: after argument errors have had their say
    from .errors import PortUnavailable
    from .server import EXIT_PORT_BUSY, serve

    try:
        return asyncio.run(serve(settings))
    except RepositoryError as exc:
        print(f"perceiver-serve: {exc}", file=sys.stderr)
        return 2
    except PortUnavailable as exc:
        print(f"perceiver-serve: {exc}", file=sys.stderr)
        return EXIT_PORT_BUSY


if __name__ == "__main__":
    sys.exit(main())
