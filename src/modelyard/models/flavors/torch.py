"""PyTorch modules, stored as TorchScript (never pickle); torch is the optional 'torch' extra.

The module takes one float32 tensor of shape ``(rows, columns)``, its columns in
signature order, and returns one row of outputs per input row. It is scripted
(``torch.jit.script``, which keeps control flow) or, when scripting fails, traced on a
zero batch of that shape; a ``ScriptModule`` is stored as it is. Outputs are returned
as they are, unless the module has a ``classes_`` attribute: then it is a classifier
whose output columns are the probabilities of ``classes_``, in that order, and
``predict`` gives the label of the largest. Prediction runs in eval mode, without grad.

TorchScript is deprecated from torch 2.10 on (``torch.jit`` warns on every call); it is
still the format that needs no Python code to load, so the warning is silenced here.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from modelyard.errors import InvalidInputError, MissingExtraError, ModelError
from modelyard.models.flavors._common import (
    class_names,
    label_of_largest,
    labels_of,
    read_side_file,
    restore_labels,
    write_side_file,
)
from modelyard.models.flavors.base import LoadOptions, SavedModel

__all__ = ["TorchFlavor", "TorchScriptModel"]

MODEL_FILE = "model.pt"
META_FILE = "torch.json"
MODULE = "torch.nn.modules.module.Module"


def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise MissingExtraError("PyTorch models", "torch") from exc
    return torch


@contextlib.contextmanager
def _quiet_jit() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"`torch\.jit\.\w+` is deprecated", DeprecationWarning)
        yield


def _forward(module: Any, features: Any) -> np.ndarray:
    """The module's output on ``features`` (a frame or array in signature order), 2-d."""
    torch = _torch()
    values = np.ascontiguousarray(np.asarray(features, dtype=np.float32))
    was_training = module.training
    module.eval()
    try:
        with torch.inference_mode():
            output = module(torch.from_numpy(values))
    finally:
        module.train(was_training)
    return np.asarray(output.detach().cpu().numpy()).reshape(len(values), -1)


class TorchScriptModel:
    """A loaded TorchScript module with ``predict`` (and ``predict_proba`` for classifiers)."""

    def __init__(self, module: Any, classes: np.ndarray | None) -> None:
        self.module = module
        self.classes_ = classes

    def __repr__(self) -> str:
        return f"TorchScriptModel({type(self.module).__name__}, classes={self.classes_})"

    def predict_proba(self, features: Any) -> np.ndarray:
        return _forward(self.module, features)

    def predict(self, features: Any) -> np.ndarray:
        output = _forward(self.module, features)
        if self.classes_ is not None:
            return label_of_largest(self.classes_, output)
        return output[:, 0] if output.shape[1] == 1 else output


class TorchFlavor:
    name = "torch"
    requirements = ("torch",)

    def handles(self, model: Any) -> bool:
        # a TorchScriptModel is a loaded package, logged again
        return isinstance(model, TorchScriptModel) or MODULE in class_names(model)

    def save(self, model: Any, folder: Path, feature_names: list[str]) -> SavedModel:
        torch = _torch()
        if not feature_names:
            raise InvalidInputError(
                "A PyTorch model is stored with its input columns: pass training_frame= or "
                "signature= (not no_signature=True)",
                loc="signature",
            )
        classes = getattr(model, "classes_", None)
        module = model.module if isinstance(model, TorchScriptModel) else model
        scripted = _script(torch, module, len(feature_names))
        with _quiet_jit():
            torch.jit.save(scripted, str(folder / MODEL_FILE))
        width = _forward(module, np.zeros((2, len(feature_names)))).shape[1]
        write_side_file(
            folder,
            META_FILE,
            {
                "classes": None if classes is None else labels_of(classes),
                "columns": len(feature_names),
                "input": "float32",
            },
        )
        task = "regression" if width == 1 else "other"
        return SavedModel(
            model_file=MODEL_FILE,
            model_class=f"{type(model).__module__}.{type(model).__qualname__}",
            task="classification" if classes is not None else task,
            classes=None if classes is None else [str(c) for c in classes],
            extra_files=[META_FILE],
        )

    def load(self, folder: Path, saved: SavedModel, options: LoadOptions) -> Any:
        torch = _torch()
        meta = read_side_file(folder, META_FILE)
        with _quiet_jit():
            module = torch.jit.load(str(folder / saved.model_file), map_location="cpu")
        module.eval()
        classes = meta.get("classes")
        return TorchScriptModel(module, None if classes is None else restore_labels(classes))

    def scores(self, model: Any, features: Any) -> np.ndarray:
        module = model.module if isinstance(model, TorchScriptModel) else model
        return _forward(module, features).astype(np.float64)


def _script(torch: Any, model: Any, columns: int) -> Any:
    """TorchScript of ``model``: scripted, else traced on a float32 batch of zeros."""
    if isinstance(model, torch.jit.ScriptModule):
        return model
    with _quiet_jit():
        try:
            return torch.jit.script(model)
        except Exception as script_error:  # scripting fails on much ordinary Python: trace
            example = torch.zeros((2, columns), dtype=torch.float32)
            was_training = model.training
            model.eval()
            try:
                with torch.no_grad():
                    return torch.jit.trace(model, example)
            except Exception as trace_error:
                raise ModelError(
                    f"Cannot store {type(model).__qualname__} as TorchScript: scripting "
                    f"failed ({script_error}) and tracing on a float32 ({columns} columns) "
                    f"batch failed ({trace_error}). Make forward() take one float32 tensor."
                ) from trace_error
            finally:
                model.train(was_training)
