"""``modelyard deploy kubernetes REF --out DIR``: manifests for an image of ``modelyard build``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from modelyard.cli.context import settings_from
from modelyard.cli.output import console, print_json
from modelyard.deploy.context import image_name
from modelyard.deploy.kubernetes import DeploySpec, write_manifests
from modelyard.registry.client import ModelRegistry

__all__ = ["app"]

app = typer.Typer(help="Deploy a version: Kubernetes manifests.", no_args_is_help=True)


@app.command("kubernetes")
def kubernetes(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="The version: NAME/VERSION or NAME@ALIAS.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the manifests.")],
    replicas: Annotated[int, typer.Option(help="Replicas (the autoscaler's minimum).")] = 2,
    max_replicas: Annotated[
        int | None, typer.Option(help="The autoscaler's maximum (default 3 x --replicas).")
    ] = None,
    namespace: Annotated[str | None, typer.Option(help="Namespace of every object.")] = None,
    image: Annotated[
        str | None,
        typer.Option(
            help="The image modelyard build's context was built as "
            "(default modelyard-NAME:VERSION)."
        ),
    ] = None,
    cpu: Annotated[str, typer.Option(help="CPU request and limit per pod (1, 500m).")] = "1",
    memory: Annotated[str, typer.Option(help="Memory request and limit per pod.")] = "1Gi",
    target_cpu: Annotated[
        int, typer.Option("--target-cpu", help="The autoscaler's CPU utilization target (%).")
    ] = 70,
    kserve: Annotated[
        bool,
        typer.Option(
            "--kserve",
            help="A KServe InferenceService (custom container, v2 "
            "protocol) instead of Deployment, Service, HPA and PDB.",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Write a ConfigMap, Deployment, Service, HPA and PDB (or an InferenceService) for REF.

    The metadata store's URL and API keys are Secret references, never values.
    """
    settings = settings_from(ctx)
    registry = ModelRegistry(settings)
    ctx.find_root().call_on_close(registry.close)
    version = registry.get_version(ref)
    spec = DeploySpec(
        image=image or image_name(version.name, version.version),
        replicas=replicas,
        max_replicas=max_replicas,
        namespace=namespace,
        cpu=cpu,
        memory=memory,
        target_cpu_percent=target_cpu,
        kserve=kserve,
    )
    written = write_manifests(settings, version, spec, out)
    if as_json:
        print_json({"ref": version.ref, "image": spec.image, "files": [str(p) for p in written]})
        return
    console.print(
        f"Wrote {len(written)} files for [bold]{escape(version.ref)}[/] to {escape(str(out))}; "
        f"see {escape(str(out / 'README.md'))} for the Secret to create first.",
        soft_wrap=True,
    )
