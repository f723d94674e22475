"""weights.py against a real HTTP server on 127.0.0.1 (tests/model_zoo/conftest.py).

The served files are named ``<stem>-<first 8 hex of their own sha256>.pth`` as OpenMMLab names
its files. The fresh-download and cut-and-resume tests serve a full-size synthetic checkpoint
(model_zoo.synth); the misbehaviour cases use small torch.save'd checkpoints, since the download
code never looks at the content.
"""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path

import pytest

from model_zoo.checkpoint import compare_keys, expected_shapes, read_checkpoint
from model_zoo.cli import main
from model_zoo.errors import DownloadError, HashMismatchError, WeightsMissingError
from model_zoo.registry import VariantEntry, load_registry, weights_path_for
from model_zoo.weights import FetchResult, WeightsStatus, fetch_weights, hash_prefix_of, verify_weights, weights_status

pytestmark = pytest.mark.timeout(60)


def entry_for(make_metafile, url: str | None, alias: str = "tiny") -> VariantEntry:
    return load_registry(make_metafile({alias: url})).resolve(alias)


def fetch(entry: VariantEntry, weights_dir: Path, **options) -> FetchResult:
    """``entry``'s Weights URL into its file in ``weights_dir``, as ``attnzoo fetch`` does it."""
    return fetch_weights(entry.weights_url, weights_path_for(entry, weights_dir), **options)


def status(entry: VariantEntry, weights_dir: Path, **options) -> WeightsStatus:
    return weights_status(weights_path_for(entry, weights_dir), **options)


def files_left(directory: Path) -> list[str]:
    """What a user sees in the weights dir: everything but the ``.locks`` folder."""
    return sorted(p.name for p in directory.iterdir() if p.name != ".locks") if directory.exists() else []


def test_hash_prefix_of_follows_the_openmmlab_convention():
    assert hash_prefix_of("faster_rcnn_r50_fpn_attention_1111_1x_coco_20200130-403cccba.pth") == "403cccba"
    assert hash_prefix_of("/some/dir/model-0123456789abcdef.pth") == "0123456789abcdef"
    assert hash_prefix_of("my_model.pth") is None
    assert hash_prefix_of("model-XYZ12345.pth") is None


def test_fresh_download_is_verified_and_moved_into_place(
    weights_server, synthetic_checkpoint, make_metafile, weights_dir
):
    url = weights_server.add("faster_rcnn_r50_fpn_attention_0010_1x_coco_20200130", synthetic_checkpoint)
    entry = entry_for(make_metafile, url)

    result = fetch(entry, weights_dir, progress=False)

    assert result.path == weights_dir / entry.weights_filename
    assert result.downloaded and result.verified and result.resumed_from == 0
    assert result.sha256 == hashlib.sha256(synthetic_checkpoint).hexdigest() == verify_weights(result.path, hash_prefix_of(result.path))
    assert files_left(weights_dir) == [entry.weights_filename]  # no .part left behind
    assert [r.range for r in weights_server.requests_for(url)] == [None]
    state_dict, meta = read_checkpoint(result.path)
    assert compare_keys(state_dict, expected_shapes(entry.arch)).ok and meta["seed"] == 3


def test_present_verified_file_is_not_downloaded_again(weights_server, checkpoints, make_metafile, weights_dir):
    url = weights_server.add("tiny_model", checkpoints["a"])
    entry = entry_for(make_metafile, url)
    fetch(entry, weights_dir, progress=False)

    again = fetch(entry, weights_dir, progress=False)

    assert not again.downloaded and again.verified
    assert len(weights_server.requests_for(url)) == 1


def test_cut_mid_file_resumes_with_a_range_request(weights_server, synthetic_checkpoint, make_metafile, weights_dir):
    url = weights_server.add("attn0010_synthetic", synthetic_checkpoint)
    weights_server.misbehave(url, cut_after=50_000_000, cut_times=1)
    notes: list[str] = []

    result = fetch(entry_for(make_metafile, url), weights_dir, progress=False, log=notes.append)

    first, second = weights_server.requests_for(url)
    assert first.range is None
    assert second.range == "bytes=50000000-"
    (note,) = notes
    assert note.startswith(f"connection lost after 50000000 bytes of {result.path.name} (") and note.endswith("; resuming")
    assert result.sha256 == hashlib.sha256(synthetic_checkpoint).hexdigest()
    verify_weights(result.path, hash_prefix_of(result.path))


def test_partial_file_from_an_earlier_run_is_resumed(weights_server, checkpoints, make_metafile, weights_dir):
    """The server stalls mid-file on every request: the fetch gives up keeping the .part; the
    next fetch (server fixed) asks only for the rest."""
    content = checkpoints["b"]
    url = weights_server.add("tiny_model", content)
    weights_server.misbehave(url, stall_after=200_000)
    entry = entry_for(make_metafile, url)

    with pytest.raises(DownloadError, match="read timeout") as failure:
        fetch(entry, weights_dir, progress=False, timeout=0.3)
    assert "run the fetch again to resume" in str(failure.value)
    part = weights_dir / f"{entry.weights_filename}.part"
    held = part.stat().st_size
    assert held == 5 * 200_000  # five requests, each made progress
    assert content.startswith(part.read_bytes())

    weights_server.misbehave(url)  # behaves from now on
    result = fetch(entry, weights_dir, progress=False)

    assert result.resumed_from == held
    assert weights_server.requests_for(url)[-1].range == f"bytes={held}-"
    assert result.path.read_bytes() == content
    assert files_left(weights_dir) == [entry.weights_filename]


def test_server_that_ignores_range_restarts_from_zero(weights_server, checkpoints, make_metafile, weights_dir):
    content = checkpoints["a"]
    url = weights_server.add("tiny_model", content)
    weights_server.misbehave(url, cut_after=700_000, cut_times=1, ignore_range=True)

    result = fetch(entry_for(make_metafile, url), weights_dir, progress=False)

    assert weights_server.requests_for(url)[1].range == "bytes=700000-"  # asked, got a 200 instead
    assert result.path.read_bytes() == content


def test_complete_part_file_is_finished_without_a_body(weights_server, checkpoints, make_metafile, weights_dir):
    """A .part that already holds every byte (a run killed before the move) gets a 416 and is used."""
    content = checkpoints["a"]
    url = weights_server.add("tiny_model", content)
    entry = entry_for(make_metafile, url)
    weights_dir.mkdir()
    (weights_dir / f"{entry.weights_filename}.part").write_bytes(content)

    result = fetch(entry, weights_dir, progress=False)

    assert result.resumed_from == len(content)
    assert result.path.read_bytes() == content
    assert files_left(weights_dir) == [entry.weights_filename]


def test_corrupted_download_is_refused_and_deleted(weights_server, checkpoints, make_metafile, weights_dir):
    url = weights_server.add("tiny_model", checkpoints["a"])
    weights_server.misbehave(url, corrupt=True)

    with pytest.raises(HashMismatchError) as failure:
        fetch(entry_for(make_metafile, url), weights_dir, progress=False)

    message = str(failure.value)
    assert url in message and "deleted" in message and hash_prefix_of(url) in message
    assert files_left(weights_dir) == []


def test_local_file_that_fails_its_hash_is_replaced(weights_server, checkpoints, make_metafile, weights_dir):
    url = weights_server.add("tiny_model", checkpoints["a"])
    entry = entry_for(make_metafile, url)
    weights_dir.mkdir()
    (weights_dir / entry.weights_filename).write_bytes(checkpoints["b"])
    assert status(entry, weights_dir).verified is False

    result = fetch(entry, weights_dir, progress=False)

    assert result.downloaded and result.path.read_bytes() == checkpoints["a"]
    assert status(entry, weights_dir).verified is True


def test_404_names_the_url_and_status(weights_server, make_metafile, weights_dir):
    url = weights_server.url("missing_model-0123abcd.pth")
    entry = entry_for(make_metafile, url)

    with pytest.raises(DownloadError) as failure:
        fetch(entry, weights_dir, progress=False)

    message = str(failure.value)
    assert f"{url}: HTTP 404 Not Found" in message
    assert str(weights_dir / entry.weights_filename) in message
    assert files_left(weights_dir) == []


def test_stalled_server_times_out_with_a_clear_error(weights_server, checkpoints, make_metafile, weights_dir):
    url = weights_server.add("tiny_model", checkpoints["a"])
    weights_server.misbehave(url, stall_after=0)

    started = time.monotonic()
    with pytest.raises(DownloadError) as failure:
        fetch(entry_for(make_metafile, url), weights_dir, progress=False, timeout=0.3)

    assert time.monotonic() - started < 5
    assert f"{url}: the server sent nothing for 0.3 s (read timeout)" in str(failure.value)
    assert len(weights_server.requests_for(url)) == 1  # no progress, so no retry
    assert files_left(weights_dir) == []


def test_no_network_names_the_url_and_where_to_put_the_file(refused_url, make_metafile, weights_dir):
    entry = entry_for(make_metafile, refused_url)

    with pytest.raises(DownloadError) as failure:
        fetch(entry, weights_dir, progress=False)

    message = str(failure.value)
    assert f"cannot reach {refused_url}" in message
    assert f"put the file at {str(weights_dir / entry.weights_filename)!r}" in message


def test_entry_without_weights_url_has_no_weights_file(make_metafile, weights_dir, capsys):
    metafile = make_metafile({"tiny": None})
    entry = load_registry(metafile).resolve("tiny")
    with pytest.raises(WeightsMissingError, match="variant 'tiny' has no Weights URL in the metafile"):
        weights_path_for(entry, weights_dir)

    assert main(["fetch", "--no-progress", "--metafile", str(metafile), "--weights-dir", str(weights_dir), "tiny"]) == 1
    first, summary = capsys.readouterr().err.splitlines()
    assert first == (
        "attnzoo fetch: tiny: error: nothing to fetch: variant 'tiny' has no Weights URL in the metafile "
        "(add one, or give its checkpoint path where the model is loaded)"
    )
    assert summary == "attnzoo fetch: 1 of 1 failed"


def test_two_concurrent_fetches_produce_one_good_file(weights_server, checkpoints, make_metafile, weights_dir):
    """The server holds the first download mid-file until the second fetch is waiting on the lock."""
    content = checkpoints["b"]
    url = weights_server.add("tiny_model", content)
    held = weights_server.misbehave(url, hold_after=500_000)
    entry = entry_for(make_metafile, url)
    results, errors, notes = {}, [], []

    def fetch_in_thread(index: int) -> None:
        try:
            results[index] = fetch(entry, weights_dir, progress=False, log=notes.append)
        except Exception as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=fetch_in_thread, args=(index,)) for index in range(2)]
    threads[0].start()
    _wait_for(lambda: weights_server.requests_for(url))
    threads[1].start()
    _wait_for(lambda: any("waiting for another fetch" in note for note in notes))
    held.release.set()
    for thread in threads:
        thread.join(30)

    assert errors == []
    assert (results[0].downloaded, results[1].downloaded) == (True, False)
    assert len(weights_server.requests_for(url)) == 1
    assert (weights_dir / entry.weights_filename).read_bytes() == content
    assert files_left(weights_dir) == [entry.weights_filename]


def _wait_for(condition, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def test_weights_status_reports_missing_verified_and_mismatch(checkpoints, make_metafile, weights_dir):
    content = checkpoints["a"]
    name = f"tiny_model-{hashlib.sha256(content).hexdigest()[:8]}.pth"
    entry = entry_for(make_metafile, f"http://127.0.0.1:9/weights/{name}")

    missing = status(entry, weights_dir)
    assert (missing.present, missing.verified) == (False, None)

    weights_dir.mkdir()
    (weights_dir / name).write_bytes(content)
    good = status(entry, weights_dir)
    assert (good.present, good.verified, good.sha256) == (True, True, hashlib.sha256(content).hexdigest())
    assert status(entry, weights_dir, verify=False).verified is None

    (weights_dir / name).write_bytes(content[:-1])
    assert status(entry, weights_dir).verified is False
