"""semobridge-run's video mode: `semobridge-run MODEL clip.mp4|rtsp://...|/dev/video0 [--every N | --fps F] [--smooth A]`.

One JSON line per classified frame on stdout (frame, time_s, label, class_name, score), flushed as it
comes; frames decoded and classified, and their rates, on stderr at the end (also after Ctrl-C, which
exits 130).
"""

from __future__ import annotations

import json
import sys
import time
from typing import Callable, Iterable

import click

from .classifier import Classifier
from .errors import InputError
from .video import Sampling, check_source, elapsed_report, import_av, is_video_source


def video_options(fn: Callable) -> Callable:
    """--every, --fps, --smooth and --video-option (semobridge-run)."""
    for decorate in reversed((
        click.option("--every", type=int, default=None, metavar="N", help="Video: classify every N-th frame (frames 0, N, 2N...)."),
        click.option("--fps", type=float, default=None, metavar="F",
                     help="Video: classify F frames a second of video (the first frame at or after each 1/F s) "
                          "[default: every frame]."),
        click.option("--smooth", type=float, default=None, metavar="A",
                     help="Video: exponential moving average of the scores over classified frames, s = A p + (1 - A) s "
                          "(0 < A <= 1; 1 is none, 0.3 averages over about 3 frames)."),
        click.option("--video-option", "video_options", multiple=True, metavar="KEY=VALUE",
                     help="Video: an FFmpeg option for the source, repeatable: rtsp_transport=udp, video_size=1280x720, "
                          "input_format=mjpeg, framerate=30."),
    )):
        fn = decorate(fn)
    return fn


def video_source(sources: list[str], every: int | None, fps: float | None, smooth: float | None,
                 video_options: tuple[str, ...]) -> tuple[str, Sampling, dict[str, str]] | None:
    """The one video source, its sampling and FFmpeg options (all checked), or None when the arguments are images."""
    asked = every is not None or fps is not None or smooth is not None or video_options
    if not asked and not any(is_video_source(a) for a in sources):
        return None
    if len(sources) != 1:
        raise InputError(f"{len(sources)} sources given; semobridge-run reads one video, stream or camera at a time",
                         hint="run it once per video; --every, --fps, --smooth and --video-option apply to videos only")
    source, sampling, options = sources[0], Sampling(every, fps, smooth), _options(video_options)
    check_source(source)  # before the model loads: a typo costs no model load
    import_av()
    return source, sampling, options


def _options(pairs: Iterable[str]) -> dict[str, str]:
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
    finally:  # also when the reader of stdout went away (| head): the command ends with 141, no traceback
        stream.close()
        print(f"semobridge-run: {elapsed_report(stream, time.perf_counter() - start)}", file=sys.stderr)
    return code
