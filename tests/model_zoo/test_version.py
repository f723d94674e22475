"""`attnzoo --version` and the BuildInfo behind it: the package metadata's version, plus the commit
of a git checkout (real git, on this checkout and on throw-away repositories), and a version
without a commit or without metadata rather than an error."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from importlib.metadata import version
from pathlib import Path

import pytest

import model_zoo.version
from model_zoo.cli import main
from model_zoo.version import BuildInfo, build_info

REPO = Path(__file__).resolve().parents[2]
ATTNZOO = REPO / ".venv" / "bin" / "attnzoo"


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def source_root(monkeypatch, tmp_path):
    """Point build_info at ``tmp_path/checkout`` as if the package ran from there (uncached)."""
    root = tmp_path / "checkout"
    root.mkdir()
    monkeypatch.setattr(model_zoo.version, "SOURCE_ROOT", root)
    build_info.cache_clear()
    yield root
    build_info.cache_clear()


@pytest.fixture
def repository(source_root) -> Path:
    """A real git repository with one commit of one tracked file."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    git(source_root, "init", "-q")
    (source_root / "tracked.txt").write_text("one\n")
    git(source_root, "add", "tracked.txt")
    git(source_root, "-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-q", "-m", "one")
    return source_root


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_the_command_prints_the_package_version_and_this_checkouts_commit(flag):
    done = subprocess.run([str(ATTNZOO), flag], capture_output=True, text=True, timeout=120, cwd="/")
    assert (done.returncode, done.stderr) == (0, "")
    match = re.fullmatch(r"attnzoo (\S+)(?: \(git ([0-9a-f]+)(-dirty)?\))?\n", done.stdout)
    assert match, done.stdout
    assert match[1] == version("attnzoo")
    if (REPO / ".git").exists() and shutil.which("git"):
        assert match[2] == git(REPO, "rev-parse", "--short", "HEAD")


def test_version_in_process_is_one_line_on_stdout(capsys):
    assert main(["--version"]) == 0
    captured = capsys.readouterr()
    assert captured.out == f"attnzoo {build_info()}\n" and captured.err == ""
    assert captured.out.startswith(f"attnzoo {version('attnzoo')}")


def test_version_option_is_listed_in_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    assert "-V, --version" in capsys.readouterr().out


def test_a_clean_checkout_gives_its_commit(repository):
    info = build_info()
    assert info == BuildInfo(version("attnzoo"), git(repository, "rev-parse", "--short", "HEAD"), dirty=False)
    assert str(info) == f"{info.version} (git {info.commit})"


def test_a_changed_tracked_file_marks_the_commit_dirty_and_an_untracked_one_does_not(repository):
    (repository / "untracked.txt").write_text("new\n")
    assert build_info().dirty is False

    build_info.cache_clear()
    (repository / "tracked.txt").write_text("two\n")
    info = build_info()
    assert info.dirty is True and str(info) == f"{info.version} (git {info.commit}-dirty)"


def test_outside_a_checkout_there_is_no_commit(source_root):
    """An installed copy: no .git beside the package, even inside another repository's tree."""
    if shutil.which("git"):
        git(source_root.parent, "init", "-q")
    assert build_info() == BuildInfo(version("attnzoo"))
    assert str(build_info()) == version("attnzoo")


def test_without_git_on_the_path_there_is_no_commit(repository, monkeypatch):
    monkeypatch.setenv("PATH", os.fspath(repository / "no-such-bin"))
    assert build_info() == BuildInfo(version("attnzoo"))


def test_without_package_metadata_the_version_is_unknown(monkeypatch, source_root):
    monkeypatch.setattr(model_zoo.version, "DISTRIBUTION", "attnzoo-not-installed")
    assert build_info() == BuildInfo("unknown")
