"""The artifact store: content-addressed by sha256 over any fsspec filesystem.

Bytes live at ``objects/<2 hex>/<62 hex>``; identical content is stored once.
In a local folder every write goes to a temporary name and is then renamed into
place; on object storage (``s3://``) it is one upload to the final key, which the
store makes visible only once complete. So no half-written object is ever visible;
every read re-hashes what it reads and refuses bytes that do not match their address.

>>> store = ArtifactStore("memory://doctest-artifacts")
>>> ref = store.put_bytes(b"hello")
>>> ref.sha256[:12], ref.size
('2cf24dba5fb0', 5)
>>> store.get_bytes(ref.sha256)
b'hello'
>>> check_artifact_path("../x")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
modelyard.errors.InvalidInputError: Expected a relative path inside the store, got '../x' ...
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
import re
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

import fsspec

from modelyard.errors import (
    ArtifactIntegrityError,
    InvalidInputError,
    MissingExtraError,
    NotFoundError,
    StorageError,
)
from modelyard.store.urls import is_local_path, redact_text, redact_url

__all__ = ["ArtifactRef", "ArtifactStore", "check_artifact_path"]

_CHUNK = 1 << 20
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class ArtifactRef:
    """Where stored content lives: its sha256 and its size in bytes."""

    sha256: str
    size: int


def check_artifact_path(path: str, *, loc: str = "artifact_path") -> str:
    """Normalise a logical artifact path, refusing any that could escape the store."""
    if not path or "\x00" in path:
        raise InvalidInputError(f"Expected a non-empty relative path, got {path!r}", loc=loc)
    posix = path.replace("\\", "/")
    parts = PurePosixPath(posix).parts
    if posix.startswith("/") or re.match(r"^[A-Za-z]:", posix) or ".." in parts:
        raise InvalidInputError(f"Expected a relative path inside the store, got {path!r}", loc=loc)
    normal = posixpath.normpath(posix)
    if normal in (".", ""):
        raise InvalidInputError(f"Expected a non-empty relative path, got {path!r}", loc=loc)
    return normal


class ArtifactStore:
    """Content-addressed blobs over an fsspec URL (a local folder, ``memory://``, ``s3://``)."""

    def __init__(self, url: str, **storage_options: Any) -> None:
        self.url = url
        if is_local_path(url):
            local = url.removeprefix("file://")
            try:
                Path(local).mkdir(parents=True, exist_ok=True)
            except OSError as exc:  # read-only, a file in the way, no permission
                raise StorageError(
                    f"Artifact store {redact_url(url)} failed: cannot create the folder "
                    f"{local}: {exc.strerror or exc}. Check the `artifacts` setting "
                    "(or MODELYARD_ARTIFACTS) and the folder's permissions."
                ) from exc
            self.fs: Any = fsspec.filesystem("file")
            self.root = str(Path(local).resolve())
        else:
            try:
                self.fs, self.root = fsspec.core.url_to_fs(url, **storage_options)
            except ImportError as exc:  # fsspec's "Install s3fs to access S3"
                scheme = url.partition("://")[0]
                if scheme in ("s3", "s3a"):
                    raise MissingExtraError(f"The artifact store {redact_url(url)}", "s3") from exc
                raise StorageError(
                    f"Artifact store {redact_url(url)} needs a package that is not installed: {exc}"
                ) from exc
            except ValueError as exc:  # fsspec: "Protocol not known: ..."
                raise InvalidInputError(
                    f"Expected a local folder or an fsspec URL (s3://bucket/prefix), got "
                    f"{redact_url(url)!r}: {redact_text(str(exc), url)}",
                    loc="artifacts",
                ) from exc
            self.root = self.root.rstrip("/")
        self._local = is_local_path(url)

    def __repr__(self) -> str:
        return f"ArtifactStore({redact_url(self.url)!r})"

    def _object_path(self, sha256: str) -> str:
        if not _SHA256.match(sha256):
            raise InvalidInputError(f"Expected a sha256 hex digest, got {sha256!r}", loc="sha256")
        return f"{self.root}/objects/{sha256[:2]}/{sha256[2:]}"

    def exists(self, sha256: str) -> bool:
        return bool(self.fs.exists(self._object_path(sha256)))

    def verify(self, sha256: str, *, remove_corrupted: bool = False) -> bool:
        """Whether the object exists and its bytes hash to its address (read in chunks).

        With ``remove_corrupted`` an object whose bytes do not match is deleted, so that
        writing the same content again stores it afresh (a write of content that is
        already stored keeps the object there as it is).
        """
        digest = hashlib.sha256()
        try:
            with self._open(sha256, None) as handle:
                while chunk := handle.read(_CHUNK):
                    digest.update(chunk)
        except NotFoundError:
            return False
        if digest.hexdigest() == sha256:
            return True
        if remove_corrupted:
            with contextlib.suppress(OSError):
                self.fs.rm(self._object_path(sha256))
        return False

    def put_bytes(self, data: bytes) -> ArtifactRef:
        """Store ``data``; return its address."""
        return self._put(iter([data]))

    def put_file(self, path: str | os.PathLike[str]) -> ArtifactRef:
        """Store a local file's content, read in chunks; return its address."""
        try:
            handle = open(path, "rb")  # noqa: SIM115 - closed by the with below
        except FileNotFoundError as exc:
            raise NotFoundError(f"No file at {path}") from exc
        except IsADirectoryError as exc:
            raise InvalidInputError(
                f"Expected a file, got the folder {path}", loc="artifact"
            ) from exc
        with handle:
            return self._put(iter(lambda: handle.read(_CHUNK), b""))

    def _put(self, chunks: Iterator[bytes]) -> ArtifactRef:
        if not self._local:
            return self._put_remote(chunks)
        tmp = f"{self.root}/tmp/{uuid.uuid4().hex}"
        digest = hashlib.sha256()
        size = 0
        try:
            self.fs.makedirs(f"{self.root}/tmp", exist_ok=True)
            with self.fs.open(tmp, "wb") as out:
                for chunk in chunks:
                    digest.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            sha = digest.hexdigest()
            final = self._object_path(sha)
            if self.fs.exists(final) and self._refresh(final):
                self.fs.rm(tmp)  # identical content is stored once
            else:
                self.fs.makedirs(posixpath.dirname(final), exist_ok=True)
                os.replace(tmp, final)  # atomic on one filesystem
        except BaseException as exc:
            self._discard(tmp)  # a failed write leaves no temporary file behind
            if isinstance(exc, OSError):
                detail = redact_text(str(exc), self.url)
                raise StorageError(
                    f"Artifact store {redact_url(self.url)} failed: {detail}"
                ) from exc
            raise
        return ArtifactRef(sha, size)

    def _put_remote(self, chunks: Iterator[bytes]) -> ArtifactRef:
        """Object storage: spool to local disk (hashing), then one upload to the final key.

        No temporary object and no rename: S3 and its kin make an object visible only
        once its upload is complete (a single PUT; a multipart upload, for large files,
        only at its completion, and s3fs aborts one that fails), so a reader never sees
        a part of it under the final key. A short object written by anything else is
        refused by the hash check of every read.
        """
        digest = hashlib.sha256()
        size = 0
        with tempfile.NamedTemporaryFile(prefix="modelyard-upload-") as spool:
            for chunk in chunks:
                digest.update(chunk)
                size += len(chunk)
                spool.write(chunk)
            spool.flush()
            sha = digest.hexdigest()
            final = self._object_path(sha)
            try:
                # written again even when present: no portable touch, and the collector
                # (``modelyard.store.gc``) keeps only objects younger than its grace period
                self.fs.put_file(spool.name, final)
            except OSError as exc:
                detail = redact_text(str(exc), self.url)
                raise StorageError(
                    f"Artifact store {redact_url(self.url)} failed: {detail}"
                ) from exc
        return ArtifactRef(sha, size)

    def _refresh(self, final: str) -> bool:
        """Mark an existing object as just written; False when it is gone (write it then).

        The garbage collector (``modelyard.store.gc``) removes only objects older than its
        grace period, so an object a writer is about to reference must look new.
        """
        if not self._local:
            return False  # no portable touch: the object is written again (same bytes)
        try:
            os.utime(final)
        except FileNotFoundError:
            return False  # collected a moment ago
        return True

    def _discard(self, tmp: str) -> None:
        # best effort: the write already failed, and that error is the one to report
        with contextlib.suppress(OSError):
            if self.fs.exists(tmp):
                self.fs.rm(tmp)

    def _open(self, sha256: str, name: str | None) -> IO[bytes]:
        try:
            return self.fs.open(self._object_path(sha256), "rb")  # type: ignore[no-any-return]
        except FileNotFoundError as exc:
            what = f"Artifact {name!r}" if name else "Artifact"
            raise NotFoundError(
                f"{what} (sha256 {sha256[:12]}...) is missing from {redact_url(self.url)}"
            ) from exc

    def _mismatch(self, sha256: str, actual: str, name: str | None) -> ArtifactIntegrityError:
        what = f"Artifact {name!r}" if name else f"Artifact {sha256[:12]}..."
        return ArtifactIntegrityError(
            f"{what} is corrupted: expected sha256 {sha256}, the stored bytes hash to {actual}. "
            "Re-log the artifact or restore it from a backup."
        )

    def get_bytes(self, sha256: str, *, name: str | None = None) -> bytes:
        """The content at ``sha256``, verified; ``name`` is used in error messages."""
        with self._open(sha256, name) as handle:
            data = handle.read()
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256:
            raise self._mismatch(sha256, actual, name)
        return bytes(data)

    def get_file(
        self, sha256: str, dest: str | os.PathLike[str], *, name: str | None = None
    ) -> Path:
        """Copy the content at ``sha256`` to the local path ``dest``, verified and atomic."""
        target = Path(dest)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.part")
        digest = hashlib.sha256()
        try:
            with self._open(sha256, name) as src, open(tmp, "wb") as out:
                while chunk := src.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
            if digest.hexdigest() != sha256:
                raise self._mismatch(sha256, digest.hexdigest(), name)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        return target
