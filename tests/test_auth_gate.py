"""With API keys set, nobody gets in without one, and a refused caller makes the server read no body."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from conftest import JFK
from dattavani_asr.server import ServerSettings, create_app

ROUTES = [("POST", "/v1/audio/transcriptions"), ("POST", "/v1/audio/translations"), ("POST", "/v1/jobs"),
          ("GET", "/v1/jobs"), ("GET", "/v1/models")]  # fmt: skip


@pytest.fixture(scope="module")
def http(tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    settings = ServerSettings(  # type: ignore[call-arg]
        data_dir=tmp_path_factory.mktemp("auth"),
        api_keys=["right"],
        max_upload_mb=1,
        cors_origins=["https://app.example"],
    )
    return TestClient(create_app(settings))


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_every_api_route_refuses_a_missing_or_wrong_key(http: TestClient, method: str, path: str) -> None:
    with JFK.open("rb") as handle:
        files = {"file": ("jfk.flac", handle)} if method == "POST" else None
        missing = http.request(method, path, files=files)
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "missing_api_key"
    wrong = http.request(method, path, headers={"Authorization": "Bearer wrong"})
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"


def test_auth_comes_before_the_body(http: TestClient) -> None:
    """An oversized upload without a key is a 401, not a 413: the body was never read."""
    consumed: list[int] = []

    def body() -> object:
        for _ in range(64):
            consumed.append(1)
            yield b"x" * 65536

    response = http.post(
        "/v1/audio/transcriptions", content=body(), headers={"Content-Type": "multipart/form-data; boundary=b"}
    )
    assert response.status_code == 401
    assert len(consumed) <= 1  # at most what the client pushed before the answer
    declared = http.post("/v1/audio/transcriptions", headers={"Content-Length": str(50 << 20)}, content=b"")
    assert declared.status_code == 401
    keyed = http.post(
        "/v1/audio/transcriptions",
        headers={"Content-Length": str(50 << 20), "Authorization": "Bearer right"},
        content=b"",
    )
    assert keyed.status_code == 413  # with a key, the size limit applies


def test_cors_preflight_needs_no_key_and_refusals_carry_cors_headers(http: TestClient) -> None:
    origin = {"Origin": "https://app.example"}
    preflight = http.options("/v1/audio/transcriptions", headers=origin | {"Access-Control-Request-Method": "POST"})
    assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == "https://app.example"
    refused = http.post("/v1/audio/transcriptions", headers=origin)
    assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == "https://app.example"


def test_health_and_metrics_stay_open(http: TestClient, tmp_path: Path) -> None:
    assert http.get("/health").status_code == 200 and http.get("/metrics").status_code == 200


def test_models_lists_only_what_loads_offline_and_refuses_the_rest_with_a_4xx(tmp_path: Path) -> None:
    settings = ServerSettings(data_dir=tmp_path, cache_dir=tmp_path / "empty-cache")  # type: ignore[call-arg]
    with TestClient(create_app(settings)) as client:
        listed = {model["id"] for model in client.get("/v1/models").json()["data"]}
        assert "tiny.en" in listed and "large-v3" not in listed and "small" not in listed
        with JFK.open("rb") as handle:
            refused = client.post(
                "/v1/audio/transcriptions", data={"model": "large-v3"}, files={"file": ("a.flac", handle)}
            )
        assert refused.status_code == 400 and "large-v3" in refused.json()["error"]["message"], refused.text
