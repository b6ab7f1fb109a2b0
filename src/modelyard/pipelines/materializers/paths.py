"""Files and folders a step returns as a ``pathlib.Path``: their content is copied in.

A step that writes a file (a report, a model in a format of its own, a folder of shards)
returns its path; the bytes are stored (the path itself means nothing to another process
or machine) under the file's or folder's name, so the digest covers names and content.
Loading gives a ``Path`` to a read-only, verified copy in the local cache folder
(``$MODELYARD_CACHE_DIR`` or ``~/.cache/modelyard/outputs/<digest>/<name>``); a copy
found damaged there is fetched again. Empty subfolders are kept. Symbolic links to
files are stored as the file they point to; links to folders and special files
(sockets, pipes) are refused.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from modelyard.errors import InvalidInputError, NotFoundError

__all__ = ["FileMaterializer", "FolderMaterializer"]


def _is_path_type(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, Path)


def _name(path: Path) -> str:
    """The name it is stored under: its own (a link's, not its target's); ``.``'s real one."""
    name = path.name if path.name not in ("", ".", "..") else path.resolve().name
    if not name or name in (".", ".."):
        raise InvalidInputError(
            f"Expected a file or folder with a name, got {str(path)!r}", loc="output"
        )
    return name


def _exists(path: Path) -> None:
    if not path.exists():
        raise NotFoundError(f"The step returned the path {path}, which does not exist")


class FileMaterializer:
    """A ``Path`` to a file: its bytes, under its name."""

    name = "path.file"
    version = 1
    keeps_files = True

    def handles(self, tp: Any) -> bool:
        return _is_path_type(tp)

    def accepts(self, value: Any) -> bool:
        return not Path(value).is_dir()

    def save(self, value: Any, folder: Path) -> Mapping[str, Any]:
        path = Path(value)
        _exists(path)
        if not stat.S_ISREG(path.stat().st_mode):
            raise InvalidInputError(
                f"Expected a regular file or a folder, got {path} (a special file)", loc="output"
            )
        name = _name(path)
        shutil.copyfile(path, folder / name)
        return {"name": name}

    def load(self, folder: Path, meta: Mapping[str, Any], tp: Any) -> Any:
        return folder / str(meta["name"])


class FolderMaterializer:
    """A ``Path`` to a folder: every file in it by relative path, and its empty folders."""

    name = "path.folder"
    version = 1
    keeps_files = True

    def handles(self, tp: Any) -> bool:
        return _is_path_type(tp)

    def accepts(self, value: Any) -> bool:
        return Path(value).is_dir()

    def save(self, value: Any, folder: Path) -> Mapping[str, Any]:
        source = Path(value)
        _exists(source)
        name = _name(source)
        target = folder / name
        target.mkdir()
        for root, dirs, files in os.walk(source):
            here = Path(root)
            rel = here.relative_to(source)
            for sub in dirs:
                if (here / sub).is_symlink():
                    raise InvalidInputError(
                        f"Expected files and folders only in {source}, got the link to a "
                        f"folder {here / sub}: copy what it points to into the folder instead",
                        loc="output",
                    )
                (target / rel / sub).mkdir()
            for file in files:
                path = here / file
                if not path.exists():
                    raise InvalidInputError(
                        f"Expected files in {source}, got {path}, a link to nothing", loc="output"
                    )
                if not stat.S_ISREG(path.stat().st_mode):  # follows a link to a file
                    raise InvalidInputError(
                        f"Expected regular files only in {source}, got {path} (a special file)",
                        loc="output",
                    )
                shutil.copyfile(path, target / rel / file)
        return {"name": name}

    def load(self, folder: Path, meta: Mapping[str, Any], tp: Any) -> Any:
        return folder / str(meta["name"])
