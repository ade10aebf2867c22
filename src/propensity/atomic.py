"""Atomic publication of output folders and files.

Writers stage their output in a sibling temporary folder and rename it into place only
once it is complete, so a run that fails or is killed midway leaves the previous output
intact and never a partial one.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def staged_dir(final: Path) -> Iterator[Path]:
    """Yield an empty staging folder beside ``final``; on success it replaces ``final``.

    On an exception the staging folder is removed and ``final`` is untouched.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = final.parent / f".{final.name}.staging-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    replace_dir(staging, final)


def replace_dir(source: Path, final: Path) -> None:
    """Move ``source`` to ``final``, replacing any previous folder with two renames."""
    retired = final.parent / f".{final.name}.retired-{uuid.uuid4().hex[:8]}"
    had_previous = final.exists()
    if had_previous:
        os.replace(final, retired)
    try:
        os.replace(source, final)
    except BaseException:
        if had_previous:
            os.replace(retired, final)
        raise
    if had_previous:
        shutil.rmtree(retired, ignore_errors=True)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write a file through a temporary sibling and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.write_bytes(data)
    os.replace(tmp, path)


def clear_stale_staging(folder: Path) -> None:
    """Remove staging and retired folders left behind by killed runs."""
    if not folder.exists():
        return
    for child in folder.iterdir():
        if child.name.startswith(".") and (".staging-" in child.name or ".retired-" in child.name):
            shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink(missing_ok=True)
