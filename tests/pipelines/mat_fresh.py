"""Prints the digests of the example outputs and models saved in this (fresh) process."""

from __future__ import annotations

import json
import sys

from modelyard.pipelines.materializers import save_output
from modelyard.store.artifacts import ArtifactStore
from tests.pipelines.mat_models import mat_trained_models
from tests.pipelines.mat_values import mat_examples

if __name__ == "__main__":
    store = ArtifactStore(sys.argv[1])
    values = {**mat_examples(), **mat_trained_models()}
    print(json.dumps({k: save_output(v, store).digest for k, v in values.items()}))
