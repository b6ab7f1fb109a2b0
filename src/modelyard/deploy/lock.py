"""The pinned requirements of an image: what the package and modelyard's serving need.

The lock is the closure of the requirements of modelyard itself (its base, the ``serve``
extra and the extras the model's flavor and the project's stores need) and of the
package manifest's ``requirements``, read from the installed distributions' metadata
(never by importing them). Every name is pinned to one version: the manifest's version
for the packages the model was saved with (those are what it was verified with), this
environment's installed version for everything else. Markers are evaluated for the
running interpreter (CPython 3.11 on Linux, like the image's base).

>>> lock = LockedRequirement(name="numpy", version="2.4.6", via=("modelyard",))
>>> lock.line()
'numpy==2.4.6  # via modelyard'
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from packaging.markers import default_environment
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from modelyard.errors import InvalidInputError, MissingExtraError

__all__ = [
    "FLAVOR_EXTRAS",
    "Lock",
    "LockedRequirement",
    "lock_requirements",
]

#: the extra of modelyard a flavor's packages come from (``custom`` needs none)
FLAVOR_EXTRAS: Mapping[str, tuple[str, ...]] = {
    "sklearn": ("sklearn",),
    "xgboost": ("xgboost",),
    "lightgbm": ("lightgbm",),
    "torch": ("torch",),
    "onnx": (),  # its packages come from the manifest's requirements (onnx, onnxruntime)
}
#: the packages a serving runtime needs beyond its flavor's
RUNTIME_PACKAGES: Mapping[str, tuple[str, ...]] = {"onnxruntime": ("onnxruntime",)}
#: never pinned in the lock: the image installs modelyard from its own wheel, and the
#: installer's own tools come with the base image's venv
_NOT_LOCKED = frozenset({"modelyard", "pip", "setuptools", "wheel"})


@dataclass(frozen=True)
class LockedRequirement:
    """One pinned distribution and the requirements that brought it in."""

    name: str
    version: str
    via: tuple[str, ...]

    def line(self) -> str:
        return f"{self.name}=={self.version}  # via {', '.join(self.via)}"


@dataclass(frozen=True)
class Lock:
    """The pinned closure, sorted by name, and the notes worth a reader's eye."""

    requirements: tuple[LockedRequirement, ...]
    extras: tuple[str, ...]
    notes: tuple[str, ...] = field(default=())

    def text(self, header: Iterable[str] = ()) -> str:
        lines = [f"# {line}" for line in header]
        lines += [f"# note: {note}" for note in self.notes]
        lines += [r.line() for r in self.requirements]
        return "\n".join(lines) + "\n"

    def pins(self) -> dict[str, str]:
        return {r.name: r.version for r in self.requirements}


def _installed(name: str) -> importlib.metadata.Distribution | None:
    try:
        return importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _applies(requirement: Requirement, extras: Iterable[str]) -> bool:
    if requirement.marker is None:
        return True
    environment: dict[str, str] = {str(k): str(v) for k, v in default_environment().items()}
    return any(
        requirement.marker.evaluate({**environment, "extra": extra}) for extra in ("", *extras)
    )


def _parse(text: str, *, owner: str) -> Requirement:
    try:
        return Requirement(text)
    except InvalidRequirement as exc:  # a broken distribution's metadata: name it
        raise InvalidInputError(
            f"The installed distribution {owner} declares a requirement that does not parse: "
            f"{text!r} ({exc})",
            loc=owner,
        ) from exc


def modelyard_extras_closure(extras: Iterable[str]) -> set[str]:
    """``extras`` plus the extras they name of modelyard itself (``demo`` names ``serve``)."""
    dist = _installed("modelyard")
    if dist is None:
        raise InvalidInputError("modelyard is not installed as a distribution", loc="modelyard")
    chosen = set(extras)
    known = set(dist.metadata.get_all("Provides-Extra") or [])
    unknown = sorted(chosen - known)
    if unknown:
        raise InvalidInputError(
            f"Expected extras of modelyard ({', '.join(sorted(known))}), got {unknown}",
            loc="--extra",
        )
    changed = True
    while changed:
        changed = False
        for text in dist.requires or []:
            req = _parse(text, owner="modelyard")
            if canonicalize_name(req.name) == "modelyard" and _applies(req, sorted(chosen)):
                new = set(req.extras) - chosen
                if new:
                    chosen |= new
                    changed = True
    return chosen


def _extra_needing(name: str, chosen: Iterable[str]) -> str | None:
    """The extra of modelyard whose requirements bring in ``name`` (None: the base)."""
    dist = _installed("modelyard")
    for text in (dist.requires or []) if dist is not None else []:
        req = _parse(text, owner="modelyard")
        if canonicalize_name(req.name) != name or _applies(req, []):
            continue
        for extra in sorted(chosen):
            if _applies(req, [extra]):
                return extra
    return None


def lock_requirements(
    manifest_requirements: Mapping[str, str],
    *,
    extras: Iterable[str],
    packages: Iterable[str] = (),
) -> Lock:
    """The pinned closure of modelyard[``extras``], ``packages`` and the manifest's pins.

    Raises ``MissingExtraError``/``InvalidInputError`` naming a requirement that is not
    installed here (its version, and so the lock, cannot be known without it).
    """
    chosen = modelyard_extras_closure(extras)
    manifest = {
        canonicalize_name(name): version
        for name, version in manifest_requirements.items()
        if canonicalize_name(name) not in _NOT_LOCKED
    }
    pinned: dict[str, str] = {}
    via: dict[str, list[str]] = {}
    display: dict[str, str] = {}
    notes: list[str] = []
    # (distribution, extras wanted of it, who asked)
    queue: list[tuple[str, frozenset[str], str]] = [("modelyard", frozenset(chosen), "")]
    queue += [(name, frozenset(), "the model package") for name in sorted(manifest)]
    queue += [(name, frozenset(), "the serving runtime") for name in packages]
    seen: set[tuple[str, frozenset[str]]] = set()
    while queue:
        name, wanted, parent = queue.pop(0)
        key = canonicalize_name(name)
        if parent:
            via.setdefault(key, [])
            if parent not in via[key]:
                via[key].append(parent)
        if (key, wanted) in seen:
            continue
        seen.add((key, wanted))
        dist = _installed(name)
        if dist is None:
            if key in manifest:  # pinned by the manifest: its metadata is not needed
                pinned[key] = manifest[key]
                display.setdefault(key, name)
                notes.append(
                    f"{name}=={manifest[key]} (the model's) is not installed here, so its own "
                    "requirements are not in this lock; pip check in the build tells"
                )
                continue
            extra = _extra_needing(key, chosen) if parent == "modelyard" else None
            if extra is not None:
                raise MissingExtraError(f"Locking {name} (required by modelyard)", extra)
            raise InvalidInputError(
                f"Cannot lock {name} (required by {parent or 'the image'}): it is not installed "
                f"here, so its version is unknown; install it first (pip install {name})",
                loc=name,
            )
        display.setdefault(key, dist.metadata["Name"] or name)
        if key not in _NOT_LOCKED and key not in pinned:
            installed = dist.version
            version = manifest.get(key, installed)
            if version != installed:
                notes.append(
                    f"{display[key]}: the model was saved with {version}, this environment has "
                    f"{installed}; the image pins {version}"
                )
            pinned[key] = version
        for text in dist.requires or []:
            req = _parse(text, owner=display[key])
            if not _applies(req, sorted(wanted)):
                continue
            child = canonicalize_name(req.name)
            if child == "modelyard":
                continue  # modelyard's own extras: chosen above
            queue.append((req.name, frozenset(req.extras), display[key]))
    locked = tuple(
        LockedRequirement(
            name=display[key], version=pinned[key], via=tuple(via.get(key, ["modelyard"]))
        )
        for key in sorted(pinned)
    )
    return Lock(requirements=locked, extras=tuple(sorted(chosen)), notes=tuple(notes))
