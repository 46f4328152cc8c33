"""Video files, network streams and cameras -> one classification per sampled frame (`Classifier.stream`).

Decoding is PyAV's (FFmpeg), the runtime's `video` extra: `pip install 'semobridge-runtime[video]'`
(runtime/README.md says why PyAV). A source is a video file, a stream URL (rtsp://, rtsps://, rtmp://,
http(s)://, udp://, tcp://, srt://) or a V4L2 camera (/dev/videoN).

Which frames are classified (`Sampling`), frame 0 always:
- every=N: frames 0, N, 2N, ... (the decoder's frame count from 0);
- fps=F: a frame when its time reaches the next point of the grid 0, 1/F, 2/F, ...; after a frame at
  time t the next point is the first one after t (floor(t F) + 1) / F, so a stream that skips time
  skips points. Times are exact fractions of the stream's time base, so grid points equal to a
  frame's time select that frame;
- neither: every frame.

A frame's time (`time_s`) is its presentation timestamp minus the stream's start time (the first
frame's timestamp where the container gives none); a frame without a timestamp takes the previous
frame's time plus one frame at the stream's average rate.

Smoothing (`smooth=a`, 0 < a <= 1): an exponential moving average of the score vectors of the classified
frames, s_0 = p_0, s_k = a p_k + (1 - a) s_(k-1); label, class_name and score come from s_k (its argmax). The
abstention score (`open_set_score`) is averaged alike, and the frame is unknown (label -1) when its average is
below the classifier's threshold (openset.decide).
a = 1 is no smoothing; a = 0.3 averages over about 1/a = 3 classified frames (the weights of older frames
fall by 1 - a per classified frame, whatever the time between them).

Memory is bounded for endless streams: one decoded frame at a time (plus the decoder's own threads'
frames), one score vector for the smoothing, nothing kept of frames already classified.
"""

from __future__ import annotations

import math
import os
import stat
from dataclasses import dataclass
from fractions import Fraction
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping

import numpy as np

from . import openset
from .errors import BackendError, InputError

if TYPE_CHECKING:
    from .classifier import Classifier

#: File suffixes that semobridge-run takes for videos (compared in lower case).
VIDEO_SUFFIXES = (".avi", ".m2ts", ".m4v", ".mkv", ".mov", ".mp4", ".mpeg", ".mpg", ".mts", ".ogv", ".ts", ".webm")
STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt")
CAMERA_PREFIX = "/dev/video"
#: Seconds to wait for a network stream to open and, after that, for each read (then it is given up).
STREAM_TIMEOUT_S = 10.0
#: FFmpeg options for RTSP unless the caller gives its own: TCP (no lost packets, no grey smears).
RTSP_OPTIONS = {"rtsp_transport": "tcp"}
INSTALL_HINT = "pip install 'semobridge-runtime[video]' (PyAV, FFmpeg's libraries in one wheel)"


@dataclass(frozen=True)
class FrameResult:
    """One classified frame: its index in the stream (from 0), its time, the best class and its score.

    scores: every class's score (float32 [C]), smoothed when the stream smooths.
    open_set_score: the abstention score that decides "unknown" (Classifier.score names it), smoothed alike.
    """

    frame: int
    time_s: float
    label: int  # -1: unknown (Classifier.load's `unknown`)
    class_name: str | None  # None: unknown
    score: float
    scores: np.ndarray
    open_set_score: float

    def as_dict(self) -> dict[str, Any]:
        """The JSON line semobridge-run prints: frame, time_s, label, class_name, score."""
        return {"frame": self.frame, "time_s": self.time_s, "label": self.label, "class_name": self.class_name,
                "score": self.score}


@dataclass(frozen=True)
class Sampling:
    """Which frames to classify (every N-th or F per second) and the smoothing factor; checked on creation."""

    every: int | None = None
    fps: float | None = None
    smooth: float | None = None

    def __post_init__(self) -> None:
        if self.every is not None and self.fps is not None:
            raise InputError("give --every or --fps, not both", hint="--every N takes every N-th frame, --fps F F frames a second")
        if self.every is not None and (isinstance(self.every, bool) or not isinstance(self.every, int) or self.every < 1):
            raise InputError(f"every must be a positive whole number of frames, got {self.every!r}",
                             hint="--every 1 classifies every frame, --every 5 every fifth")
        if self.fps is not None and (isinstance(self.fps, bool) or not isinstance(self.fps, (int, float))
                                     or not math.isfinite(self.fps) or self.fps <= 0):
            raise InputError(f"fps must be a positive number of frames a second, got {self.fps!r}",
                             hint="e.g. --fps 2 classifies two frames a second of video")
        if self.smooth is not None and (isinstance(self.smooth, bool) or not isinstance(self.smooth, (int, float))
                                        or not 0 < self.smooth <= 1):
            raise InputError(f"smooth must be a number in (0, 1], got {self.smooth!r}",
                             hint="the weight of the newest frame in the moving average: 1 is no smoothing, "
                                  "0.3 averages over about 3 classified frames")


class _Selector:
    """Decides, frame by frame, whether to classify it (Sampling's rule)."""

    def __init__(self, sampling: Sampling) -> None:
        self._every = sampling.every or 1
        self._fps = Fraction(str(sampling.fps)) if sampling.fps is not None else None  # 2.5 -> 5/2 exactly
        self._due: Fraction | None = None

    def take(self, index: int, time: Fraction) -> bool:
        if self._fps is None:
            return index % self._every == 0
        if self._due is not None and time < self._due:
            return False
        self._due = (math.floor(time * self._fps) + 1) / self._fps
        return True


def source_kind(source: str) -> str:
    """"url", "camera" or "file"."""
    scheme, sep, _ = source.partition("://")
    if sep and scheme.lower() in STREAM_SCHEMES:
        return "url"
    return "camera" if source.startswith(CAMERA_PREFIX) else "file"


def is_video_source(source: str) -> bool:
    """Whether semobridge-run should read `source` as a video: a stream URL, a camera or a video file suffix."""
    return source_kind(source) != "file" or Path(source).suffix.lower() in VIDEO_SUFFIXES


def import_av() -> Any:
    """PyAV, or a BackendError that says how to install it."""
    try:
        import av
    except ImportError:
        raise BackendError("reading videos, streams and cameras needs PyAV, which is not installed",
                           hint=INSTALL_HINT) from None
    return av


def check_source(source: str) -> None:
    """Refuse a missing or non-regular file and a missing camera device, before anything is loaded or opened."""
    kind = source_kind(source)
    if kind == "file":
        path = Path(source)
        if not path.exists():
            raise InputError(f"no such video file: {source}", hint="check the path; streams are given as rtsp://... "
                                                                   "URLs and cameras as /dev/videoN")
        if not path.is_file():
            raise InputError(f"{source} is not a regular file", hint="pass a video file, a stream URL or /dev/videoN")
    elif kind == "camera":
        try:
            mode = os.stat(source).st_mode
        except OSError:
            raise InputError(f"no camera at {source}", hint="list the cameras with `v4l2-ctl --list-devices` "
                                                            "(or ls /dev/video*); in a container, pass the device in") from None
        if not stat.S_ISCHR(mode):
            raise InputError(f"{source} is not a camera device", hint="cameras are the /dev/videoN character devices")


def _open(av: Any, source: str, options: Mapping[str, str] | None, timeout: float) -> Any:
    """Open the container, refusing what is not a readable video source with a hint."""
    check_source(source)
    kind = source_kind(source)
    opts = dict(RTSP_OPTIONS) if source.lower().startswith(("rtsp://", "rtsps://")) else {}
    opts.update(options or {})
    try:
        return av.open(source, format="v4l2" if kind == "camera" else None, options=opts,
                       timeout=timeout if kind != "file" else None)
    except av.error.InvalidDataError:
        raise InputError(f"cannot decode {source}: not a video format FFmpeg reads",
                         hint="pass a video file (MP4, MKV, AVI, MOV, WebM...); for still images leave out "
                              "--every, --fps and --smooth") from None
    except (av.error.FFmpegError, OSError) as exc:
        hint = {"url": "check the URL, the credentials in it and that the camera or server is reachable; "
                       "RTSP goes over TCP unless you pass --video-option rtsp_transport=udp (options={'rtsp_transport': 'udp'})",
                "camera": "check that no other program holds the camera and that you may read it (group video)",
                "file": "check that the file is readable"}[kind]
        raise InputError(f"cannot open {source}: {exc}", hint=hint) from None


class FrameStream:
    """Classified frames of one video source, as an iterator of `FrameResult`; see the module's docstring.

    Opens the source on creation (errors then, not at the first frame); `close()` (or `with`) releases it.
    `decoded` and `classified` count the frames so far.
    """

    def __init__(self, classifier: Classifier, source: str | PathLike, sampling: Sampling,
                 options: Mapping[str, str] | None = None, timeout: float = STREAM_TIMEOUT_S) -> None:
        self._classifier, self._sampling, self.source = classifier, sampling, os.fspath(source)
        av = import_av()
        self._errors = (av.error.FFmpegError, OSError)
        self._container = _open(av, self.source, options, timeout)
        try:
            if not self._container.streams.video:
                raise InputError(f"{self.source} has no video stream", hint="pass a file or stream with video in it")
            self._stream = stream = self._container.streams.video[0]
            if source_kind(self.source) == "file":
                stream.thread_type = "AUTO"  # frame threads: faster files; live sources keep FFmpeg's low-latency default
            if stream.codec_context.width and stream.codec_context.height:
                classifier.limits.check(stream.codec_context.height, stream.codec_context.width, self.source)
        except BaseException:
            self.close()
            raise
        self.decoded = self.classified = 0

    def __enter__(self) -> FrameStream:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._container.close()

    def __iter__(self) -> Iterator[FrameResult]:
        try:
            yield from self._frames()
        finally:
            self.close()

    def _frames(self) -> Iterator[FrameResult]:
        selector, smooth = _Selector(self._sampling), self._sampling.smooth
        start = self._stream.start_time
        step = 1 / Fraction(self._stream.average_rate) if self._stream.average_rate else Fraction(0)
        time_s, average, abstain = Fraction(0), None, 0.0
        for index, frame in enumerate(self._decoded()):
            self.decoded += 1
            if frame.pts is not None:
                start = frame.pts if start is None else start
                time_s = (frame.pts - start) * (frame.time_base or self._stream.time_base)
            elif index:
                time_s += step
            if not selector.take(index, time_s):
                continue
            prediction = self._classifier.predict(frame.to_ndarray(format="rgb24"), top_k=1)
            scores, score = prediction.scores[0], float(prediction.open_set_score[0])
            label, name = int(prediction.labels[0]), prediction.class_names[0]
            if smooth is not None:
                same_classes = average is not None and average.shape == scores.shape  # else a class was added or removed
                if same_classes:
                    scores = (smooth * scores + (1 - smooth) * average).astype(np.float32)
                    score = float(np.float32(smooth * score + (1 - smooth) * abstain))
                average, abstain = scores, score
                clf = self._classifier  # the open-set decision on the smoothed scores and score (label -1: unknown)
                label = int(openset.decide(scores[None], clf.temperature, clf.threshold, score=np.array([score]))[0][0])
                name = clf.class_names[label] if label >= 0 else None
            self.classified += 1
            yield FrameResult(index, float(time_s), label, name, float(scores.max()), scores, score)

    def _decoded(self) -> Iterator[Any]:
        frames = self._container.decode(self._stream)
        while True:
            try:
                frame = next(frames)
            except StopIteration:
                return
            except self._errors as exc:
                raise InputError(f"decoding {self.source} failed after {self.decoded} frames: {exc}",
                                 hint="the file is damaged or the stream broke off; the frames before were classified") from None
            yield frame


def open_stream(classifier: Classifier, source: str | PathLike, *, every: int | None = None, fps: float | None = None,
                smooth: float | None = None, options: Mapping[str, str] | None = None,
                timeout: float = STREAM_TIMEOUT_S) -> FrameStream:
    """Classifier.stream's body: check the sampling, then open the source."""
    return FrameStream(classifier, source, Sampling(every, fps, smooth), options, timeout)


def elapsed_report(stream: FrameStream, seconds: float) -> str:
    """The closing line semobridge-run prints on stderr: frames decoded and classified, and their rates."""
    per_s = 1 / seconds if seconds > 0 else 0.0
    return (f"{stream.decoded} frames decoded, {stream.classified} classified in {seconds:.2f} s: "
            f"{stream.decoded * per_s:.1f} decoded/s, {stream.classified * per_s:.1f} classified/s")

