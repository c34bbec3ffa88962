"""Export a trained TrackingBERT for deployment (ONNX).

Two graphs can be written; ``tracklm export`` writes the first (``head="masked"``).

``head="masked"`` (default): the masked-module head runs only at the positions asked for, as the
library's own prediction does (``TrackingBert.predict_masked``). Inputs:

* ``input_ids`` int64 (b, t), ``token_type_ids`` int64 (b, t), ``attention_mask`` bool (b, t):
  pairs laid out by ``tracklm.data.sequences.encode_pairs`` (dynamic b, and t up to
  ``max_length``);
* ``positions`` int64 (k, 2): (row, input position) of each position to score, e.g.
  ``(i, offset_a[i] + hit)`` for a masked hit of track A of pair i (dynamic k; k = 0 is allowed).

Outputs: ``mlm_logits`` float32 (k, v), one row per entry of ``positions`` in the order given,
and ``pair_logits`` float32 (b,), the logit of pT(B) > pT(A).

``head="full"``: inputs ``input_ids``, ``token_type_ids``, ``attention_mask`` as above; outputs
``mlm_logits`` float32 (b, t, v) at every position and ``pair_logits`` (b,). It writes and
returns ``t / k`` times more logits than needed for a few masked hits (19x for one masked hit per
pair of width 19), which makes it slower than eager PyTorch; use it to score every position.

Models that read more than the tokens (``config.inputs``): a ``geometry`` model's module table
is a constant of the graph, its inputs and outputs are the ones above. A ``hits`` model's graphs
take one more input, ``hits`` float32 (b, t, 3): the measured positions in mm of the visible
hits laid out like ``input_ids`` (``tracklm.data.sequences.place_hits``), NaN where unknown (the
graph, like the model, reads a position only where it is finite and the token is a module, never
at ``[MASK]``). They give one more output, ``hit_positions`` float32 (k, 3) (``full``:
(b, t, 3)): where the hidden hit lies, in mm, on the plane of its most likely module (the highest
logit among the tokens with a module geometry), as ``TrackingBert.locate`` gives it.

Both graphs are ``TrackingBert.heads_at`` traced on a copy of the model whose attention is
``GatherAttention``. They run the per-token layers on the real tokens only, as eager PyTorch
does, but move rows between the packed tokens and the (b, t) attention grid with Gather nodes
only: scatters (ScatterND) and the Split/Transpose pattern of multi-head attention were the
slowest nodes in ONNX Runtime, and a Gather of head-size rows costs half a Transpose. Attention
is plain MatMul, Add (key mask) and Softmax, with the 1/sqrt(e) scale folded into the query
weights of the exported copy. The last block computes only the positions asked for (every
position in the ``full`` graph, gathered rather than unpacked by a scatter) and the b ``[CLS]``
tokens. Run ONNX Runtime with subnormals flushed to zero
(``SessionOptions.add_session_config_entry("session.set_denormal_as_zero", "1")``): a trained
model's attention weights reach the subnormal range, where ORT's Softmax runs several times
slower (``docs/performance.md``).

Both use PyTorch's TorchScript-based ONNX exporter (opset 17), which needs no package beyond
``onnx``.
"""

from __future__ import annotations

import copy
import logging
import os
import warnings
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

from tracklm._fs import atomic_output_file
from tracklm.errors import InputError
from tracklm.models.bert import Block, SelfAttention, TrackingBert
from tracklm.models.layout import TokenLayout

log = logging.getLogger(__name__)

ONNX_OPSET = 17
INPUT_NAMES = ["input_ids", "token_type_ids", "attention_mask"]
MASKED_INPUT_NAMES = [*INPUT_NAMES, "positions"]
OUTPUT_NAMES = ["mlm_logits", "pair_logits"]
HITS_INPUT = "hits"
HITS_OUTPUT = "hit_positions"
HEADS = ("masked", "full")


class GatherAttention(SelfAttention):
    """``SelfAttention`` for exported graphs: heads move by Gather, not by Split, Transpose and
    ScatterND, and the 1/sqrt(e) of the scores is folded into the query weights.

    Built from a trained attention module, whose projections it takes over (the caller passes a
    copy: the query weights are scaled in place). Inference only.
    """

    def __init__(self, attention: SelfAttention) -> None:
        nn.Module.__init__(self)
        self.num_heads = attention.num_heads
        self.backend = attention.backend
        self.qkv, self.out, self.dropout = attention.qkv, attention.out, attention.dropout
        d, e = self.out.in_features, self.out.in_features // self.num_heads
        with torch.no_grad():
            self.qkv.weight[:d] *= e**-0.5
            self.qkv.bias[:d] *= e**-0.5

    def attend(self, x: Tensor, layout: TokenLayout) -> Tensor:
        """(n, d) packed tokens -> (n, d) attention output, heads concatenated."""
        b, t, d, h = layout.batch, layout.width, x.shape[-1], self.num_heads
        e = d // h
        query, out = head_rows(layout, h)  # (b, h, t), (n, h)
        rows = self.qkv(x).reshape(-1, e)  # (n * 3h, e): [q heads, k heads, v heads] per token
        q, k, v = rows[query], rows[query + h], rows[query + 2 * h]  # (b, h, t, e) each
        scores = torch.matmul(q, k.transpose(-1, -2))  # (b, h, t, t), queries prescaled
        if layout.masked:
            scores = scores + layout.key_bias(scores.dtype)
        y = torch.matmul(torch.softmax(scores, dim=-1), v)  # (b, h, t, e)
        return y.reshape(b * h * t, e)[out].reshape(-1, d)  # (n, d)


def head_rows(layout: TokenLayout, num_heads: int) -> tuple[Tensor, Tensor]:
    """Row indices for attention by gathers, with h heads of size e (built once per batch).

    Returns (b, h, t) the row of each (batch row, head, position) in the packed projections
    viewed as (n * 3h, e) rows [query rows; add h for keys, 2h for values], padding pointing at
    row 0's (its keys are masked); and (n, h) the row of each packed token and head in a
    (b * h * t, e) grid.
    """

    def build_query() -> Tensor:
        b, t, h = layout.batch, layout.width, num_heads
        heads = torch.arange(h, device=layout.device)
        return layout.any_source().view(b, 1, t) * (3 * h) + heads.view(1, h, 1)

    def build_out() -> Tensor:
        b, t, h = layout.batch, layout.width, num_heads
        heads = torch.arange(h, device=layout.device)
        real = layout.real if layout.real is not None else torch.arange(b * t, device=layout.device)
        row, position = real // t, real % t  # (n,)
        return (row[:, None] * h + heads[None, :]) * t + position[:, None]

    query = layout.cached(("head_rows_query", num_heads), build_query)
    return query, layout.cached(("head_rows_out", num_heads), build_out)


def exported_copy(model: TrackingBert) -> TrackingBert:
    """A copy of ``model`` for tracing: eval mode, attention by gathers (``GatherAttention``)."""
    model = copy.deepcopy(model).eval()
    for block in model.blocks:
        assert isinstance(block, Block)
        block.attention = GatherAttention(block.attention)
    return model


def located_hits(model: TrackingBert, mlm_logits: Tensor, rows: Tensor) -> Tensor:
    """(k, 3) predicted positions in mm of hidden hits from their (k, v) logits and (k, d) hidden
    rows, on the plane of the most likely module (tokens without a module geometry excluded)."""
    assert model.module_inputs is not None
    is_module = model.module_inputs.module_geometry[:, 14] > 0.5  # (v,)
    best = mlm_logits.masked_fill(~is_module, float("-inf")).argmax(dim=-1)  # (k,)
    return model.locate(rows, best)


class ExportedHeads(nn.Module):
    """Encoder + masked-module head at every position + pair head (the ``full`` graph); with a
    ``hits`` model, also the predicted position of a hidden hit at every position. A
    ``next-module`` model's scores at position t are those of the token at t + 1."""

    def __init__(self, model: TrackingBert) -> None:
        super().__init__()
        self.model = exported_copy(model)

    def forward(
        self,
        input_ids: Tensor,
        token_type_ids: Tensor,
        attention_mask: Tensor,
        hits: Tensor | None = None,
    ) -> tuple[Tensor, ...]:
        b, t = input_ids.shape
        every = torch.arange(b * t, device=input_ids.device)  # gathers, where unpacking scatters
        heads = self.model.heads_at(input_ids, token_type_ids, attention_mask, every, hits=hits)
        assert heads.pair_logits is not None
        outputs = (heads.mlm_logits.view(b, t, -1), heads.pair_logits)  # (b, t, v), (b,)
        if not self.model.config.reads_hits:
            return outputs
        assert heads.rows is not None
        located = located_hits(self.model, heads.mlm_logits, heads.rows)  # (b * t, 3)
        return (*outputs, located.view(b, t, 3))


class ExportedMaskedHeads(nn.Module):
    """Encoder + masked-module head at given (row, position) pairs + pair head (the ``masked``
    graph); with a ``hits`` model, also the predicted positions of the hidden hits there. A
    ``next-module`` model scores position p from position p - 1 (``TrackingBert.masked_heads``)."""

    def __init__(self, model: TrackingBert) -> None:
        super().__init__()
        self.model = exported_copy(model)

    def forward(
        self,
        input_ids: Tensor,
        token_type_ids: Tensor,
        attention_mask: Tensor,
        positions: Tensor,
        hits: Tensor | None = None,
    ) -> tuple[Tensor, ...]:
        at = positions[:, 0] * input_ids.shape[1] + positions[:, 1]  # (k,) in the (b * t) grid
        if self.model.config.causal:  # as ``masked_heads``: position p scored from p - 1
            at = at - 1
        heads = self.model.heads_at(input_ids, token_type_ids, attention_mask, at, hits=hits)
        assert heads.pair_logits is not None
        if not self.model.config.reads_hits:
            return heads.mlm_logits, heads.pair_logits  # (k, v), (b,)
        assert heads.rows is not None
        located = located_hits(self.model, heads.mlm_logits, heads.rows)  # (k, 3)
        return heads.mlm_logits, heads.pair_logits, located


def export_onnx(
    model: TrackingBert, out: str | os.PathLike[str], head: Literal["masked", "full"] = "masked"
) -> Path:
    """Write ``model`` (in eval mode) as an ONNX file, atomically.

    Parameters
    ----------
    model : the model to export; it is not modified.
    out : the ``.onnx`` file to write.
    head : ``"masked"`` (default: a ``positions`` (k, 2) input, (k, v) masked-module logits) or
        ``"full"`` ((b, t, v) logits at every position); see the module docstring (a ``hits``
        model's graphs also take ``hits`` and give ``hit_positions``).

    Returns
    -------
    The path written.
    """
    if head not in HEADS:
        raise InputError(f"export head {head!r} is unknown (known: {', '.join(HEADS)})")
    try:
        import onnx  # noqa: F401  (the exporter needs it)
    except ImportError:
        raise InputError(
            "--format onnx: needs the 'onnx' package (pip install 'tracklm[export]')"
        ) from None
    t = model.config.max_length
    example: tuple[Tensor, ...] = (
        torch.full((2, t), model.config.pad_token_id + 1, dtype=torch.long),
        torch.zeros(2, t, dtype=torch.long),
        torch.ones(2, t, dtype=torch.bool),
    )
    example[2][1, t // 2 :] = False  # a padded row, so the mask path is recorded
    dynamic = {name: {0: "batch", 1: "tokens"} for name in INPUT_NAMES}
    dynamic["pair_logits"] = {0: "batch"}
    output_names = list(OUTPUT_NAMES)
    if head == "masked":
        wrapper: nn.Module = ExportedMaskedHeads(model).eval()
        example = (*example, torch.tensor([[0, 1], [1, 2], [0, t - 1]], dtype=torch.long))
        input_names = list(MASKED_INPUT_NAMES)
        dynamic["positions"] = {0: "positions"}
        dynamic["mlm_logits"] = {0: "positions"}
        dynamic[HITS_OUTPUT] = {0: "positions"}
    else:
        wrapper = ExportedHeads(model).eval()
        input_names = list(INPUT_NAMES)
        dynamic["mlm_logits"] = {0: "batch", 1: "tokens"}
        dynamic[HITS_OUTPUT] = {0: "batch", 1: "tokens"}
    if model.config.reads_hits:
        example = (*example, example_hits(2, t))
        input_names.append(HITS_INPUT)
        output_names.append(HITS_OUTPUT)
        dynamic[HITS_INPUT] = {0: "batch", 1: "tokens"}
    else:
        del dynamic[HITS_OUTPUT]
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
            input_names=input_names,
            output_names=output_names,
            dynamic_axes=dynamic,
            opset_version=ONNX_OPSET,
            dynamo=False,
        )
    log.info("wrote %s (%s head)", out, head)
    return out


def example_hits(batch: int, width: int) -> Tensor:
    """(batch, width, 3) positions in mm for tracing: finite, with NaN at ``[CLS]`` and in the
    second half of the last row (the values do not shape the graph; the NaN only document it)."""
    hits = torch.linspace(-100.0, 100.0, batch * width * 3).reshape(batch, width, 3)
    hits[:, 0] = float("nan")
    hits[-1, width // 2 :] = float("nan")
    return hits


def run_export(model: str | os.PathLike[str], format: str, out: str | os.PathLike[str]) -> Path:
    """``tracklm export``: load the model directory ``model`` and write it in ``format`` to ``out``.

    Writes the ``masked`` graph (a ``positions`` input; see the module docstring); the ``full``
    graph is ``export_onnx(model, out, head="full")``.

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
