"""`semobridge-serve MODEL.onnx`: serve an exported model on NVIDIA Triton Inference Server.

HTTP/REST and gRPC (KServe v2 protocol), dynamic batching, health (/v2/health/ready, /v2/health/live),
statistics (/v2/models/NAME/stats) and Prometheus metrics (/metrics on the metrics port).
Inputs per request: `image` uint8 [B,H,W,3] RGB or `encoded` BYTES [B,1] (JPEG/PNG files);
outputs: scores, label, embedding, class_name. --classes FILE serves a class file's classes (semobridge-classes)
instead of the fitted ones. SIGTERM or Ctrl-C: stop accepting requests, finish those in flight (up to
--drain-timeout), exit.
Exit codes: 0 stopped, 2 input error, 3 model error, 4 runtime error (docs/errors.md).
"""

from __future__ import annotations

import re
import signal
import sys
from pathlib import Path
from types import SimpleNamespace

import click

from .. import __version__
from ..cli import load_options
from ..commandline import command, model_argument, parse_options, unknown_option, version_option
from ..errors import BackendError, InputError, ModelError, SemobridgeError
from .admission import MIB, Budget
from .protocol import MODEL_NAME
from .repository import Batching
from .server import Endpoints, TritonServer
from .settings import ServeSettings, load_classifier

MAX_BATCH, MAX_INSTANCES, MAX_DELAY_US, MAX_MB = 1024, 64, 10_000_000, 1 << 20
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # a folder name in Triton's repository, never '.' or '..'


_DEFAULTS, _BATCHING, _BUDGET = Endpoints(), Batching(), Budget()


@command("semobridge-serve", help=__doc__.replace("`", ""))
@model_argument(metavar="MODEL")
@click.option("--http-port", type=int, default=_DEFAULTS.http_port, show_default=True, help="HTTP/REST port.")
@click.option("--grpc-port", type=int, default=_DEFAULTS.grpc_port, show_default=True, help="gRPC port.")
@click.option("--metrics-port", type=int, default=_DEFAULTS.metrics_port, show_default=True,
              help="Prometheus metrics port, GET /metrics.")
@click.option("--address", default=_DEFAULTS.address, show_default=True,
              help="Address to listen on (0.0.0.0: all; 127.0.0.1: this machine only).")
@click.option("--model-name", default=MODEL_NAME, show_default=True, help="Name clients use for the model.")
@click.option("--max-batch", type=int, default=_BATCHING.max_batch, show_default=True,
              help=f"Most images per model run and per request, 1..{MAX_BATCH}; 1 turns dynamic batching off.")
@click.option("--max-queue-delay-us", type=int, default=_BATCHING.max_queue_delay_us, show_default=True,
              help="Microseconds a request may wait for others to fill a batch (0: batches form only from requests "
                   "that queue while the model is busy).")
@click.option("--instances", type=int, default=_BATCHING.instances, show_default=True,
              help=f"Model instances running in parallel, 1..{MAX_INSTANCES}, each a process with its own ONNX Runtime "
                   "session of --threads threads.")
@load_options  # --classes, --no-int8, --threads (per instance), --spin, the image limits
@unknown_option  # label -1 and an empty class_name for an unknown image (default auto: the model's threshold)
@click.option("--max-request-mb", type=int, default=_BUDGET.request_bytes // MIB, show_default=True,
              help="MiB one request may carry (its body, and the tensors it declares); larger ones are refused with "
                   "HTTP 400 before they are read.")
@click.option("--max-inflight-mb", type=int, default=_BUDGET.inflight_bytes // MIB, show_default=True,
              help="MiB all HTTP requests in flight may hold together; beyond, requests are refused with HTTP 429, to retry.")
@click.option("--drain-timeout", type=int, default=30, show_default=True,
              help="Seconds to finish in-flight requests after SIGTERM before exiting.")
@click.option("--verbose", is_flag=True, help="Show Triton's own log.")
@version_option(__version__)
def cli(**options) -> int:
    return serve(SimpleNamespace(**options))


def parse_args(argv: list[str]) -> SimpleNamespace:
    """A command line's options as the command parses them, without opening MODEL (deploy manifests, tests)."""
    return SimpleNamespace(**parse_options(cli, argv))


def _check(args: SimpleNamespace) -> None:
    for option, value, low, high in (("--max-batch", args.max_batch, 1, MAX_BATCH),
                                     ("--instances", args.instances, 1, MAX_INSTANCES),
                                     ("--max-queue-delay-us", args.max_queue_delay_us, 0, MAX_DELAY_US),
                                     ("--drain-timeout", args.drain_timeout, 0, 3600),
                                     ("--max-request-mb", args.max_request_mb, 1, MAX_MB),
                                     ("--max-inflight-mb", args.max_inflight_mb, args.max_request_mb, MAX_MB)):
        if not low <= value <= high:
            raise InputError(f"{option} must be from {low} to {high}, not {value}")
    if not NAME.fullmatch(args.model_name):
        raise InputError(f"--model-name {args.model_name!r} is not a model name",
                         hint="use 1 to 128 letters, digits, '.', '_' and '-', starting with a letter or digit")


def settings_of(args: SimpleNamespace) -> ServeSettings:
    """How every instance loads the model, from the command line (paths made absolute: Triton runs elsewhere)."""
    classes = str(Path(args.classes).resolve()) if args.classes is not None else None
    return ServeSettings(str(Path(args.model).resolve()), threads=args.threads, allow_spinning=args.spin,
                         prefer_int8=not args.no_int8, max_side=args.max_side, max_pixels=args.max_pixels,
                         max_aspect=args.max_aspect, classes=classes, max_request_bytes=args.max_request_mb * MIB,
                         unknown=args.unknown)


def serve(args: SimpleNamespace) -> int:
    """Load the model once (to fail early), start Triton, wait for a signal or its exit."""
    _check(args)
    settings = settings_of(args)
    classifier = load_classifier(settings)
    if classifier.info.input_kind != "uint8":
        raise ModelError(f"{args.model} is a float-variant export; semobridge-serve serves uint8 exports",
                         hint="export with --input uint8 (the default)")
    endpoints = Endpoints(args.address, args.http_port, args.grpc_port, args.metrics_port)
    server = TritonServer(settings, classifier, args.model_name,
                          Batching(args.max_batch, args.max_queue_delay_us, args.instances), endpoints,
                          args.drain_timeout, args.verbose,
                          Budget(args.max_request_mb * MIB, args.max_inflight_mb * MIB, args.max_batch))
    stopping = []

    def forward(signum: int, _frame: object) -> None:
        if not stopping:
            _say(f"{signal.Signals(signum).name}: finishing the requests in flight, then exiting")
        stopping.append(signum)
        server.signal(signal.SIGTERM)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, forward)
    _say(f"starting Triton with {args.instances} instance(s) of {args.model} ...")
    try:
        server.start()
    except SemobridgeError:
        if stopping:  # stopped while starting: not a failure
            return 0
        raise
    classes, host = len(classifier.class_names), endpoints.address
    del classifier  # the instances hold their own sessions
    try:  # a closed stdout (exit 141) or any other error must not leave Triton running
        print(f"semobridge-serve: ready: model '{args.model_name}' ({classes} classes) on HTTP {host}:"
              f"{endpoints.http_port}, gRPC {host}:{endpoints.grpc_port}, metrics http://{host}:"
              f"{endpoints.metrics_port}/metrics", flush=True)
        code = server.wait()
    finally:
        server.stop()
    if not stopping:
        raise BackendError(f"Triton exited unexpectedly (code {code}): {server.failure()}",
                           hint="run with --verbose to see Triton's log")
    _say("stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    """The console script; returns the exit code (docs/errors.md)."""
    return cli.main(argv, standalone_mode=False)


def _say(text: str) -> None:
    print(f"semobridge-serve: {text}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
