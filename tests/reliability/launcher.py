"""Run the ``tracklm`` command line in a child process that the reliability tests watch and kill.

Usage::

    python tests/reliability/launcher.py [--progress FILE] [--hang-at-checkpoint STEP --signal FILE]
        -- VERB OPTIONS...

The package is not changed; the launcher patches it in this process only, then calls
``tracklm.cli.main``:

``--progress FILE``
    ``tracklm pretrain`` appends each optimiser step it completes to FILE, one line per step,
    written with ``os.write`` so that the line is in the kernel's hands (and survives a SIGKILL)
    before the step's checkpoint, if any, is saved.
``--hang-at-checkpoint STEP --signal FILE``
    The checkpoint of step STEP is written only halfway: the first half of its bytes go to the
    file ``torch.save`` was given, then FILE is created and the process sleeps, so that the test
    can kill it in the middle of a checkpoint write.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from pathlib import Path
from typing import Any


def _record_progress(path: Path) -> None:
    from lightning.pytorch.callbacks import Callback

    from tracklm.train import pretrain

    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    class Progress(Callback):
        def on_train_batch_end(self, trainer: Any, *args: Any) -> None:
            os.write(descriptor, f"{trainer.global_step}\n".encode())

    original = pretrain.train

    def train(*args: Any, **kwargs: Any) -> Any:
        kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), Progress()]
        return original(*args, **kwargs)

    pretrain.train = train  # type: ignore[assignment]


def _hang_in_checkpoint(step: int, signal: Path) -> None:
    import torch

    original = torch.save

    def save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        if not (isinstance(obj, dict) and obj.get("global_step") == step):
            return original(obj, f, *args, **kwargs)
        if not isinstance(f, (str, os.PathLike)):
            raise AssertionError(f"checkpoint of step {step} written to {f!r}, not to a file")
        buffer = io.BytesIO()
        original(obj, buffer, *args, **kwargs)
        data = buffer.getvalue()
        with open(f, "wb") as handle:
            handle.write(data[: len(data) // 2])
            handle.flush()
            os.fsync(handle.fileno())
        # the test polls for FILE and reads it at once, so FILE must never exist empty
        from tracklm._fs import atomic_output_file

        with atomic_output_file(signal) as pending:
            pending.write_text(f"{f}\n")
        time.sleep(600)
        raise AssertionError("the test did not kill the process during the checkpoint write")

    torch.save = save


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--progress", type=Path)
    parser.add_argument("--hang-at-checkpoint", type=int)
    parser.add_argument("--signal", type=Path)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if args.progress is not None:
        _record_progress(args.progress)
    if args.hang_at_checkpoint is not None:
        _hang_in_checkpoint(args.hang_at_checkpoint, args.signal)
    from tracklm.cli import main as tracklm_main

    return tracklm_main(command)


if __name__ == "__main__":
    sys.exit(main())
