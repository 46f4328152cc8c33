"""`semobridge-serve MODEL.onnx`: serve an exported model on NVIDIA Triton Inference Server.

HTTP/REST and gRPC (KServe v2 protocol), dynamic batching, health (/v2/health/ready, /v2/health/live),
statistics (/v2/models/NAME/stats) and Prometheus metrics (/metrics on the metrics port).
Inputs per request: `image` uint8 [B,H,W,3] RGB or `encoded` BYTES [B,1] (JPEG/PNG files);
outputs: scores, label (-1: unknown), embedding, class_name ("" for unknown), probabilities, known.
--unknown auto|off|VALUE as semobridge-run (default auto: the model's calibrated threshold). --classes FILE serves a class file's classes (semobridge-classes)
instead of the fitted ones. SIGTERM or Ctrl-C: stop accepting requests, finish those in flight (up to
--drain-timeout), exit.
Exit codes: 0 stopped, 2 input error, 3 model error, 4 runtime error (docs/errors.md).
"""

from __future__ import annotations

import argparse
import re
import signal
import sys
from pathlib import Path

from .. import __version__
from ..errors import BackendError, InputError, ModelError, SemobridgeError, report
from ..cli import add_load_options
from .admission import MIB, Budget
from .protocol import MODEL_NAME
from .repository import Batching
from .server import Endpoints, TritonServer
from .settings import ServeSettings, load_classifier

MAX_BATCH, MAX_INSTANCES, MAX_DELAY_US, MAX_MB = 1024, 64, 10_000_000, 1 << 20
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # a folder name in Triton's repository, never '.' or '..'


def _parser() -> argparse.ArgumentParser:
    defaults, batching, budget = Endpoints(), Batching(), Budget()
    p = argparse.ArgumentParser(prog="semobridge-serve", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="exported .onnx model (uint8 input)")
    p.add_argument("--http-port", type=int, default=defaults.http_port, help="HTTP/REST port (default %(default)s)")
    p.add_argument("--grpc-port", type=int, default=defaults.grpc_port, help="gRPC port (default %(default)s)")
    p.add_argument("--metrics-port", type=int, default=defaults.metrics_port,
                   help="Prometheus metrics port, GET /metrics (default %(default)s)")
    p.add_argument("--address", default=defaults.address,
                   help="address to listen on (default %(default)s: all; 127.0.0.1: this machine only)")
    p.add_argument("--model-name", default=MODEL_NAME, help="name clients use for the model (default %(default)s)")
    p.add_argument("--max-batch", type=int, default=batching.max_batch,
                   help=f"most images per model run and per request, 1..{MAX_BATCH} (default %(default)s); "
                        "1 turns dynamic batching off")
    p.add_argument("--max-queue-delay-us", type=int, default=batching.max_queue_delay_us,
                   help="microseconds a request may wait for others to fill a batch (default %(default)s: "
                        "batches form only from requests that queue while the model is busy)")
    p.add_argument("--instances", type=int, default=batching.instances,
                   help=f"model instances running in parallel, 1..{MAX_INSTANCES}, each a process with its own "
                        "ONNX Runtime session of --threads threads (default %(default)s)")
    add_load_options(p, spinning=False)  # --classes, --unknown, --no-int8, --threads (per instance), --spinning, limits
    p.add_argument("--max-request-mb", type=int, default=budget.request_bytes // MIB,
                   help="MiB one request may carry (its body, and the tensors it declares); larger ones are refused "
                        "with HTTP 400 before they are read (default %(default)s)")
    p.add_argument("--max-inflight-mb", type=int, default=budget.inflight_bytes // MIB,
                   help="MiB all HTTP requests in flight may hold together; beyond, requests are refused with "
                        "HTTP 429, to retry (default %(default)s)")
    p.add_argument("--drain-timeout", type=int, default=30,
                   help="seconds to finish in-flight requests after SIGTERM before exiting (default %(default)s)")
    p.add_argument("--verbose", action="store_true", help="show Triton's own log")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return p


def _check(args: argparse.Namespace) -> None:
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


def settings_of(args: argparse.Namespace) -> ServeSettings:
    """How every instance loads the model, from the command line (paths made absolute: Triton runs elsewhere)."""
    classes = str(Path(args.classes).resolve()) if args.classes is not None else None
    return ServeSettings(str(Path(args.model).resolve()), threads=args.threads, allow_spinning=args.spinning,
                         prefer_int8=not args.no_int8, max_side=args.max_side, max_pixels=args.max_pixels,
                         max_aspect=args.max_aspect, classes=classes, max_request_bytes=args.max_request_mb * MIB,
                         unknown=args.unknown)


def serve(args: argparse.Namespace) -> int:
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
    print(f"semobridge-serve: ready: model '{args.model_name}' ({classes} classes) on HTTP {host}:{endpoints.http_port}, "
          f"gRPC {host}:{endpoints.grpc_port}, metrics http://{host}:{endpoints.metrics_port}/metrics", flush=True)
    code = server.wait()
    server.stop()
    if not stopping:
        raise BackendError(f"Triton exited unexpectedly (code {code}): {server.failure()}",
                           hint="run with --verbose to see Triton's log")
    _say("stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return serve(args)
    except SemobridgeError as exc:
        return report("semobridge-serve", exc)


def _say(text: str) -> None:
    print(f"semobridge-serve: {text}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
