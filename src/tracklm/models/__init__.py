"""The TrackingBERT encoder and its heads (``bert``), CPU fast paths (``cpu_kernels``), packing
(``layout``), model directories (``hub``) and ONNX export (``export``)."""

from __future__ import annotations

from tracklm.models.bert import TrackingBert, TrackingBertConfig, TrackingBertOutput

__all__ = ["TrackingBert", "TrackingBertConfig", "TrackingBertOutput"]
