"""deploy/: the Dockerfile and Kubernetes manifests agree with semobridge-serve (its options, ports, health and
metrics endpoints, drain timeout). They are not built or applied here (no Docker engine, no cluster)."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from semobridge_runtime.serve.cli import parse_args
from semobridge_runtime.serve.server import Endpoints

yaml = pytest.importorskip("yaml", reason="PyYAML reads the manifests")
DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
PORTS = {"http": Endpoints().http_port, "grpc": Endpoints().grpc_port, "metrics": Endpoints().metrics_port}


SERVE_MANIFESTS = ["semobridge-serve.yaml", "semobridge-serve-gpu.yaml"]


def documents(name: str) -> dict[str, dict]:
    return {doc["kind"]: doc for doc in yaml.safe_load_all((DEPLOY / "k8s" / name).read_text())}


def cpu_cores(quantity: str) -> float:
    """A Kubernetes CPU quantity ("2", "500m") in cores."""
    return int(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def resolved_args(container: dict) -> list[str]:
    """The container's args with $(VAR) expanded as the kubelet does, each variable from the downward API's
    resourceFieldRef on this container's CPU request (what the manifests use), rounded up to whole cores."""
    values = {}
    for env in container.get("env", []):
        ref = env["valueFrom"]["resourceFieldRef"]
        assert ref == {"containerName": container["name"], "resource": "requests.cpu", "divisor": "1"}, env
        values[env["name"]] = str(math.ceil(cpu_cores(str(container["resources"]["requests"]["cpu"]))))
    args = [re.sub(r"\$\((\w+)\)", lambda m: values[m.group(1)], a) for a in container["args"]]
    assert not any("$(" in a for a in args), "an argument names a variable the container does not define"
    return args


@pytest.mark.parametrize("name", [*SERVE_MANIFESTS, "triton.yaml"])
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


@pytest.mark.parametrize("name", SERVE_MANIFESTS)
def test_serve_manifest_runs_valid_options_and_waits_for_the_drain(name: str) -> None:
    pod = documents(name)["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    args = parse_args(resolved_args(container))  # the command's own parser: no stale option
    pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert pod["terminationGracePeriodSeconds"] > pre_stop + args.drain_timeout
    assert args.model.startswith("/models/")
    # --threads is the CPU request (deploy/README.md: one instance with ONNX Runtime's threads on the pod's cores)
    assert args.threads == math.ceil(cpu_cores(str(container["resources"]["requests"]["cpu"]))) >= 1
    assert "$(CPU_REQUEST)" in container["args"]
    claims = {v["name"]: v.get("persistentVolumeClaim", {}).get("claimName") for v in pod["volumes"]}
    assert claims["model"] == documents("model-volume.yaml")["PersistentVolumeClaim"]["metadata"]["name"]


def test_gpu_manifest_asks_for_a_gpu_and_runs_the_gpu_image() -> None:
    docs = documents("semobridge-serve-gpu.yaml")
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert "nvidia.com/gpu" not in container["resources"]["requests"] or \
        container["resources"]["requests"]["nvidia.com/gpu"] == container["resources"]["limits"]["nvidia.com/gpu"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert container["image"].rsplit("/", 1)[-1].startswith("semobridge-serve-gpu:")
    cpu = documents("semobridge-serve.yaml")["Deployment"]["spec"]["template"]["spec"]
    assert "nvidia.com/gpu" not in json.dumps(cpu)  # the CPU variant asks for none


def test_autoscalers_target_the_deployments_with_sound_bounds() -> None:
    hpas = list(yaml.safe_load_all((DEPLOY / "k8s" / "autoscaler.yaml").read_text()))
    deployments = {documents(n)["Deployment"]["metadata"]["name"] for n in SERVE_MANIFESTS}
    assert {h["spec"]["scaleTargetRef"]["name"] for h in hpas} == deployments
    for hpa in hpas:
        spec = hpa["spec"]
        assert hpa["apiVersion"] == "autoscaling/v2" and hpa["kind"] == "HorizontalPodAutoscaler"
        assert spec["scaleTargetRef"]["kind"] == "Deployment" and spec["scaleTargetRef"]["apiVersion"] == "apps/v1"
        assert 1 <= spec["minReplicas"] <= spec["maxReplicas"]
        for metric in spec["metrics"]:
            body = metric[metric["type"].lower()]
            assert metric["type"] in ("Resource", "Pods") and body["target"]["type"] in ("Utilization", "AverageValue")
            if metric["type"] == "Resource":  # utilisation is of the request: the target must set one
                target = documents(next(n for n in SERVE_MANIFESTS
                                        if documents(n)["Deployment"]["metadata"]["name"] == spec["scaleTargetRef"]["name"]))
                (container,) = target["Deployment"]["spec"]["template"]["spec"]["containers"]
                assert body["name"] in container["resources"]["requests"] and 0 < body["target"]["averageUtilization"] <= 100
        for direction in ("scaleUp", "scaleDown"):
            assert spec["behavior"][direction]["policies"]
    # the custom metric is the one deploy/README.md's prometheus-adapter rule defines
    custom = {m["pods"]["metric"]["name"] for h in hpas for m in h["spec"]["metrics"] if m["type"] == "Pods"}
    readme = (DEPLOY / "README.md").read_text()
    assert custom and all(f"name: {{as: {name}}}" in readme for name in custom)


def test_model_volume_loader_mounts_the_claim() -> None:
    docs = documents("model-volume.yaml")
    (container,) = docs["Pod"]["spec"]["containers"]
    assert {"name": "model", "mountPath": "/models"} in container["volumeMounts"]
    (volume,) = docs["Pod"]["spec"]["volumes"]
    assert volume["persistentVolumeClaim"]["claimName"] == docs["PersistentVolumeClaim"]["metadata"]["name"]


def test_dockerfile_runs_valid_options() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", text, re.M).group(1))
    assert re.search(r'^ENTRYPOINT \["semobridge-serve"\]$', text, re.M)
    args = parse_args(cmd)
    assert args.model == "/models/model.onnx" and args.http_port == PORTS["http"]
    assert '"/src/runtime[serve]"' in text and "/v2/health/ready" in text
    assert re.search(r"^FROM python:3\.(1[0-3])-slim", text, re.M)  # a Python nvidia-pytriton 0.7 has a stub for
    assert re.search(r"^ARG ONNXRUNTIME=onnxruntime$", text, re.M)  # the GPU image: --build-arg ONNXRUNTIME=onnxruntime-gpu...


def test_jetson_dockerfile_is_an_l4t_image_running_the_runtime() -> None:
    text = (DEPLOY / "jetson" / "Dockerfile").read_text()
    base = re.search(r"^ARG L4T_IMAGE=(\S+)$", text, re.M).group(1)
    assert re.search(r"/l4t-jetpack:r36\.4\.\d+$", base) and re.search(r"^FROM \$\{L4T_IMAGE\}$", text, re.M)
    assert '"/src/runtime[video]"' in text and "onnxruntime-gpu --index-url" in text
    assert 'test -n "$ORT_GPU_INDEX"' in text  # no package index named in the file: the builder passes it
    assert "ORT_INCLUDE=" in text and "build/examples/camera" in text
    assert re.search(r'^ENTRYPOINT \["semobridge-run"\]$', text, re.M)
    assert "UNVERIFIED" in text and "docs/jetson.md" in text
