"""deploy/: the Dockerfile and Kubernetes manifests agree with semobridge-serve (its options, ports, health and
metrics endpoints, drain timeout). They are not built or applied here (no Docker engine, no cluster)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from semobridge_runtime.serve.cli import _parser
from semobridge_runtime.serve.server import Endpoints

yaml = pytest.importorskip("yaml", reason="PyYAML reads the manifests")
DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
PORTS = {"http": Endpoints().http_port, "grpc": Endpoints().grpc_port, "metrics": Endpoints().metrics_port}


def documents(name: str) -> dict[str, dict]:
    return {doc["kind"]: doc for doc in yaml.safe_load_all((DEPLOY / "k8s" / name).read_text())}


@pytest.mark.parametrize("name", ["semobridge-serve.yaml", "triton.yaml"])
def test_manifest_probes_ports_and_metrics(name: str) -> None:
    docs = documents(name)
    pod = docs["Deployment"]["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == PORTS
    for probe in ("startupProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true" and int(annotations["prometheus.io/port"]) == PORTS["metrics"]
    assert annotations["prometheus.io/path"] == "/metrics"
    assert {p["targetPort"] for p in docs["Service"]["spec"]["ports"]} == set(PORTS)
    assert docs["Service"]["spec"]["selector"] == docs["Deployment"]["spec"]["selector"]["matchLabels"]
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert "/dev/shm" in mounts and "/models" in mounts


def test_serve_manifest_runs_valid_options_and_waits_for_the_drain() -> None:
    pod = documents("semobridge-serve.yaml")["Deployment"]["spec"]["template"]["spec"]
    args = _parser().parse_args(pod["containers"][0]["args"])  # the command's own parser: no stale option
    pre_stop = int(pod["containers"][0]["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert pod["terminationGracePeriodSeconds"] > pre_stop + args.drain_timeout
    assert args.model.startswith("/models/")


def test_dockerfile_runs_valid_options() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", text, re.M).group(1))
    assert re.search(r'^ENTRYPOINT \["semobridge-serve"\]$', text, re.M)
    args = _parser().parse_args(cmd)
    assert args.model == "/models/model.onnx" and args.http_port == PORTS["http"]
    assert '"/src/runtime[serve]"' in text and "/v2/health/ready" in text
    assert re.search(r"^FROM python:3\.(1[0-3])-slim", text, re.M)  # a Python nvidia-pytriton 0.7 has a stub for
