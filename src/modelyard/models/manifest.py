"""The package manifest, ``modelyard.json``: what a model package holds and where it came from.

The manifest lists every file with its sha256; the package's id is the sha256 of the
manifest itself, so one hash pins every byte of a model.
"""

from __future__ import annotations

import hashlib
from typing import Literal

import msgspec

from modelyard.errors import ArtifactIntegrityError, InvalidInputError
from modelyard.models.signature import Signature

__all__ = [
    "MANIFEST_NAME",
    "DatasetRef",
    "FileEntry",
    "Lineage",
    "Manifest",
    "OutputSpec",
    "RuntimeResult",
    "decode_manifest",
    "encode_manifest",
]

MANIFEST_NAME = "modelyard.json"
FORMAT_VERSION = 1


class FileEntry(msgspec.Struct, frozen=True, kw_only=True):
    path: str
    sha256: str
    size: int


class OutputSpec(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One output of the model: a label, a class probability, a score."""

    name: str
    dtype: Literal["float", "int", "string", "bool"]
    classes: list[str] | None = None


class DatasetRef(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    context: str
    digest: str


class Lineage(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    run_id: str | None = None
    experiment: str | None = None
    datasets: list[DatasetRef] = msgspec.field(default_factory=list)
    training_digest: str | None = None
    #: the feature service whose features the model was trained on (served by entity key)
    feature_service: str | None = None
    #: where the model came from when it was not trained here (``mlflow:<folder>``); its
    #: file was checked on import like any foreign file (see ``flavors.sklearn_trees``)
    imported_from: str | None = None


class RuntimeResult(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One way to run the model, with its measured parity and latency."""

    name: str  # "native", "onnxruntime", "lightgbm-booster", ...
    status: Literal["ok", "failed_parity", "error"]
    reason: str | None = None
    file: str | None = None
    max_abs_diff: float | None = None
    label_flips: int | None = None
    rows_checked: int | None = None
    latency_1_row_us: float | None = None
    latency_1000_rows_us: float | None = None


class Manifest(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    flavor: str
    model_class: str
    task: Literal["classification", "regression", "other"]
    model_file: str
    files: list[FileEntry]
    signature: Signature | None
    outputs: list[OutputSpec]
    requirements: dict[str, str]
    created_at: int
    format: int = FORMAT_VERSION
    classes: list[str] | None = None
    metrics: dict[str, float] = msgspec.field(default_factory=dict)
    lineage: Lineage = msgspec.field(default_factory=Lineage)
    runtimes: list[RuntimeResult] = msgspec.field(default_factory=list)
    serving_runtime: str = "native"
    needs_trust: bool = False
    input_example: str | None = None
    holdout: str | None = None
    profile: str | None = None

    def file(self, path: str) -> FileEntry:
        for entry in self.files:
            if entry.path == path:
                return entry
        raise InvalidInputError(f"The package has no file {path!r}", loc="files")


def encode_manifest(manifest: Manifest) -> tuple[bytes, str]:
    """Canonical JSON of the manifest and its sha256, the package id."""
    data = msgspec.json.format(msgspec.json.encode(manifest), indent=2)
    return data, hashlib.sha256(data).hexdigest()


def decode_manifest(data: bytes, *, expected_sha256: str | None = None) -> Manifest:
    if expected_sha256 is not None:
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected_sha256:
            raise ArtifactIntegrityError(
                f"Manifest {MANIFEST_NAME} does not match the registry's record: expected "
                f"sha256 {expected_sha256}, got {actual}. Refusing to load."
            )
    try:
        return msgspec.json.decode(data, type=Manifest)
    except msgspec.ValidationError as exc:
        raise InvalidInputError(f"{MANIFEST_NAME} is not a valid manifest: {exc}") from exc
