"""Request ids and the structured access log, seen from a real HTTP client."""

from __future__ import annotations

import json


def test_every_response_carries_a_request_id_that_the_log_line_carries(client, access_log, eventually, jpeg):
    responses = [
        client.get("/healthz"),
        client.get("/nowhere"),
        client.post("/detect", params={"variant": "attn0010"}, content=jpeg),
        client.post("/detect", params={"variant": "attn0010"}, content=b"junk"),
    ]
    ids = [r.headers["X-Request-ID"] for r in responses]
    assert len(set(ids)) == 4 and all(len(i) == 32 for i in ids)
    assert responses[3].json()["request_id"] == ids[3]
    # the line is written once the response has been sent, so it may trail the client a little
    eventually(lambda: set(ids) <= {line["request_id"] for line in access_log}, timeout=10)
    by_id = {line["request_id"]: line for line in access_log}
    detect = by_id[ids[2]]
    assert detect["method"] == "POST" and detect["path"] == "/detect" and detect["query"] == "variant=attn0010"
    assert detect["status"] == 200 and detect["variant"] == "attn0010" and detect["batch_size"] == 1
    assert detect["duration_ms"] > 0 and detect["client"].startswith("127.0.0.1:")
    assert by_id[ids[1]]["status"] == 404 and by_id[ids[1]]["error"] == "not_found"
    assert by_id[ids[3]]["status"] == 422 and by_id[ids[3]]["error"] == "invalid_image"
    assert "error" not in detect


def test_a_sane_client_request_id_is_kept_and_an_insane_one_replaced(client, access_log, eventually):
    kept = client.get("/healthz", headers={"X-Request-ID": "trace-abc.123"})
    replaced = client.get("/healthz", headers={"X-Request-ID": "bad id\twith spaces" + "x" * 200})
    assert kept.headers["X-Request-ID"] == "trace-abc.123"
    assert replaced.headers["X-Request-ID"] != "bad id" and len(replaced.headers["X-Request-ID"]) == 32
    eventually(lambda: "trace-abc.123" in {line["request_id"] for line in access_log}, timeout=10)


def test_openapi_docs_are_served(client):
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    detect = spec["paths"]["/detect"]["post"]
    assert set(detect["requestBody"]["content"]) == {"multipart/form-data", "image/*", "application/octet-stream", "application/json"}
    assert {p["name"] for p in detect["parameters"]} == {"variant", "budget_ms", "score_thr", "max_dets", "classes", "format"}  # budget_ms: variant=auto
    assert {"/models", "/models/{variant}", "/healthz", "/readyz", "/metrics"} <= set(spec["paths"])


def test_secrets_in_a_query_string_never_reach_the_access_log(client, access_log, eventually):
    secrets = {"token": "s3cret-1", "api_key": "s3cret-2", "Password": "s3cret-3", "keep": "me"}
    client.get("/healthz", params=secrets, headers={"X-Request-ID": "with-secrets"})
    eventually(lambda: any(line["request_id"] == "with-secrets" for line in access_log), timeout=10)
    (line,) = [line for line in access_log if line["request_id"] == "with-secrets"]
    assert line["query"] == "token=[redacted]&api_key=[redacted]&Password=[redacted]&keep=me"
    assert "s3cret" not in json.dumps(access_log)
