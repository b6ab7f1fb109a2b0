"""BentoML side (runs in BentoML's venv): save both models to the BentoML model store.

    BENTOML_HOME=HOME python bentoml_side.py --data DATA_DIR

``bentoml.sklearn.save_model("serving-hgb", ...)`` and ``"serving-pipeline"``; the
services in ``bentoml_service.py`` load them back by tag.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bentoml
from common import MODELS, emit, train


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, required=True)
    args = parser.parse_args()
    for kind in MODELS:
        bentoml.sklearn.save_model(f"serving-{kind}", train(args.data, kind))
    emit({"version": bentoml.__version__})


if __name__ == "__main__":
    main()
