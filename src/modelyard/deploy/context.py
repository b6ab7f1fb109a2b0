"""``modelyard build``: an OCI build context that serves one registry version.

The context holds::

    Dockerfile          python:3.11-slim, a venv from the lock, a non-root user, HEALTHCHECK
    .dockerignore       only what the Dockerfile copies goes to the builder
    README.md           how to build and run it with docker, podman or buildah
    install.sh          the venv install the Dockerfile runs (and the tests run as written)
    requirements.lock   every distribution pinned (see ``modelyard.deploy.lock``)
    wheels/             modelyard's own wheel, built from this installation's source
    project/            the image's project folder (/srv/modelyard):
        modelyard.yaml  name, the baked artifact folder, models and serving settings
        package.json    the version's registry record and every file's sha256
        artifacts/      the package, content-addressed (each file named by its sha256)

Nothing secret goes in: the metadata store's URL and API keys are not copied (the image
runs on its own SQLite store unless ``MODELYARD_DB_URL`` is given at run time), and the
serving settings keep API keys only as ``key_env`` names and sha256 hashes.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import yaml
from packaging.utils import canonicalize_name

from modelyard.config import Settings
from modelyard.deploy.bundle import BUNDLE_FILE, Bundle, write_bundle
from modelyard.deploy.entrypoint import BAKED_ARTIFACTS
from modelyard.deploy.healthcheck import READY_PATH
from modelyard.deploy.lock import FLAVOR_EXTRAS, RUNTIME_PACKAGES, Lock, lock_requirements
from modelyard.errors import InvalidInputError, ModelyardError
from modelyard.models.manifest import Manifest
from modelyard.registry.client import ModelRegistry
from modelyard.registry.entities import ModelVersion

__all__ = [
    "BASE_IMAGE",
    "IMAGE_PROJECT",
    "BuildContext",
    "build_context",
    "image_name",
    "image_settings",
    "project_extras",
    "resource_name",
]

BASE_IMAGE = "python:3.11-slim"
#: where the image's project folder lives; its ``.modelyard`` is the writable state
IMAGE_PROJECT = "/srv/modelyard"
IMAGE_VENV = "/opt/venv"
IMAGE_UID = 10001
PORT = 8080
#: serving settings an image keeps (log_dir stays the default, in the state volume;
#: traffic names aliases the image's own store does not have)
_SERVING_KEYS = (
    "durable_log",
    "max_body_bytes",
    "body_timeout_s",
    "compact_interval_s",
    "value_checks",
    "runtime",
    "watch_interval_s",
    "batching",
    "api_keys",
    "ship",  # replica_id is not copied: each pod's default is its own
)


@dataclass(frozen=True)
class BuildContext:
    """What ``build_context`` wrote."""

    path: Path
    bundle: Bundle
    lock: Lock
    wheel: str | None
    image: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "context": str(self.path),
            "ref": self.bundle.ref,
            "package_id": self.bundle.package_id,
            "serving_runtime": self.bundle.serving_runtime,
            "image": self.image,
            "requirements": len(self.lock.requirements),
            "extras": list(self.lock.extras),
            "wheel": self.wheel,
            "notes": list(self.lock.notes),
        }


def project_extras(settings: Settings) -> list[str]:
    """modelyard extras the project's stores need at run time (PostgreSQL, S3, Redis)."""
    extras = []
    if settings.db_url.startswith("postgresql"):
        extras.append("postgres")
    if settings.artifacts.startswith(("s3://", "s3a://")):
        extras.append("s3")
    if settings.features.online_store.startswith(("redis://", "rediss://")):
        extras.append("redis")
    return extras


def image_settings(settings: Settings) -> dict[str, Any]:
    """The image's ``modelyard.yaml``: the project's model and serving settings, no secret."""
    # through JSON: plain lists and dicts only (a tuple default is no YAML safe_dump takes)
    models = msgspec.json.decode(msgspec.json.encode(settings.models))
    serving_all = msgspec.json.decode(msgspec.json.encode(settings.serving))
    serving = {key: serving_all[key] for key in _SERVING_KEYS if key in serving_all}
    keys = []
    for key in serving.get("api_keys", []):
        # only references: the key's variable name or its sha256, never a key itself
        keys.append(
            {
                k: v
                for k, v in key.items()
                if k in ("name", "scopes", "key_env", "sha256") and v is not None
            }
        )
    serving["api_keys"] = keys
    return {
        "name": settings.name,
        "artifacts": BAKED_ARTIFACTS,
        "models": models,
        "serving": serving,
    }


def resource_name(model: str) -> str:
    """``modelyard-<model>`` as a DNS label (lowercase, '-' for anything else, <= 63).

    >>> resource_name("Flight_Delays")
    'modelyard-flight-delays'
    """
    cleaned = re.sub(r"[^a-z0-9-]+", "-", model.lower()).strip("-") or "model"
    return f"modelyard-{cleaned}"[:63].rstrip("-")


def image_name(model: str, version: int) -> str:
    """The default image name of a version: ``modelyard-<model>:<version>``."""
    return f"{resource_name(model)}:{version}"


def _source_tree() -> Path | None:
    """The folder modelyard was installed from, when it is an editable or a folder install."""
    try:
        text = importlib.metadata.distribution("modelyard").read_text("direct_url.json")
    except importlib.metadata.PackageNotFoundError:
        return None
    if not text:
        return None
    url = json.loads(text).get("url", "")
    if not url.startswith("file://"):
        return None
    path = Path(url.removeprefix("file://"))
    return path if (path / "pyproject.toml").is_file() else None


#: what a wheel is built from: the project's metadata files and its ``src`` tree
_SOURCE_FILES = ("pyproject.toml", "README.md", "LICENSE", "setup.cfg", "setup.py", "MANIFEST.in")


def _build_wheel(source: Path, target: Path) -> str:
    """modelyard's wheel from its source tree, into ``target``; its file name.

    Built from a copy of ``src`` and the metadata files, never in the tree itself: an
    in-tree build reuses ``build/lib``, where a module deleted since the last build
    would still be, and would ship in the wheel.
    """
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="modelyard-wheel-") as tmp:
        copy = Path(tmp) / "source"
        shutil.copytree(
            source / "src",
            copy / "src",
            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc"),
        )
        for name in _SOURCE_FILES:
            if (source / name).is_file():
                shutil.copy2(source / name, copy / name)
        wheels_dir = Path(tmp) / "wheels"
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--no-deps",
                "--no-build-isolation",
                "--quiet",
                "--wheel-dir",
                str(wheels_dir),
                str(copy),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        wheels = sorted(wheels_dir.glob("modelyard-*.whl"))
        if done.returncode != 0 or not wheels:
            last = (done.stderr.strip().splitlines() or ["no wheel was written"])[-1]
            raise ModelyardError(f"Building modelyard's wheel from {source} failed: {last}")
        shutil.copy2(wheels[0], target / wheels[0].name)
        return wheels[0].name


def _check_constraints(lock: Lock, path: Path) -> Lock:
    """``lock`` with a note for each pin that the source tree's constraints file pins
    differently (the image keeps what this environment runs, which its tests ran on)."""
    if not path.is_file():
        return lock
    pinned: dict[str, str] = {}
    for line in path.read_text().splitlines():
        text = line.split("#", 1)[0].strip()
        name, sep, version = text.partition("==")
        if sep and ";" not in version:
            pinned[canonicalize_name(name.split("[")[0].strip())] = version.strip()
    notes = [
        f"{r.name}: {path.name} pins {pinned[key]}, this environment has {r.version}; "
        f"the image pins {r.version}"
        for r in lock.requirements
        if (key := canonicalize_name(r.name)) in pinned and pinned[key] != r.version
    ]
    return dataclasses.replace(lock, notes=(*lock.notes, *notes)) if notes else lock


def _dockerfile(bundle: Bundle, trust: bool) -> str:
    cmd = json.dumps(["--trust"] if trust else [])
    return f"""\
# syntax=docker/dockerfile:1
# Serves {bundle.ref} (package {bundle.package_id}), built by `modelyard build`.
ARG BASE_IMAGE={BASE_IMAGE}
FROM ${{BASE_IMAGE}}

ENV PYTHONDONTWRITEBYTECODE=1 \\
    PYTHONUNBUFFERED=1 \\
    PIP_NO_CACHE_DIR=1 \\
    PIP_DISABLE_PIP_VERSION_CHECK=1 \\
    VIRTUAL_ENV={IMAGE_VENV} \\
    PATH={IMAGE_VENV}/bin:$PATH

RUN groupadd --system --gid {IMAGE_UID} modelyard \\
 && useradd --system --uid {IMAGE_UID} --gid {IMAGE_UID} --home-dir {IMAGE_PROJECT} \\
      --no-create-home --shell /usr/sbin/nologin modelyard

# the pinned requirements first: this layer is reused while the lock does not change
WORKDIR /tmp/build
COPY install.sh requirements.lock ./
RUN sh install.sh requirements {IMAGE_VENV}
COPY wheels/ ./wheels/
RUN sh install.sh modelyard {IMAGE_VENV} && rm -rf /tmp/build

# the package, read-only for the server's user; .modelyard/ is its writable state
# (the SQLite store, the prediction log)
COPY --chown=root:root project/ {IMAGE_PROJECT}/
RUN mkdir -p {IMAGE_PROJECT}/.modelyard \\
 && chown {IMAGE_UID}:{IMAGE_UID} {IMAGE_PROJECT}/.modelyard \\
 && chmod -R a+rX,go-w {IMAGE_PROJECT}/modelyard.yaml {IMAGE_PROJECT}/{BUNDLE_FILE} \\
      {IMAGE_PROJECT}/{BAKED_ARTIFACTS}
VOLUME ["{IMAGE_PROJECT}/.modelyard"]

USER {IMAGE_UID}:{IMAGE_UID}
WORKDIR {IMAGE_PROJECT}
ENV MODELYARD_PROJECT={IMAGE_PROJECT} \\
    PORT={PORT} \\
    HOST=0.0.0.0
EXPOSE {PORT}
HEALTHCHECK --interval=10s --timeout=3s --start-period=90s --retries=3 \\
  CMD ["python", "-m", "modelyard.deploy.healthcheck"]
# verifies the package, records its version, sizes workers to the CPU limit, then
# execs: modelyard serve {bundle.ref} --host $HOST --port $PORT --workers N
ENTRYPOINT ["python", "-m", "modelyard.deploy.entrypoint"]
CMD {cmd}
"""


_INSTALL = """\
#!/bin/sh
# The image's Python environment, as the Dockerfile builds it (tests run this file):
#   sh install.sh requirements VENV   a venv with every pinned requirement, nothing else
#   sh install.sh modelyard VENV      modelyard's own wheel into it, then pip check
set -eu
step="$1"
venv="$2"
cd "$(dirname "$0")"
case "$step" in
  requirements)
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --no-deps -r requirements.lock
    ;;
  modelyard)
    for wheel in wheels/*.whl; do
      [ -e "$wheel" ] && "$venv/bin/python" -m pip install --no-deps "$wheel"
    done
    "$venv/bin/python" -m pip check
    ;;
  *)
    echo "usage: sh install.sh requirements|modelyard VENV" >&2
    exit 2
    ;;
esac
"""

_DOCKERIGNORE = """\
# only what the Dockerfile copies goes to the builder
*
!install.sh
!requirements.lock
!wheels/
!project/
"""


def _readme(bundle: Bundle, image: str) -> str:
    return f"""\
# {bundle.ref}: image build context

Built by `modelyard build` for {bundle.ref} ({bundle.flavor} {bundle.model_class},
package `{bundle.package_id}`, serving runtime `{bundle.serving_runtime}`).

## Build

```sh
docker build -t {image} .
podman build -t {image} .
buildah bud -t {image} .          # or: buildah build -t {image} .
```

`--build-arg BASE_IMAGE=...` picks another base (a mirror of `{BASE_IMAGE}`, or one
pinned by digest: `python:3.11-slim@sha256:...`).

## Run

```sh
docker run --rm -p 8080:{PORT} --cpus 2 {image}
curl -s localhost:8080/v2/health/ready
curl -s localhost:8080/v2/models/{bundle.name}
```

The entrypoint re-hashes the package against `project/{BUNDLE_FILE}` (a changed byte
stops the container), records the version in the image's own SQLite store (in the volume
`{IMAGE_PROJECT}/.modelyard`, with the prediction log), runs one worker per whole CPU of
the container's limit (`--cpus`, a pod's `resources.limits.cpu`; `MODELYARD_WORKERS`
overrides) with one thread each, then `modelyard serve {bundle.ref}`. `HEALTHCHECK` asks
`{READY_PATH}`.

Environment: `PORT` ({PORT}), `HOST` (0.0.0.0), `MODELYARD_WORKERS`,
`MODELYARD_DB_URL` (a shared store, which must already hold {bundle.ref} with this
package), `MODELYARD_ARTIFACTS`, `MODELYARD_API_KEYS` (`KEY:predict,...`). Pass secrets
with `--env-file` or a secret store, never in the image. Arguments after the image name
go to `modelyard serve` (`--runtime native`, `--log-level warning`).

## What is here

- `requirements.lock`: every distribution pinned; `install.sh` installs it with
  `pip install --no-deps`, then modelyard's wheel from `wheels/`, then `pip check`.
- `project/`: the image's project folder: `modelyard.yaml`, `{BUNDLE_FILE}` (the
  registry record and each file's sha256) and `{BAKED_ARTIFACTS}/` (the package).
"""


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def build_context(
    registry: ModelRegistry,
    ref: str,
    out: Path,
    *,
    extras: list[str] | None = None,
    trust: bool = False,
    image: str | None = None,
) -> BuildContext:
    """Write the build context of ``ref`` into the empty (or new) folder ``out``."""
    settings = registry.settings
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InvalidInputError(
            f"Expected an empty or new folder for the build context, got {out} (not empty)",
            loc="--out",
        )
    version = registry.get_version(ref)
    manifest: Manifest = registry.manifest(version.ref)
    if manifest.signature is None:
        raise InvalidInputError(
            f"{version.ref} has no input signature, so its requests cannot be checked; log "
            "it with a training frame (or signature=) to serve it",
            loc="ref",
        )
    if manifest.needs_trust and not (trust or settings.models.trust_code):
        raise InvalidInputError(
            f"{version.ref} holds Python code ({manifest.model_class}); build it with --trust "
            "(the image then serves it with --trust)",
            loc="--trust",
        )
    wanted = ["serve", *FLAVOR_EXTRAS.get(manifest.flavor, ()), *project_extras(settings)]
    lock = lock_requirements(
        manifest.requirements,
        extras=[*wanted, *(extras or [])],
        packages=RUNTIME_PACKAGES.get(manifest.serving_runtime, ()),
    )
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        return _write_context(registry, version, out, lock, trust or manifest.needs_trust, image)
    except BaseException:
        # no half-written context is left to be built: the folder is as it was (empty)
        shutil.rmtree(out, ignore_errors=True)
        if not created:
            out.mkdir(exist_ok=True)
        raise


def _write_context(
    registry: ModelRegistry,
    version: ModelVersion,
    out: Path,
    lock: Lock,
    trust: bool,
    image: str | None,
) -> BuildContext:
    settings = registry.settings
    project = out / "project"
    bundle, _ = write_bundle(registry.artifacts, version, project / BAKED_ARTIFACTS)
    shutil.rmtree(project / BAKED_ARTIFACTS / "tmp", ignore_errors=True)
    _write(project / BUNDLE_FILE, bundle.to_json())
    _write(
        project / "modelyard.yaml",
        "# the image's project (modelyard build); secrets come from the environment\n"
        + yaml.safe_dump(image_settings(settings), sort_keys=False),
    )
    source = _source_tree()
    if source is not None:
        lock = _check_constraints(lock, source / "requirements" / "constraints.txt")
    wheel = None
    header = [
        f"{bundle.ref} (package {bundle.package_id}): written by modelyard build",
        "CPython 3.11 on Linux; pip install --no-deps -r requirements.lock (see install.sh)",
    ]
    if source is not None:
        wheel = _build_wheel(source, out / "wheels")
        lock_text = lock.text(header)
    else:  # an install from an index: the image installs the same release from there
        (out / "wheels").mkdir()
        version_text = importlib.metadata.version("modelyard")
        lock_text = lock.text(header) + f"modelyard=={version_text}  # this installation\n"
    _write(out / "requirements.lock", lock_text)
    _write(out / "install.sh", _INSTALL)
    (out / "install.sh").chmod(0o755)
    _write(out / ".dockerignore", _DOCKERIGNORE)
    name = image or image_name(bundle.name, bundle.version)
    _write(out / "Dockerfile", _dockerfile(bundle, trust))
    _write(out / "README.md", _readme(bundle, name))
    return BuildContext(path=out, bundle=bundle, lock=lock, wheel=wheel, image=name)
