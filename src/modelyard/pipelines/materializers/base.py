"""How a step's output is stored and read back: the materializer protocol and registry.

A materializer turns one value into files in a folder and back. ``save_output`` stores
those files in the artifact store (content-addressed, atomic) and returns a
``StoredOutput`` whose ``digest`` is the sha256 of the canonical JSON of
``{materializer, version, files: {relpath: sha256}, meta}`` (plus ``dirs``, the empty
folders, when there are any): the same value gives the same digest, in any process.
``load_output`` fetches every file through the store, which re-hashes it, checks the
manifest still hashes to the digest, and hands the folder to the materializer.

Nothing ever falls back to pickle: a type no materializer handles is a
``PipelineDefinitionError`` naming the type and how to register one.

Lookup is by type: the declared type when a pipeline is built (``materializer_for``),
the value's own type when it is stored (a declared ``Any`` or base class says too
little). Materializers are tried in registration order, the user's before the
built-in ones, and each matches subclasses of the types it handles unless it says
otherwise.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
import sys
import tempfile
import threading
import types
import typing
import uuid
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from modelyard.errors import (
    ArtifactIntegrityError,
    InvalidInputError,
    NotFoundError,
    PipelineDefinitionError,
)
from modelyard.models.flavors.base import LoadOptions
from modelyard.store.artifacts import ArtifactStore, check_artifact_path
from modelyard.store.gc import scratch_prefix

__all__ = [
    "AUTO",
    "DOCS",
    "Materializer",
    "StoredOutput",
    "canonical_json",
    "default_cache_dir",
    "get_materializer",
    "load_output",
    "materializer_for",
    "materializer_for_value",
    "matches_type",
    "register_materializer",
    "registered_materializers",
    "save_output",
    "type_name",
    "unregister_materializer",
]

DOCS = "docs/pipelines.md#materializers"
_HOW_TO_REGISTER = (
    "register one with modelyard.pipelines.register_materializer(MyMaterializer()), an "
    "object with name, version, handles(tp), save(value, folder) -> meta and "
    f"load(folder, meta, tp) (see {DOCS})"
)


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no spaces, ASCII, no NaN: one byte string per JSON value."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def type_name(tp: Any) -> str:
    """``module.QualName`` of a class (builtins by their bare name); ``repr`` otherwise."""
    if isinstance(tp, type):
        if tp.__module__ == "builtins":
            return tp.__qualname__
        return f"{tp.__module__}.{tp.__qualname__}"
    if tp is None:
        return "None"
    return repr(tp)


@dataclass(frozen=True)
class StoredOutput:
    """One stored step output: its content address and how to read it back."""

    digest: str  # sha256 of canonical JSON {materializer, version, files, meta}
    type: str  # "module.QualName" of the value's type
    materializer: str  # "pandas.parquet", "numpy.npy", "json", "path.file", ...
    manifest: Mapping[str, Any]  # {"version": int, "files": {relpath: sha256}, "meta": {...}}
    size: int  # bytes

    def manifest_json(self) -> str:
        """The manifest as canonical JSON text (what ``pipeline_outputs.manifest`` holds)."""
        return canonical_json(dict(self.manifest)).decode("ascii")

    @classmethod
    def from_record(
        cls,
        *,
        digest: str,
        type: str,
        materializer: str,
        manifest: str | Mapping[str, Any],
        size: int,
    ) -> StoredOutput:
        """Rebuild from a ``pipeline_outputs`` row (``manifest`` as JSON text or a mapping)."""
        if isinstance(manifest, str):
            try:
                manifest = json.loads(manifest)
            except ValueError as exc:
                raise InvalidInputError(
                    f"Expected the manifest of output {digest[:12]} to be JSON, got {exc}",
                    loc="manifest",
                ) from exc
        if not isinstance(manifest, Mapping):
            raise InvalidInputError(
                f"Expected the manifest of output {digest[:12]} to be an object", loc="manifest"
            )
        return cls(digest, type, materializer, dict(manifest), int(size))

    @property
    def files(self) -> dict[str, str]:
        """``{relpath: sha256}`` of the stored files."""
        return dict(self.manifest.get("files", {}))


@runtime_checkable
class Materializer(Protocol):
    """Stores values of some types as files in a folder and reads them back.

    ``name`` is recorded with every output (and enters cache keys with ``version``): bump
    ``version`` when the files a value becomes change. ``handles(tp)`` answers for a type
    (a class, or a typing construct such as ``dict[str, float]``). ``save`` writes the
    value into the empty ``folder`` and returns JSON-able metadata (it enters the digest:
    keep it deterministic); ``load`` gets a folder holding exactly those files, verified,
    and the metadata, and returns the value. A materializer may also define
    ``accepts(value) -> bool`` to decline particular values of a type it handles, and
    ``keeps_files = True`` when the value it loads refers to its files (they are then kept
    read-only in a cache folder instead of a temporary one), and ``checks_loaded_type =
    False`` when its ``load`` checks the declared type itself.
    """

    name: str
    version: int

    def handles(self, tp: Any) -> bool: ...

    def save(self, value: Any, folder: Path) -> Mapping[str, Any]: ...

    def load(self, folder: Path, meta: Mapping[str, Any], tp: Any) -> Any: ...


class _Auto:
    """What a declared ``Any`` (or a union of types) resolves to: the value decides."""

    name = "auto"
    version = 1

    def handles(self, tp: Any) -> bool:
        return True

    def save(self, value: Any, folder: Path) -> Mapping[str, Any]:
        raise InvalidInputError(
            "The 'auto' materializer stores nothing itself: call save_output(value, store)",
            loc="materializer",
        )

    def load(self, folder: Path, meta: Mapping[str, Any], tp: Any) -> Any:
        raise InvalidInputError(
            "The 'auto' materializer loads nothing itself: call load_output(stored, store)",
            loc="materializer",
        )


#: the model trust settings loads use in this context (``load_output(model_options=)``)
MODEL_OPTIONS: ContextVar[LoadOptions | None] = ContextVar("modelyard_model_options", default=None)

#: the materializer of an output whose declared type does not decide (Any, a union)
AUTO: Materializer = _Auto()

_lock = threading.RLock()
_user: list[Materializer] = []
_builtin: list[Materializer] = []
_fallback: list[Materializer] = []  # registered with first=False: after the built-ins
_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789._-")


def _check_materializer(m: Any) -> None:
    name = getattr(m, "name", None)
    if not isinstance(name, str) or not name or set(name) - _NAME_CHARS or len(name) > 128:
        raise InvalidInputError(
            "Expected a materializer name of 1-128 characters from a-z, 0-9, '.', '_' and "
            f"'-', got {name!r}",
            loc="materializer.name",
        )
    version = getattr(m, "version", None)
    if type(version) is not int or version < 1:
        raise InvalidInputError(
            f"Expected materializer {name!r} to have an int version >= 1, got {version!r}",
            loc="materializer.version",
        )
    for method in ("handles", "save", "load"):
        if not callable(getattr(m, method, None)):
            raise InvalidInputError(
                f"Expected materializer {name!r} to have a {method}() method", loc="materializer"
            )
    if name == AUTO.name:
        raise InvalidInputError("The name 'auto' is reserved", loc="materializer.name")


def _register_builtin(m: Materializer) -> None:
    """Add a built-in materializer (the family modules call this when imported)."""
    _check_materializer(m)
    with _lock:
        if any(b.name == m.name for b in _builtin):
            return
        _builtin.append(m)


def register_materializer(m: Materializer, *, first: bool = True) -> None:
    """Use ``m`` for the types it handles.

    ``first=True`` (default) puts it before every materializer registered so far, built-in
    ones included; ``first=False`` after all of them (a fallback). Registering a name
    again replaces the earlier one; a built-in's name cannot be taken.
    """
    _check_materializer(m)
    with _lock:
        if any(b.name == m.name and b is not m for b in _builtin):
            raise InvalidInputError(
                f"The materializer name {m.name!r} belongs to a built-in one; choose another",
                loc="materializer.name",
            )
        _user[:] = [u for u in _user if u.name != m.name]
        _fallback[:] = [u for u in _fallback if u.name != m.name]
        if first:
            _user.insert(0, m)
        else:
            _fallback.append(m)


def unregister_materializer(name: str) -> None:
    """Forget a materializer registered with ``register_materializer`` (tests, reloads)."""
    with _lock:
        _user[:] = [u for u in _user if u.name != name]
        _fallback[:] = [u for u in _fallback if u.name != name]


def registered_materializers() -> list[Materializer]:
    """Every materializer in lookup order: the user's, the built-in ones, the fallbacks."""
    _ensure_builtins()
    with _lock:
        return [*_user, *_builtin, *_fallback]


def _ensure_builtins() -> None:
    if not _builtin:
        # the package's __init__ imports the family modules, which register themselves
        import modelyard.pipelines.materializers  # noqa: F401


def get_materializer(name: str) -> Materializer:
    """The registered materializer called ``name`` (loads look materializers up by name)."""
    for m in registered_materializers():
        if m.name == name:
            return m
    known = ", ".join(m.name for m in registered_materializers())
    raise NotFoundError(
        f"No materializer named {name!r} is registered in this process (known: {known}); "
        "import the module that registers it before loading the output"
    )


# -- types -------------------------------------------------------------------------------


_ALIAS: Any = getattr(typing, "TypeAliasType", None)


def _unwrap(tp: Any) -> Any:
    """``Annotated[X, ...]`` -> X, a ``NewType`` -> its base, a type alias -> its value."""
    while True:
        if typing.get_origin(tp) is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif isinstance(tp, typing.NewType):
            tp = tp.__supertype__
        elif _ALIAS is not None and isinstance(tp, _ALIAS):  # `type X = ...` (3.12+)
            tp = tp.__value__
        else:
            return tp


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def _is_any(tp: Any) -> bool:
    return tp is Any or tp is object or isinstance(tp, typing.TypeVar)


def _handles(m: Materializer, tp: Any) -> bool:
    try:
        return bool(m.handles(tp))
    except (TypeError, AttributeError):  # a typing construct issubclass cannot take
        return False


def _accepts(m: Materializer, value: Any) -> bool:
    accepts = getattr(m, "accepts", None)
    return True if accepts is None else bool(accepts(value))


def _no_materializer(tp: Any, where: str | None, hint: str = "") -> PipelineDefinitionError:
    at = f" for {where}" if where else ""
    extra = f" {hint}" if hint else ""
    return PipelineDefinitionError(
        f"No materializer stores a {type_name(tp)}{at}, and modelyard never falls back to "
        f"pickle.{extra} Return a supported type (pandas/polars DataFrame, pyarrow Table, "
        "numpy array, JSON values, pathlib.Path, a model) or " + _HOW_TO_REGISTER,
        loc=where,
    )


def _hint(tp: Any) -> str:
    origin = typing.get_origin(tp) or tp
    if origin in (set, frozenset):
        return "A set has no order JSON can keep: return sorted(the_set) as a list."
    if isinstance(tp, str | typing.ForwardRef):
        return "The annotation is a string that was not resolved to a type."
    return ""


def materializer_for(tp: Any, *, where: str | None = None) -> Materializer:
    """The materializer for values declared as ``tp``; ``AUTO`` when the value decides.

    Raises ``PipelineDefinitionError`` naming the type when none handles it.
    """
    tp = _unwrap(tp)
    if _is_any(tp):
        return AUTO
    if isinstance(tp, str | typing.ForwardRef):
        raise _no_materializer(tp, where, _hint(tp))
    if _is_union(tp):
        arms = [materializer_for(arm, where=where) for arm in typing.get_args(tp)]
        names = {m.name for m in arms}
        return arms[0] if len(names) == 1 else AUTO
    for m in registered_materializers():
        if _handles(m, tp):
            return m
    raise _no_materializer(tp, where, _hint(tp))


def materializer_for_value(value: Any, *, where: str | None = None) -> Materializer:
    """The first materializer that handles ``type(value)`` and accepts ``value``."""
    tp = type(value)
    for m in registered_materializers():
        if _handles(m, tp) and _accepts(m, value):
            return m
    raise _no_materializer(tp, where, _hint(tp))


def _numpy_kind(value: Any, kind: type) -> bool:
    """A NumPy scalar standing for the Python scalar ``kind`` (np.int64 for int, ...)."""
    numpy = sys.modules.get("numpy")
    if numpy is None:
        return False
    if kind is bool:
        return isinstance(value, numpy.bool_)
    if kind is int:
        return isinstance(value, numpy.integer)
    if kind is float:
        return isinstance(value, numpy.floating | numpy.integer)
    return False


def matches_type(value: Any, tp: Any) -> bool:
    """Whether ``value`` is a ``tp``, looking inside JSON-like containers (``dict[str, float]``).

    ``int`` passes for ``float`` (as in type checkers); NumPy scalars pass for the Python
    scalar they stand for. Annotations that cannot be checked (strings) pass.
    """
    tp = _unwrap(tp)
    if _is_any(tp) or isinstance(tp, str | typing.ForwardRef):
        return True
    if tp is None or tp is type(None):
        return value is None
    if _is_union(tp):
        return any(matches_type(value, arm) for arm in typing.get_args(tp))
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return any(type(value) is type(a) and value == a for a in typing.get_args(tp))
    if origin is None:
        if not isinstance(tp, type):
            return True  # nothing isinstance can check (a ParamSpec, ...)
        if isinstance(value, tp):
            return True
        if tp is float and type(value) is int:
            return True
        return tp in (bool, int, float) and _numpy_kind(value, tp)
    if not isinstance(origin, type) or not isinstance(value, origin):
        return False
    return _matches_args(value, origin, typing.get_args(tp))


def _matches_args(value: Any, origin: type, args: tuple[Any, ...]) -> bool:
    """The parameters of a generic ``origin[args]`` that ``value`` is an instance of."""
    if not args:
        return True
    if issubclass(origin, tuple):
        if len(args) == 2 and args[1] is Ellipsis:
            return all(matches_type(v, args[0]) for v in value)
        if args == ((),):  # tuple[()]
            return len(value) == 0
        return len(value) == len(args) and all(
            matches_type(v, a) for v, a in zip(value, args, strict=True)
        )
    if issubclass(origin, Mapping) and len(args) == 2:
        return all(matches_type(k, args[0]) and matches_type(v, args[1]) for k, v in value.items())
    if issubclass(origin, list | Sequence | set | frozenset) and len(args) == 1:
        return all(matches_type(v, args[0]) for v in value)
    numpy = sys.modules.get("numpy")
    if numpy is not None and issubclass(origin, numpy.ndarray) and len(args) == 2:
        dtype_args = typing.get_args(args[1])
        if dtype_args and isinstance(dtype_args[0], type):
            return bool(issubclass(value.dtype.type, dtype_args[0]))
    return True


def _check_declared(value: Any, declared: Any, where: str | None, verb: str) -> None:
    if matches_type(value, declared):
        return
    at = where or "the output"
    raise PipelineDefinitionError(
        f"{at} is declared as {type_name(_unwrap(declared))} but {verb} a {type_name(type(value))}",
        loc=where,
    )


# -- files -------------------------------------------------------------------------------


def _walk(folder: Path) -> tuple[dict[str, Path], list[str]]:
    """Every file under ``folder`` by relative POSIX path, and the empty folders."""
    files: dict[str, Path] = {}
    empty: list[str] = []
    for root, dirs, names in os.walk(folder):
        here = Path(root)
        for name in dirs:
            if (here / name).is_symlink():
                raise InvalidInputError(
                    f"Expected files and folders only, got the symbolic link {here / name}",
                    loc="materializer.save",
                )
        for name in names:
            path = here / name
            mode = path.lstat().st_mode
            if not stat.S_ISREG(mode):
                raise InvalidInputError(
                    f"Expected regular files only, got {path} (a link or special file)",
                    loc="materializer.save",
                )
            files[path.relative_to(folder).as_posix()] = path
        if not dirs and not names and here != folder:
            empty.append(here.relative_to(folder).as_posix())
    return dict(sorted(files.items())), sorted(empty)


def _digest(name: str, version: int, manifest: Mapping[str, Any]) -> str:
    body: dict[str, Any] = {
        "materializer": name,
        "version": version,
        "files": manifest["files"],
        "meta": manifest["meta"],
    }
    if manifest.get("dirs"):
        body["dirs"] = manifest["dirs"]
    return hashlib.sha256(canonical_json(body)).hexdigest()


def save_output(
    value: Any,
    store: ArtifactStore,
    *,
    declared: Any = Any,
    where: str | None = None,
) -> StoredOutput:
    """Store ``value`` (which must be a ``declared``); return its content address.

    ``where`` names the output in messages (``"step 'train' output 'model'"``). Every
    blob is in the store when this returns, before any record can name it.
    """
    _check_declared(value, declared, where, "the step returned")
    m = materializer_for_value(value, where=where)
    with tempfile.TemporaryDirectory(prefix=scratch_prefix("package")) as tmp:
        folder = Path(tmp) / "out"
        folder.mkdir()
        try:
            meta = dict(m.save(value, folder))
        except InvalidInputError as exc:
            if where is None:
                raise
            raise InvalidInputError(f"{where}: {exc}") from exc
        try:
            canonical_json(meta)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(
                f"Expected materializer {m.name!r} to return JSON metadata, got {exc}",
                loc="materializer.save",
            ) from exc
        paths, empty = _walk(folder)
        files: dict[str, str] = {}
        size = 0
        for rel, path in paths.items():
            ref = store.put_file(path)
            files[rel] = ref.sha256
            size += ref.size
    manifest: dict[str, Any] = {"version": m.version, "files": files, "meta": meta}
    if empty:
        manifest["dirs"] = empty
    return StoredOutput(
        digest=_digest(m.name, m.version, manifest),
        type=type_name(type(value)),
        materializer=m.name,
        manifest=manifest,
        size=size,
    )


def _manifest_parts(stored: StoredOutput) -> tuple[dict[str, str], list[str], dict[str, Any]]:
    manifest = stored.manifest
    files = manifest.get("files")
    meta = manifest.get("meta", {})
    dirs = manifest.get("dirs", [])
    if not isinstance(files, Mapping) or not isinstance(meta, Mapping):
        raise InvalidInputError(
            f"Expected output {stored.digest[:12]}'s manifest to hold files and meta objects",
            loc="manifest",
        )
    checked = {check_artifact_path(str(k), loc="manifest.files"): str(v) for k, v in files.items()}
    return checked, [check_artifact_path(str(d), loc="manifest.dirs") for d in dirs], dict(meta)


def default_cache_dir() -> Path:
    """Where outputs that stay files (paths) are kept: ``$MODELYARD_CACHE_DIR`` or the
    user's cache folder (``$XDG_CACHE_HOME/modelyard/outputs``, ``~/.cache/...``)."""
    explicit = os.environ.get("MODELYARD_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "modelyard" / "outputs"


def _fetch(store: ArtifactStore, files: Mapping[str, str], dirs: list[str], folder: Path) -> None:
    for rel, sha in files.items():
        store.get_file(sha, folder / rel, name=rel)
    for rel in dirs:
        (folder / rel).mkdir(parents=True, exist_ok=True)


def _sha_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _cache_intact(folder: Path, files: Mapping[str, str], dirs: list[str]) -> bool:
    try:
        found, empty = _walk(folder)
    except (OSError, InvalidInputError):
        return False
    if set(found) != set(files) or empty != sorted(dirs):
        return False
    return all(_sha_file(found[rel]) == sha for rel, sha in files.items())


def _read_only(folder: Path) -> None:
    for root, dirs, names in os.walk(folder, topdown=False):
        for name in names:
            os.chmod(os.path.join(root, name), 0o444)
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o555)
    os.chmod(folder, 0o555)


def _remove_tree(folder: Path) -> None:
    """Remove a (read-only) cache folder."""
    if not folder.exists():
        return
    for root, dirs, _ in os.walk(folder):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o755)
    os.chmod(folder, 0o755)
    shutil.rmtree(folder, ignore_errors=True)


def _cached_copy(
    store: ArtifactStore,
    stored: StoredOutput,
    files: Mapping[str, str],
    dirs: list[str],
    cache_dir: Path,
) -> Path:
    """A read-only, verified local copy of the output's files at ``cache_dir/digest``."""
    final = cache_dir / stored.digest
    if final.is_dir() and _cache_intact(final, files, dirs):
        return final
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache_dir / f".{stored.digest}.{uuid.uuid4().hex}.part"
    try:
        tmp.mkdir()
        _fetch(store, files, dirs, tmp)
        _read_only(tmp)
        if final.exists():  # damaged (checked above): set aside, then replaced
            aside = cache_dir / f".{stored.digest}.{uuid.uuid4().hex}.bad"
            with contextlib.suppress(OSError):
                os.replace(final, aside)
            _remove_tree(aside)
        try:
            os.replace(tmp, final)
        except OSError:  # another process put its (verified) copy there first
            if not _cache_intact(final, files, dirs):
                raise
    finally:
        _remove_tree(tmp)
    return final


def load_output(
    stored: StoredOutput,
    store: ArtifactStore,
    *,
    declared: Any = Any,
    where: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    model_options: LoadOptions | None = None,
) -> Any:
    """The value ``stored`` holds; every file verified against its sha256.

    Refuses a manifest that no longer hashes to ``stored.digest``, a materializer version
    other than the one that wrote it, and a value that is not a ``declared``. Outputs that
    stay files (paths) are kept read-only under ``cache_dir`` (``default_cache_dir()``).
    ``model_options`` are the project's model trust settings (``models.trusted_types``,
    ``models.trust_code``) for model outputs; the defaults when not given.
    """
    if model_options is not None:
        token = MODEL_OPTIONS.set(model_options)
        try:
            return load_output(stored, store, declared=declared, where=where, cache_dir=cache_dir)
        finally:
            MODEL_OPTIONS.reset(token)
    m = get_materializer(stored.materializer)
    files, dirs, meta = _manifest_parts(stored)
    version = stored.manifest.get("version")
    if version != m.version:
        raise InvalidInputError(
            f"Output {stored.digest[:12]} was stored by {m.name} version {version}; this "
            f"process has version {m.version}, which cannot read it. Rerun the step "
            "(its cache key changed with the version).",
            loc="materializer.version",
        )
    actual = _digest(m.name, m.version, {"files": files, "meta": meta, "dirs": dirs})
    if actual != stored.digest:
        raise ArtifactIntegrityError(
            f"Output {stored.digest[:12]}'s manifest hashes to {actual[:12]}, not to its "
            "digest: the record was changed. Rerun the step that made it."
        )
    if getattr(m, "keeps_files", False):
        folder = _cached_copy(
            store, stored, files, dirs, Path(cache_dir) if cache_dir else default_cache_dir()
        )
        value = m.load(folder, meta, declared)
    else:
        with tempfile.TemporaryDirectory(prefix=scratch_prefix("load")) as tmp:
            folder = Path(tmp)
            _fetch(store, files, dirs, folder)
            value = m.load(folder, meta, declared)
    if getattr(m, "checks_loaded_type", True):
        _check_declared(value, declared, where, "the stored value loads as")
    return value
