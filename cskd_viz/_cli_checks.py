"""What the ``cskd-viz`` command checks before it starts, and how it reports a user error.

A user error (a path, the environment, data, a checkpoint) is one line on stderr,
``cskd-viz: error: <why>``, and exit status 2 (:func:`fail`); a bug still shows its traceback.
Paths are checked before anything heavy is imported or trained: a component that is a file, a
name longer than the file system allows (``NAME_MAX``), a directory that cannot be created or
written (probed by creating and removing a directory, which also tells a read-only mount from a
``chmod``, and is right for root too). Nothing here imports torch.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import NoReturn

__all__ = ["one_line", "describe", "fail", "dir_problem", "name_problem", "interrupted_message"]


def one_line(text: str) -> str:
    """``text`` on one line (its lines joined with spaces).

    Example:
        >>> one_line("not found. Looked in:\\n  - /a\\n  - /b")
        'not found. Looked in: - /a - /b'
    """
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def describe(err: BaseException) -> str:
    """An exception as a user reads it: ``<file>: <why>`` for an ``OSError`` from the system, else its message.

    Example:
        >>> describe(PermissionError(13, "Permission denied", "runs/x"))
        'runs/x: Permission denied'
        >>> describe(FileNotFoundError("cifar10 not found in data/"))
        'cifar10 not found in data/'
    """
    if isinstance(err, OSError) and err.strerror and err.filename is not None:
        also = f" -> {err.filename2}" if err.filename2 is not None else ""
        return f"{err.filename}{also}: {err.strerror}"
    return str(err) or type(err).__name__


def fail(reason: str | BaseException) -> NoReturn:
    """Print ``cskd-viz: error: <reason>`` (one line) to stderr and exit with status 2."""
    text = describe(reason) if isinstance(reason, BaseException) else reason
    print(f"cskd-viz: error: {one_line(text)}", file=sys.stderr)
    raise SystemExit(2)


def _limit(path: Path, name: str, default: int) -> int:
    try:
        return int(os.pathconf(path, name))
    except (OSError, ValueError, AttributeError):  # no pathconf (Windows) or no limit reported
        return default


def _existing_ancestor(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if os.path.lexists(candidate):
            return candidate
    return Path(".")


def dir_problem(path: str | os.PathLike, flag: str) -> str | None:
    """Why ``path`` cannot be (created and) written as a directory, or ``None`` when it can.

    Checks, without creating ``path``: no component is a file; every new component fits the file
    system's ``NAME_MAX`` and the whole path its ``PATH_MAX``; the deepest existing directory
    lets us create a directory in it.

    Example:
        >>> import tempfile, pathlib
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     _ = (pathlib.Path(tmp) / "file").write_text("x")
        ...     dir_problem(pathlib.Path(tmp) / "runs", "--runs-dir") is None, dir_problem(
        ...         pathlib.Path(tmp) / "file" / "sub", "--runs-dir").endswith("is a file, not a directory")
        (True, True)
    """
    if not os.fspath(path).strip():  # Path("") is ".": the run logs would land, unasked, in the working directory
        return f"{flag} is empty: give the path of a directory"
    target = Path(path)
    ancestor = _existing_ancestor(target)
    if not ancestor.is_dir():
        if ancestor == target:
            return f"{flag} {path} exists and is not a directory"
        return f"{flag} {path}: {ancestor} is a file, not a directory"
    name_max = _limit(ancestor, "PC_NAME_MAX", 255)
    for part in target.parts[len(ancestor.parts) :]:  # the components still to be created
        size = len(os.fsencode(part))
        if size > name_max:
            return f"{flag} {path}: a name of {size} bytes ({part[:16]}...), over the file system's {name_max}"
    path_max = _limit(ancestor, "PC_PATH_MAX", 4096)
    if len(os.fsencode(os.path.abspath(target))) >= path_max:
        return f"{flag} {path}: the path is longer than the {path_max} bytes the file system allows"
    try:  # the one reliable test (root ignores permission bits, a read-only mount does not)
        os.rmdir(tempfile.mkdtemp(prefix=".cskd-viz-write-test-", dir=ancestor))
    except OSError as err:
        where = f"{path}" if ancestor == target else f"{path} (in {ancestor})"
        return f"{flag} {where} is not writable: {err.strerror or err}"
    return None


def name_problem(runs_dir: str | os.PathLike, name: str | None, flag: str = "--name") -> str | None:
    """Why a run directory called ``name`` cannot exist under ``runs_dir`` (too long a name), or ``None``.

    Example:
        >>> name_problem(".", "a" * 300).startswith("--name has 300 bytes")
        True
    """
    if not name:
        return None
    name_max = _limit(_existing_ancestor(Path(runs_dir)), "PC_NAME_MAX", 255)
    size = len(os.fsencode(name))
    if size > name_max:
        return f"{flag} has {size} bytes, more than the {name_max} the file system allows for a directory name"
    return None


def interrupted_message(err: BaseException, runs_dir: str | os.PathLike | None, since: float) -> str:
    """What Ctrl-C (or a termination signal) left: the run logs saved on disk since ``since``, if any.

    Example:
        >>> interrupted_message(KeyboardInterrupt(), None, 0.0)
        'cskd-viz: interrupted'
    """
    what = str(err) or "interrupted"
    saved = _unfinished_runs(Path(runs_dir), since) if runs_dir is not None else None
    if saved is None:
        return f"cskd-viz: {what}"
    if not saved:
        return f"cskd-viz: {what} before any run log was written"
    listing = ", ".join(f"{path} (status {status!r})" for path, status in saved)
    return f"cskd-viz: {what}; the run log was saved: {listing}"


def _unfinished_runs(root: Path, since: float) -> list[tuple[Path, str]]:
    """Run directories under ``root`` written since ``since`` (a small margin for coarse clocks), not finished."""
    from cskd_viz.runs import is_run_dir, load_run

    found = []
    try:
        children = sorted(root.iterdir()) if root.is_dir() else []
    except OSError:
        return []
    for child in children:
        try:
            if (child / "config.json").stat().st_mtime < since - 2 or not is_run_dir(child):
                continue
            status = load_run(child).status
        except (OSError, ValueError):  # vanished, or not readable: not a saved run log
            continue
        if status != "finished":
            found.append((child, status))
    return found
