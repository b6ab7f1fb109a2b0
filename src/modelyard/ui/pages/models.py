"""The models pages: registered models, a model's versions and timeline, one version.

Actions (admin key, CSRF, audited as ``ui:KEYNAME``): move an alias (plainly, or as a
promotion that needs passing gate evidence), roll an alias back, archive a version.
Each is a registry client call, so it lands in ``modelyard models history`` like a
command-line change.
"""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from modelyard.errors import InvalidInputError
from modelyard.registry.client import ModelRegistry
from modelyard.registry.refs import ModelRef, check_model_name
from modelyard.ui.model_data import model_detail, models_index, version_detail
from modelyard.ui.render import MAX_VERSION, context_of, json_body, path_number, render
from modelyard.ui.security import actor, require_action

__all__ = ["NAV", "routes"]


def _registry(request: Request) -> ModelRegistry:
    ui = context_of(request)
    return ModelRegistry(ui.settings, db=ui.db)


def _name(request: Request) -> str:
    name = str(request.path_params["name"])
    check_model_name(name)
    return name


def list_page(request: Request) -> Response:
    models = models_index(_registry(request))
    return render(request, "models/list.html", models=models)


def model_page(request: Request) -> Response:
    name = _name(request)
    detail = model_detail(_registry(request), name)
    active = [v["version"] for v in detail["versions"] if v["status"] == "active"]
    return render(request, "models/model.html", name=name, active=active, **detail)


def version_page(request: Request) -> Response:
    name = _name(request)
    version = path_number(request, "version", MAX_VERSION, f"version of {name}")
    detail = version_detail(_registry(request), name, version)
    charts = {"evidence": detail["evidence"], "profile": detail["profile"]}
    return render(
        request, "models/version.html", name=name, number=version, charts=charts, **detail
    )


def _text(body: dict[str, Any], key: str, *, required: bool) -> str | None:
    value = body.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise InvalidInputError(f"Expected a non-empty {key!r}, got none", loc=key)
        return None
    if not isinstance(value, str):
        raise InvalidInputError(
            f"Expected {key!r} as text, got {type(value).__name__} {value!r}", loc=key
        )
    return value.strip()


def _version(body: dict[str, Any]) -> int:
    value = body.get("version")
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    raise InvalidInputError(f"Expected 'version' as a version number, got {value!r}", loc="version")


async def move_alias(request: Request) -> Response:
    """``{"alias", "version", "reason", "mode": "move"|"promote"}``; promote needs
    passing, fresh gate evidence (refused with 409 and why otherwise)."""
    who = actor(require_action(request))
    name = _name(request)
    body = await json_body(request)
    alias = _text(body, "alias", required=True) or ""
    version = _version(body)
    reason = _text(body, "reason", required=True)
    mode = body.get("mode", "move")
    if mode not in ("move", "promote"):
        raise InvalidInputError(f"Expected mode 'move' or 'promote', got {mode!r}", loc="mode")
    registry = _registry(request)
    ref = ModelRef(name, version=version)
    if mode == "promote":
        done = await run_in_threadpool(
            registry.promote_with_evidence, ref, alias, reason=reason, actor=who
        )
        previous = done.previous
    else:
        previous = await run_in_threadpool(registry.set_alias, ref, alias, reason=reason, actor=who)
    was = "" if previous is None else f" (was {previous})"
    return JSONResponse(
        {
            "message": f"{name}@{alias} → {version}{was}",
            "name": name,
            "alias": alias,
            "version": version,
            "previous": previous,
            "actor": who,
        }
    )


async def rollback(request: Request) -> Response:
    """``{"alias", "reason"}``: the alias back to the version that held it before."""
    who = actor(require_action(request))
    name = _name(request)
    body = await json_body(request)
    alias = _text(body, "alias", required=True) or ""
    reason = _text(body, "reason", required=False)
    registry = _registry(request)
    moved = await run_in_threadpool(registry.rollback, name, alias, reason=reason, actor=who)
    return JSONResponse(
        {
            "message": f"{name}@{alias} → {moved.version} (rolled back)",
            "name": name,
            "alias": alias,
            "version": moved.version,
            "actor": who,
        }
    )


async def archive(request: Request) -> Response:
    """``{"reason"}``: archive the version (refused while it holds an alias)."""
    who = actor(require_action(request))
    name = _name(request)
    version = path_number(request, "version", MAX_VERSION, f"version of {name}")
    body = await json_body(request)
    reason = _text(body, "reason", required=False)
    registry = _registry(request)
    done = await run_in_threadpool(
        registry.archive, ModelRef(name, version=version), reason=reason, actor=who
    )
    return JSONResponse(
        {"message": f"Archived {done.ref}", "ref": done.ref, "status": done.status, "actor": who}
    )


routes: list[BaseRoute] = [
    Route("/models", list_page, name="models"),
    Route("/models/{name}", model_page, name="model"),
    Route("/models/{name}/{version:int}", version_page, name="model_version"),
    Route("/actions/models/{name}/alias", move_alias, methods=["POST"], name="move_alias"),
    Route("/actions/models/{name}/rollback", rollback, methods=["POST"], name="rollback"),
    Route(
        "/actions/models/{name}/{version:int}/archive",
        archive,
        methods=["POST"],
        name="archive",
    ),
]
NAV: tuple[str, str] | None = ("Models", "/models")
