"""``TrackingBertConfig``: everything that defines a TrackingBERT architecture.

Kept beside the model (``bert.py``) as HF keeps ``configuration_bert.py``: the config is read by
code that needs no torch (presets, model directories, the command line).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from tracklm import config as config_lib
from tracklm.errors import InputError
from tracklm.presets import load_preset

INPUT_MODES = ("tokens", "geometry", "hits")
"""What a model reads of each hit, in order of information (``TrackingBertConfig.inputs``)."""
OBJECTIVES = ("masked", "next-module")
"""What a model is pre-trained to predict (``TrackingBertConfig.objective``)."""
PAIR_HEADS = ("cls", "difference")
"""How the pair head reads a pair (``TrackingBertConfig.pair_head``)."""


@dataclass
class TrackingBertConfig:
    """Everything that defines a TrackingBERT architecture (saved as ``config.json``).

    Attributes
    ----------
    vocab_size : v, number of tokens (special tokens + modules); set from the dataset's vocabulary.
    hidden_size : d, width of the token representations.
    num_layers : number of encoder blocks.
    num_heads : attention heads; must divide ``hidden_size``.
    intermediate_size : f, width of the feed-forward layer.
    max_length : number of positions the model knows (19 for pairs of up to 8 hits).
    dropout : dropout on embeddings and on each block's residual branches.
    attention_dropout : dropout on the attention probabilities.
    position_embedding : ``"learned"`` (a trained table) or ``"sinusoidal"`` (fixed, not saved).
    type_vocab_size : number of segments (2: track A, track B).
    layer_norm_eps : LayerNorm epsilon (1e-12 as in BERT).
    initializer_range : standard deviation of the normal initialisation.
    pad_token_id : id of ``[PAD]``; its embedding starts at zero and receives no input gradient.
    inputs : what the model reads of each hit (``INPUT_MODES``): ``"tokens"`` (the paper's model:
        the module token only), ``"geometry"`` (the token plus a learned projection of its
        module's centre, orientation and size, stored with the model) or ``"hits"``
        (``geometry`` plus the measured position of every visible hit, and a head predicting
        the position of a hidden hit).
    position_loss_weight : weight of the hidden-hit position loss beside the masked-module loss
        (``inputs: hits`` only).
    objective : ``"masked"`` (the paper's: bidirectional attention, masked modules predicted from
        both sides) or ``"next-module"`` (causal attention: each position predicts the next
        token, the last hit predicting the ``[SEP]`` that ends the track; the pair head reads
        the last token, the only one that sees both tracks).
    pair_head : how the pair head reads ``[CLS] A [SEP] B [SEP]``: ``"cls"`` (the paper's: a
        pooler and a classifier on one summary token, ``[CLS]`` or a causal model's last token)
        or ``"difference"`` (the same pooler and a one-output classifier score each track at
        the ``[SEP]`` that ends it, and the logit is score(B) - score(A): one pT-like ranking
        per track, antisymmetric in A and B by construction). The question and the label are
        the paper's either way.
    """

    vocab_size: int = 4010
    hidden_size: int = 64
    num_layers: int = 12
    num_heads: int = 8
    intermediate_size: int = 512
    max_length: int = 19
    dropout: float = 0.05
    attention_dropout: float = 0.05
    position_embedding: Literal["learned", "sinusoidal"] = "learned"
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    pad_token_id: int = 0
    inputs: Literal["tokens", "geometry", "hits"] = "tokens"
    position_loss_weight: float = 1.0
    objective: Literal["masked", "next-module"] = "masked"
    pair_head: Literal["cls", "difference"] = "cls"

    def __post_init__(self) -> None:
        sizes = ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size",
                 "max_length", "type_vocab_size")  # fmt: skip
        for name, value in ((name, getattr(self, name)) for name in sizes):
            if value < 1:
                raise InputError(f"model config: {name} must be at least 1, got {value}")
        d, h, p = self.hidden_size, self.num_heads, self.position_embedding
        problems = [
            (d % h != 0, f"hidden_size {d} is not divisible by num_heads {h}"),
            (p not in ("learned", "sinusoidal"), f"position_embedding {p!r} is not 'learned' or 'sinusoidal'"),
            (not 0.0 <= self.dropout < 1.0, f"dropout must lie in [0, 1), got {self.dropout}"),
            (not 0.0 <= self.attention_dropout < 1.0,
             f"attention_dropout must lie in [0, 1), got {self.attention_dropout}"),
            (not 0 <= self.pad_token_id < self.vocab_size,
             f"pad_token_id {self.pad_token_id} outside the vocabulary"),
            (self.inputs not in INPUT_MODES,
             f"inputs {self.inputs!r} is not one of {', '.join(INPUT_MODES)}"),
            (self.pair_head not in PAIR_HEADS,
             f"pair_head {self.pair_head!r} is not one of {', '.join(PAIR_HEADS)}"),
            (self.objective not in OBJECTIVES,
             f"objective {self.objective!r} is not one of {', '.join(OBJECTIVES)}"),
            (not self.position_loss_weight >= 0.0,
             f"position_loss_weight must be at least 0, got {self.position_loss_weight}"),
        ]  # fmt: skip
        for failed, problem in problems:
            if failed:
                raise InputError(f"model config: {problem}")

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> TrackingBertConfig:
        """A built-in architecture (``src/tracklm/presets/model/NAME.yaml``): ``tiny`` (tests),
        ``small`` (quick runs) or ``paper`` (arXiv:2402.10239).

        Parameters
        ----------
        name : preset name; an unknown one raises ``InputError`` listing the known ones.
        overrides : fields to change, e.g. ``vocab_size=len(vocab)``; unknown names raise ``InputError``.
        """
        keys = load_preset("model", name, option="model")
        return config_lib.from_dict(cls, {**keys, **overrides}, where=f"model preset {name}")

    @property
    def reads_geometry(self) -> bool:
        """True when the model holds its modules' geometry (``inputs`` geometry or hits)."""
        return self.inputs != "tokens"

    @property
    def reads_hits(self) -> bool:
        """True when the model reads measured hit positions and predicts hidden ones."""
        return self.inputs == "hits"

    @property
    def causal(self) -> bool:
        """True when each position attends only to itself and the positions before it."""
        return self.objective == "next-module"

    def to_dict(self) -> dict[str, Any]:
        """The config as plain JSON-friendly data."""
        return config_lib.to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "model config") -> TrackingBertConfig:
        """Build a config from a mapping; unknown keys and wrong types raise ``InputError``."""
        return config_lib.from_dict(cls, data, where=where)
