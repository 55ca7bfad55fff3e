"""The paths that the commands' options name, checked before a command starts its work.

Not a command (``cli.COMMANDS`` names those): the one place where every ``detector`` command checks the
files and folders its options name. A wrong path ends the command at once with a
:class:`~detector.errors.PathError` that names the option, the path, what is wrong with it (nothing
there, a file where a folder is expected or the reverse, not readable or not writable by this user)
and what was expected, instead of an ``OSError`` and a traceback, possibly minutes into the work.

Inputs are checked, never changed. Output folders, and the folders of output files, are created here
unless the caller says not to (the command would create them anyway); an output file is not created,
its folder is tried instead.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ..errors import PathError

MODEL_DIR = "a model directory holding model_final.pth, config.yaml and labels.json (what detector train writes)"


def option_name(option: str, value: object) -> str:
    """How a message names an option: ``--model-dir``, or ``--model-dir (default)`` when it was not given."""
    return option if value is not None else f"{option} (default)"


def names_a_folder(raw: str | os.PathLike) -> bool:
    """Whether ``raw`` names a folder by its form (``out/``): ``Path`` drops that final separator, so
    options that take a file or a folder keep the text."""
    text = os.fspath(raw)
    return text.endswith(("/", os.sep))


def input_folder(path: str | os.PathLike, option: str, expected: str) -> Path:
    """``path``, an existing folder this user can list."""
    path = Path(path)
    if not path.is_dir():
        raise PathError(option, path, _not_there(path, "folder"), expected)
    _readable(path, option, expected)
    return path


def input_path(path: str | os.PathLike, option: str, expected: str) -> Path:
    """``path``, an existing file or folder this user can read (what it holds is the caller's to check)."""
    path = Path(path)
    if not path.exists():
        raise PathError(option, path, _not_there(path, "file or folder"), expected)
    _readable(path, option, expected)
    return path


def output_folder(path: str | os.PathLike, option: str, expected: str, create: bool = True) -> Path:
    """``path``, a folder this user can write: created with its parents when missing. With ``create``
    false, only what is already there is checked: a folder when it exists, else no file in its way."""
    path = Path(path)
    if create or path.exists():
        _create_folder(path, path, option, expected)
    else:
        blocker = _file_above(path)
        if blocker is not None:
            raise PathError(option, path, f"{blocker} is {_kind(blocker)}, not a folder", expected)
    return path


def output_file(raw: str | os.PathLike, option: str, expected: str, name_in_folder: str | None = None) -> Path:
    """The file to write for ``raw``, its folder created and writable by this user.

    With ``name_in_folder``, ``raw`` may also name a folder (an existing one, or a path ending in ``/``):
    the file is ``name_in_folder`` inside it. Without it, a folder is the wrong kind of path."""
    path = Path(raw)
    if name_in_folder is not None and (names_a_folder(raw) or path.is_dir()):
        _create_folder(path, path, option, expected)
        path = path / name_in_folder
    if path.is_dir():
        raise PathError(option, path, "is a folder", expected)
    _create_folder(path.parent, path, option, expected)
    if path.exists() and not os.access(path, os.W_OK):
        raise PathError(option, path, f"cannot be written by this user (uid {os.getuid()})", expected)
    return path


def _kind(path: Path) -> str:
    return "a folder" if path.is_dir() else "a file" if path.is_file() else "neither a file nor a folder"


def _file_above(path: Path) -> Path | None:
    """The nearest existing parent of ``path`` when it is not a folder (``afile`` of ``afile/x``)."""
    for parent in path.parents:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None


def _not_there(path: Path, wanted: str) -> str:
    """Why ``path`` is not the ``wanted`` kind of path: what is there instead, or what stands in the way."""
    if path.exists():
        return f"is {_kind(path)}"
    if path.is_symlink():
        return f"is a link to {os.readlink(path)}, which does not exist"
    blocker = _file_above(path)
    if blocker is not None:
        return f"{blocker} is {_kind(blocker)}, not a folder"
    return f"no such {wanted}" + ("" if path.is_absolute() else f" (relative to {Path.cwd()})")


def _by_whom(error: OSError) -> str:
    """`` by this user (uid N)`` when permissions are what failed."""
    return f" by this user (uid {os.getuid()})" if isinstance(error, PermissionError) else ""


def _readable(path: Path, option: str, expected: str) -> None:
    try:
        if path.is_dir():
            with os.scandir(path) as entries:
                next(entries, None)
        else:  # non-blocking: a named pipe with no writer yet must not hang the check
            os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK))
    except OSError as e:
        raise PathError(option, path, f"cannot be read{_by_whom(e)}: {e.strerror}", expected) from None


def _create_folder(folder: Path, path: Path, option: str, expected: str) -> None:
    """Create ``folder``: ``path`` itself, or the folder of the file ``path``; and try writing into it."""
    own = folder == path
    where = "" if own else f"its folder {folder} "
    if folder.exists() and not folder.is_dir():
        raise PathError(option, path, f"is {_kind(folder)}" if own else f"{folder} is {_kind(folder)}, not a folder", expected)
    blocker = _file_above(folder)
    if blocker is not None:
        raise PathError(option, path, f"{blocker} is {_kind(blocker)}, not a folder", expected)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        verb = "cannot be written" if folder.is_dir() else "cannot be created"
        raise PathError(option, path, f"{where}{verb}{_by_whom(e)}: {e.strerror}", expected) from None
