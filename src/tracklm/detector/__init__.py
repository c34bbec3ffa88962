"""Detector geometry, module frames, layers, the module vocabulary, and point -> module lookup.

Imports run one way: ``table`` (the ``detectors.csv`` layout) <- ``builtin`` (the generated
TrackML detector, a table) and ``frames`` (local frames and bounds) <- ``geometry``
(``Detector``) <- ``layers`` <- ``locator``; ``vocab`` reads ``table``.
"""

from tracklm.detector.geometry import Detector
from tracklm.detector.table import PIXEL_VOLUMES, TRACKML_COLUMNS
from tracklm.detector.vocab import SPECIAL_TOKENS, ModuleVocab

__all__ = ["PIXEL_VOLUMES", "SPECIAL_TOKENS", "TRACKML_COLUMNS", "Detector", "ModuleVocab"]
