"""benchmarks/serve_bench.py against the shared live server: levels, percentiles, the entry."""

from __future__ import annotations

import json

from benchmarks import serve_bench


def test_serve_bench_measures_each_concurrency_and_appends_an_entry(live_server, zoo, tmp_path, capsys):
    out, log = tmp_path / "bench.json", tmp_path / "BENCHMARKS.md"
    argv = ["--url", live_server.base_url, "--metafile", str(zoo.metafile), "--weights-dir", str(zoo.weights_dir),
            "--variant", "attn0010", "--requests", "3", "--concurrency", "1,2", "--repeats", "1",
            "--json", str(out), "--benchmarks-file", str(log)]  # fmt: skip
    assert serve_bench.main(argv) == 0
    result = json.loads(out.read_text())
    assert [level["concurrency"] for level in result["levels"]] == [1, 2]
    for level in result["levels"]:
        assert level["statuses"] == {"200": 3}
        assert len(level["latencies_s"]) == 3 and all(t > 0 for t in level["latencies_s"])
        assert set(level["server_ms"]) == {"queue", "preprocess", "model", "postprocess"}
    assert result["in_process"]["model_s"] > 0
    entry = log.read_text()
    assert "serve_bench.py: HTTP service latency and throughput (attn0010)" in entry
    assert "| concurrency | answers | errors | p50 ms | p99 ms | throughput img/s |" in entry
    assert "test-time scale 320×192" in entry and "--concurrency 1,2" in entry
    assert entry.count("\n| 1 | 3 | 0 |") == 1 and entry.count("\n| 2 | 3 | 0 |") == 1


def test_serve_bench_compares_detect_with_both_v2_transports(live_server, tmp_path):
    out, log = tmp_path / "bench.json", tmp_path / "BENCHMARKS.md"
    argv = ["--url", live_server.base_url, "--grpc-url", live_server.grpc_url, "--variant", "attn0010", "--requests", "2",
            "--concurrency", "1", "--json", str(out), "--benchmarks-file", str(log)]  # fmt: skip
    assert serve_bench.main(argv) == 0
    protocols = json.loads(out.read_text())["protocols"]
    assert list(protocols) == ["detect", "v2-http", "v2-grpc"]
    for result in protocols.values():
        assert result["statuses"] == {"200": 2}
        assert len(result["latencies_s"]) == 2 and all(t > 0 for t in result["latencies_s"])
    entry = log.read_text()
    assert "| protocol | answers | errors | p50 ms | p99 ms | p50 − /detect p50 ms |" in entry
    for name in ("detect", "v2-http", "v2-grpc"):
        assert entry.count(f"\n| {name} | 2 | 0 |") == 1
    assert "Not measured" not in entry


def test_serve_bench_without_a_grpc_address_says_what_it_skipped(live_server, tmp_path):
    log = tmp_path / "BENCHMARKS.md"
    argv = ["--url", live_server.base_url, "--variant", "attn0010", "--requests", "1", "--concurrency", "1",
            "--protocols", "detect,v2-grpc", "--benchmarks-file", str(log)]  # fmt: skip
    assert serve_bench.main(argv) == 0
    entry = log.read_text()
    assert entry.count("\n| detect | 1 | 0 |") == 1 and "| v2-grpc |" not in entry
    assert "Not measured: v2-grpc (no gRPC address: give --grpc-url with --url)." in entry
