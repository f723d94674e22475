"""Which build is running: the installed package's version, and its git commit when run from a checkout.

``attnzoo --version`` prints it, and the service reports the same :class:`BuildInfo`. Reading it
never raises: without package metadata the version is :data:`UNKNOWN_VERSION`, and outside a
git checkout (an installed wheel, a container image) or without a usable ``git`` the commit is
None. The commit is looked up only where this package's own source tree is a checkout (the
folder above ``model_zoo/`` holds ``.git``, as in an editable install), never in a repository
that merely contains an installed copy.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

DISTRIBUTION = "attnzoo"
UNKNOWN_VERSION = "unknown"
SOURCE_ROOT = Path(__file__).resolve().parent.parent
GIT_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class BuildInfo:
    """The running build.

    Attributes:
        version: the installed distribution's version (``0.1.0``), or ``unknown``.
        commit: the checkout's HEAD as a short hash, or None outside a git checkout.
        dirty: the checkout has changes to tracked files that HEAD does not have.
    """

    version: str
    commit: str | None = None
    dirty: bool = False

    @property
    def revision(self) -> str | None:
        """The commit as ``git describe --dirty`` marks one: ``1a2b3c4`` or ``1a2b3c4-dirty``."""
        if self.commit is None:
            return None
        return f"{self.commit}-dirty" if self.dirty else self.commit

    def __str__(self) -> str:
        """``0.1.0 (git 1a2b3c4)``, ``0.1.0 (git 1a2b3c4-dirty)``, or ``0.1.0`` outside a checkout."""
        return self.version if self.revision is None else f"{self.version} (git {self.revision})"


@lru_cache(maxsize=1)
def build_info() -> BuildInfo:
    """This process's :class:`BuildInfo`, looked up once (two ``git`` calls in a checkout)."""
    try:
        package_version = version(DISTRIBUTION)
    except PackageNotFoundError:
        package_version = UNKNOWN_VERSION
    if not (SOURCE_ROOT / ".git").exists():  # a folder, or a file in a linked worktree
        return BuildInfo(package_version)
    commit = _git("rev-parse", "--short", "HEAD")
    if not commit:
        return BuildInfo(package_version)
    changes = _git("status", "--porcelain", "--untracked-files=no")
    return BuildInfo(package_version, commit, dirty=bool(changes))


def _git(*args: str) -> str | None:
    """``git -C SOURCE_ROOT ARGS`` output, stripped; None when git is missing, fails or hangs."""
    try:
        done = subprocess.run(
            ["git", "-C", str(SOURCE_ROOT), *args],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
            check=False,
            stdin=subprocess.DEVNULL,
            # A version query must not take the index lock that `git status` would otherwise take to refresh it.
            env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"},
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None
