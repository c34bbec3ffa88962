"""Export a trained TrackingBERT for deployment (ONNX).

The exported graph takes ``input_ids``, ``token_type_ids`` (int64) and ``attention_mask`` (bool),
each (b, t) with dynamic batch size and width up to ``max_length``, and returns
``mlm_logits`` (b, t, v) and ``pair_logits`` (b,). It uses PyTorch's TorchScript-based ONNX
exporter, which needs no package beyond ``onnx``.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from tracklm._fs import atomic_output_file
from tracklm.errors import InputError
from tracklm.models.bert import TrackingBert

log = logging.getLogger(__name__)

ONNX_OPSET = 17
INPUT_NAMES = ["input_ids", "token_type_ids", "attention_mask"]
OUTPUT_NAMES = ["mlm_logits", "pair_logits"]


class ExportedHeads(nn.Module):
    """Encoder + masked-module head + pair head, returning plain tensors for export."""

    def __init__(self, model: TrackingBert) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, input_ids: Tensor, token_type_ids: Tensor, attention_mask: Tensor
    ) -> tuple[Tensor, Tensor]:
        out = self.model(input_ids, token_type_ids, attention_mask)
        return out.mlm_logits, out.pair_logits  # (b, t, v), (b,)


def export_onnx(model: TrackingBert, out: str | os.PathLike[str]) -> Path:
    """Write ``model`` (in eval mode) as an ONNX file, atomically.

    Parameters
    ----------
    model : the model to export; it is not modified.
    out : the ``.onnx`` file to write.

    Returns
    -------
    The path written.
    """
    try:
        import onnx  # noqa: F401  (the exporter needs it)
    except ImportError:
        raise InputError(
            "--format onnx: needs the 'onnx' package (pip install 'tracklm[export]')"
        ) from None
    wrapper = ExportedHeads(model).eval()
    t = model.config.max_length
    example = (
        torch.full((2, t), model.config.pad_token_id + 1, dtype=torch.long),
        torch.zeros(2, t, dtype=torch.long),
        torch.ones(2, t, dtype=torch.bool),
    )
    example[2][1, t // 2 :] = False  # a padded row, so the mask path is recorded
    dynamic = {name: {0: "batch", 1: "tokens"} for name in INPUT_NAMES}
    dynamic["mlm_logits"] = {0: "batch", 1: "tokens"}
    dynamic["pair_logits"] = {0: "batch"}
    out = Path(out)
    with atomic_output_file(out) as tmp, torch.no_grad(), warnings.catch_warnings():
        # The tracer warns about the (checked, constant) width comparison; the graph is still exact.
        # The TorchScript exporter is chosen on purpose (no onnxscript needed), so its deprecation
        # notice is not news to our users.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings(
            "ignore", "You are using the legacy TorchScript-based ONNX export", DeprecationWarning
        )
        torch.onnx.export(
            wrapper,
            example,
            str(tmp),
            input_names=INPUT_NAMES,
            output_names=OUTPUT_NAMES,
            dynamic_axes=dynamic,
            opset_version=ONNX_OPSET,
            dynamo=False,
        )
    log.info("wrote %s", out)
    return out


def run_export(model: str | os.PathLike[str], format: str, out: str | os.PathLike[str]) -> Path:
    """``tracklm export``: load the model directory ``model`` and write it in ``format`` to ``out``.

    Parameters
    ----------
    model : a model directory (``RUN/model``) written by ``TrackingBert.save_pretrained``.
    format : ``"onnx"``.
    out : output file.

    Returns
    -------
    The path written.
    """
    if format != "onnx":
        raise InputError(f"--format {format}: unknown export format (known: onnx)")
    loaded = TrackingBert.from_pretrained(model)
    return export_onnx(loaded, out)
