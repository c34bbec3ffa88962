"""``ModuleVocab``: detector modules as tokens, deterministic and saved with every model.

Special tokens come first (``[PAD]`` = 0), then the modules sorted by (volume_id, layer_id,
module_id), so the same geometry and selection always give the same vocabulary. The SHA-256 of
the two lists identifies a vocabulary; models refuse datasets whose hash differs.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tracklm._fs import write_json
from tracklm.detector.table import module_keys
from tracklm.errors import InputError

if TYPE_CHECKING:
    from tracklm.detector.geometry import Detector

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[HOLE]")


def vocab_sha256(special_tokens: list[str] | tuple[str, ...], modules: np.ndarray) -> str:
    """Hash of the special tokens and module triples, independent of platform and JSON layout."""
    payload = json.dumps(
        {
            "special_tokens": list(special_tokens),
            "modules": np.asarray(modules, dtype=np.int64).tolist(),
        },
        separators=(",", ":"),
    )
    return hashlib.sha256(payload.encode()).hexdigest()


class ModuleVocab:
    """Token ids for detector modules.

    Parameters
    ----------
    modules : (M, 3) integer array of (volume_id, layer_id, module_id); sorted and checked here.
    special_tokens : names of the special tokens; must start with ``[PAD]``.
    """

    def __init__(
        self, modules: np.ndarray, special_tokens: tuple[str, ...] | list[str] = SPECIAL_TOKENS
    ) -> None:
        triples = np.asarray(modules, dtype=np.int64).reshape(-1, 3)
        keys = module_keys(triples[:, 0], triples[:, 1], triples[:, 2])
        order = np.argsort(keys, kind="stable")
        keys = keys[order]
        if np.any(np.diff(keys) == 0):
            raise InputError("vocabulary: a module is listed twice")
        if not special_tokens or special_tokens[0] != "[PAD]":
            raise InputError("vocabulary: the first special token must be [PAD]")
        self.special_tokens: tuple[str, ...] = tuple(special_tokens)
        self.modules: np.ndarray = triples[order].astype(np.int32)
        self._keys = keys
        self.sha256: str = vocab_sha256(self.special_tokens, self.modules)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_detector(
        cls, detector: Detector, volumes: tuple[int, ...] | None = None
    ) -> ModuleVocab:
        """Vocabulary of all modules of ``detector`` (or of the given volumes)."""
        ids = detector.ids
        if volumes is not None:
            ids = ids[np.isin(ids[:, 0], volumes)]
        return cls(ids)

    def to_dict(self) -> dict[str, object]:
        return {
            "special_tokens": list(self.special_tokens),
            "modules": self.modules.tolist(),
            "sha256": self.sha256,
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write ``vocab.json`` (atomically)."""
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ModuleVocab:
        """Read ``vocab.json`` and check its recorded hash against its content."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
            vocab = cls(np.asarray(data["modules"]), tuple(data["special_tokens"]))
        except FileNotFoundError:
            raise InputError(f"{path}: no vocabulary file") from None
        except (ValueError, KeyError, TypeError, OSError, InputError) as exc:
            raise InputError(f"{path}: not a tracklm vocabulary ({exc})") from None
        if data.get("sha256") != vocab.sha256:
            raise InputError(f"{path}: recorded sha256 does not match the vocabulary's content")
        return vocab

    # ------------------------------------------------------------------ ids
    def __len__(self) -> int:
        return len(self.special_tokens) + len(self.modules)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ModuleVocab) and other.sha256 == self.sha256

    def __hash__(self) -> int:
        return hash(self.sha256)

    def __repr__(self) -> str:
        return f"ModuleVocab({len(self.modules)} modules, {len(self.special_tokens)} special, sha256={self.sha256[:12]})"

    @property
    def num_special(self) -> int:
        """Number of special tokens; module tokens are ``num_special ... len(self) - 1``."""
        return len(self.special_tokens)

    def token_id(self, name: str) -> int:
        """Id of a special token by name, e.g. ``"[MASK]"``."""
        try:
            return self.special_tokens.index(name)
        except ValueError:
            raise KeyError(f"no special token {name!r} in this vocabulary") from None

    @property
    def pad_id(self) -> int:
        return 0

    @property
    def unk_id(self) -> int:
        return self.token_id("[UNK]")

    @property
    def cls_id(self) -> int:
        return self.token_id("[CLS]")

    @property
    def sep_id(self) -> int:
        return self.token_id("[SEP]")

    @property
    def mask_id(self) -> int:
        return self.token_id("[MASK]")

    def encode(
        self,
        volume_id: np.ndarray,
        layer_id: np.ndarray,
        module_id: np.ndarray,
        *,
        unknown: str = "raise",
    ) -> np.ndarray:
        """Token ids (int32) of modules; ``unknown="unk"`` maps absent modules to ``[UNK]``.

        With ``unknown="raise"`` an absent module raises ``KeyError`` naming the first one.
        """
        keys = module_keys(volume_id, layer_id, module_id)
        index = np.clip(np.searchsorted(self._keys, keys), 0, len(self._keys) - 1)
        found = self._keys[index] == keys
        tokens = (index + self.num_special).astype(np.int32)
        if not np.all(found):
            if unknown == "raise":
                first = int(np.flatnonzero(~found)[0])
                triple = tuple(
                    int(np.asarray(a).reshape(-1)[first]) for a in (volume_id, layer_id, module_id)
                )
                raise KeyError(f"module {triple} is not in the vocabulary")
            tokens = np.where(found, tokens, self.unk_id).astype(np.int32)
        return tokens

    def decode(self, tokens: np.ndarray) -> np.ndarray:
        """(…, 3) module triples of token ids; special tokens give (-1, -1, -1)."""
        tokens = np.asarray(tokens)
        is_module = self.is_module(tokens)
        index = np.where(is_module, tokens - self.num_special, 0)
        triples = self.modules[index]
        return np.where(is_module[..., None], triples, -1)

    def is_module(self, tokens: np.ndarray) -> np.ndarray:
        """Boolean mask: which token ids are modules (not special tokens)."""
        tokens = np.asarray(tokens)
        return (tokens >= self.num_special) & (tokens < len(self))
