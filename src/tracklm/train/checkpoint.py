"""Checkpoint files written so that a process killed at any moment leaves a readable one.

Lightning's own writer serializes the checkpoint, writes it to a file in the system temporary
directory and moves it over the target. Where that directory and the run lie on different file
systems (a node-local ``/tmp``, a shared run directory), the move is a copy, and a kill during
the copy leaves a truncated ``last.ckpt``; a kill at any point also leaves the temporary file in
``/tmp`` for good. ``AtomicCheckpointIO`` writes beside the target instead
(``tracklm._fs.atomic_output_file``: a hidden temporary in the same directory, flushed to disk,
then renamed over the target), so the target is always either the previous checkpoint or the new
one, and the next save removes what a killed process left.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from lightning.pytorch.plugins import TorchCheckpointIO

from tracklm._fs import atomic_output_file


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose ``save_checkpoint`` replaces the target file in one rename."""

    def save_checkpoint(
        self,
        checkpoint: dict[str, Any],
        path: str | os.PathLike[str],
        storage_options: Any | None = None,
    ) -> None:
        """Write ``checkpoint`` to ``path`` with ``torch.save``, atomically and durably.

        Parameters
        ----------
        checkpoint : the state Lightning dumps (model, optimiser, loops, callbacks).
        path : the target file, on a local file system.
        storage_options : not supported (``TypeError``), as in ``TorchCheckpointIO``.
        """
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        with atomic_output_file(path, durable=True) as tmp:
            torch.save(checkpoint, tmp)
