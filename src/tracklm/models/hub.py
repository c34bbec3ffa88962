"""A model directory: write it, read it back with every check, and its model card.

``TrackingBert.save_pretrained`` and ``TrackingBert.from_pretrained`` call these. A directory
holds ``config.json`` (the ``TrackingBertConfig``), ``model.safetensors`` (the weights, with the
vocabulary hash in its metadata), ``vocab.json`` and a ``README.md`` model card; loading runs no
code from it and refuses anything that does not fit the config.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from tracklm._fs import atomic_output_file
from tracklm.detector.vocab import ModuleVocab
from tracklm.errors import InputError
from tracklm.models.config import TrackingBertConfig
from tracklm.pretrained import resolve_model

if TYPE_CHECKING:  # bert.py imports this module
    from tracklm.models.bert import TrackingBert

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
VOCAB_FILE = "vocab.json"
CARD_FILE = "README.md"


def save_pretrained(
    model: TrackingBert,
    directory: str | os.PathLike[str],
    vocab: ModuleVocab,
    card: dict[str, Any] | None = None,
) -> None:
    """Write ``config.json``, ``model.safetensors``, ``vocab.json`` and a ``README.md`` model card.

    Parameters
    ----------
    model : the model; ``model.vocab`` is set to ``vocab`` afterwards.
    directory : created if missing; existing model files in it are replaced (each atomically).
    vocab : the vocabulary the model was trained with; its size must equal ``config.vocab_size``.
    card : extra facts for the model card (data, selection, steps, metrics, ...), JSON-friendly.
    """
    if len(vocab) != model.config.vocab_size:
        raise InputError(
            f"vocabulary has {len(vocab)} tokens but the model's vocab_size is {model.config.vocab_size}"
        )
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with atomic_output_file(directory / CONFIG_FILE) as tmp:
        tmp.write_text(json.dumps(model.config.to_dict(), indent=2) + "\n")
    tensors = {
        name: value.detach().cpu().contiguous() for name, value in model.state_dict().items()
    }
    with atomic_output_file(directory / WEIGHTS_FILE) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt", "vocab_sha256": vocab.sha256})
    vocab.save(directory / VOCAB_FILE)
    with atomic_output_file(directory / CARD_FILE) as tmp:
        tmp.write_text(model_card(model, vocab, card))
    model.vocab = vocab


def model_card(model: TrackingBert, vocab: ModuleVocab, card: dict[str, Any] | None = None) -> str:
    """Markdown model card: architecture, size, vocabulary and any facts given in ``card``."""
    c = model.config
    lines = [
        "# TrackingBERT model",
        "",
        "A BERT encoder over detector-module tokens (arXiv:2402.10239), pre-trained with tracklm.",
        "Load it with `tracklm.TrackingBert.from_pretrained(directory)`.",
        "",
        "## Architecture",
        "",
        f"- layers: {c.num_layers}, hidden size: {c.hidden_size}, heads: {c.num_heads}, "
        f"feed-forward: {c.intermediate_size} (GELU, post-LayerNorm)",
        f"- positions: {c.max_length} ({c.position_embedding}), segments: {c.type_vocab_size}",
        f"- dropout: {c.dropout}, attention dropout: {c.attention_dropout}",
        "- heads: masked-module prediction (decoder tied to the token embeddings), "
        "pair task pT(B) > pT(A)",
        f"- parameters: {model.num_parameters():,}",
        "",
        "## Vocabulary",
        "",
        f"- tokens: {len(vocab)} ({vocab.num_special} special, {len(vocab.modules)} modules)",
        f"- sha256: `{vocab.sha256}`",
    ]
    if card:
        lines += ["", "## Training and results", ""]
        for key, value in card.items():
            text = (
                json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else str(value)
            )
            lines.append(f"- {key}: {text}")
    return "\n".join(lines) + "\n"


def from_pretrained(
    cls: type[TrackingBert],
    directory: str | os.PathLike[str],
    map_location: str | torch.device = "cpu",
    *,
    attention: str = "auto",
) -> TrackingBert:
    """Rebuild a model from a directory written by ``save_pretrained``; runs no code from it.

    Parameters
    ----------
    cls : the model class, built from the ``TrackingBertConfig`` in ``config.json``.
    directory : the model directory, or the name of a model shipped with the package
        (``tracklm.pretrained``, e.g. ``"trackml-pixel"``).
    map_location : device for the weights.
    attention : attention backend of the rebuilt model (see ``TrackingBert``).

    Returns
    -------
    The model in eval mode, with ``model.vocab`` set.

    Raises
    ------
    InputError
        When a file is missing or unreadable, the vocabulary size differs from the config's, or
        a tensor is missing, unexpected or of the wrong shape for the config.
    """
    directory = resolve_model(directory)
    if not directory.is_dir():
        raise InputError(f"{directory}: no model directory")
    config_path = directory / CONFIG_FILE
    try:
        data = json.loads(config_path.read_text())
    except FileNotFoundError:
        raise InputError(f"{config_path}: missing (not a tracklm model directory?)") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"{config_path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise InputError(f"{config_path}: expected a JSON object")
    config = TrackingBertConfig.from_dict(data, where=str(config_path))
    vocab = ModuleVocab.load(directory / VOCAB_FILE)
    if len(vocab) != config.vocab_size:
        raise InputError(
            f"{directory / VOCAB_FILE}: {len(vocab)} tokens but config.json says vocab_size {config.vocab_size}"
        )
    weights_path = directory / WEIGHTS_FILE
    if not weights_path.is_file():
        raise InputError(f"{weights_path}: missing")
    try:
        with safe_open(str(weights_path), framework="pt", device=str(map_location)) as handle:
            metadata = handle.metadata() or {}
            state = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as exc:
        raise InputError(f"{weights_path}: not a readable safetensors file ({exc})") from None
    recorded = metadata.get("vocab_sha256")
    if recorded is not None and recorded != vocab.sha256:
        raise InputError(
            f"{directory / VOCAB_FILE}: vocabulary sha256 {vocab.sha256[:12]} differs from the "
            f"{recorded[:12]} the weights were saved with ({WEIGHTS_FILE})"
        )
    model = cls(config, attention=attention)
    _check_tensors(state, model.state_dict(), weights_path)
    model.load_state_dict(state)
    model.to(map_location)
    model.vocab = vocab
    return model.eval()


def check_vocab(model: TrackingBert, vocab: ModuleVocab, where: str = "dataset") -> None:
    """Refuse a dataset vocabulary that differs from the model's own (by SHA-256) or in size.

    ``where`` names the dataset's vocabulary (e.g. its ``vocab.json``) in the message.
    """
    if model.vocab is not None and model.vocab.sha256 != vocab.sha256:
        raise InputError(
            f"{where}: vocabulary sha256 {vocab.sha256} differs from the model's "
            f"{model.vocab.sha256} (the model was trained on another vocabulary)"
        )
    if len(vocab) != model.config.vocab_size:
        raise InputError(
            f"{where}: {len(vocab)} tokens, but the model's vocab_size is {model.config.vocab_size}"
        )


def _check_tensors(state: dict[str, torch.Tensor], expected: dict[str, Any], path: Path) -> None:
    """Refuse weights whose names or shapes differ from those the config builds."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        which = (
            f"missing tensor {missing[0]!r}" if missing else f"unexpected tensor {unexpected[0]!r}"
        )
        raise InputError(f"{path}: {which} for this config")
    for name, tensor in state.items():
        if tensor.shape != expected[name].shape:
            raise InputError(
                f"{path}: tensor {name!r} has shape {tuple(tensor.shape)}, "
                f"expected {tuple(expected[name].shape)}"
            )
