"""The project's feature definitions: loaded from its modules, encoded canonically, hashed.

Definitions are module-level ``Entity``, ``FeatureView`` and ``FeatureService`` values in
the modules that ``features.modules`` of ``modelyard.yaml`` names (``features`` by default:
the project's ``features.py``). Each definition has one canonical JSON form (sorted keys,
no whitespace) and its sha256, so "did it change since the last apply?" is a hash compare.

>>> from modelyard.features.definitions import Entity
>>> canonical_json(Entity("carrier", ["carrier"]))
'{"description":"","join_keys":["carrier"],"name":"carrier"}'
>>> decode_definition("entity", canonical_json(Entity("carrier", ["carrier"])))
Entity(name='carrier', join_keys=['carrier'], description='')
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

from modelyard.errors import InvalidInputError, ModelyardError, NotFoundError
from modelyard.features.definitions import (
    Aggregation,
    Entity,
    Feature,
    FeatureService,
    FeatureView,
    FileSource,
    OnDemandFeatureView,
    Source,
    SqlSource,
)

__all__ = [
    "Definition",
    "DefinitionKind",
    "Definitions",
    "canonical_json",
    "decode_definition",
    "load_definitions",
    "resolve_view",
    "sha256_of",
]

DefinitionKind = Literal["entity", "view", "on_demand", "service"]
Definition = Entity | FeatureView | OnDemandFeatureView | FeatureService


@dataclass(frozen=True)
class Definitions:
    """Every definition of a project, by name."""

    entities: dict[str, Entity] = field(default_factory=dict)
    views: dict[str, FeatureView] = field(default_factory=dict)
    services: dict[str, FeatureService] = field(default_factory=dict)
    on_demand: dict[str, OnDemandFeatureView] = field(default_factory=dict)

    def items(self) -> list[tuple[DefinitionKind, str, Definition]]:
        """(kind, name, definition) for all of them, entities first, each kind by name."""
        out: list[tuple[DefinitionKind, str, Definition]] = []
        out.extend(("entity", n, d) for n, d in sorted(self.entities.items()))
        out.extend(("view", n, v) for n, v in sorted(self.views.items()))
        out.extend(("on_demand", n, o) for n, o in sorted(self.on_demand.items()))
        out.extend(("service", n, s) for n, s in sorted(self.services.items()))
        return out


def kind_of(definition: Definition) -> DefinitionKind:
    if isinstance(definition, Entity):
        return "entity"
    if isinstance(definition, FeatureView):
        return "view"
    if isinstance(definition, OnDemandFeatureView):
        return "on_demand"
    return "service"


# -- canonical encoding ------------------------------------------------------------------


def _micros(delta: timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _window(window: str | timedelta) -> Any:
    if isinstance(window, str):
        return window
    if window.microseconds == 0:
        return f"{int(window.total_seconds())}s"  # the same output_name as the timedelta
    return {"microseconds": _micros(window)}


def _source(source: Source) -> dict[str, Any]:
    if isinstance(source, FileSource):
        out: dict[str, Any] = {"type": "file", "path": source.path}
    else:
        out = {"type": "sql", "query": source.query}
    out["timestamp_field"] = source.timestamp_field
    out["created_timestamp_field"] = source.created_timestamp_field
    return out


def to_builtins(definition: Definition) -> dict[str, Any]:
    """A definition as plain JSON values."""
    if isinstance(definition, Entity):
        return dataclasses.asdict(definition)
    if isinstance(definition, FeatureService):
        return {
            "name": definition.name,
            "features": definition.refs(),
            "description": definition.description,
        }
    if isinstance(definition, OnDemandFeatureView):
        return {
            "name": definition.name,
            "inputs": list(definition.inputs),
            "request": [dataclasses.asdict(f) for f in definition.request],
            "features": [dataclasses.asdict(f) for f in definition.features],
            "code": definition.code,
            "description": definition.description,
        }
    view = definition
    return {
        "name": view.name,
        "entities": [dataclasses.asdict(e) for e in view.entities],
        "source": _source(view.source),
        "features": [dataclasses.asdict(f) for f in view.features],
        "aggregations": [
            {"column": a.column, "fn": a.fn, "window": _window(a.window), "name": a.name}
            for a in view.aggregations
        ],
        "ttl_us": None if view.ttl is None else _micros(view.ttl),
        "description": view.description,
    }


def canonical_json(definition: Definition) -> str:
    """The one JSON text of a definition: sorted keys, no whitespace."""
    return json.dumps(to_builtins(definition), sort_keys=True, separators=(",", ":"))


def sha256_of(definition: Definition) -> str:
    return hashlib.sha256(canonical_json(definition).encode()).hexdigest()


def _decode_source(raw: dict[str, Any]) -> Source:
    if raw["type"] == "file":
        return FileSource(raw["path"], raw["timestamp_field"], raw["created_timestamp_field"])
    return SqlSource(raw["query"], raw["timestamp_field"], raw["created_timestamp_field"])


def _decode_view(raw: dict[str, Any]) -> FeatureView:
    aggregations = []
    for a in raw["aggregations"]:
        window = a["window"]
        if isinstance(window, dict):
            window = timedelta(microseconds=window["microseconds"])
        aggregations.append(Aggregation(a["column"], a["fn"], window, a["name"]))
    ttl = raw["ttl_us"]
    return FeatureView(
        raw["name"],
        entities=[Entity(**e) for e in raw["entities"]],
        source=_decode_source(raw["source"]),
        features=[Feature(**f) for f in raw["features"]],
        ttl=None if ttl is None else timedelta(microseconds=ttl),
        aggregations=aggregations,
        description=raw["description"],
    )


def decode_definition(kind: DefinitionKind | str, text: str) -> Definition:
    """The definition stored as ``text`` (its canonical JSON)."""
    raw = json.loads(text)
    if kind == "entity":
        return Entity(**raw)
    if kind == "view":
        return _decode_view(raw)
    if kind == "service":
        return FeatureService(raw["name"], list(raw["features"]), raw["description"])
    if kind == "on_demand":
        return OnDemandFeatureView(
            raw["name"],
            inputs=list(raw["inputs"]),
            features=[Feature(**f) for f in raw["features"]],
            fn=_not_loaded(raw["name"]),
            request=[Feature(**f) for f in raw["request"]],
            description=raw["description"],
            code=raw["code"],
        )
    raise InvalidInputError(f"Expected an entity, view, on_demand or service, got kind {kind!r}")


def _not_loaded(name: str) -> Any:
    """The function of an on-demand view read back from the store: its code is not there."""

    def run(_: Any) -> Any:
        raise InvalidInputError(
            f"On-demand view {name!r} was read from the metadata store, which keeps its "
            "code as text only; load it from the project's feature modules to run it",
            loc=f"on_demand.{name}",
        )

    return run


# -- loading -----------------------------------------------------------------------------


def resolve_view(view: FeatureView, project_dir: Path) -> FeatureView:
    """The view with a relative ``FileSource`` path made relative to the project folder."""
    source = view.source
    if isinstance(source, FileSource) and "://" not in source.path:
        path = Path(source.path).expanduser()
        if not path.is_absolute():
            source = dataclasses.replace(source, path=str(project_dir / path))
            return dataclasses.replace(view, source=source)
    return view


def _module_path(project_dir: Path, module: str) -> Path:
    if module.endswith(".py"):
        return project_dir / module
    base = project_dir.joinpath(*module.split("."))
    package = base / "__init__.py"
    return package if package.is_file() else base.with_suffix(".py")


def _import(path: Path, module: str, project_dir: Path) -> ModuleType:
    name = f"_modelyard_features_{hashlib.sha256(str(path).encode()).hexdigest()[:12]}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise InvalidInputError(f"Cannot import feature module {module!r} from {path}")
    loaded = importlib.util.module_from_spec(spec)
    # The project folder on sys.path lets features.py import its sibling modules.
    sys.path.insert(0, str(project_dir))
    sys.modules[name] = loaded
    try:
        spec.loader.exec_module(loaded)
    except ModelyardError as exc:
        raise type(exc)(f"In {path}: {exc.message}") from exc
    except Exception as exc:  # deliberate: any error in user code, named by its file
        raise InvalidInputError(
            f"Loading feature definitions from {path} failed: {type(exc).__name__}: {exc}",
            loc=f"features.modules.{module}",
        ) from exc
    finally:
        sys.modules.pop(name, None)
        sys.path.remove(str(project_dir))
    return loaded


def _add(found: dict[str, Any], definition: Definition, where: str) -> None:
    kind = kind_of(definition)
    known = found.get(definition.name)
    if known is not None and known != definition:
        raise InvalidInputError(
            f"Two different {kind} definitions are named {definition.name!r} (in {where}); "
            "give each a distinct name",
            loc=f"{kind}s.{definition.name}",
        )
    found[definition.name] = definition


def load_definitions(project_dir: Path, modules: Iterable[str]) -> Definitions:
    """Every module-level definition of ``modules`` (names or ``.py`` paths) of a project."""
    defs = Definitions()
    tables: dict[DefinitionKind, dict[str, Any]] = {
        "entity": defs.entities,
        "view": defs.views,
        "service": defs.services,
        "on_demand": defs.on_demand,
    }
    for module in modules:
        path = _module_path(project_dir, module)
        if not path.is_file():
            raise NotFoundError(
                f"No feature definitions module {module!r}: {path} does not exist. Create it, "
                "or list your modules under features.modules in modelyard.yaml."
            )
        loaded = _import(path, module, project_dir)
        for value in vars(loaded).values():
            if isinstance(value, Entity | FeatureView | FeatureService | OnDemandFeatureView):
                _add(tables[kind_of(value)], value, str(path))
            if isinstance(value, FeatureView):
                for entity in value.entities:
                    _add(defs.entities, entity, str(path))
    return defs
