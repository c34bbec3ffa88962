"""The one contract that every downstream task follows, and the pieces tasks share.

A task is a frozen ``TaskSpec`` of plain functions (composition, not a class tree):

* ``make_examples(tracks, context, rng) -> Examples``: labelled model inputs made from truth, pure
  numpy. The modified tracks (``tokens``, ``lengths``) travel with them for baselines.
* ``make_head(encoder) -> nn.Module``: the task head on top of the encoder's hidden states.
* ``forward(encoder, head, batch) -> dict of tensors`` and ``loss(outputs, batch) -> tensor``.
* ``predict(outputs) -> dict of numpy arrays``: the task's predictions.
* ``metrics(predictions, examples, context) -> dict``: one function scores the fine-tuned model,
  the zero-shot model and the classical baseline alike, so their numbers compare like for like.
* ``baseline(examples, context) -> predictions``: a classical method (helix fits), named
  ``baseline_name``; ``extra_baselines`` maps the names of further classical methods to functions
  of the same form, scored alike.
* ``zero_shot(encoder, examples, context, batch_size) -> predictions`` or None: the pre-trained
  masked-module head used without training.

Hit positions. Every task lays out the measured positions of the hits it shows (``inputs["hits"]``,
from the dataset's ``hits`` arrays through ``tracklm.data.sequences.place_hits``), whatever the
model reads: ``encode_batch`` and ``masked_module_logits_at`` hand them to the encoder, which reads
them only when ``config.inputs`` is ``hits``. A hit the task hides or asks about carries no
position (NaN): a deleted hit's position goes with it, an inserted or appended ``[MASK]`` has none.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from tracklm.data.sequences import encode_pairs, place_hits
from tracklm.detector.frames import ModuleFrames
from tracklm.detector.layers import TokenLayers
from tracklm.detector.vocab import ModuleVocab
from tracklm.evaluate.masked import masked_module_logits, module_logits_only
from tracklm.io.dataset import PreparedDataset, TrackArrays
from tracklm.models.bert import MaskedModuleHead, PairHead, TrackingBert

__all__ = [
    "ABSENT",
    "Examples",
    "TaskContext",
    "TaskSpec",
    "delete_hit",
    "encode_batch",
    "hits_of",
    "insert_token",
    "masked_module_logits_at",
    "module_decoder",
    "module_logits_only",
    "pretrained_module_decoder",
    "random_choice_where",
    "single_inputs",
    "top_k_modules",
    "track_classifier",
    "track_mask",
    "tracks_with_min_hits",
]

ABSENT = -1
"""Value of a label or prediction that does not exist: the position or module of a hole or an
outlier in a track that has none, a second next module after a track's end, or a candidate
module a method could not find. (Not ``IGNORE_INDEX``, the model's "no target" in MLM labels.)"""


@dataclass
class Examples:
    """Labelled task examples; B rows.

    Attributes
    ----------
    tokens : (B, L) int64 the tracks as the task shows them (hit removed, replaced, truncated...).
    lengths : (B,) int64 their number of hits.
    inputs : model inputs: ``input_ids`` (B, W) int64, ``token_type_ids`` (B, W) int64,
        ``attention_mask`` (B, W) bool and, when ``hits`` is given, ``hits`` (B, W, 3) float32
        positions in mm (NaN where there is no visible hit).
    labels : task labels, each (B, ...) numpy arrays; ``ABSENT`` (-1) where a label does not apply.
    hits : (B, L, 3) float32 positions in mm of the hits of ``tokens``, NaN where hidden or
        padded; None when the tracks came without positions.
    """

    tokens: np.ndarray
    lengths: np.ndarray
    inputs: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    hits: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.lengths.shape[0])

    def take(self, index: np.ndarray | slice) -> Examples:
        """The examples at ``index``."""
        return Examples(
            tokens=self.tokens[index],
            lengths=self.lengths[index],
            inputs={k: v[index] for k, v in self.inputs.items()},
            labels={k: v[index] for k, v in self.labels.items()},
            hits=None if self.hits is None else self.hits[index],
        )

    def batch(
        self, index: np.ndarray | slice, device: torch.device | str = "cpu"
    ) -> dict[str, Tensor]:
        """Inputs and labels of the examples at ``index`` as tensors on ``device``."""
        arrays = {**self.inputs, **self.labels}
        return {
            k: torch.from_numpy(np.ascontiguousarray(v[index])).to(device)
            for k, v in arrays.items()
        }


@dataclass(frozen=True)
class TaskContext:
    """What tasks know about the detector, from the prepared dataset.

    Attributes
    ----------
    vocab : the dataset's vocabulary.
    centres_mm : (V, 3) module centre of every token id in mm (NaN for special tokens).
    surfaces : the layers as surfaces, with per-layer KD-trees of module centres.
    b_field_t : the magnetic field the dataset was made with, tesla along +z.
    frames_source : gives the modules' frames by token id when first asked (``frames``); None
        when unknown.
    train_source : gives the dataset's train split when first asked (``train_tracks``), for
        baselines counted on training tracks (the pt task's ``lookup``); None when unknown.
    """

    vocab: ModuleVocab
    centres_mm: np.ndarray
    surfaces: TokenLayers
    b_field_t: float
    frames_source: Callable[[], ModuleFrames] | None = field(default=None, compare=False)
    train_source: Callable[[], TrackArrays] | None = field(default=None, compare=False)

    @cached_property
    def frames(self) -> ModuleFrames | None:
        """The modules' frames and bounds by token id (``PreparedDataset.frames``, whence a
        ``geometry`` or ``hits`` model's table comes), for tasks that place a hit on another
        module; None when unknown. Read once, when first needed."""
        return None if self.frames_source is None else self.frames_source()

    @cached_property
    def train_tracks(self) -> TrackArrays | None:
        """The train split's tracks (``train_source``), read once when first needed; None when
        unknown."""
        return None if self.train_source is None else self.train_source()

    @classmethod
    def from_dataset(cls, dataset: PreparedDataset) -> TaskContext:
        return cls(
            vocab=dataset.vocab,
            centres_mm=dataset.module_centres,
            surfaces=TokenLayers.from_modules(dataset.modules, len(dataset.vocab)),
            b_field_t=dataset.b_field_t,
            frames_source=dataset.frames,
            train_source=lambda: dataset.split("train"),
        )

    def layer_of(self, tokens: np.ndarray) -> np.ndarray:
        """Layer index of every token (-1 for special tokens and padding)."""
        table = self.surfaces.layer_of_token
        tokens = np.asarray(tokens, dtype=np.int64)
        return np.where(
            (tokens >= 0) & (tokens < len(table)), table[np.clip(tokens, 0, len(table) - 1)], -1
        )

    def centres_of(self, tokens: np.ndarray) -> np.ndarray:
        """(..., 3) module centres of tokens in mm (NaN for special tokens and padding)."""
        tokens = np.asarray(tokens, dtype=np.int64)
        return self.centres_mm[np.clip(tokens, 0, len(self.centres_mm) - 1)]


@dataclass(frozen=True)
class TaskSpec:
    """A downstream task as a bundle of functions (see the module docstring).

    Attributes
    ----------
    name : the ``--task`` name.
    description : one line for reports.
    headline : the metric key (in ``metrics``) that summarises the task, e.g. for transfer plots.
    higher_is_better : direction of ``headline``.
    baseline_name : the name of ``baseline`` among the task's baselines.
    extra_baselines : further classical methods by name (after ``baseline``), each
        ``(examples, context) -> predictions`` like ``baseline``.
    """

    name: str
    description: str
    make_examples: Callable[[TrackArrays, TaskContext, np.random.Generator], Examples]
    make_head: Callable[[TrackingBert], nn.Module]
    forward: Callable[[TrackingBert, nn.Module, dict[str, Tensor]], dict[str, Tensor]]
    loss: Callable[[dict[str, Tensor], dict[str, Tensor]], Tensor]
    predict: Callable[[dict[str, Tensor]], dict[str, np.ndarray]]
    metrics: Callable[[dict[str, np.ndarray], Examples, TaskContext], dict[str, Any]]
    baseline: Callable[[Examples, TaskContext], dict[str, np.ndarray]]
    zero_shot: Callable[[TrackingBert, Examples, TaskContext, int], dict[str, np.ndarray]] | None
    headline: str
    higher_is_better: bool = True
    baseline_name: str = "helix"
    extra_baselines: Mapping[str, Callable[[Examples, TaskContext], dict[str, np.ndarray]]] = field(
        default_factory=dict
    )


# ----------------------------------------------------------------------------- token arrays
def track_mask(lengths: np.ndarray, width: int) -> np.ndarray:
    """(N, width) bool, True on the first ``lengths`` columns."""
    return np.arange(width)[None, :] < np.asarray(lengths)[:, None]


def tracks_with_min_hits(tracks: TrackArrays, min_hits: int) -> tuple[np.ndarray, np.ndarray]:
    """(N', L) int64 tokens and (N',) int64 lengths of the tracks with at least ``min_hits`` hits."""
    tokens = np.asarray(tracks.tokens, dtype=np.int64)
    lengths = np.asarray(tracks.lengths, dtype=np.int64)
    keep = lengths >= min_hits
    return tokens[keep], lengths[keep]


def hits_of(tracks: TrackArrays, keep: np.ndarray | slice = slice(None)) -> np.ndarray:
    """(N', L, 3) float32 hit positions in mm of the tracks ``keep``, NaN after each track's end."""
    hits = np.asarray(tracks.hits, dtype=np.float32)[keep]
    real = track_mask(np.asarray(tracks.lengths)[keep], hits.shape[1])
    return np.where(real[..., None], hits, np.float32(np.nan))


def _columns(array: np.ndarray, source: np.ndarray) -> np.ndarray:
    """``array[i, source[i, j], ...]`` for (N, L, ...) arrays and (N, W) column indices."""
    index = np.clip(source, 0, array.shape[1] - 1)
    return np.take_along_axis(array, index.reshape(index.shape + (1,) * (array.ndim - 2)), axis=1)


def _trailing(mask: np.ndarray, array: np.ndarray) -> np.ndarray:
    """(N, W) ``mask`` with axes added to broadcast against (N, W, ...) ``array``."""
    return mask.reshape(mask.shape + (1,) * (array.ndim - 2))


def delete_hit(tokens: np.ndarray, position: np.ndarray, pad_id: float) -> np.ndarray:
    """Remove the hit at ``position`` (N,) from each track (N, L) (or its (N, L, 3) positions);
    the row is padded with ``pad_id`` (NaN for positions) at the end."""
    tokens = np.asarray(tokens)
    width = tokens.shape[1]
    j = np.arange(width)[None, :]
    source = np.where(j >= np.asarray(position)[:, None], j + 1, j)
    out = _columns(tokens, source)
    return np.where(_trailing(source < width, out), out, np.asarray(pad_id, dtype=tokens.dtype))


def insert_token(tokens: np.ndarray, position: np.ndarray, value: float | np.ndarray) -> np.ndarray:
    """Insert ``value`` before column ``position`` (N,) of each row (N, L) -> (N, L + 1); also
    for (N, L, 3) positions with a scalar ``value`` (NaN: a hit without position)."""
    tokens = np.asarray(tokens)
    n, width = tokens.shape[:2]
    j = np.arange(width + 1)[None, :]
    position = np.asarray(position)[:, None]
    source = np.where(j > position, j - 1, j)
    out = _columns(tokens, source)
    value = np.broadcast_to(np.asarray(value).reshape(-1, 1) if np.ndim(value) else value, (n, 1))
    return np.where(_trailing(j == position, out), _trailing(value, out), out).astype(out.dtype)


def single_inputs(
    tokens: np.ndarray,
    lengths: np.ndarray,
    vocab: ModuleVocab,
    width: int,
    hits: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """``[CLS] track [SEP]`` model inputs (hit ``k`` at input position ``1 + k``).

    Parameters
    ----------
    tokens : (N, L) token ids of the tracks as shown; lengths : (N,) their number of hits.
    vocab : the vocabulary; width : W, the input width.
    hits : (N, L, 3) positions in mm of those hits, NaN where a hit shows no position (e.g. a
        ``[MASK]``); adds ``hits`` (N, W, 3) float32 laid out like ``input_ids``.
    """
    encoded = encode_pairs(tokens, lengths, None, None, vocab, width)
    inputs = {
        "input_ids": encoded.input_ids,
        "token_type_ids": encoded.token_type_ids,
        "attention_mask": encoded.attention_mask,
    }
    if hits is not None:
        inputs["hits"] = place_hits(encoded, hits, lengths)
    return inputs


def random_choice_where(allowed: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One uniformly chosen True column per row of ``allowed`` (N, K); -1 where a row has none."""
    keys = np.where(allowed, rng.random(allowed.shape), -1.0)
    choice = np.argmax(keys, axis=1)
    return np.where(allowed.any(axis=1), choice, -1)


# ----------------------------------------------------------------------------- heads
def module_decoder(encoder: TrackingBert, in_features: int | None = None) -> MaskedModuleHead:
    """A new masked-module head of the encoder's architecture (dense + GELU + LayerNorm, decoder
    tied to the token embeddings, own bias), randomly initialised.

    Parameters
    ----------
    encoder : the encoder whose ``TrackingBertConfig`` shapes the head.
    in_features : width of the representation fed in when not d (e.g. 2d for a pair of states);
        the head's first dense layer then maps it to d.

    Returns
    -------
    A ``MaskedModuleHead``: ``head(x, encoder.decoder_table())`` maps (..., in_features) to
    (..., v) logits.
    """
    config = encoder.config
    head = MaskedModuleHead(config)
    if in_features is not None and in_features != config.hidden_size:
        head.dense = nn.Linear(in_features, config.hidden_size)
    return head


def pretrained_module_decoder(encoder: TrackingBert) -> MaskedModuleHead:
    """A copy of the encoder's pre-trained masked-module head, to fine-tune separately."""
    head = MaskedModuleHead(encoder.config)
    head.load_state_dict(encoder.mlm_head.state_dict())
    return head


def track_classifier(encoder: TrackingBert, outputs: int) -> PairHead:
    """A new pooler (dense + tanh) and linear layer on ``[CLS]``: the pre-training pair head's
    architecture with ``outputs`` logits (``classify`` gives (b,) for 1, else (b, outputs))."""
    return PairHead(encoder.config, num_outputs=outputs)


def encode_batch(encoder: TrackingBert, batch: dict[str, Tensor]) -> Tensor:
    """(B, W, d) hidden states of a task batch (its visible hits' positions included, if any)."""
    return encoder.encode(
        batch["input_ids"], batch["token_type_ids"], batch["attention_mask"], hits=batch.get("hits")
    )


def masked_module_logits_at(
    encoder: TrackingBert,
    inputs: dict[str, np.ndarray],
    positions: np.ndarray,
    num_special: int,
    batch_size: int,
    reduce: Callable[[Tensor, slice], Tensor],
) -> np.ndarray:
    """Run the pre-trained masked-module head at one position per sequence, in batches.

    A thin use of ``tracklm.evaluate.masked.masked_module_logits`` (special tokens excluded).

    Parameters
    ----------
    encoder : the pre-trained model.
    inputs : model inputs (``input_ids`` with ``[MASK]`` where wanted, ``token_type_ids``,
        ``attention_mask``), each (B, W), and ``hits`` (B, W, 3) (NaN at every ``[MASK]``) when
        the tracks have positions.
    positions : (B,) input position read in each sequence.
    num_special : number of special tokens of the vocabulary.
    batch_size : sequences per forward pass.
    reduce : maps the (b, v) logits of a batch (special tokens at ``-inf``) and the batch's
        slice of the B rows to what is kept (e.g. the top-5 modules).

    Returns
    -------
    The concatenation of ``reduce`` over batches, as numpy.
    """
    positions = np.asarray(positions, dtype=np.int64)
    where = np.stack([np.arange(len(positions)), positions], axis=1)  # (B, 2)
    return masked_module_logits(
        encoder,
        inputs["input_ids"],
        inputs["token_type_ids"],
        inputs["attention_mask"],
        where,
        num_special,
        reduce,
        batch_size=batch_size,
        hits=inputs.get("hits"),
    )


def each_hit_masked_log_probs(
    encoder: TrackingBert, examples: Examples, vocab: ModuleVocab, batch_size: int
) -> np.ndarray:
    """(B, L) log p of each hit's own module with that hit masked (its position hidden too), the
    others shown, under the pre-trained masked-module head (normalised over modules, special
    tokens excluded); NaN after each track's end. The zero-shot reading of "is this hit
    plausible here?"."""
    tokens, lengths = examples.tokens, examples.lengths
    n, width = tokens.shape
    rows, hits = np.nonzero(track_mask(lengths, width))
    positions = None if examples.hits is None else examples.hits[rows]
    inputs = single_inputs(tokens[rows], lengths[rows], vocab, width + 2, positions)
    inputs["input_ids"][np.arange(len(rows)), 1 + hits] = vocab.mask_id
    if "hits" in inputs:
        inputs["hits"][np.arange(len(rows)), 1 + hits] = np.nan  # the masked hit hides its position
    observed = torch.from_numpy(tokens[rows, hits])

    def observed_log_probability(logits: Tensor, part: slice) -> Tensor:
        target = observed[part].to(logits.device)
        return logits.log_softmax(dim=-1).gather(1, target[:, None]).squeeze(1)

    log_p = masked_module_logits_at(
        encoder, inputs, 1 + hits, vocab.num_special, batch_size, observed_log_probability
    )
    out = np.full((n, width), np.nan)
    out[rows, hits] = log_p
    return out


def top_k_modules(logits: Tensor, k: int) -> Tensor:
    """(b, k) best tokens of (b, v) module-only logits (``module_logits_only``), best first."""
    return logits.topk(k, dim=-1).indices
