"""Experiments and runs (placeholder until the runs pages land)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from modelyard.ui.render import render


async def experiments(request: Request) -> Response:
    return render(request, "runs/experiments.html", experiments=[])


routes: list[BaseRoute] = [Route("/experiments", experiments, name="experiments")]
NAV: tuple[str, str] | None = ("Runs", "/experiments")
