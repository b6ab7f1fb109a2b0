"""A ``modelyard serve`` worker freezes its start-up heap; an app run in-process does not.

A full garbage collection walked every object of scikit-learn, ONNX Runtime and pyarrow
on the event loop's thread: a stall of about 200 ms every few seconds under load, the
p99 of the serving benchmark at concurrency 32 (210 ms; 34 ms with the heap frozen).
"""

from __future__ import annotations

import gc

from .conftest import Project, ServeFactory


def test_only_a_server_worker_freezes_its_heap(project: Project, serve: ServeFactory) -> None:
    gc.unfreeze()
    try:
        embedded = serve(project.settings)
        with embedded.client() as http:
            assert http.get("/v2/health/ready").status_code == 200
        assert gc.get_freeze_count() == 0  # another program's collector is left alone
        worker = serve(project.settings, freeze_heap=True)
        with worker.client() as http:
            assert http.get("/v2/health/ready").status_code == 200
        assert gc.get_freeze_count() > 0  # what start-up made is out of the collector's reach
    finally:
        gc.unfreeze()
