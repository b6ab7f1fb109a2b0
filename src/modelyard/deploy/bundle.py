"""The model package baked into an image, and its check at the container's start.

``modelyard build`` copies one registry version's package (its manifest and every file
the manifest lists) into the build context as a content-addressed artifact folder, with
``package.json`` beside it: the version's registry record, the package id and every
file's sha256 and size. At start-up, ``verify_bundle`` re-hashes each file and the
manifest against ``package.json`` and the manifest itself, then ``restore_version``
writes the version's registry record, under its original version number, into the
image's own (SQLite) metadata store, so the image serves exactly ``NAME/VERSION``.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from modelyard.errors import ArtifactIntegrityError, InvalidInputError, NotFoundError
from modelyard.models.manifest import MANIFEST_NAME, FileEntry, Manifest
from modelyard.models.package import read_manifest
from modelyard.registry.entities import ModelVersion
from modelyard.registry.store import SQLRegistryStore
from modelyard.store.artifacts import ArtifactStore
from modelyard.store.database import Database

__all__ = [
    "BUNDLE_FILE",
    "Bundle",
    "read_bundle",
    "restore_version",
    "verify_bundle",
    "write_bundle",
]

#: the file beside the baked artifact folder that records what it holds
BUNDLE_FILE = "package.json"
BUNDLE_FORMAT = 1


@dataclass(frozen=True)
class Bundle:
    """What ``package.json`` records: one version, its package and every file's hash."""

    name: str
    version: int
    package_id: str
    description: str | None
    created_by: str
    created_at: int
    flavor: str
    model_class: str
    serving_runtime: str
    files: tuple[FileEntry, ...]
    format: int = BUNDLE_FORMAT

    @property
    def ref(self) -> str:
        return f"{self.name}/{self.version}"

    def to_json(self) -> str:
        data = asdict(self)
        data["files"] = [{"path": f.path, "sha256": f.sha256, "size": f.size} for f in self.files]
        return json.dumps(data, indent=2) + "\n"


def write_bundle(
    source: ArtifactStore, version: ModelVersion, target: Path
) -> tuple[Bundle, Manifest]:
    """Copy ``version``'s package from ``source`` into the artifact folder ``target``.

    Every byte is re-verified on the way (the source store hashes each read). Returns the
    bundle record (not yet written) and the manifest.
    """
    manifest = read_manifest(source, version.package_id)
    store = ArtifactStore(str(target))
    copied = store.put_bytes(source.get_bytes(version.package_id, name=MANIFEST_NAME))
    assert copied.sha256 == version.package_id  # the package id is the manifest's hash
    for entry in manifest.files:
        ref = store.put_bytes(source.get_bytes(entry.sha256, name=entry.path))
        if ref.sha256 != entry.sha256 or ref.size != entry.size:  # pragma: no cover
            raise ArtifactIntegrityError(f"Copying {entry.path} changed its bytes")
    bundle = Bundle(
        name=version.name,
        version=version.version,
        package_id=version.package_id,
        description=version.description,
        created_by=version.created_by,
        created_at=version.created_at,
        flavor=manifest.flavor,
        model_class=manifest.model_class,
        serving_runtime=manifest.serving_runtime,
        files=tuple(manifest.files),
    )
    return bundle, manifest


def read_bundle(path: Path) -> Bundle:
    """``package.json``, checked field by field (one line naming a bad field)."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise NotFoundError(
            f"No {BUNDLE_FILE} at {path}: is this an image built by modelyard build?"
        ) from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"{path} is not JSON: {exc}", loc=BUNDLE_FILE) from exc
    if not isinstance(data, dict):
        raise InvalidInputError(f"Expected a JSON object in {path}", loc=BUNDLE_FILE)
    expected: dict[str, Any] = {
        "name": str,
        "version": int,
        "package_id": str,
        "created_by": str,
        "created_at": int,
        "flavor": str,
        "model_class": str,
        "serving_runtime": str,
        "files": list,
        "format": int,
    }
    for key, kind in expected.items():
        if not isinstance(data.get(key), kind) or isinstance(data.get(key), bool):
            raise InvalidInputError(
                f"Expected {kind.__name__} at {key} in {path}, got {data.get(key)!r}",
                loc=f"{BUNDLE_FILE}:{key}",
            )
    if data["format"] != BUNDLE_FORMAT:
        raise InvalidInputError(
            f"Expected {BUNDLE_FILE} format {BUNDLE_FORMAT}, got {data['format']}",
            loc=f"{BUNDLE_FILE}:format",
        )
    files = []
    for i, item in enumerate(data["files"]):
        try:
            files.append(FileEntry(path=item["path"], sha256=item["sha256"], size=item["size"]))
        except (KeyError, TypeError) as exc:
            raise InvalidInputError(
                f"Expected {{path, sha256, size}} at files[{i}] in {path}, got {item!r}",
                loc=f"{BUNDLE_FILE}:files[{i}]",
            ) from exc
    description = data.get("description")
    return Bundle(
        name=data["name"],
        version=data["version"],
        package_id=data["package_id"],
        description=description if isinstance(description, str) else None,
        created_by=data["created_by"],
        created_at=data["created_at"],
        flavor=data["flavor"],
        model_class=data["model_class"],
        serving_runtime=data["serving_runtime"],
        files=tuple(files),
    )


def verify_bundle(bundle: Bundle, store: ArtifactStore) -> Manifest:
    """Re-hash the baked manifest and every file; refuse any difference by name.

    The manifest must hash to the package id and list exactly the files ``package.json``
    records (path, sha256, size); each file must hash to its address.
    """
    manifest = read_manifest(store, bundle.package_id)  # hashes to the package id
    listed = {(f.path, f.sha256, f.size) for f in manifest.files}
    recorded = {(f.path, f.sha256, f.size) for f in bundle.files}
    if listed != recorded:
        differ = sorted(p for p, _, _ in listed ^ recorded)
        raise ArtifactIntegrityError(
            f"{BUNDLE_FILE} and the package's manifest disagree about {', '.join(differ)}; "
            "rebuild the image with modelyard build"
        )
    for entry in manifest.files:
        if not store.verify(entry.sha256):
            raise ArtifactIntegrityError(
                f"Package file {entry.path!r} of {bundle.ref} is missing or corrupted in the "
                f"image (expected sha256 {entry.sha256}); rebuild the image"
            )
    return manifest


def restore_version(db: Database, bundle: Bundle, *, actor: str, now_ms: int | None = None) -> bool:
    """Record ``bundle``'s version in ``db`` under its own number; False if it was there.

    A store that already holds ``NAME/VERSION`` must hold it with the bundle's package:
    any other package is refused (an image never serves something its registry calls by
    another name). The run is not recorded (the image's store has no runs; the manifest
    keeps the lineage). The write and its audit record are the registry store's.
    """
    now = now_ms if now_ms is not None else time.time_ns() // 1_000_000
    version = ModelVersion(
        name=bundle.name,
        version=bundle.version,
        package_id=bundle.package_id,
        run_id=None,
        status="active",
        description=bundle.description,
        created_by=bundle.created_by,
        created_at=bundle.created_at,
    )
    held = SQLRegistryStore(db).restore_version(
        version,
        flavor=bundle.flavor,
        model_class=bundle.model_class,
        actor=actor,
        reason=f"restored from the image's package {bundle.package_id[:12]}",
        now=now,
    )
    if held is not None and held != bundle.package_id:
        raise ArtifactIntegrityError(
            f"The metadata store's {bundle.ref} is package {held[:12]}, the image holds "
            f"{bundle.package_id[:12]}: refusing to serve either under that name"
        )
    return held is None
