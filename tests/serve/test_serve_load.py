"""Under load: 32 concurrent clients x 50 requests of mixed sizes (pixels and encoded files, gRPC and HTTP,
a few malformed ones among them), all answered correctly, none lost, and Triton really batches them."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import numpy as np

from semobridge_runtime import InputError
from semobridge_runtime.serve import RemoteClassifier

from .conftest import png

CLIENTS, REQUESTS = 32, 50
BAD_EVERY = 17  # clients 0..3 send garbage bytes as every 17th request


def statistics(server) -> dict:
    with urllib.request.urlopen(f"{server.http}/v2/models/semobridge/stats", timeout=30) as response:
        return json.loads(response.read())["model_stats"][0]


def test_32_clients_x_50_requests(server, local, photos) -> None:
    expected = local.predict(photos, top_k=1)
    encoded = [png(p) for p in photos]
    before = statistics(server)
    answered, refused, failures = [], [], []

    def client(index: int) -> None:
        rng = np.random.default_rng(index)
        url = server.http if index % 4 == 0 else server.grpc
        try:
            with RemoteClassifier(url) as remote:
                for r in range(REQUESTS):
                    i = int(rng.integers(len(photos)))
                    if index < 4 and r % BAD_EVERY == BAD_EVERY - 1:
                        try:
                            remote.predict_encoded(b"\x89PNG garbage")
                        except InputError:
                            refused.append(index)
                        continue
                    result = remote.predict_encoded(encoded[i]) if r % 3 == 0 else remote.predict(photos[i])
                    assert int(result.labels[0]) == int(expected.labels[i])
                    assert np.abs(result.scores[0] - expected.scores[i]).max() <= 1e-5
                    answered.append(index)
        except Exception as exc:  # reported below, with the client that saw it
            failures.append(f"client {index}: {exc!r}")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    seconds = time.perf_counter() - started
    assert not failures, failures[:5]
    bad = 4 * (REQUESTS // BAD_EVERY)
    assert len(refused) == bad and len(answered) == CLIENTS * REQUESTS - bad  # none lost
    after = statistics(server)
    served = int(after["inference_count"]) - int(before["inference_count"])
    batches = {int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in after["batch_stats"]}
    print(f"\n{len(answered)} requests answered and {len(refused)} refused in {seconds:.1f} s "
          f"({len(answered) / seconds:.0f} requests/s); model runs by batch size: {dict(sorted(batches.items()))}")
    assert served >= len(answered)
    assert max(batches) > 1, f"no dynamic batching happened: {batches}"


KILLED_CLIENT = r"""
import socket, sys, time
port = int(sys.argv[1])
# one request cut off in its body, and one sent whole whose answer nobody reads
cut = socket.create_connection(("127.0.0.1", port))
cut.sendall(b"POST /v2/models/semobridge/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n" + b"{" * 4096)
body = ('{"inputs":[{"name":"image","shape":[8,256,256,3],"datatype":"UINT8","data":[' +
        ",".join(["7"] * (8 * 256 * 256 * 3)) + "]}]}").encode()
whole = socket.create_connection(("127.0.0.1", port))
whole.sendall(b"POST /v2/models/semobridge/infer HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
print("sent", flush=True)
time.sleep(60)
"""


def test_a_client_killed_mid_request_does_not_hurt_others(server, local, photos) -> None:
    expected = local.predict(photos)
    killed = subprocess.Popen([sys.executable, "-c", KILLED_CLIENT, str(server.http_port)],
                              stdout=subprocess.PIPE, text=True)
    results, stop = [], threading.Event()

    def others() -> None:
        with RemoteClassifier(server.grpc) as remote:
            while not stop.is_set():
                results.append(remote.predict(photos))

    thread = threading.Thread(target=others)
    thread.start()
    try:
        assert killed.stdout.readline().strip() == "sent"
        time.sleep(0.2)
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=30)
        time.sleep(0.5)
    finally:
        stop.set()
        thread.join(timeout=120)
    assert results
    for result in results:
        np.testing.assert_array_equal(result.labels, expected.labels)
        assert np.abs(result.scores - expected.scores).max() <= 1e-5
    with RemoteClassifier(server.http) as remote:  # and it still answers afterwards
        np.testing.assert_array_equal(remote.predict(photos).labels, expected.labels)
