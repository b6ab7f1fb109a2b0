"""``modelyard models import-mlflow PATH --name NAME``: an MLflow model becomes a version.

Registered on ``modelyard models`` when this module is imported (``modelyard.cli.app``
imports it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from modelyard.cli.models import JsonOpt, app, registry_from
from modelyard.cli.output import console, print_json
from modelyard.models.mlflow_import import import_mlflow_model
from modelyard.registry.refs import check_model_name

__all__ = ["import_mlflow"]


@app.command("import-mlflow")
def import_mlflow(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="The MLflow model directory (holding MLmodel).")],
    name: Annotated[str, typer.Option("--name", "-n", help="Registered model name.")],
    trust: Annotated[
        bool,
        typer.Option(
            "--trust",
            help="Read a pickled model (it runs code as it loads): only from a source you trust. "
            "models.trust_code: true in modelyard.yaml does the same.",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Register an MLflow model (sklearn, xgboost or lightgbm) as the next version of NAME."""
    check_model_name(name)
    registry = registry_from(ctx)
    models = registry.settings.models
    model, signature, flavor = import_mlflow_model(
        path, trusted_types=tuple(models.trusted_types), trust=trust or models.trust_code
    )
    logged = registry.log_model(
        model,
        name=name,
        signature=signature,
        no_signature=signature is None,
        flavor=flavor,
        description=f"imported from the MLflow model at {path.resolve()}",
        imported_from=f"mlflow:{path.resolve()}",
    )
    if as_json:
        print_json(
            {
                "ref": logged.ref,
                "name": logged.name,
                "version": logged.version,
                "package_id": logged.package_id,
                "flavor": flavor,
                "model_class": logged.manifest.model_class,
                "signature": signature is not None,
            }
        )
        return
    console.print(
        f"Registered [bold]{escape(str(logged.ref))}[/] ({flavor}, package "
        f"{logged.package_id[:12]}) from {escape(str(path))}",
        soft_wrap=True,
    )
    if signature is None:
        console.print(
            "The MLflow model has no column signature: inputs are not checked. "
            "Re-log it with modelyard.log_model(..., training_frame=...) to add one."
        )
