"""TrackingBERT: a BERT encoder over detector-module tokens, with its two pre-training heads.

Read top to bottom (nanoGPT style): outputs, embeddings, attention, block, heads, model; the
config (``TrackingBertConfig``) lives beside it in ``config.py``.
The encoder is a post-LayerNorm BERT, numerically the same as ``transformers.BertModel`` with
exact GELU (``tests/models/test_hf_parity.py``). It works on the real (unpadded) tokens only
(``TokenLayout``, ``layout.py``); with labels, its last block computes only what the heads read.

Heads: masked-module (dense + GELU + LayerNorm, then a decoder tied to the token embeddings,
run only where it is read: the vocabulary, about 4,010 tokens, dwarfs the hidden size, 64) and
pair (pooler on ``[CLS]``, or on the last token of a causal model, then one logit of
pT(B) > pT(A)); ``TrackingBert.heads_at``. A ``next-module`` model (``config.objective``) attends
causally, and its masked-module head predicts each next token.

Beside this file: ``heads.py`` (the two heads and the output records), ``inputs.py`` (what a ``geometry`` or ``hits``
model reads beside the token, and its hidden-hit position head), ``cpu_kernels.py`` (CPU training
fast paths: packed attention, cheap dropout), ``export.py`` (ONNX graphs), ``hub.py`` (model
directory and card).

Shape legend: ``b`` batch, ``t`` tokens (input width), ``n`` real (unpadded) tokens in the batch,
``d`` hidden, ``h`` heads, ``e`` head size (d / h), ``f`` feed-forward width, ``v`` vocabulary,
``k`` positions the masked-module head reads, ``m`` positions asked of the encoder.
"""

from __future__ import annotations

import math
import os
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tracklm.data.masking import IGNORE_INDEX
from tracklm.detector.vocab import ModuleVocab
from tracklm.errors import InputError
from tracklm.models import cpu_kernels, hub
from tracklm.models.config import TrackingBertConfig as TrackingBertConfig  # re-exported
from tracklm.models.cpu_kernels import Dropout, DropoutRng
from tracklm.models.heads import HeadOutputs as HeadOutputs  # re-exported
from tracklm.models.heads import MaskedModuleHead as MaskedModuleHead  # re-exported
from tracklm.models.heads import PairHead as PairHead  # re-exported
from tracklm.models.heads import TrackingBertOutput as TrackingBertOutput  # re-exported
from tracklm.models.inputs import ModuleInputs, PositionHead, to_global
from tracklm.models.layout import TokenLayout

AttentionBackend = Literal["packed", "eager", "sdpa"]
ATTENTION_BACKENDS: dict[str, AttentionBackend] = {"auto": "packed", "packed": "packed", "eager": "eager", "sdpa": "sdpa"}  # fmt: skip
"""The ``attention`` names ``TrackingBert`` takes, and the backend each selects (``auto``: the
default)."""
DROPOUT_RNGS: dict[str, DropoutRng] = {"sfc64": "sfc64", "torch": "torch"}


# ----------------------------------------------------------------------------- modules
def sinusoidal_positions(config: TrackingBertConfig) -> Tensor:
    """(max_length, d) fixed sine/cosine position table of "Attention is all you need"."""
    position = torch.arange(config.max_length, dtype=torch.float32)[:, None]
    frequency = torch.exp(
        torch.arange(0, config.hidden_size, 2, dtype=torch.float32)
        * (-math.log(10000.0) / config.hidden_size)
    )
    table = torch.zeros(config.max_length, config.hidden_size)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency[: config.hidden_size // 2])
    return table


class Embeddings(nn.Module):
    """Token + segment + position embeddings, then LayerNorm and dropout."""

    sinusoid: Tensor  # (max_length, d), a buffer with ``position_embedding="sinusoidal"``

    def __init__(self, config: TrackingBertConfig, dropout_rng: DropoutRng) -> None:
        super().__init__()
        d = config.hidden_size
        self.token = nn.Embedding(config.vocab_size, d, padding_idx=config.pad_token_id)
        self.segment = nn.Embedding(config.type_vocab_size, d)
        self.position: nn.Embedding | None = None
        if config.position_embedding == "learned":
            self.position = nn.Embedding(config.max_length, d)
        else:
            self.register_buffer("sinusoid", sinusoidal_positions(config), persistent=False)
        self.norm = cpu_kernels.LayerNorm(d, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.dropout, dropout_rng)

    def forward(
        self,
        input_ids: Tensor,
        token_type_ids: Tensor,
        layout: TokenLayout,
        extra: Tensor | None = None,
        first_position: int = 0,
    ) -> Tensor:
        """(b, t) ids and segments -> (n, d) embedded real tokens; ``extra`` (n, d) is added
        before the LayerNorm (the module geometry and hit inputs, ``inputs.py``). The columns
        sit at positions ``first_position`` ... (a causal model's later tokens, one step at a
        time: ``decoding.py``)."""
        t = input_ids.shape[1]
        positions = torch.arange(first_position, first_position + t, device=input_ids.device)
        positions = positions.expand_as(input_ids)
        table: Tensor = self.position.weight if self.position is not None else self.sinusoid
        # F.embedding rather than table[...]: its gradient is faster to accumulate, and in an
        # order that does not depend on the thread count (cpu_kernels.THREAD_INVARIANT).
        x = (
            self.token(layout.pack(input_ids))
            + self.segment(layout.pack(token_type_ids))
            + F.embedding(layout.pack(positions), table)
        )  # (n, d)
        if extra is not None:
            x = x + extra
        out: Tensor = self.dropout(self.norm(x))
        return out


class SelfAttention(nn.Module):
    """Multi-head self-attention with one fused query/key/value projection.

    ``backend`` is chosen once, by name, when the model is built:

    * ``"sdpa"``: ``torch.nn.functional.scaled_dot_product_attention`` (with its own dropout);
    * ``"eager"``: the products written out (scores, additive key mask, softmax, ``Dropout``);
    * ``"packed"`` (the default): ``cpu_kernels.PackedAttention`` where it applies (training on
      the CPU in float32, eager mode); elsewhere ``"eager"`` while training with attention
      dropout (SDPA's dropout falls back to a slow generic path on the CPU) and ``"sdpa"``
      otherwise.
    """

    def __init__(
        self, config: TrackingBertConfig, backend: AttentionBackend, dropout_rng: DropoutRng
    ) -> None:
        super().__init__()
        self.num_heads = config.num_heads
        self.backend = backend
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.out = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = Dropout(config.attention_dropout, dropout_rng)

    def forward(self, x: Tensor, layout: TokenLayout, rows: Tensor | None = None) -> Tensor:
        """(n, d) packed tokens -> (n, d), or (m, d) at the packed ``rows`` (m,) only."""
        y = self.attend(x, layout)  # (n, d), before the output projection
        out: Tensor = self.out(y if rows is None else y.index_select(0, rows))
        return out

    def attend(self, x: Tensor, layout: TokenLayout) -> Tensor:
        """(n, d) packed tokens -> (n, d) attention output, heads concatenated."""
        b, t, d, h = layout.batch, layout.width, x.shape[-1], self.num_heads
        e = d // h
        p = self.dropout.p if self.training else 0.0
        backend = self.backend
        if backend == "packed":
            if cpu_kernels.packed_attention_applies(x, self.training):
                keep = self.dropout.multiplier((b * h, t, t), x.dtype) if p > 0.0 else None
                return cpu_kernels.packed_attention(self.qkv(x), layout, h, keep)
            backend = "eager" if p > 0.0 else "sdpa"
        qkv = layout.spread(self.qkv(x))  # (b, t, 3d), copies of a real row at padding
        q, k, v = qkv.view(b, t, 3, h, e).permute(2, 0, 3, 1, 4).unbind(0)  # (b, h, t, e) each
        if backend == "sdpa":
            mask = layout.attention_mask()
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        else:
            scores = torch.matmul(q * e**-0.5, k.transpose(-1, -2))  # (b, h, t, t)
            if layout.masked:
                scores = scores + layout.key_bias(scores.dtype)  # -inf where masked
            y = torch.matmul(self.dropout(torch.softmax(scores, dim=-1)), v)  # (b, h, t, e)
        return layout.pack(y.transpose(1, 2).reshape(b, t, d))  # (n, d)


class FeedForward(nn.Module):
    """Position-wise d -> f -> d with exact GELU."""

    def __init__(self, config: TrackingBertConfig) -> None:
        super().__init__()
        self.up = nn.Linear(config.hidden_size, config.intermediate_size)
        self.down = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.down(F.gelu(self.up(x)))
        return out


class Block(nn.Module):
    """Post-LayerNorm encoder block, as in the original BERT."""

    def __init__(
        self, config: TrackingBertConfig, attention: AttentionBackend, dropout_rng: DropoutRng
    ) -> None:
        super().__init__()
        self.attention = SelfAttention(config, attention, dropout_rng)
        self.attention_norm = cpu_kernels.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.feed_forward = FeedForward(config)
        self.output_norm = cpu_kernels.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.dropout, dropout_rng)

    def forward(self, x: Tensor, layout: TokenLayout, rows: Tensor | None = None) -> Tensor:
        """(n, d) packed tokens -> (n, d); with ``rows`` (m,), the outputs at those rows only.

        Every token still serves as a key and value; only the per-token work after attention
        (output projection, feed-forward, LayerNorms) is limited to ``rows``.
        """
        attended = self.attention(x, layout, rows)
        if rows is not None:
            x = x.index_select(0, rows)
        return self.after_attention(x, attended)

    def after_attention(self, x: Tensor, attended: Tensor) -> Tensor:
        """The block's per-token work on its input rows ``x`` and their attention output."""
        x = self.attention_norm(x + self.dropout(attended))
        out: Tensor = self.output_norm(x + self.dropout(self.feed_forward(x)))
        return out


# ----------------------------------------------------------------------------- model
class TrackingBert(nn.Module):
    """TrackingBERT encoder with its masked-module and pair heads.

    Parameters
    ----------
    config : the architecture.
    attention : attention backend by name (``ATTENTION_BACKENDS``): ``"auto"`` (``"packed"``),
        ``"packed"``, ``"eager"`` or ``"sdpa"`` (see ``SelfAttention``). It changes how the model
        computes, not what (up to float rounding and dropout draws), and is not saved with it.
    dropout_rng : ``"sfc64"`` (16-bit masks from a fast generator on the CPU) or ``"torch"``.
    prune_last_block : with labels, let the last block compute only the positions the heads
        read (False computes every position and selects afterwards; for measurement).

    Attributes
    ----------
    vocab : the ``ModuleVocab`` the model was trained with (set by ``from_pretrained``), or None.
    """

    def __init__(
        self,
        config: TrackingBertConfig,
        *,
        attention: str = "auto",
        dropout_rng: str = "sfc64",
        prune_last_block: bool = True,
    ) -> None:
        super().__init__()
        for option, name, known in (("attention", attention, ATTENTION_BACKENDS),
                                    ("dropout_rng", dropout_rng, DROPOUT_RNGS)):  # fmt: skip
            if name not in known:
                raise InputError(f"{option} {name!r} is unknown (known: {', '.join(known)})")
        backend, rng = ATTENTION_BACKENDS[attention], DROPOUT_RNGS[dropout_rng]
        self.config = config
        self.attention_backend = backend
        self.prune_last_block = prune_last_block
        self.embeddings = Embeddings(config, rng)
        self.blocks = nn.ModuleList([Block(config, backend, rng) for _ in range(config.num_layers)])
        self.mlm_head = MaskedModuleHead(config)
        self.pair_head = PairHead(config, difference=config.pair_head == "difference")
        self.module_inputs: ModuleInputs | None = None
        self.position_head: PositionHead | None = None
        if config.reads_geometry:
            self.module_inputs = ModuleInputs(
                config.vocab_size, config.hidden_size, config.reads_hits
            )
        if config.reads_hits:
            self.position_head = PositionHead(config.hidden_size)
        self.vocab: ModuleVocab | None = None
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def embedding_table(self) -> Tensor:
        """(v, d) token embedding weight (the masked-module decoder weight of a ``tokens`` model)."""
        return self.embeddings.token.weight

    def decoder_table(self, geometry: Tensor | None = None) -> Tensor:
        """(v, d) the masked-module decoder's weight: the token embeddings, plus the module
        geometry's part of the input embedding in a ``hits`` model (``geometry``: that part when
        already computed). A ``hits`` model then names a module by where it is; a ``geometry``
        model keeps the paper's decoder (measured on the demo's data: tied to the geometry too,
        it learned slower than the tokens model, validation loss 1.77 against 1.69 at step
        4,319; untied, 1.69)."""
        if self.module_inputs is None or not self.config.reads_hits:
            return self.embedding_table()
        if geometry is None:
            geometry = self.module_inputs.module_embeddings()
        return self.embedding_table() + geometry

    def set_module_geometry(self, table: Tensor | Any) -> None:
        """Set the (v, ``N_GEOMETRY``) module table (``inputs.module_geometry_table``) that a
        ``geometry`` or ``hits`` model reads; it is saved with the weights."""
        if self.module_inputs is None:
            raise ValueError("a model with inputs 'tokens' holds no module geometry")
        self.module_inputs.set_table(table)

    def num_parameters(self) -> int:
        """Number of trainable numbers (the tied table counted once)."""
        return sum(p.numel() for p in self.parameters())

    # ------------------------------------------------------------------ encoder
    def encode(
        self,
        input_ids: Tensor,
        token_type_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        *,
        at: Tensor | None = None,
        hits: Tensor | None = None,
        geometry: Tensor | None = None,
    ) -> Tensor:
        """Encoder output.

        Parameters
        ----------
        input_ids : (b, t) token ids, t <= ``config.max_length``.
        token_type_ids : (b, t) segment ids (0 for ``[CLS] A [SEP]``, 1 for ``B [SEP]``); zeros if None.
        attention_mask : (b, t) bool or 0/1, True on real tokens; all real if None. Each row needs
            at least one real token. Outputs at real positions do not depend on the padding.
        at : (m,) positions in the flattened (b * t) grid (``row * t + position``) whose output
            is wanted, or None for all. The last block then computes only those (its keys and
            values still come from every token).
        hits : (b, t, 3) measured hit positions in mm, NaN where unknown (special tokens, hidden
            hits); required by an ``inputs: hits`` model, ignored by the others. A position is
            read only at module tokens (``inputs.known_hits``): never at ``[MASK]``.
        geometry : the (v, d) ``ModuleInputs.module_embeddings`` when already computed (for
            ``heads_at``, whose decoder reads them too); computed here when None.

        Returns
        -------
        (b, t, d) hidden states, zeros at padded positions; with ``at``, (m, d) at those positions.
        """
        b, t = input_ids.shape
        if t > self.config.max_length:
            raise InputError(f"input width {t} exceeds the model's max_length {self.config.max_length}")  # fmt: skip
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        mask = attention_mask.bool() if attention_mask is not None else None
        layout = TokenLayout.of(mask, b, t, causal=self.config.causal)
        extra = None
        if self.module_inputs is not None:
            if self.config.reads_hits and hits is None:
                raise ValueError("this model reads hit positions (inputs: hits): pass hits")
            packed_hits = layout.pack(hits) if self.config.reads_hits and hits is not None else None
            table = self.module_inputs.module_embeddings() if geometry is None else geometry
            extra = self.module_inputs(layout.pack(input_ids), packed_hits, table)  # (n, d)
        x: Tensor = self.embeddings(input_ids, token_type_ids, layout, extra)  # (n, d)
        for block in self.blocks[:-1]:
            x = block(x, layout)
        if at is None:
            return layout.unpack(self.blocks[-1](x, layout))  # (b, t, d)
        hidden: Tensor = self.blocks[-1](x, layout, layout.rows_at(at))  # (m, d)
        if layout.key_mask is not None:  # zeros at padded positions, as without ``at``
            real = layout.key_mask.reshape(-1).index_select(0, at)  # (m,)
            hidden = hidden * real[:, None].to(hidden.dtype)
        return hidden

    # ------------------------------------------------------------------ heads
    def summary_positions(self, attention_mask: Tensor | None, b: int, t: int) -> Tensor:
        """(b,) positions in the flattened (b * t) grid of the token that sums up each row for
        the pair head and the tasks' track-level heads: ``[CLS]`` (position 0) of a masked
        model; the last real token of a causal one (the only one that sees the whole row)."""
        device = self.embeddings.token.weight.device
        if attention_mask is not None:
            device = attention_mask.device
        start = torch.arange(b, device=device) * t
        if not self.config.causal:
            return start
        if attention_mask is None:
            return start + (t - 1)
        return start + attention_mask.long().sum(1) - 1

    def pair_positions(
        self, token_type_ids: Tensor | None, attention_mask: Tensor | None, b: int, t: int
    ) -> Tensor:
        """Positions in the flattened (b * t) grid that the pair head reads: ``summary_positions``
        (b,), or with ``pair_head: difference`` (2b,), the ``[SEP]`` ending each row's track A
        and then the one ending its track B (the same token for a single track, scored 0)."""
        if self.config.pair_head != "difference":
            return self.summary_positions(attention_mask, b, t)
        device = self.embeddings.token.weight.device
        if attention_mask is not None:
            device = attention_mask.device
        start = torch.arange(b, device=device) * t
        real = (
            torch.ones(b, t, dtype=torch.long, device=device)
            if attention_mask is None
            else attention_mask.long()
        )
        first = real if token_type_ids is None else real * (token_type_ids == 0).long()
        return torch.cat([start + first.sum(1) - 1, start + real.sum(1) - 1])

    def summary(self, hidden: Tensor, attention_mask: Tensor | None) -> Tensor:
        """(b, t, d) encoder output -> (b, d) at each row's ``summary_positions``."""
        b, t = hidden.shape[:2]
        return hidden.reshape(b * t, -1)[self.summary_positions(attention_mask, b, t)]

    def heads_at(
        self,
        input_ids: Tensor,
        token_type_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        at: Tensor | None = None,
        *,
        pair: bool = True,
        hits: Tensor | None = None,
    ) -> HeadOutputs:
        """The masked-module head at chosen positions (or all) and the pair head.

        Parameters
        ----------
        input_ids, token_type_ids, attention_mask : see ``encode``; (b, t).
        at : (k,) positions in the flattened (b * t) grid, in any order, repeats allowed; None
            for every position. With ``at`` the last block computes only those k positions and
            the b tokens the pair head reads (``summary_positions``; ``prune_last_block``).
        pair : also compute the pair logits.
        hits : see ``encode``.

        Returns
        -------
        HeadOutputs: mlm_logits (k, v) in the order of ``at``, or (b, t, v); pair_logits (b,) or
        None; hidden_states (b, t, d) without ``at``, else None; rows (k, d) with ``at``.
        """
        geometry = None if self.module_inputs is None else self.module_inputs.module_embeddings()
        table = self.decoder_table(geometry)
        if at is None:
            hidden = self.encode(
                input_ids, token_type_ids, attention_mask, hits=hits, geometry=geometry
            )  # (b, t, d)
            pair_logits = scores = None
            if pair:
                b, t = input_ids.shape
                read = self.pair_positions(token_type_ids, attention_mask, b, t)
                pair_logits, scores = self.pair_head.classify_with_scores(
                    hidden.reshape(b * t, -1)[read]
                )
            return HeadOutputs(
                self.mlm_head(hidden, table), pair_logits, hidden, pair_scores=scores
            )
        b, t = input_ids.shape
        k = at.shape[0]
        if pair:
            read = self.pair_positions(token_type_ids, attention_mask, b, t)
            at = torch.cat([at, read])  # (k + b,), or (k + 2b,) with pair_head: difference
        if self.prune_last_block:
            rows = self.encode(
                input_ids, token_type_ids, attention_mask, at=at, hits=hits, geometry=geometry
            )
        else:
            hidden = self.encode(
                input_ids, token_type_ids, attention_mask, hits=hits, geometry=geometry
            )
            rows = hidden.reshape(b * t, -1).index_select(0, at)  # (k [+ b], d)
        pair_logits = scores = None
        if pair:
            pair_logits, scores = self.pair_head.classify_with_scores(rows[k:])
        return HeadOutputs(
            self.mlm_head(rows[:k], table), pair_logits, None, rows[:k], pair_scores=scores
        )

    def forward(
        self,
        input_ids: Tensor,
        token_type_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        labels: Tensor | None = None,
        pair_labels: Tensor | None = None,
        *,
        hits: Tensor | None = None,
        hit_labels: Tensor | None = None,
    ) -> TrackingBertOutput:
        """Encoder, masked-module head and pair head, with losses when labels are given.

        Parameters
        ----------
        input_ids, token_type_ids, attention_mask : see ``encode``.
        labels : (b, t) true token ids at the positions to predict, ``IGNORE_INDEX`` (-100)
            elsewhere. The masked-module head then runs only on those k positions.
        pair_labels : (b,) 1 where pT(B) > pT(A), 0 otherwise (float or int); -100 ignores a row.
        hits : (b, t, 3) visible hit positions (see ``encode``); NaN at every labelled position.
        hit_labels : (b, t, 3) true positions (mm) of the hidden hits at the labelled positions
            (NaN elsewhere): trains the position head of an ``inputs: hits`` model.

        Returns
        -------
        TrackingBertOutput.
        """
        mlm_loss: Tensor | None = None
        pair_loss: Tensor | None = None
        hit_loss: Tensor | None = None
        if labels is None:
            heads = self.heads_at(input_ids, token_type_ids, attention_mask, hits=hits)
        else:
            flat_labels = labels.reshape(-1)  # (b*t,)
            where = (flat_labels != IGNORE_INDEX).nonzero().squeeze(1)  # (k,) row-major
            heads = self.heads_at(input_ids, token_type_ids, attention_mask, where, hits=hits)
            if where.shape[0] > 0:
                mlm_loss = F.cross_entropy(heads.mlm_logits.float(), flat_labels[where])
            else:
                mlm_loss = heads.mlm_logits.sum() * 0.0  # keeps the graph, no labelled position
            if self.position_head is not None and hit_labels is not None:
                assert heads.rows is not None
                hit_loss = self._position_loss(heads.rows, flat_labels[where], hit_labels, where)
        pair_logits = heads.pair_logits
        assert pair_logits is not None
        if pair_labels is not None:
            pair_targets = pair_labels.to(pair_logits.dtype)
            keep = pair_labels != IGNORE_INDEX
            pair_loss = F.binary_cross_entropy_with_logits(
                pair_logits[keep].float(), pair_targets[keep].float()
            )
        weighted = None if hit_loss is None else hit_loss * self.config.position_loss_weight
        losses = [x for x in (mlm_loss, pair_loss, weighted) if x is not None]
        return TrackingBertOutput(
            loss=sum(losses[1:], losses[0]) if losses else None,
            mlm_loss=mlm_loss,
            pair_loss=pair_loss,
            mlm_logits=heads.mlm_logits,
            pair_logits=pair_logits,
            hidden_states=heads.hidden_states,
            position_loss=hit_loss,
            pair_scores=heads.pair_scores,
        )

    def _position_loss(
        self, rows: Tensor, targets: Tensor, hit_labels: Tensor, where: Tensor
    ) -> Tensor:
        """Position loss at the k labelled positions (their hidden rows (k, d), true tokens (k,))."""
        assert self.position_head is not None and self.module_inputs is not None
        true_mm = hit_labels.reshape(-1, 3).index_select(0, where).float()  # (k, 3)
        return self.position_head.loss(rows, self.module_inputs.module_geometry[targets], true_mm)

    def locate(self, rows: Tensor, modules: Tensor) -> Tensor:
        """Predicted hidden-hit positions (k, 3) in mm, on the planes of ``modules`` (k,) token
        ids, from the hidden states ``rows`` (k, d) at the hidden hits (``heads_at(...).rows``)."""
        if self.position_head is None or self.module_inputs is None:
            raise ValueError("only an inputs: hits model predicts hit positions")
        table = self.module_inputs.module_geometry[modules]
        return to_global(table, self.position_head(rows, table).to(table.dtype))

    def predict_masked(
        self,
        input_ids: Tensor,
        token_type_ids: Tensor | None,
        attention_mask: Tensor | None,
        positions: Tensor,
        *,
        hits: Tensor | None = None,
    ) -> Tensor:
        """Masked-module logits at chosen positions only (for evaluation).

        Parameters
        ----------
        input_ids, token_type_ids, attention_mask, hits : see ``encode``; (b, t).
        positions : (k, 2) integer (row, input position) pairs, e.g. ``offset_a + hit_index``.

        Returns
        -------
        (k, v) logits, one row per pair, in the order given.
        """
        return self.masked_heads(
            input_ids, token_type_ids, attention_mask, positions, hits
        ).mlm_logits

    def masked_heads(
        self,
        input_ids: Tensor,
        token_type_ids: Tensor | None,
        attention_mask: Tensor | None,
        positions: Tensor,
        hits: Tensor | None = None,
    ) -> HeadOutputs:
        """``heads_at`` at (k, 2) (row, input position) pairs, without the pair head: the
        logits (k, v) and the hidden rows (k, d) that ``locate`` reads. A causal model predicts
        the token at position p from position p - 1 (which sees nothing from p on)."""
        positions = positions.to(device=input_ids.device, dtype=torch.long)
        at = positions[:, 0] * input_ids.shape[1] + positions[:, 1]  # (k,) in the (b * t) grid
        if self.config.causal:
            at = at - 1
        return self.heads_at(input_ids, token_type_ids, attention_mask, at, pair=False, hits=hits)

    # ------------------------------------------------------------------ vocabulary, save, load
    def check_vocab(self, vocab: ModuleVocab, where: str = "dataset") -> None:
        """Refuse a dataset vocabulary that differs from the model's own (``hub.check_vocab``);
        ``where`` names it in the message."""
        hub.check_vocab(self, vocab, where)

    def save_pretrained(
        self,
        directory: str | os.PathLike[str],
        vocab: ModuleVocab,
        card: dict[str, Any] | None = None,
    ) -> None:
        """Write ``config.json``, ``model.safetensors``, ``vocab.json`` and a ``README.md`` model
        card; see ``tracklm.models.hub.save_pretrained``."""
        hub.save_pretrained(self, directory, vocab, card)

    @classmethod
    def from_pretrained(
        cls,
        directory: str | os.PathLike[str],
        map_location: str | torch.device = "cpu",
        *,
        attention: str = "auto",
    ) -> TrackingBert:
        """Rebuild a model (eval mode, ``vocab`` set) from a directory written by
        ``save_pretrained``; runs no code from it. See ``tracklm.models.hub.from_pretrained``."""
        return hub.from_pretrained(cls, directory, map_location, attention=attention)
