"""modelyard side (project venv): a project with both models registered as ``@production``.

    python modelyard_side.py --data DATA_DIR --project PROJECT_DIR [--no-optimize]

``init_project``, then per model ``ModelRegistry.log_model(model, name="serving-KIND",
training_frame=X, holdout_frame=...)``, ``set_alias(ref, "production")`` and, unless
``--no-optimize``, ``optimize_package`` (ONNX runtime chosen for serving when it passes
parity). The server is then ``modelyard --project PROJECT_DIR serve serving-KIND@production``.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import HOLDOUT, MODELS, emit, fit, read_data

import modelyard
from modelyard.config import init_project, load_settings
from modelyard.registry.client import ModelRegistry


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--project", type=Path, required=True)
    parser.add_argument("--no-optimize", action="store_true")
    args = parser.parse_args()
    init_project(args.project, name="serving-bench")
    settings = load_settings(args.project)
    frame = read_data(args.data)
    train, holdout = frame.iloc[:-HOLDOUT], frame.iloc[-HOLDOUT:]
    out: dict[str, object] = {"version": getattr(modelyard, "__version__", "?"), "models": {}}
    with ModelRegistry(settings) as registry:
        for kind, spec in MODELS.items():
            cols = spec["columns"]
            model = fit(kind, train[cols].reset_index(drop=True), train["delayed"].to_numpy())
            logged = registry.log_model(
                model,
                name=f"serving-{kind}",
                training_frame=train[cols],
                holdout_frame=holdout[cols],
            )
            registry.set_alias(str(logged.ref), "production", reason="serving benchmark")
            info: dict[str, object] = {"ref": logged.ref, "optimized": False}
            if not args.no_optimize:
                try:
                    from modelyard.models.optimize import optimize_package

                    manifest = optimize_package(registry, str(logged.ref))
                    info["optimized"] = True
                    info["serving_runtime"] = str(
                        getattr(manifest, "serving_runtime", None) or "see models show"
                    )
                except Exception as exc:  # the benchmark still serves the native package
                    info["optimize_error"] = f"{type(exc).__name__}: {exc}"
                    traceback.print_exc()
            out["models"][kind] = info  # type: ignore[index]
    emit(out)


if __name__ == "__main__":
    main()
