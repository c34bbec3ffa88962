"""Detector geometry, the module vocabulary, and point -> module lookup."""

from tracklm.detector.geometry import PIXEL_VOLUMES, TRACKML_COLUMNS, Detector
from tracklm.detector.vocab import SPECIAL_TOKENS, ModuleVocab

__all__ = ["PIXEL_VOLUMES", "SPECIAL_TOKENS", "TRACKML_COLUMNS", "Detector", "ModuleVocab"]
