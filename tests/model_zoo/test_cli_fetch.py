"""`attnzoo fetch` and the weights columns of `attnzoo models`, in-process and as real processes,
against the HTTP server of tests/model_zoo/conftest.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from model_zoo.cli import main
from model_zoo.weights import hash_prefix_of, sha256_file

pytestmark = pytest.mark.timeout(120)

ATTNZOO = Path(sys.executable).with_name("attnzoo")


def fetch(*args: str) -> int:
    return main(["fetch", "--no-progress", *args])


def run_attnzoo(*args: str, **popen) -> subprocess.Popen:
    """``attnzoo ARGS`` as a child process, without the user's ATTNZOO_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATTNZOO_")}
    return subprocess.Popen(
        [str(ATTNZOO), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen
    )


def test_fetch_downloads_then_skips(weights_server, checkpoints, make_metafile, weights_dir, capsys):
    url = weights_server.add("tiny_model", checkpoints["a"])
    metafile = make_metafile({"tiny": url})
    args = ["--metafile", str(metafile), "--weights-dir", str(weights_dir), "tiny"]

    assert fetch(*args) == 0
    path = weights_dir / Path(url).name
    assert capsys.readouterr().out == f"tiny: downloaded, sha256 ok ({path})\n"
    assert sha256_file(path).startswith(hash_prefix_of(path.name))

    assert fetch(*args) == 0
    assert capsys.readouterr().out == f"tiny: already present, sha256 ok ({path})\n"
    assert len(weights_server.requests_for(url)) == 1


def test_fetch_without_variants_is_an_error(make_metafile, capsys):
    metafile = make_metafile({"one": None, "two": None})
    assert fetch("--metafile", str(metafile)) == 2
    err = capsys.readouterr().err
    assert err == "attnzoo fetch: error: name at least one VARIANT or pass --all (variants: one, two)\n"


def test_fetch_unknown_variant_lists_valid_ones(make_metafile, capsys):
    metafile = make_metafile({"one": None})
    assert fetch("--metafile", str(metafile), "three") == 2
    assert capsys.readouterr().err == "attnzoo fetch: error: unknown variant 'three'; valid variants: one\n"


def test_fetch_all_reports_each_failure_on_one_line(weights_server, checkpoints, make_metafile, weights_dir, capsys):
    good = weights_server.add("good_model", checkpoints["a"])
    missing = weights_server.url("missing_model-0123abcd.pth")
    bad = weights_server.add("bad_model", checkpoints["b"])
    weights_server.misbehave(bad, corrupt=True)
    metafile = make_metafile({"missing": missing, "good": good, "bad": bad})

    assert fetch("--metafile", str(metafile), "--weights-dir", str(weights_dir), "--all") == 1

    captured = capsys.readouterr()
    assert captured.out.startswith("good: downloaded, sha256 ok")
    errors = captured.err.splitlines()
    assert len(errors) == 3
    assert errors[0].startswith(f"attnzoo fetch: missing: error: {missing}: HTTP 404 Not Found;")
    assert errors[1].startswith(f"attnzoo fetch: bad: error: downloaded {bad}: sha256 ")
    assert errors[2] == "attnzoo fetch: 2 of 3 failed"
    assert sorted(p.name for p in weights_dir.iterdir() if p.name != ".locks") == [Path(good).name]


def test_models_json_reports_weights_present_and_verified(
    weights_server, checkpoints, make_metafile, weights_dir, capsys
):
    ok = weights_server.add("ok_model", checkpoints["a"])
    broken = weights_server.add("broken_model", checkpoints["b"])
    metafile = make_metafile({"ok": ok, "broken": broken, "absent": weights_server.url("absent-0123abcd.pth")})
    assert fetch("--metafile", str(metafile), "--weights-dir", str(weights_dir), "ok", "broken") == 0
    (weights_dir / Path(broken).name).write_bytes(checkpoints["a"])  # no longer matches its name
    capsys.readouterr()

    assert main(["models", "--metafile", str(metafile), "--weights-dir", str(weights_dir), "--json"]) == 0
    rows = {row["alias"]: row for row in json.loads(capsys.readouterr().out)}

    assert list(rows["ok"]) == [
        "name", "alias", "attention", "dcn", "published_box_ap", "published_fps", "published_train_memory_gb",
        "hardware", "weights_url", "weights_file", "weights_present", "weights_verified",
    ]  # fmt: skip
    assert rows["ok"]["weights_file"] == str(weights_dir / Path(ok).name)
    states = {alias: (row["weights_present"], row["weights_verified"]) for alias, row in rows.items()}
    assert states == {"ok": (True, True), "broken": (True, False), "absent": (False, None)}

    assert main(["models", "--metafile", str(metafile), "--weights-dir", str(weights_dir)]) == 0
    table = capsys.readouterr().out
    assert "present, sha256 ok" in table and "present, sha256 MISMATCH" in table and "missing" in table


def test_two_fetch_processes_produce_one_good_file(weights_server, checkpoints, make_metafile, weights_dir):
    """The server holds the first download mid-file until the second process says it is waiting."""
    content = checkpoints["b"]
    url = weights_server.add("tiny_model", content)
    held = weights_server.misbehave(url, hold_after=500_000)
    args = ["fetch", "--metafile", str(make_metafile({"tiny": url})), "--weights-dir", str(weights_dir), "tiny"]

    first = run_attnzoo(*args)
    deadline = time.monotonic() + 30
    while not weights_server.requests_for(url):
        assert time.monotonic() < deadline and first.poll() is None, first.communicate()
        time.sleep(0.01)
    second = run_attnzoo(*args)
    waiting = _read_until(second, "waiting for another fetch")
    held.release.set()
    outputs = [process.communicate(timeout=60) for process in (first, second)]

    assert [first.returncode, second.returncode] == [0, 0], outputs
    assert waiting == "attnzoo fetch: tiny: waiting for another fetch of " + Path(url).name + " to finish\n"
    path = weights_dir / Path(url).name
    assert outputs[0][0] == f"tiny: downloaded, sha256 ok ({path})\n"
    assert outputs[1] == (f"tiny: already present, sha256 ok ({path})\n", "")
    assert len(weights_server.requests_for(url)) == 1
    assert path.read_bytes() == content


def test_fetch_process_without_network_exits_nonzero_with_one_clear_line(refused_url, make_metafile, weights_dir):
    metafile = make_metafile({"offline": refused_url})
    process = run_attnzoo("fetch", "--metafile", str(metafile), "--weights-dir", str(weights_dir), "offline")
    out, err = process.communicate(timeout=60)

    assert process.returncode == 1
    assert out == ""
    assert "Traceback" not in err
    first, summary = err.splitlines()
    assert first.startswith(f"attnzoo fetch: offline: error: cannot reach {refused_url} (")
    assert first.endswith(f"put the file at {str(weights_dir / Path(refused_url).name)!r}")
    assert summary == "attnzoo fetch: 1 of 1 failed"


def test_fetch_reads_metafile_and_weights_dir_from_the_environment(
    weights_server, checkpoints, make_metafile, weights_dir, monkeypatch, capsys
):
    url = weights_server.add("tiny_model", checkpoints["a"])
    monkeypatch.setenv("ATTNZOO_METAFILE", str(make_metafile({"tiny": url})))
    monkeypatch.setenv("ATTNZOO_WEIGHTS_DIR", str(weights_dir))

    assert fetch("--all") == 0

    assert capsys.readouterr().out.startswith("tiny: downloaded, sha256 ok")
    assert (weights_dir / Path(url).name).read_bytes() == checkpoints["a"]


def _read_until(process: subprocess.Popen, text: str) -> str:
    """Lines of ``process``'s stderr up to the first holding ``text`` (or up to its end)."""
    line = process.stderr.readline()
    while line and text not in line:
        line = process.stderr.readline()
    return line
