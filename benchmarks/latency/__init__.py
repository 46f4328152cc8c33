"""Latency of the fused classifier (uint8 pixels -> scores) on every backend present on this machine.

Every backend runs the same fitted model (a head fitted on random embeddings of the backbone's
widths; speed does not depend on weights or on what the head learned), and beside it the bare
image encoder (same preprocessing and encoder, no bridge, prototypes or blend), so the fused
graph's overhead is a ratio measured in the same backend and run.

    python -m benchmarks.latency                 # ViT-B-16, random weights, all backends found
    python -m benchmarks.latency --quick         # CI-sized: semobridge-tiny, batch 1 and 2

Modules, in the order a run uses them: models (what is timed, exported once), timing, runners
(one per way of calling a model), backends (the table of backends), limits (GPU peaks), floors (the CPU
floors: the encoder's own matrix products), measure (cases and rows), targets (the table of targets), report, cli.
"""
from .backends import BACKENDS, Backend, select_backends
from .cli import main, parse_args
from .floors import CpuFloors, Product, encoder_products
from .limits import peak_tflops
from .measure import Row, parse_sizes, random_images
from .models import ExportCache, build_models
from .targets import TARGETS, targets

__all__ = ["BACKENDS", "TARGETS", "Backend", "CpuFloors", "ExportCache", "Product", "Row", "build_models", "encoder_products",
           "main", "parse_args", "parse_sizes", "peak_tflops", "random_images", "select_backends", "targets"]
