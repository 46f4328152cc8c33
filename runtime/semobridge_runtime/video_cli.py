"""semobridge-run's video mode: `semobridge-run MODEL clip.mp4|rtsp://...|/dev/video0 [--every N | --fps F] [--smooth A]`.

One JSON line per classified frame on stdout (frame, time_s, label, class_name, score), flushed as it
comes; frames decoded and classified, and their rates, on stderr at the end (also after Ctrl-C, which
exits 130).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from .classifier import Classifier
from .errors import InputError
from .video import Sampling, check_source, elapsed_report, import_av, is_video_source


def add_video_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "videos, streams and cameras",
        "a video file, an rtsp://... (or http, rtmp, udp, srt) URL or a /dev/videoN camera instead of images\n"
        "(one source; needs the runtime's video extra): one JSON line per classified frame")
    group.add_argument("--every", type=int, default=None, metavar="N", help="classify every N-th frame (frames 0, N, 2N...)")
    group.add_argument("--fps", type=float, default=None, metavar="F",
                       help="classify F frames a second of video (the first frame at or after each 1/F s); "
                            "default: every frame")
    group.add_argument("--smooth", type=float, default=None, metavar="A",
                       help="exponential moving average of the scores over classified frames, s = A p + (1 - A) s "
                            "(0 < A <= 1; 1 is none, 0.3 averages over about 3 frames)")
    group.add_argument("--video-option", action="append", default=[], metavar="KEY=VALUE",
                       help="an FFmpeg option for the source, repeatable: rtsp_transport=udp, video_size=1280x720, "
                            "input_format=mjpeg, framerate=30")


def video_source(args: argparse.Namespace) -> tuple[str, Sampling, dict[str, str]] | None:
    """The one video source, its sampling and FFmpeg options (all checked), or None when the arguments are images."""
    asked = args.every is not None or args.fps is not None or args.smooth is not None or args.video_option
    if not asked and not any(is_video_source(a) for a in args.images):
        return None
    if len(args.images) != 1:
        raise InputError(f"{len(args.images)} sources given; semobridge-run reads one video, stream or camera at a time",
                         hint="run it once per video; --every, --fps, --smooth and --video-option apply to videos only")
    source, sampling, options = args.images[0], Sampling(args.every, args.fps, args.smooth), _options(args.video_option)
    check_source(source)  # before the model loads: a typo costs no model load
    import_av()
    return source, sampling, options


def _options(pairs: list[str]) -> dict[str, str]:
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InputError(f"--video-option {pair!r} is not KEY=VALUE", hint="e.g. --video-option rtsp_transport=udp")
        options[key] = value
    return options


def run_video(classifier: Classifier, source: str, sampling: Sampling, options: dict[str, str]) -> int:
    """Print one JSON line per classified frame, then the rates on stderr; errors propagate as SemobridgeError."""
    start = time.perf_counter()
    stream = classifier.stream(source, every=sampling.every, fps=sampling.fps, smooth=sampling.smooth, options=options)
    code = 0
    try:
        for record in stream:
            print(json.dumps(record.as_dict()), flush=True)
    except KeyboardInterrupt:
        code = 130
    except BrokenPipeError:  # the reader stopped (| head): no more output, no traceback at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    finally:
        stream.close()
        print(f"semobridge-run: {elapsed_report(stream, time.perf_counter() - start)}", file=sys.stderr)
    return code
