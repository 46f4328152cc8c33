"""Camera frames (semobridge_runtime.Frame, struct sb_frame): strides, RGB/BGR/RGBA/BGRA, NV12 by BT.601.

The reference rule is semobridge_runtime/frames.py; it is checked against a float64 BT.601 conversion written
here from the standard's definition, and the C library against it bit for bit.
"""

from __future__ import annotations

import ctypes
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from semobridge_runtime import Classifier, Frame, InputError
from semobridge_runtime.frames import BT601
from semobridge_runtime.inputs import uint8_groups
from semobridge_runtime.limits import ImageLimits

from .conftest import C_DIR
from .test_c_library import lib  # noqa: F401  (fixture)

LAYOUT_CODES = {"rgb": 0, "bgr": 1, "rgba": 2, "bgra": 3, "nv12": 4}


def bt601_float(y: np.ndarray, u: np.ndarray, v: np.ndarray, full_range: bool) -> np.ndarray:
    """YCbCr -> RGB in float64 from BT.601's definition: E'Y = 0.299 R + 0.587 G + 0.114 B, E'Cb = (B - E'Y) / 1.772,
    E'Cr = (R - E'Y) / 1.402, quantised as Y = 219 E'Y + 16, C = 224 E'C + 128 (limited) or 255 E'Y, 255 E'C + 128
    (full); the inverse of that matrix, rounded and clipped."""
    forward = np.array([[0.299, 0.587, 0.114],
                        np.array([-0.299, -0.587, 0.886]) / 1.772,
                        np.array([0.701, -0.587, -0.114]) / 1.402])
    scale, offset = (np.array([255.0, 255, 255]), np.array([0.0, 128, 128])) if full_range else \
        (np.array([219.0, 224, 224]), np.array([16.0, 128, 128]))
    ycc = np.stack([y, u, v], axis=-1).astype(np.float64)
    rgb = ((ycc - offset) / scale) @ np.linalg.inv(forward).T * 255
    return np.clip(np.round(rgb), 0, 255)


def nv12_frame(rng: np.random.Generator, h: int, w: int, pad: int = 0, full_range: bool = False) -> tuple[Frame, ...]:
    """A random NV12 frame with rows `pad` bytes longer than their pixels, and its planes."""
    stride = w + pad
    buffer = rng.integers(0, 256, stride * h * 3 // 2, dtype=np.uint8)
    frame = Frame(buffer.tobytes(), w, h, "nv12", stride=stride if pad else None, full_range=full_range)
    y = buffer[: stride * h].reshape(h, stride)[:, :w]
    uv = buffer[stride * h:].reshape(h // 2, stride)[:, :w].reshape(h // 2, w // 2, 2)
    return frame, y, uv


@pytest.mark.parametrize("full_range", [False, True])
def test_nv12_rule_is_bt601_within_one_level(full_range: bool) -> None:
    rng = np.random.default_rng(1)
    frame, y, uv = nv12_frame(rng, 64, 96, pad=10, full_range=full_range)
    rgb = frame.rgb().astype(np.int64)
    u = np.repeat(np.repeat(uv[..., 0], 2, 0), 2, 1)  # each U, V pair is the chroma of its 2x2 block
    v = np.repeat(np.repeat(uv[..., 1], 2, 0), 2, 1)
    expected = bt601_float(y, u, v, full_range)
    assert np.abs(rgb - expected).max() <= 1
    assert (rgb == expected).mean() > 0.99  # the fixed point is rounded to nearest, not merely close
    # every Y, U, V value, including those outside the limited range
    levels = np.arange(256)
    y, u, v = (grid.ravel() for grid in np.meshgrid(levels, levels[::5], levels[::3]))
    n = len(y) // 4 * 4
    block = Frame(np.stack([y[:n], y[:n]]).astype(np.uint8).tobytes() +
                  np.stack([u[:n:2], v[:n:2]], -1).astype(np.uint8).tobytes(), n, 2, "nv12", full_range=full_range)
    both = block.rgb().astype(np.int64)
    chroma = np.repeat(np.stack([u[:n:2], v[:n:2]]), 2, axis=1)
    assert np.abs(both[0] - bt601_float(y[:n], chroma[0], chroma[1], full_range)).max() <= 1


def test_nv12_reference_points() -> None:
    """Black, white and grey in both ranges, and pure red as BT.601 limited range quantises it (81, 90, 240)."""
    def one(y: int, u: int, v: int, full: bool) -> list[int]:
        return Frame(bytes([y] * 4 + [u, v]), 2, 2, "nv12", full_range=full).rgb()[0, 0].tolist()

    assert one(16, 128, 128, False) == [0, 0, 0] and one(235, 128, 128, False) == [255, 255, 255]
    assert one(0, 128, 128, True) == [0, 0, 0] and one(255, 128, 128, True) == [255, 255, 255]
    assert one(126, 128, 128, False) == [128, 128, 128] and one(128, 128, 128, True) == [128, 128, 128]
    assert one(81, 90, 240, False) == [254, 0, 0]  # red, as 8-bit limited YCbCr: 1.164 * 65 + 1.596 * 112 = 254.4


@pytest.mark.parametrize("layout", ["rgb", "bgr", "rgba", "bgra"])
def test_packed_layouts_with_strides(layout: str) -> None:
    rng = np.random.default_rng(2)
    h, w, depth, stride = 7, 5, len(layout), 5 * len(layout) + 3
    buffer = rng.integers(0, 256, stride * h, dtype=np.uint8)
    pixels = buffer.reshape(h, stride)[:, : w * depth].reshape(h, w, depth)
    expected = pixels[..., [layout.index(c) for c in "rgb"]]
    for frame in (Frame(buffer, w, h, layout, stride=stride), Frame(memoryview(buffer.tobytes())[: stride * h - 3],
                                                                   w, h, layout, stride=stride)):
        np.testing.assert_array_equal(frame.rgb(), expected)
    packed = np.ascontiguousarray(pixels)
    np.testing.assert_array_equal(Frame(packed, w, h, layout).rgb(), expected)


def test_packed_rgb_is_not_copied() -> None:
    """A packed RGB frame reaches the model as the caller's buffer; padded rows are copied once."""
    buffer = np.arange(6 * 4 * 3, dtype=np.uint8)
    (group,) = uint8_groups(Frame(buffer, 4, 6), None, ImageLimits())[1]
    assert np.shares_memory(group.batch, buffer)
    padded = np.zeros(6 * 13, np.uint8)
    (group,) = uint8_groups(Frame(padded, 4, 6, stride=13), None, ImageLimits())[1]
    assert not np.shares_memory(group.batch, padded) and group.batch.flags.c_contiguous


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"layout": "yuyv"}, "unknown frame layout 'yuyv'"),
        ({"width": 0}, "frame width must be a positive int"),
        ({"stride": 11}, "frame stride 11 is smaller than a row of 4 rgb pixels of 3 bytes (12 bytes)"),
        ({"layout": "bgra", "stride": 12}, "row of 4 bgra pixels of 4 bytes (16 bytes)"),
        ({"layout": "nv12", "width": 3, "height": 2}, "needs an even width and height"),
        ({"layout": "nv12", "height": 3}, "got 4x3 (WxH)"),
        ({"data": bytes(47)}, "frame data holds 47 bytes, but a 4x4 (WxH) rgb frame with stride 12 needs 48"),
        ({"data": bytes(71), "stride": 20}, "with stride 20 needs 72"),  # the last row needs no padding
        ({"layout": "nv12", "data": bytes(20)}, "data after the Y plane holds 4 bytes, but the UV plane of a 4x4"),
        ({"layout": "nv12", "data": bytes(16), "uv": bytes(7)}, "frame uv holds 7 bytes"),
        ({"layout": "nv12", "uv_stride": 3}, "frame uv_stride 3 is smaller than a row of 4 NV12 chroma bytes"),
        ({"uv": bytes(8)}, "a rgb frame has one plane"),
        ({"data": None}, "frame data is None"),
        ({"data": np.zeros(48, np.uint16)}, "dtype uint16"),
        ({"data": np.zeros((8, 12), np.uint8)[::2]}, "not a contiguous buffer"),
        ({"layout": "nv12", "full_range": 1}, "full_range must be True or False"),
    ],
)
def test_python_refuses_bad_frames(options: dict, message: str) -> None:
    arguments = {"data": bytes(48), "width": 4, "height": 4, **options}
    with pytest.raises(InputError) as info:
        Frame(**arguments)
    assert message in str(info.value), str(info.value)
    if "stride" in message or "holds" in message or "layout" in message:
        assert info.value.hint


def test_frame_size_is_checked_against_limits(contract_onnx: Path) -> None:
    clf = Classifier.load(contract_onnx, max_aspect=2)
    with pytest.raises(InputError, match="aspect ratio 3:1"):
        clf.predict(Frame(bytes(6 * 2 * 3 // 2), 6, 2, "nv12"))


class CFrame(ctypes.Structure):
    """struct sb_frame, field for field."""

    _fields_ = [("data", ctypes.c_void_p * 2), ("size", ctypes.c_size_t * 2), ("stride", ctypes.c_int * 2),
                ("width", ctypes.c_int), ("height", ctypes.c_int), ("layout", ctypes.c_int),
                ("full_range", ctypes.c_bool)]


def c_frame(frame: Frame, keep: list) -> CFrame:
    """The sb_frame of a Python frame (its buffers kept alive in `keep`)."""
    out = CFrame(width=frame.width, height=frame.height, layout=LAYOUT_CODES[frame.layout], full_range=frame.full_range)
    planes = [frame.data] if frame.layout != "nv12" else [frame.data, frame.uv]
    if frame.layout == "nv12" and frame.uv is None:
        y_bytes = (frame.stride or frame.width) * frame.height
        planes = [frame.data[:y_bytes], frame.data[y_bytes:]]
    for k, plane in enumerate(planes):
        array = np.frombuffer(plane, np.uint8)
        keep.append(array)
        out.data[k], out.size[k] = array.ctypes.data, len(array)
        out.stride[k] = (frame.stride if k == 0 else frame.uv_stride or frame.stride) or 0
    return out


@pytest.fixture(scope="module")
def clib(lib: ctypes.CDLL) -> ctypes.CDLL:  # noqa: F811
    lib.sb_frame_to_rgb.argtypes = [ctypes.POINTER(CFrame), ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p,
                                    ctypes.c_size_t]
    lib.sb_classify_frames.argtypes = [ctypes.c_void_p, ctypes.POINTER(CFrame), ctypes.c_int, ctypes.c_void_p,
                                       ctypes.c_void_p]
    lib.sb_embed_frames.argtypes = [ctypes.c_void_p, ctypes.POINTER(CFrame), ctypes.c_int, ctypes.c_void_p]
    return lib


@pytest.fixture()
def model(request: pytest.FixtureRequest) -> Path:
    """The exported tiny model; with the runtime alone (no torch), the toy contract model."""
    try:
        return request.getfixturevalue("onnx_model")
    except pytest.skip.Exception:
        return request.getfixturevalue("contract_onnx")


def random_frames(seed: int) -> list[Frame]:
    """Every layout at several sizes, packed and with padded rows; NV12 in both ranges and with a separate UV plane."""
    rng = np.random.default_rng(seed)
    frames = []
    for h, w in [(2, 2), (6, 10), (32, 18), (48, 64)]:
        for pad in (0, 7):
            for layout in ("rgb", "bgr", "rgba", "bgra"):
                stride = w * len(layout) + pad
                frames.append(Frame(rng.integers(0, 256, stride * h, dtype=np.uint8).tobytes(), w, h, layout,
                                    stride=stride if pad else None))
            for full_range in (False, True):
                frames.append(nv12_frame(rng, h, w, pad, full_range)[0])
            uv = rng.integers(0, 256, (w + 2 * pad) * h // 2, dtype=np.uint8).tobytes()
            frames.append(Frame(rng.integers(0, 256, (w + pad) * h, dtype=np.uint8).tobytes(), w, h, "nv12",
                                stride=w + pad, uv=uv, uv_stride=w + 2 * pad))
    return frames


def test_c_converts_frames_bit_for_bit_as_python(clib: ctypes.CDLL) -> None:
    err = ctypes.create_string_buffer(512)
    for frame in random_frames(3):
        keep: list = []
        out = np.empty((frame.height, frame.width, 3), np.uint8)
        rc = clib.sb_frame_to_rgb(ctypes.byref(c_frame(frame, keep)), out.ctypes.data, out.nbytes, err, len(err))
        assert rc == 0, err.value.decode()
        np.testing.assert_array_equal(out, frame.rgb(), err_msg=f"{frame.layout} {frame.width}x{frame.height}")


def test_c_coefficients_are_pythons() -> None:
    """frames.c's table is frames.py's BT601 (limited range first)."""
    source = (C_DIR / "src" / "frames.c").read_text()
    table = re.search(r"bt601\[2\]\[6\] = \{(.*?)\};", source, re.S).group(1)
    rows = [[int(x) for x in row.split(",")] for row in re.findall(r"\{([^{}]*)\}", table)]
    assert rows == [list(BT601[False]), list(BT601[True])]


def test_frames_classify_alike_in_c_and_python(clib: ctypes.CDLL, model: Path) -> None:
    """A padded BGRA frame and two NV12 frames (one call, two layouts) score in C as in Python, and in
    Python as their RGB pixels do."""
    rng = np.random.default_rng(4)
    h, w = 48, 64
    frames = [nv12_frame(rng, h, w, 16, full_range=False)[0],
              Frame(rng.integers(0, 256, (4 * w + 8) * h, dtype=np.uint8).tobytes(), w, h, "bgra", stride=4 * w + 8),
              nv12_frame(rng, h, w, 0, full_range=True)[0]]
    clf = Classifier.load(model, providers=["CPUExecutionProvider"])
    expected = clf.predict(frames)
    as_rgb = clf.predict([frame.rgb() for frame in frames])
    np.testing.assert_array_equal(expected.scores, as_rgb.scores)
    keep: list = []
    array = (CFrame * len(frames))(*(c_frame(frame, keep) for frame in frames))
    err = ctypes.create_string_buffer(512)
    m = clib.sb_open_with_error(str(model).encode(), clib.sb_default_params(), err, len(err))
    assert m, err.value.decode()
    try:
        scores = np.empty((len(frames), clib.sb_num_classes(m)), np.float32)
        labels = np.empty(len(frames), np.int64)
        embeddings = np.empty((len(frames), clib.sb_embedding_dim(m)), np.float32)
        assert clib.sb_classify_frames(m, array, len(frames), scores.ctypes.data, labels.ctypes.data) == 0, \
            clib.sb_last_error(m)
        assert clib.sb_embed_frames(m, array, len(frames), embeddings.ctypes.data) == 0, clib.sb_last_error(m)
    finally:
        clib.sb_close(m)
    np.testing.assert_array_equal(labels, expected.labels)
    np.testing.assert_allclose(scores, expected.scores, rtol=0, atol=1e-5)
    np.testing.assert_allclose(embeddings, expected.embeddings, rtol=0, atol=1e-5)


def write_nv12(path: Path, frames: list[Frame]) -> Path:
    path.write_bytes(b"".join(bytes(frame.data) for frame in frames))
    return path


def parse_camera(stdout: str) -> tuple[list[int], list[int], np.ndarray]:
    """(frame indices, labels, scores [N, C]) from `camera --scores`."""
    indices, labels, scores = [], [], []
    for line in stdout.splitlines():
        if line.startswith("frame "):
            _, index, label, _ = line.split(maxsplit=3)
            indices.append(int(index))
            labels.append(int(label))
        else:
            scores.append(np.array(line.split()[1:], np.float64))
    return indices, labels, np.array(scores)


def test_camera_example_classifies_an_nv12_file(c_build: Path, model: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    frames = [nv12_frame(rng, 48, 64, pad=8)[0] for _ in range(5)]
    path = write_nv12(tmp_path / "clip.yuv", frames)
    done = subprocess.run([c_build / "examples" / "camera", "--stride", "72", "--every", "2", "--scores", model,
                           "64", "48", path], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    indices, labels, scores = parse_camera(done.stdout)
    expected = Classifier.load(model, providers=["CPUExecutionProvider"]).predict(frames[::2])
    assert indices == [0, 2, 4] and labels == expected.labels.tolist()
    np.testing.assert_allclose(scores, expected.scores, rtol=0, atol=1e-5)
    assert "5 frames read, 3 classified" in done.stderr
    truncated = tmp_path / "short.yuv"
    truncated.write_bytes(path.read_bytes()[:-1])
    done = subprocess.run([c_build / "examples" / "camera", "--stride", "72", model, "64", "48", truncated],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "frame 4 is" in done.stderr, done.stderr
    done = subprocess.run([c_build / "examples" / "camera", model, "63", "48", path], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and "even width and height" in done.stderr, done.stderr
