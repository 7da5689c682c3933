"""The fleet on paper: deploy/kubernetes. The PrometheusRule is generated from the one rules file
and up to date; the built-in resources validate against Kubernetes's API schemas (the
kubernetes-validate package, offline, strict); the resources fit together (selectors, port
names, the arguments' ports); and the Deployment's tritonserver arguments and probes work on a
real server serving the example models the image bakes, whose /metrics has every metric the
rules name."""

from __future__ import annotations

import shutil
import subprocess
import sys

import kubernetes_validate
import numpy as np
import pytest
import requests
import yaml

from server import ROOT, TritonServer, json_body
from test_telemetry import GPU_ONLY, metric_names_in

K8S = ROOT / "deploy" / "kubernetes"
RULES = ROOT / "deploy" / "prometheus" / "onnxrs-rules.yml"
GENERATE = K8S / "gen-prometheusrule"
# Kinds the Prometheus Operator's CRDs define: no Kubernetes schema knows them; they are checked
# by hand below (and the rules by promtool).
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}
# The Kubernetes releases the package has schemas for, oldest and newest.
K8S_VERSIONS = ["1.25.0", "1.37.0"]


def manifests() -> dict[str, dict]:
    """Every resource in deploy/kubernetes by kind (one resource each)."""
    out = {}
    for f in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(f.read_text()):
            assert doc["kind"] not in out, f
            out[doc["kind"]] = doc | {"_file": f.name}
    return out


def without_file(doc: dict) -> dict:
    return {k: v for k, v in doc.items() if k != "_file"}


def test_prometheusrule_is_generated_from_the_rules_file(tmp_path, promtool):
    r = subprocess.run([sys.executable, str(GENERATE), "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    rule = manifests()["PrometheusRule"]
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["spec"] == yaml.safe_load(RULES.read_text())
    # A change to the rules makes the committed file stale.
    changed = tmp_path / "rules.yml"
    changed.write_text(RULES.read_text().replace("> 0.05", "> 0.02"))
    r = subprocess.run([sys.executable, str(GENERATE), "--check", f"--rules={changed}"], capture_output=True, text=True)
    assert r.returncode == 1 and "is not generated from" in r.stdout, r.stdout + r.stderr
    # The spec, as the operator hands it to Prometheus, is a valid rules file: 18 recording
    # rules and 8 alerts.
    spec = tmp_path / "spec.yml"
    spec.write_text(yaml.safe_dump(rule["spec"]))
    r = subprocess.run([promtool, "check", "rules", str(spec)], capture_output=True, text=True)
    assert r.returncode == 0 and "SUCCESS: 26 rules found" in r.stdout, r.stdout + r.stderr


def test_manifests_validate_against_the_kubernetes_schemas():
    docs = manifests()
    assert set(docs) == {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget",
                         "ServiceMonitor", "PrometheusRule", "Kustomization"}
    builtin = [without_file(d) for k, d in docs.items() if k not in CRD_KINDS | {"Kustomization"}]
    for version in K8S_VERSIONS:
        for doc in builtin:
            kubernetes_validate.validate(doc, version, strict=True)
    # Strict means strict: a misspelt field is refused.
    bad = without_file(docs["Deployment"])
    bad["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = bad["spec"]["template"]["spec"]["containers"][0].pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSIONS[-1], strict=True)


def container(docs):
    (c,) = docs["Deployment"]["spec"]["template"]["spec"]["containers"]
    return c


def flags(c) -> dict[str, str]:
    return dict(a.removeprefix("--").split("=", 1) for a in c["args"])


def test_manifests_fit_together():
    docs = manifests()
    deploy, svc, monitor = docs["Deployment"], docs["Service"], docs["ServiceMonitor"]
    # kubectl apply -k applies every file.
    assert sorted(docs["Kustomization"]["resources"]) == sorted(d["_file"] for k, d in docs.items() if k != "Kustomization")
    pod_labels = deploy["spec"]["template"]["metadata"]["labels"]
    for selector in (deploy["spec"]["selector"]["matchLabels"], svc["spec"]["selector"], docs["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"]):
        assert selector.items() <= pod_labels.items()
    assert monitor["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    target = docs["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deploy["metadata"]["name"])
    # The ports tritonserver is told to use are the ports the pod declares, by name.
    c = container(docs)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    f = flags(c)
    assert ports == {"http": int(f["http-port"]), "grpc": int(f["grpc-port"]), "metrics": int(f["metrics-port"])}
    assert {p["targetPort"] for p in svc["spec"]["ports"]} == set(ports)
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"]["port"] == "http"
    # The scraped endpoint is the Service port that leads to the metrics port.
    (endpoint,) = monitor["spec"]["endpoints"]
    (scraped,) = [p for p in svc["spec"]["ports"] if p["name"] == endpoint["port"]]
    assert scraped["targetPort"] == "metrics" and endpoint["path"] == "/metrics"
    # Requests in flight may finish before the kubelet kills the container.
    assert deploy["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > int(f["exit-timeout-secs"])


def test_deployment_arguments_and_probes_on_a_live_server(tmp_path):
    docs = manifests()
    c = container(docs)
    # The example repository, as the image's models stage makes it.
    repo = tmp_path / "models"
    shutil.copytree(ROOT / "model_repository", repo, ignore=shutil.ignore_patterns("model.onnx"))
    subprocess.run([sys.executable, str(ROOT / "tests" / "models" / "make_models.py"), "--example", str(repo)], check=True, capture_output=True)
    # Paths, ports and the shutdown timeout are the test's own (TritonServer sets them: a
    # keep-alive connection would hold the stop for the whole 30 s); every other argument as written.
    own = ("model-repository", "backend-directory", "http-port", "grpc-port", "metrics-port", "exit-timeout-secs")
    rest = [a for a in c["args"] if a.removeprefix("--").split("=", 1)[0] not in own]
    assert rest, c["args"]
    with TritonServer(repo, *rest, log_dir=tmp_path) as s:
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert s.request("GET", c[probe]["httpGet"]["path"])[0] == 200, probe
        x = np.arange(16, dtype=np.float32).reshape(1, 16)
        r = requests.post(f"{s.url}/v2/models/mlp/infer", json=json_body({"X": (x, "FP32")}), timeout=30)
        assert r.status_code == 200, r.text
        (endpoint,) = docs["ServiceMonitor"]["spec"]["endpoints"]
        text = requests.get(f"http://127.0.0.1:{s.metrics_port}{endpoint['path']}", timeout=10).text
        assert s.metrics().get("nv_inference_request_success", model="mlp", version="1") == 1
    exported = metric_names_in(text)
    named = metric_names_in(yaml.safe_dump(docs["PrometheusRule"]["spec"]))
    assert len(named) >= 10
    missing = sorted(named - exported - GPU_ONLY)
    assert not missing, f"named by the PrometheusRule but not exported: {missing}"
