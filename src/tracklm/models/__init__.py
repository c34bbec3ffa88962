"""The TrackingBERT encoder, its heads, save/load and export."""

from __future__ import annotations

from tracklm.models.bert import TrackingBert, TrackingBertConfig, TrackingBertOutput

__all__ = ["TrackingBert", "TrackingBertConfig", "TrackingBertOutput"]
