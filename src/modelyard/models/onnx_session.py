"""The one place an onnxruntime session opens: telemetry off, serving options, CPU only.

onnxruntime's library holds a telemetry endpoint (on Windows builds it reports usage
events unless told not to). Every session modelyard opens goes through
:func:`open_session`, which turns those events off first, so no model of ours ever
opens with telemetry on, whatever the platform.
"""

from __future__ import annotations

from typing import Any

from modelyard.errors import MissingExtraError

__all__ = ["onnxruntime_module", "open_session", "serving_session_options"]


def onnxruntime_module() -> Any:
    """The ``onnxruntime`` module, or a ``MissingExtraError`` naming the extra to install."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise MissingExtraError("Running ONNX models", "onnx") from exc
    return onnxruntime


def serving_session_options() -> Any:
    """onnxruntime settings for a serving worker: one thread, no spinning, all graph rewrites.

    One intra-op thread per worker (workers scale by process, not by thread), and no
    spinning, so an idle worker does not burn a core waiting for the next request.
    """
    ort = onnxruntime_module()
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only: converters declare shapes ORT warns about
    return options


def open_session(source: str | bytes) -> Any:
    """An ``InferenceSession`` on a graph (its bytes or its path), telemetry disabled.

    onnxruntime raises its own untyped errors for a graph it cannot load; they pass
    through for the caller to word.
    """
    ort = onnxruntime_module()
    ort.disable_telemetry_events()
    return ort.InferenceSession(
        source, sess_options=serving_session_options(), providers=["CPUExecutionProvider"]
    )
