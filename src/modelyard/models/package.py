"""Model packages: write a model, its signature, examples and profile to the artifact store.

A package is a set of content-addressed files plus a manifest listing each file's
sha256; the package id is the manifest's own sha256. Loading re-reads every file
through the artifact store, which verifies each hash, so a tampered file is refused
by name, and a manifest that is not the one the registry recorded is refused too.
"""

from __future__ import annotations

import importlib.metadata
import io
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modelyard.errors import InvalidInputError, ModelError
from modelyard.models.flavors import flavor_for, get_flavor
from modelyard.models.flavors.base import LoadOptions, SavedModel
from modelyard.models.manifest import (
    MANIFEST_NAME,
    FileEntry,
    Lineage,
    Manifest,
    OutputSpec,
    decode_manifest,
    encode_manifest,
)
from modelyard.models.signature import Signature, infer_signature
from modelyard.store.artifacts import ArtifactStore
from modelyard.store.gc import scratch_prefix

__all__ = ["PackagedModel", "load_package", "read_manifest", "save_package"]

EXAMPLE_FILE = "input_example.parquet"
HOLDOUT_FILE = "holdout.parquet"
PROFILE_FILE = "profile.json"
HOLDOUT_ROWS = 500
SCORE_PREFIX = "__score_"

_BASE_REQUIREMENTS = ("modelyard", "numpy", "pandas", "pyarrow")


def _requirements(packages: tuple[str, ...]) -> dict[str, str]:
    """Versions of the running interpreter's packages (read, never guessed by importing)."""
    found = {}
    for name in (*_BASE_REQUIREMENTS, *packages):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def _outputs(saved: SavedModel, width: int) -> list[OutputSpec]:
    if saved.task == "classification" and saved.classes:
        return [
            OutputSpec(name="label", dtype="string", classes=saved.classes),
            *(OutputSpec(name=f"proba_{c}", dtype="float") for c in saved.classes),
        ]
    if width == 1:
        return [OutputSpec(name="prediction", dtype="float")]
    return [OutputSpec(name=f"output_{i}", dtype="float") for i in range(width)]


def _to_frame(data: Any) -> Any:
    import pandas as pd

    if isinstance(data, pd.DataFrame):
        frame = data
    else:
        try:
            frame = pd.DataFrame(data)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(
                f"Expected a table-like frame, got {type(data).__name__}", loc="training_frame"
            ) from exc
    if not all(isinstance(c, str) for c in frame.columns):
        # an array has columns 0, 1, ...: the signature names them "0", "1", ...
        frame = frame.set_axis([str(c) for c in frame.columns], axis=1)
    return frame


def _parquet(frame: Any) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


@dataclass(frozen=True)
class SavedPackage:
    """What ``save_package`` returns: the package id and its manifest."""

    id: str
    manifest: Manifest
    profile: Any | None = None


def save_package(
    model: Any,
    artifacts: ArtifactStore,
    *,
    training_frame: Any = None,
    signature: Signature | None = None,
    no_signature: bool = False,
    metrics: dict[str, float] | None = None,
    lineage: Lineage | None = None,
    holdout_frame: Any = None,
    flavor: str | None = None,
    profile: bool = True,
    seed: int = 0,
) -> SavedPackage:
    """Write ``model`` as a package; return its id (the manifest's sha256) and manifest.

    ``training_frame`` gives the signature, the input example, the held-out rows for
    parity checks (unless ``holdout_frame`` is given) and the reference profile.
    """
    chosen = get_flavor(flavor) if flavor else flavor_for(model)
    frame = None if training_frame is None else _to_frame(training_frame)
    if signature is None and not no_signature:
        if frame is None:
            raise InvalidInputError(
                "Expected training_frame= (or signature=) to infer the model's signature; "
                "pass no_signature=True to package a model without one",
                loc="training_frame",
            )
        signature = infer_signature(frame)
    names = signature.names if signature is not None else []
    if frame is not None and signature is not None:
        frame = frame[names]
    # removed on any exception; a killed process leaves it to `modelyard gc` (by its pid)
    with tempfile.TemporaryDirectory(prefix=scratch_prefix("package")) as tmp:
        folder = Path(tmp)
        saved = chosen.save(model, folder, names)
        files = [saved.model_file, *saved.extra_files]
        example = holdout = profile_file = None
        width = 1
        if frame is not None and len(frame):
            frame.head(5).to_parquet(folder / EXAMPLE_FILE, index=False)
            example = EXAMPLE_FILE
            held = _to_frame(holdout_frame)[names] if holdout_frame is not None else frame
            if len(held) > HOLDOUT_ROWS:
                held = held.sample(HOLDOUT_ROWS, random_state=seed)
            held = held.reset_index(drop=True)
            try:
                scores = chosen.scores(model, held)
            except Exception as exc:  # the user's model: any failure is theirs to see
                raise ModelError(
                    f"The model failed to predict on its own training rows: {exc}"
                ) from exc
            width = scores.shape[1] if scores.ndim == 2 else 1
            stored = held.copy()
            for i in range(width):
                stored[f"{SCORE_PREFIX}{i}"] = scores[:, i] if scores.ndim == 2 else scores
            stored.to_parquet(folder / HOLDOUT_FILE, index=False)
            holdout = HOLDOUT_FILE
            files += [EXAMPLE_FILE, HOLDOUT_FILE]
            if profile:
                profile_file = _write_profile(folder, frame, model, chosen, saved, seed)
                if profile_file:
                    files.append(profile_file)
        entries = [artifacts.put_file(folder / name) for name in files]
    manifest = Manifest(
        flavor=chosen.name,
        model_class=saved.model_class,
        task=saved.task,  # type: ignore[arg-type]
        model_file=saved.model_file,
        files=[
            FileEntry(path=name, sha256=ref.sha256, size=ref.size)
            for name, ref in zip(files, entries, strict=True)
        ],
        signature=signature,
        outputs=_outputs(saved, width),
        requirements=_requirements(getattr(chosen, "requirements", ())),
        created_at=time.time_ns() // 1_000_000,
        classes=saved.classes,
        metrics=dict(metrics or {}),
        lineage=lineage or Lineage(),
        needs_trust=saved.needs_trust,
        input_example=example,
        holdout=holdout,
        profile=profile_file,
    )
    data, package_id = encode_manifest(manifest)
    ref = artifacts.put_bytes(data)
    assert ref.sha256 == package_id  # the store's address is the package id
    return SavedPackage(id=package_id, manifest=manifest)


def _write_profile(
    folder: Path, frame: Any, model: Any, flavor: Any, saved: SavedModel, seed: int
) -> str | None:
    try:
        from modelyard.models.profile import build_profile
    except ImportError:  # pragma: no cover - the profile module ships with the package
        return None
    sample = frame if len(frame) <= 100_000 else frame.sample(100_000, random_state=seed)
    scores = flavor.scores(model, sample)
    outputs: dict[str, np.ndarray] = {}
    if saved.task == "classification" and saved.classes and scores.ndim == 2:
        for i, name in enumerate(saved.classes):
            outputs[f"proba_{name}"] = scores[:, i]
    else:
        outputs["prediction"] = scores.reshape(len(sample), -1)[:, 0]
    built = build_profile(sample, outputs, feature_importance=saved.feature_importance, seed=seed)
    (folder / PROFILE_FILE).write_bytes(built.to_json())
    return PROFILE_FILE


def read_manifest(artifacts: ArtifactStore, package_id: str) -> Manifest:
    """The manifest of a package; the store verifies it hashes to ``package_id``."""
    return decode_manifest(
        artifacts.get_bytes(package_id, name=MANIFEST_NAME), expected_sha256=package_id
    )


class PackagedModel:
    """A loaded package: the native model, its manifest, and checked prediction."""

    def __init__(self, package_id: str, manifest: Manifest, native: Any, flavor: Any) -> None:
        self.id = package_id
        self.manifest = manifest
        self.native = native
        self.flavor = flavor

    def __repr__(self) -> str:
        return (
            f"PackagedModel({self.manifest.flavor} {self.manifest.model_class}, id={self.id[:12]})"
        )

    def _frame(self, data: Any) -> Any:
        frame = _to_frame(data)
        signature = self.manifest.signature
        if signature is None:
            return frame
        signature.check_frame(frame)
        return frame[signature.names]

    def predict(self, data: Any) -> np.ndarray:
        """Predictions for a frame checked against the signature."""
        return np.asarray(self.native.predict(self._frame(data)))

    def scores(self, data: Any) -> np.ndarray:
        """Class probabilities (classifiers) or predictions as a 2-d float array."""
        return self.flavor.scores(self.native, self._frame(data))  # type: ignore[no-any-return]


def load_package(
    artifacts: ArtifactStore,
    package_id: str,
    options: LoadOptions,
    *,
    folder: Path | None = None,
    manifest: Manifest | None = None,
) -> PackagedModel:
    """Load a package, verifying the manifest and every file it lists.

    With ``folder``, the verified files are also left there (for runtimes that load by
    path); otherwise they live in a temporary folder only while the model loads.
    ``manifest``: the package's manifest as :func:`read_manifest` gave it, not read again.
    """
    if manifest is None:
        manifest = read_manifest(artifacts, package_id)
    flavor = get_flavor(manifest.flavor)
    if manifest.needs_trust and not options.trust_code:
        raise InvalidInputError(
            f"Package {package_id[:12]} holds Python code ({manifest.model_class}); it loads "
            "only when the project trusts code (models.trust_code: true in modelyard.yaml) "
            "or the load passes trust=True",
            loc="models.trust_code",
        )
    saved = SavedModel(
        model_file=manifest.model_file,
        model_class=manifest.model_class,
        task=manifest.task,
        classes=manifest.classes,
        needs_trust=manifest.needs_trust,
    )
    with tempfile.TemporaryDirectory(prefix=scratch_prefix("load")) as tmp:
        target = folder or Path(tmp)
        for entry in manifest.files:
            artifacts.get_file(entry.sha256, target / entry.path, name=entry.path)
        native = flavor.load(target, saved, options)
    return PackagedModel(package_id, manifest, native, flavor)


def read_holdout(artifacts: ArtifactStore, manifest: Manifest) -> tuple[Any, np.ndarray]:
    """The held-out rows and the native model's scores on them, as stored at packaging."""
    import pandas as pd

    if manifest.holdout is None:
        raise InvalidInputError(
            "The package has no held-out rows (it was logged without a training frame)",
            loc="holdout",
        )
    entry = manifest.file(manifest.holdout)
    frame = pd.read_parquet(io.BytesIO(artifacts.get_bytes(entry.sha256, name=entry.path)))
    score_cols = [c for c in frame.columns if str(c).startswith(SCORE_PREFIX)]
    return frame.drop(columns=score_cols), frame[score_cols].to_numpy(dtype=np.float64)


def read_profile(artifacts: ArtifactStore, manifest: Manifest) -> Any:
    """The package's reference profile (``ReferenceProfile``), hash-verified by the store."""
    from modelyard.models.profile import ReferenceProfile

    if manifest.profile is None:
        raise InvalidInputError(
            "The package has no reference profile (it was logged without a training frame); "
            "monitor it against files with --reference",
            loc="profile",
        )
    entry = manifest.file(manifest.profile)
    return ReferenceProfile.from_json(artifacts.get_bytes(entry.sha256, name=entry.path))
