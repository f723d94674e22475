"""benchmarks/perf_analyzer.py at a tiny setting: perf_analyzer against the ``attnzoo serve`` it
starts, one row per protocol and concurrency, and the entry it appends."""

from __future__ import annotations

from benchmarks import perf_analyzer


def test_the_benchmark_runs_perf_analyzer_and_writes_an_entry(perf_analyzer_install, tmp_path, capsys):
    log = tmp_path / "BENCHMARKS.md"
    argv = ["--scale", "320,192", "--requests", "2", "--concurrency", "1", "--benchmarks-file", str(log)]
    assert perf_analyzer.main(argv) == 0
    entry = log.read_text()
    assert "perf_analyzer.py: Triton's perf_analyzer against attnzoo serve (attn0010)" in entry
    assert "- Command: `python benchmarks/perf_analyzer.py --scale 320,192 --requests 2 --concurrency 1" in entry
    rows = [line.split(" | ") for line in entry.splitlines() if line.startswith(("| http | 1 |", "| grpc | 1 |"))]
    assert len(rows) == 2 and all(float(row[2]) > 0 for row in rows)
    assert "test-time scale 320×192" in entry and "synthetic scene, 1333×800 JPEG" in entry
