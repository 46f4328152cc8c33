"""semobridge-serve end to end on loopback: parity with the in-process runtime over gRPC and HTTP, for pixels
and encoded files, metadata through Triton's endpoints, and malformed requests refused alone."""

from __future__ import annotations

import io
import json
import os
import re
import socket
import stat
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks.serve_soak import descendants
from semobridge_runtime import BackendError, InputError, ModelError
from semobridge_runtime.serve import RemoteClassifier

from .conftest import jpeg, png

TOL = 1e-5


def http_json(url: str, body: dict | bytes | None = None) -> tuple[int, dict]:
    """GET (or POST a JSON body, or raw bytes) like curl; the status and the decoded answer."""
    data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=60) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def image_request(image: np.ndarray, datatype: str = "UINT8", outputs: list | None = None) -> dict:
    body = {"inputs": [{"name": "image", "shape": [1, *image.shape], "datatype": datatype,
                        "data": image.reshape(-1).tolist()}]}
    return body if outputs is None else {**body, "outputs": outputs}


def assert_same(remote, reference) -> None:
    assert np.abs(remote.scores - reference.scores).max() <= TOL
    assert np.abs(remote.embeddings - reference.embeddings).max() <= TOL
    np.testing.assert_array_equal(remote.labels, reference.labels)
    assert remote.class_names == reference.class_names
    assert remote.top_k.names == reference.top_k.names


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_results_equal_the_in_process_runtime(server, local, photos, protocol) -> None:
    url = server.grpc if protocol == "grpc" else server.http
    with RemoteClassifier(url) as remote:
        assert remote.class_names == local.class_names and remote.max_batch == 16
        assert_same(remote.predict(photos, top_k=3), local.predict(photos, top_k=3))  # pixels, sizes mixed
        assert_same(remote.predict(np.stack(photos[:1] * 20)), local.predict(np.stack(photos[:1] * 20)))  # > max_batch
        assert_same(remote.predict_encoded([png(p) for p in photos]), local.predict(photos))  # lossless: same pixels
        decoded = [np.asarray(Image.open(io.BytesIO(jpeg(p)))) for p in photos]  # the server decodes them alike
        assert_same(remote.predict_encoded([jpeg(p) for p in photos]), local.predict(decoded))
        np.testing.assert_allclose(remote.embed(photos[2]), local.embed(photos[2]), atol=TOL)


def test_plain_http_request_and_model_metadata(server, local, photos) -> None:
    status, answer = http_json(f"{server.http}/v2/models/semobridge/infer", image_request(
        photos[3], outputs=[{"name": "class_name"}, {"name": "label"}, {"name": "scores", "parameters": {"classification": 2}}]))
    assert status == 200, answer
    out = {o["name"]: o for o in answer["outputs"]}
    expected = local.predict(photos[3], top_k=2)
    assert out["class_name"]["data"] == [expected.class_names[0]] and out["label"]["data"] == [int(expected.labels[0])]
    # Triton's classification extension (labels.txt): "score:index:name", best first
    assert [entry.split(":", 2)[2] for entry in out["scores"]["data"]] == expected.top_k.names[0]

    status, config = http_json(f"{server.http}/v2/models/semobridge/config")
    assert status == 200 and config["max_batch_size"] == 16 and "dynamic_batching" in config
    parameters = {key: json.loads(value["string_value"]) for key, value in config["parameters"].items()}
    assert parameters["class_names"] == local.class_names
    assert parameters["backbone"] == local.info.backbone.name == "semobridge-tiny"
    assert parameters["shots"] == local.info.shots and parameters["library_version"]
    assert parameters["semobridge"]["limits"] == {"max_side": 16384, "max_pixels": 1 << 26, "max_aspect": 32}
    status, meta = http_json(f"{server.http}/v2/models/semobridge")
    assert status == 200 and {t["name"] for t in meta["inputs"]} == {"image", "encoded"}
    assert {t["name"] for t in meta["outputs"]} == {"scores", "label", "embedding", "probabilities", "known",
                                                           "open_set_score", "class_name"}
    status, _ = http_json(f"{server.http}/v2/health/ready")
    assert status == 200


FAULTS = {  # request -> words the 400 answer must contain
    "wrong dtype": ({"inputs": [{"name": "image", "shape": [1, 4, 4, 3], "datatype": "FP32", "data": [0.5] * 48}]},
                    ["FP32", "UINT8"]),
    "2 channels": ({"inputs": [{"name": "image", "shape": [1, 4, 4, 2], "datatype": "UINT8", "data": [1] * 32}]},
                   ["shape", "[-1,-1,-1,3]"]),
    "empty": ({"inputs": [{"name": "image", "shape": [1, 0, 4, 3], "datatype": "UINT8", "data": []}]},
              ["input error", "empty"]),
    "oversized": ({"inputs": [{"name": "image", "shape": [1, 1, 20000, 3], "datatype": "UINT8", "data": [0] * 60000}]},
                  ["input error", "1x20000", "exceeds the limit of 16384", "hint"]),
    "garbage bytes": ({"inputs": [{"name": "encoded", "shape": [1, 1], "datatype": "BYTES", "data": ["not a jpeg"]}]},
                      ["input error", "cannot decode encoded image 0", "hint"]),
    "both inputs": ({"inputs": [{"name": "image", "shape": [1, 4, 4, 3], "datatype": "UINT8", "data": [1] * 48},
                                {"name": "encoded", "shape": [1, 1], "datatype": "BYTES", "data": ["x"]}]},
                    ["input error", "exactly one"]),
    # Triton's own front-end allocated 30 GB for this one before counting its 12 values, and aborted
    "declared 30 GB": ({"inputs": [{"name": "image", "shape": [1, 100000, 100000, 3], "datatype": "UINT8",
                                    "data": [1] * 12}]}, ["input error", "30000000000 bytes", "--max-request-mb"]),
    # these got Triton's HTTP 500, or passed (300 became 44)
    "negative dimension": ({"inputs": [{"name": "image", "shape": [1, -4, 4, 3], "datatype": "UINT8",
                                        "data": [1] * 48}]}, ["input error", "shape", ">= 0"]),
    "count not the shape's": ({"inputs": [{"name": "image", "shape": [1, 4, 4, 3], "datatype": "UINT8",
                                           "data": [1, 2, 3]}]}, ["input error", "3 values", "holds 48"]),
    "no inputs": ({"outputs": [{"name": "label"}]}, ["input error", "'inputs'"]),
    "not JSON": (b"hello", ["input error", "not valid JSON"]),
    "random bytes": (np.random.default_rng(5).bytes(4 << 20), ["input error", "not valid JSON"]),
    "UINT8 300": ({"inputs": [{"name": "image", "shape": [1, 2, 2, 3], "datatype": "UINT8",
                               "data": [300] + [1] * 11}]}, ["input error", "from 0 to 255"]),
    "batch over max": ({"inputs": [{"name": "image", "shape": [17, 1, 1, 3], "datatype": "UINT8",
                                    "data": [1] * 51}]}, ["input error", "batch of 17", "--max-batch 16"]),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_malformed_request_gets_a_4xx_and_the_server_keeps_serving(server, local, photos, fault) -> None:
    body, words = FAULTS[fault]
    status, answer = http_json(f"{server.http}/v2/models/semobridge/infer", body)
    assert status == 400, answer
    for word in words:
        assert word in answer["error"], answer
    status, answer = http_json(f"{server.http}/v2/models/semobridge/infer", image_request(photos[0]))
    assert status == 200
    scores = next(o for o in answer["outputs"] if o["name"] == "scores")["data"]
    assert np.abs(np.array(scores) - local.predict(photos[0]).scores[0]).max() <= TOL


def test_remote_errors_keep_the_error_model(server, photos) -> None:
    with RemoteClassifier(server.grpc) as remote:
        with pytest.raises(InputError, match="exceeds the limit") as refused:  # checked before sending
            remote.predict(np.zeros((1, 20000, 3), np.uint8))
        assert refused.value.hint
        with pytest.raises(InputError, match="cannot decode encoded image 0") as refused:  # refused by the server
            remote.predict_encoded(b"GIF89a broken")
        assert "JPEG" in refused.value.hint
    with pytest.raises(InputError, match="nope"):
        RemoteClassifier(server.grpc, model_name="nope")
    port = server.metrics_port + 1000
    with pytest.raises(BackendError) as unreachable:
        RemoteClassifier(f"127.0.0.1:{port}", timeout_s=5)
    assert "semobridge-serve running" in unreachable.value.hint


def test_bad_options_and_model_fail_before_start(serve_model, tmp_path) -> None:
    from .conftest import SERVE

    cases = [([str(tmp_path / "missing.onnx")], ModelError.exit_code, "missing.onnx: it does not exist"),
             ([str(serve_model), "--max-batch", "0"], InputError.exit_code, "--max-batch must be from 1"),
             ([str(serve_model), "--threads", "100000"], InputError.exit_code, "intra_op_num_threads"),
             ([str(serve_model), "--model-name", "a/b"], InputError.exit_code, "--model-name"),
             # '..' made Triton's repository the folder above it: "ready", and no model loaded
             ([str(serve_model), "--model-name", ".."], InputError.exit_code, "--model-name '..' is not a model name"),
             ([str(serve_model), "--model-name", ".hidden"], InputError.exit_code, "is not a model name")]
    for argv, code, words in cases:
        done = subprocess.run([*SERVE, *argv], capture_output=True, text=True, timeout=120)
        assert done.returncode == code, done.stderr
        assert words in done.stderr and "Traceback" not in done.stderr


def metric(server, line: str) -> float:
    """One sample of the server's Prometheus metrics, by its name and labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=30) as response:
        text = response.read().decode()
    return float(re.search(rf"^{re.escape(line)} (\S+)$", text, re.M)[1])


def test_large_random_body_is_refused_before_it_is_sent_and_the_server_lives(server, photos) -> None:
    """curl sends 50 MB of random bytes as form data, after 'Expect: 100-continue': Triton died of it (SIGSEGV)."""
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=30) as s:
        s.sendall(b"POST /v2/models/semobridge/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 50000000\r\n"
                  b"Content-Type: application/x-www-form-urlencoded\r\nExpect: 100-continue\r\n\r\n")
        answer = b"".join(iter(lambda: s.recv(65536), b"")).decode()
    assert answer.startswith("HTTP/1.1 400") and "JSON request body may hold 16 MiB" in answer
    status, _ = http_json(f"{server.http}/v2/models/semobridge/infer", image_request(photos[0]))
    assert status == 200


def test_refusals_are_counted_on_the_metrics_port(server) -> None:
    """Triton counts a request the model refuses as a success: the model counts it, the gate counts its own."""
    gate, model = 'semobridge_http_refused_total{reason="invalid"}', \
        'semobridge_model_refused_total{kind="input error",model="semobridge"}'
    triton = 'semobridge_http_refused_total{reason="triton"}'
    before = metric(server, gate), metric(server, model), metric(server, triton)
    assert http_json(f"{server.http}/v2/models/semobridge/infer", b"hello")[0] == 400  # the gate's
    assert http_json(f"{server.http}/v2/models/semobridge/infer", FAULTS["wrong dtype"][0])[0] == 400  # Triton's
    assert http_json(f"{server.http}/v2/models/semobridge/infer", FAULTS["garbage bytes"][0])[0] == 400  # the model's
    with RemoteClassifier(server.grpc) as remote:
        with pytest.raises(InputError):
            remote.predict_encoded(b"not an image")  # the model's, over gRPC
    assert (metric(server, gate), metric(server, model), metric(server, triton)) == \
        (before[0] + 1, before[1] + 2, before[2] + 1)


def _tcp_listeners() -> set[str]:
    """Inodes of the TCP sockets listening on this machine (state 0A in /proc/net/tcp, tcp6)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            fields = row.split()
            if fields[3] == "0A":
                inodes.add(fields[9])
    return inodes


def _sockets(pid: int) -> set[str]:
    """Inodes of the sockets a process holds open."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="reads the process list from Linux's /proc")
def test_no_credential_in_the_process_list_and_triton_reachable_by_this_user_only(server) -> None:
    """`ps` shows every user each command line: Triton's keys were on tritonserver's, and its loopback ports
    took any local user's request with them."""
    processes = [server.process.pid, *descendants(server.process.pid)]
    lines = {pid: Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0") for pid in processes}
    triton = next(pid for pid, argv in lines.items() if argv[0].endswith("tritonserver"))
    for pid, argv in lines.items():
        assert not any(re.search(r"[0-9a-f]{32}|restricted|semobridge-gate", arg) for arg in argv), argv
    assert not _sockets(triton) & _tcp_listeners()  # Triton listens on no TCP port: Unix sockets only
    workspace = Path(next(arg for arg in lines[triton] if arg.startswith("--model-repository=")).split("=", 1)[1]).parent
    assert stat.S_IMODE(workspace.stat().st_mode) == 0o700
    assert {"http", "metrics", "grpc:1"} <= {p.name for p in workspace.iterdir()}
    if os.geteuid() == 0:  # another user may not connect to them
        assert [_connect_as_nobody(workspace / name) for name in ("http", "metrics", "grpc:1")] == ["refused"] * 3


def _connect_as_nobody(path: Path) -> str:
    """Connect to a Unix socket from a child process running as the user nobody (uid 65534)."""
    child = os.fork()
    if child == 0:
        code = 3
        try:
            os.setgid(65534)
            os.setuid(65534)
            socket.socket(socket.AF_UNIX).connect(str(path))
            code = 0
        except PermissionError:
            code = 1
        except BaseException:
            code = 2
        finally:
            os._exit(code)
    return {0: "connected", 1: "refused", 2: "failed"}.get(os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]), "?")
