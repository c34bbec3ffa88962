"""tracklm: language models for particle tracking.

Tokenize a detector (every module a word), pre-train TrackingBERT on tracks (every track a
sentence), and reuse the model and its module embeddings for tracking tasks.

Heavy submodules (torch) are imported lazily, so ``import tracklm`` stays cheap.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if os.environ.get("TRACKLM_THREAD_INVARIANT", "") == "1":
    # Intel MKL, behind torch's CPU matrix products, reads this once, at its first call. In its
    # strict reproducible mode a product gives the same bits with any number of threads, so that
    # training on the CPU does too (tracklm.models.cpu_kernels.THREAD_INVARIANT).
    os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")

__version__ = "0.1.0"

__all__ = [
    "Detector",
    "InputError",
    "ModuleVocab",
    "TrackingBert",
    "TrackingBertConfig",
    "__version__",
]

if TYPE_CHECKING:
    from tracklm.detector.geometry import Detector
    from tracklm.detector.vocab import ModuleVocab
    from tracklm.errors import InputError
    from tracklm.models.bert import TrackingBert, TrackingBertConfig

_LAZY = {
    "Detector": "tracklm.detector.geometry",
    "ModuleVocab": "tracklm.detector.vocab",
    "InputError": "tracklm.errors",
    "TrackingBert": "tracklm.models.bert",
    "TrackingBertConfig": "tracklm.models.bert",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tracklm' has no attribute {name!r}")
