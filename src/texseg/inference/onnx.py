"""ONNX: saving a texseg network as an ONNX graph and running one through onnxruntime.

:func:`save_onnx` writes a model with dynamic batch, height and width (the registered
logits models and the texture-embedding net; for the latter only the network is exported,
grouping its embeddings stays in Python). Its ``model.json`` description goes into the
graph's metadata, so ``texseg predict model.onnx IMAGE`` knows what the outputs are.
:func:`load_onnx` wraps an onnxruntime session as a module that the one prediction path
(:func:`texseg.inference.predict.predict_file`, tiling included) runs like any model.
onnx and onnxruntime are an optional extra: ``pip install texseg[onnx]``.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from texseg.errors import CheckpointError
from texseg.inference.embedding import is_embedding_model
from texseg.io import atomic_path

__all__ = ["OPSET", "OnnxModel", "load_onnx", "save_onnx"]

#: The ONNX opset written (onnxruntime 1.17+ runs it).
OPSET = 18
_META, _OUTPUTS = "texseg.model_json", "texseg.outputs"


def _require(module: str) -> Any:
    """Import an optional dependency or say in one line how to install it."""
    try:
        return __import__(module)
    except ImportError:
        raise CheckpointError(f"{module} is not installed; install the ONNX extra: pip install 'texseg[onnx]'"
                              ) from None


def save_onnx(model: nn.Module, path: str | os.PathLike[str], info: dict[str, Any] | None = None) -> Path:
    """Write ``model`` as an ONNX file with dynamic batch, height and width, atomically.

    Args:
        model: a texseg network (logits or embeddings out); exported in eval mode on the CPU.
        path: the ``.onnx`` file to write (replaced only once the new one is complete).
        info: the model's ``model.json`` description, stored in the graph's metadata
            (default: ``model.run_info``).

    Returns:
        The path written.
    """
    _require("onnx")
    _require("onnxscript")
    path = Path(path)
    info = info if info is not None else (getattr(model, "run_info", None) or {})
    was_training = model.training
    model.eval()
    channels = getattr(model, "in_channels", 1)
    example = torch.rand(2, channels, 64, 64, device=next(model.parameters()).device)
    dims = {0: torch.export.Dim("batch", min=1), 2: torch.export.Dim("height", min=16),
            3: torch.export.Dim("width", min=16)}
    try:
        # torch's exporter warns about its own internals (pytree specs): nothing a user can act on.
        with torch.no_grad(), atomic_path(path) as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            program = torch.onnx.export(model, (example,), None, dynamo=True, input_names=["image"],
                                        output_names=["output"], dynamic_shapes=({**dims},),
                                        opset_version=OPSET, verbose=False)
            proto = program.model_proto
            outputs = "embeddings" if is_embedding_model(model) else "logits"
            for key, value in ((_META, json.dumps(info, default=str)), (_OUTPUTS, outputs)):
                entry = proto.metadata_props.add()
                entry.key, entry.value = key, value
            _require("onnx").save(proto, str(tmp))
    finally:
        model.train(was_training)
    return path


class OnnxModel(nn.Module):
    """An onnxruntime session with a module's call: (B, C, H, W) float tensor -> (B, C_out, H, W) float32.

    Attributes:
        run_info: the ``model.json`` description stored at export ({} when absent).
        in_channels: the input channels the graph takes.
        outputs: ``logits`` or ``embeddings`` (what the graph's output is).
    """

    def __init__(self, path: str | os.PathLike[str], threads: int | None = None) -> None:
        super().__init__()
        ort = _require("onnxruntime")
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types for unreadable graphs
            raise CheckpointError(f"{path} is not an ONNX model onnxruntime can run "
                                  f"({str(e).splitlines()[0][:200]})") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        self.run_info: dict[str, Any] = json.loads(meta.get(_META, "{}"))
        shape = self.session.get_inputs()[0].shape
        self.in_channels = shape[1] if isinstance(shape[1], int) else 1
        self.outputs = meta.get(_OUTPUTS, "logits")
        self._input = self.session.get_inputs()[0].name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"input must have shape (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        array = np.ascontiguousarray(x.detach().float().cpu().numpy())
        return torch.from_numpy(self.session.run(None, {self._input: array})[0])


def load_onnx(path: str | os.PathLike[str], threads: int | None = None) -> OnnxModel:
    """An :class:`OnnxModel` for an ``.onnx`` file (CPU execution provider).

    Raises:
        CheckpointError: onnxruntime is missing, or the file is not a model it can run.
    """
    if not Path(path).is_file():
        raise CheckpointError(f"no ONNX model at {path}")
    return OnnxModel(path, threads)
