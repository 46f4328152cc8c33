"""Videos, streams and cameras (Classifier.stream, semobridge-run's video mode) on clips made here with PyAV.

The reference is independent of the stream's code: frames generated here (a lossless clip decodes to them
exactly) or decoded here one by one, classified one at a time by Classifier.predict, picked by the sampling
rules computed here with integer arithmetic.
"""

from __future__ import annotations

import json
import math
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from semobridge_runtime import Classifier, InputError
from semobridge_runtime.cli import main
from semobridge_runtime.errors import BackendError

av = pytest.importorskip("av", reason="the runtime's video extra (PyAV) is not installed: pip install './runtime[video]'")

RATE, COUNT, H, W = 10, 25, 48, 64


def random_frames(count: int = COUNT, seed: int = 3) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (H, W, 3), dtype=np.uint8) for _ in range(count)]


def smooth_frames(count: int = COUNT) -> list[np.ndarray]:
    """Frames a lossy codec keeps close: a flat colour per frame (all distinct) plus a gentle gradient."""
    ramp = np.linspace(0, 40, W)[None, :, None]
    return [np.clip((i * 37 % 200, i * 91 % 200, i * 53 % 200) + ramp + np.zeros((H, 1, 1)), 0, 255).astype(np.uint8)
            for i in range(count)]


def write_clip(path: Path, frames: list[np.ndarray], codec: str, pix_fmt: str, options: dict | None = None) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=RATE)
        stream.width, stream.height, stream.pix_fmt = W, H, pix_fmt
        stream.options = options or {}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


@pytest.fixture(scope="module")
def lossless(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[np.ndarray]]:
    """FFV1 over BGR0 in Matroska: decodes to the generated RGB frames bit for bit."""
    frames = random_frames()
    return write_clip(tmp_path_factory.mktemp("video") / "clip.mkv", frames, "ffv1", "bgr0"), frames


@pytest.fixture(scope="module")
def mp4(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[np.ndarray]]:
    """MPEG-4 part 2 at the finest quantiser in MP4 (FFmpeg's own encoder, present in every build)."""
    frames = smooth_frames()
    return write_clip(tmp_path_factory.mktemp("video") / "clip.mp4", frames, "mpeg4", "yuv420p", {"qscale": "1"}), frames


def decoded_one_by_one(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def check_records(records, clf: Classifier, frames: list[np.ndarray], picked: list[int]) -> None:
    """Frame indices, times at RATE, and label, name, score and scores as predict gives them frame by frame."""
    assert [r.frame for r in records] == picked
    np.testing.assert_allclose([r.time_s for r in records], [i / RATE for i in picked], atol=1e-9)
    expected = [clf.predict(frames[i]) for i in picked]  # one frame per call
    assert [r.label for r in records] == [int(e.labels[0]) for e in expected]
    assert [r.class_name for r in records] == [e.class_names[0] for e in expected]
    np.testing.assert_allclose([r.scores for r in records], [e.scores[0] for e in expected], atol=1e-6)
    np.testing.assert_allclose([r.score for r in records], [e.scores[0].max() for e in expected], atol=1e-6)  # label -1: unknown


def fps_picks(fps: float, count: int = COUNT, rate: int = RATE) -> list[int]:
    """The first frame i (time i / rate) at or after each k / fps: ceil(k rate / fps), by exact integer arithmetic."""
    step, picks, k = Fraction(str(fps)), set(), 0
    while (first := math.ceil(k * rate / step)) < count:
        picks.add(first)
        k += 1
    return sorted(picks)


def test_lossless_clip_every_frame_matches_the_generated_frames(contract_onnx: Path, lossless) -> None:
    path, frames = lossless
    clf = Classifier.load(contract_onnx)
    assert all(np.array_equal(a, b) for a, b in zip(decoded_one_by_one(path), frames))
    stream = clf.stream(path)
    records = list(stream)
    check_records(records, clf, frames, list(range(COUNT)))
    assert (stream.decoded, stream.classified) == (COUNT, COUNT)
    assert len({r.label for r in records}) > 1  # distinct content, distinct answers: the indices are really checked


@pytest.mark.parametrize("every", [1, 3, 7, 30])
def test_every_nth_frame(contract_onnx: Path, lossless, every: int) -> None:
    path, frames = lossless
    clf = Classifier.load(contract_onnx)
    stream = clf.stream(str(path), every=every)
    check_records(list(stream), clf, frames, list(range(0, COUNT, every)))
    assert stream.decoded == COUNT


@pytest.mark.parametrize("fps", [3, 2.5, 10, 0.4, 25])
def test_fps_picks_the_first_frame_at_each_grid_point(contract_onnx: Path, lossless, fps: float) -> None:
    path, frames = lossless
    clf = Classifier.load(contract_onnx)
    picked = fps_picks(fps)
    assert fps != 3 or picked == [0, 4, 7, 10, 14, 17, 20, 24]
    check_records(list(clf.stream(path, fps=fps)), clf, frames, picked)


def test_mp4_matches_frames_decoded_one_by_one(contract_onnx: Path, mp4) -> None:
    path, generated = mp4
    decoded = decoded_one_by_one(path)
    assert len(decoded) == COUNT
    # the lossy codec kept each frame nearest to its own generated frame: decoding order and indices agree
    nearest = [int(np.argmin([np.abs(d.astype(int) - g).mean() for g in generated])) for d in decoded]
    assert nearest == list(range(COUNT))
    clf = Classifier.load(contract_onnx)
    check_records(list(clf.stream(path, every=2)), clf, decoded, list(range(0, COUNT, 2)))


def test_the_exported_open_clip_model(onnx_model: Path, lossless) -> None:
    """The tiny open_clip model as exported (dynamic size: 48x64 frames, resized in the graph)."""
    path, frames = lossless
    clf = Classifier.load(onnx_model)
    check_records(list(clf.stream(path, every=6)), clf, frames, [0, 6, 12, 18, 24])


@pytest.mark.parametrize("alpha", [1.0, 0.5, 0.2])
def test_smoothing_is_an_exponential_moving_average(contract_onnx: Path, lossless, alpha: float) -> None:
    path, frames = lossless
    clf = Classifier.load(contract_onnx)
    records = list(clf.stream(path, every=2, smooth=alpha))
    raw = [clf.predict(frames[i]).scores[0].astype(np.float64) for i in range(0, COUNT, 2)]
    average = [raw[0]]
    for p in raw[1:]:
        average.append(alpha * p + (1 - alpha) * average[-1])
    np.testing.assert_allclose([r.scores for r in records], average, atol=1e-5)
    assert [r.label for r in records] == [int(np.argmax(a)) for a in average]
    assert [r.class_name for r in records] == [clf.class_names[int(np.argmax(a))] for a in average]
    np.testing.assert_allclose([r.score for r in records], [a.max() for a in average], atol=1e-5)
    if alpha < 1:  # smoothing changed something, or the test would pass without it
        assert not np.allclose([r.scores for r in records], raw, atol=1e-3)


def test_smoothing_decides_on_the_averaged_open_set_score(onnx_model: Path, lossless) -> None:
    """With smoothing, the abstention score (the model's open_set_score) is averaged like the scores, and a frame is
    unknown (label -1) where its average is below the threshold, whatever that frame's own score."""
    path, frames = lossless
    picked, alpha = range(0, COUNT, 2), 0.3
    alone = [Classifier.load(onnx_model, unknown=None).predict(frames[i]) for i in picked]
    scores, average = [alone[0].scores[0].astype(np.float64)], [float(alone[0].open_set_score[0])]
    for p in alone[1:]:
        scores.append(alpha * p.scores[0] + (1 - alpha) * scores[-1])
        average.append(alpha * float(p.open_set_score[0]) + (1 - alpha) * average[-1])
    ordered = np.sort(average)
    i = int(np.argmax(np.diff(ordered)[2:-2])) + 2  # the widest gap with a few frames on either side
    threshold = float((ordered[i] + ordered[i + 1]) / 2)
    records = list(Classifier.load(onnx_model, unknown=threshold).stream(path, every=2, smooth=alpha))
    np.testing.assert_allclose([r.open_set_score for r in records], average, atol=1e-6)
    assert [r.label for r in records] == [int(np.argmax(z)) if a >= threshold else -1 for z, a in zip(scores, average)]
    own = [float(p.open_set_score[0]) >= threshold for p in alone]
    assert own != [a >= threshold for a in average], "the smoothing changed no decision: the test would pass without it"


def test_cli_prints_one_json_line_per_classified_frame(contract_onnx: Path, lossless, capsys) -> None:
    path, frames = lossless
    assert main([str(contract_onnx), str(path), "--every", "5"]) == 0
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.out.splitlines()]
    assert all(set(line) == {"frame", "time_s", "label", "class_name", "score"} for line in lines)
    expected = Classifier.load(contract_onnx).predict([frames[i] for i in range(0, COUNT, 5)])
    assert [line["frame"] for line in lines] == [0, 5, 10, 15, 20]
    assert [line["time_s"] for line in lines] == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0])
    assert [line["label"] for line in lines] == expected.labels.tolist()
    assert [line["class_name"] for line in lines] == expected.class_names
    assert [line["score"] for line in lines] == pytest.approx(expected.scores.max(axis=1).tolist(), abs=1e-6)
    report = captured.err.strip().splitlines()[-1]
    assert report.startswith(f"semobridge-run: {COUNT} frames decoded, 5 classified in ") and "classified/s" in report


def test_cli_fps_and_smooth(contract_onnx: Path, lossless, capsys) -> None:
    path, _ = lossless
    clf = Classifier.load(contract_onnx)
    assert main([str(contract_onnx), str(path), "--fps", "2.5", "--smooth", "0.4"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    expected = [r.as_dict() for r in clf.stream(path, fps=2.5, smooth=0.4)]
    assert [line["frame"] for line in lines] == fps_picks(2.5) == [r["frame"] for r in expected]
    assert [line["label"] for line in lines] == [r["label"] for r in expected]
    assert [line["score"] for line in lines] == pytest.approx([r["score"] for r in expected], abs=1e-6)


def error_of(capsys) -> str:
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and captured.out == ""
    return captured.err


@pytest.mark.parametrize(
    ("args", "message", "hint"),
    [
        (["{tmp}/missing.mp4"], "no such video file", "hint: check the path"),
        (["{text}"], "not a video format FFmpeg reads", "hint: pass a video file"),
        (["{tmp}", "--every", "2"], "is not a regular file", "hint:"),
        (["{wav}", "--every", "1"], "has no video stream", "hint: pass a file or stream with video"),
        (["{clip}", "--every", "0"], "every must be a positive whole number", "hint: --every 1"),
        (["{clip}", "--every", "-3"], "every must be a positive whole number", "hint:"),
        (["{clip}", "--fps", "-1"], "fps must be a positive number", "hint: e.g. --fps 2"),
        (["{clip}", "--fps", "nan"], "fps must be a positive number", "hint:"),
        (["{clip}", "--fps", "2", "--every", "2"], "not both", "hint:"),
        (["{clip}", "--smooth", "0"], "smooth must be a number in (0, 1]", "hint:"),
        (["{clip}", "--smooth", "1.5"], "smooth must be a number in (0, 1]", "hint:"),
        (["{clip}", "{clip}"], "2 sources given", "hint: run it once per video"),
        (["{clip}", "--video-option", "novalue"], "is not KEY=VALUE", "hint:"),
        (["rtsp://127.0.0.1:9/none"], "cannot open rtsp://127.0.0.1:9/none", "hint: check the URL"),
        (["/dev/video-none"], "no camera at /dev/video-none", "hint: list the cameras"),
    ],
)
def test_cli_bad_video_input_exits_2_with_a_hint(contract_onnx: Path, lossless, tmp_path: Path, capsys,
                                                 args: list[str], message: str, hint: str) -> None:
    import wave

    text = tmp_path / "notes.mp4"
    text.write_text("not a video at all\n" * 20)
    with wave.open(str(tmp_path / "sound.wav"), "wb") as sound:  # audio only
        sound.setnchannels(1), sound.setsampwidth(2), sound.setframerate(8000), sound.writeframes(bytes(1600))
    fill = {"tmp": str(tmp_path), "text": str(text), "clip": str(lossless[0]), "wav": str(tmp_path / "sound.wav")}
    assert main([str(contract_onnx), *(a.format(**fill) for a in args)]) == 2
    err = error_of(capsys)
    assert message in err and hint in err


def test_python_api_checks_arguments_before_opening(contract_onnx: Path, tmp_path: Path) -> None:
    clf = Classifier.load(contract_onnx)
    for bad in ({"every": 0}, {"every": 2.0}, {"every": True}, {"fps": 0}, {"fps": math.inf}, {"smooth": -0.1}):
        with pytest.raises(InputError) as raised:
            clf.stream(tmp_path / "missing.mp4", **bad)
        assert "missing" not in str(raised.value) and raised.value.hint


def test_a_frame_larger_than_the_limits_is_refused_before_decoding(contract_onnx: Path, lossless) -> None:
    clf = Classifier.load(contract_onnx, max_side=W - 1)
    with pytest.raises(InputError, match=f"{H}x{W} \\(HxW\\): its longest side {W} exceeds the limit of {W - 1}"):
        clf.stream(lossless[0])


def test_stream_holds_one_frame_at_a_time(contract_onnx: Path, lossless) -> None:
    """An endless source must not pile up frames: the stream keeps nothing of frames it has yielded."""
    import weakref

    clf = Classifier.load(contract_onnx)
    stream = clf.stream(lossless[0])
    alive = []
    original = clf.predict

    def tracking(image, top_k=5):
        alive.append(weakref.ref(image))
        return original(image, top_k)

    clf.predict = tracking
    for _ in zip(range(10), stream):
        assert sum(ref() is not None for ref in alive[:-1]) == 0
    assert len(alive) == 10
    stream.close()


def test_without_pyav_the_error_says_what_to_install(contract_onnx: Path, lossless, monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "av", None)
    with pytest.raises(BackendError, match="needs PyAV") as raised:
        Classifier.load(contract_onnx).stream(lossless[0])
    assert "semobridge-runtime[video]" in raised.value.hint
    assert main([str(contract_onnx), str(lossless[0])]) == 4
    assert "hint: pip install 'semobridge-runtime[video]'" in error_of(capsys)


def test_a_file_cannot_make_ffmpeg_open_urls(contract_onnx: Path, tmp_path: Path) -> None:
    """An HLS playlist is a file FFmpeg reads; a hostile one names URLs. FFmpeg's own rule (a file input may open only
    file, crypto and data URLs) keeps it local: this guards that rule across PyAV and FFmpeg versions."""
    import socket

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        server.setblocking(False)
        port = server.getsockname()[1]
        playlist = tmp_path / "clip.m3u8"
        playlist.write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\nhttp://127.0.0.1:{port}/a.ts\n#EXT-X-ENDLIST\n")
        with pytest.raises(InputError):
            Classifier.load(contract_onnx).stream(playlist, timeout=2)
        with pytest.raises(BlockingIOError):  # nobody connected
            server.accept()


def test_cli_checks_the_source_before_loading_the_model(contract_onnx: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    """A typo in the video's name is reported at once, not after a model load."""
    monkeypatch.setattr(Classifier, "load", lambda *a, **k: pytest.fail("the model was loaded"))
    assert main([str(contract_onnx), str(tmp_path / "clip.mp4"), "--fps", "2"]) == 2
    assert "no such video file" in error_of(capsys)


def test_ctrl_c_ends_a_stream_with_130_after_the_rates(contract_onnx: Path, lossless, monkeypatch, capsys) -> None:
    calls = []
    original = Classifier.predict

    def interrupted(self, images, top_k=5):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(self, images, top_k)

    monkeypatch.setattr(Classifier, "predict", interrupted)
    assert main([str(contract_onnx), str(lossless[0])]) == 130
    captured = capsys.readouterr()
    assert [json.loads(line)["frame"] for line in captured.out.splitlines()] == [0, 1]
    assert "3 frames decoded, 2 classified in " in captured.err and "Traceback" not in captured.err


def test_a_reader_that_stops_early_ends_the_command_quietly(contract_onnx: Path, tmp_path: Path) -> None:
    """`semobridge-run MODEL clip.mkv | head -1`: no BrokenPipeError traceback, exit 141 (128 + SIGPIPE, as a shell
    reports other commands whose reader went away; docs/errors.md). The clip's lines overfill
    a pipe's buffer (64 KiB), so the command writes after the reader has gone."""
    import subprocess

    clip = write_clip(tmp_path / "long.mkv", [np.full((H, W, 3), i % 256, np.uint8) for i in range(1200)], "ffv1", "bgr0")
    process = subprocess.Popen([sys.executable, "-m", "semobridge_runtime.cli", str(contract_onnx), str(clip)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = process.stdout.readline()
    process.stdout.close()
    _, err = process.communicate(timeout=120)
    assert json.loads(first)["frame"] == 0
    assert process.returncode == 141 and b"Traceback" not in err and b"frames decoded" in err
