"""Inference speed: masked-module prediction in eager PyTorch against ONNX Runtime.

Both runtimes see the same inputs: every track of a split is track A of one same-event pair
(``tracklm.evaluate.masked.pair_partners``) with its middle hit replaced by ``[MASK]``, as in
``tracklm evaluate``. Eager PyTorch is the library path (``predict_masked_modules``: the MLM head
runs on the masked positions only). The ONNX model is the file ``tracklm export`` writes
(``run_export``): its ``positions`` (k, 2) input names the masked positions and it returns (k, v)
logits there, so both runtimes do the same work; the top-5 modules are taken in numpy, and that
is timed too. ONNX Runtime is timed with our options and with its defaults. The ``full`` graph
(``export_onnx(..., head="full")``: (b, t, v) logits at every position) is timed against eager
PyTorch computing full logits too, so the report separates what the runtime gains from what
scoring only the masked positions saves.
The top-1 predictions of the two runtimes are compared before any timing is reported.

Usage::

    .venv/bin/python benchmarks/bench_inference.py --model RUN/model --data DATA [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tracklm.data.sequences import encode_pairs
from tracklm.evaluate.masked import mask_inputs, pair_partners, predict_masked_modules
from tracklm.io.dataset import open_dataset
from tracklm.models.bert import TrackingBert
from tracklm.models.export import export_onnx, run_export
from tracklm.runtime import configure_torch

TOP_K = 5


@dataclass
class MaskedBatch:
    """Inputs of the benchmark: N pairs (one per track), each with one masked hit in track A."""

    input_ids: np.ndarray  # (N, W) int64
    token_type_ids: np.ndarray  # (N, W) int64
    attention_mask: np.ndarray  # (N, W) bool
    labels: np.ndarray  # (N, W) int64, -100 except at the masked position
    position: np.ndarray  # (N,) input position of the masked hit


def masked_middle_hits(
    data: str | os.PathLike[str], split: str, max_tracks: int | None, seed: int = 0
) -> tuple[MaskedBatch, int]:
    """Pairs of a split with the middle hit of track A masked; also returns ``num_special``."""
    dataset = open_dataset(data)
    tracks = dataset.split(split)
    n = len(tracks) if max_tracks is None else min(max_tracks, len(tracks))
    tracks = tracks.take(slice(0, n))
    tokens = tracks.tokens.astype(np.int64)
    length = tracks.lengths.astype(np.int64)
    partner = pair_partners(tracks.event_id, seed)
    width = 2 * tracks.max_length + 3
    encoded = encode_pairs(tokens, length, tokens[partner], length[partner], dataset.vocab, width)
    hit = length // 2
    true = tokens[np.arange(n), hit]
    input_ids, labels = mask_inputs(
        encoded, "A", hit[:, None], true[:, None], dataset.vocab.mask_id, "masked"
    )
    batch = MaskedBatch(
        input_ids=input_ids,
        token_type_ids=encoded.token_type_ids,
        attention_mask=encoded.attention_mask,
        labels=labels,
        position=encoded.offset_a + hit,
    )
    return batch, dataset.vocab.num_special


def _top_k(scores: np.ndarray, num_special: int) -> np.ndarray:
    """(b, k) module tokens of the k best scores of each row of (b, v) logits, best first."""
    scores = scores[:, num_special:]  # (b, modules)
    top = np.argpartition(-scores, TOP_K, axis=1)[:, :TOP_K]
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1) + num_special


def onnx_predict(session: Any, batch: MaskedBatch, num_special: int, batch_size: int) -> np.ndarray:
    """(N, k) top-k module tokens from the exported (default, ``masked``) graph: (k, v) logits."""
    ranked = []
    for start in range(0, len(batch.input_ids), batch_size):
        sl = slice(start, start + batch_size)
        rows = np.arange(len(batch.input_ids[sl]))
        positions = np.stack([rows, batch.position[sl]], axis=1).astype(np.int64)
        scores = session.run(
            ["mlm_logits"],
            {
                "input_ids": batch.input_ids[sl],
                "token_type_ids": batch.token_type_ids[sl],
                "attention_mask": batch.attention_mask[sl],
                "positions": positions,
            },
        )[0]  # (b, v): one masked position per pair
        ranked.append(_top_k(scores, num_special))
    return np.concatenate(ranked)


def onnx_session(
    path: Path, threads: int | None, optimisation: str, flush_denormals: bool = True
) -> Any:
    """An ONNX Runtime CPU session; ``threads=None``, ``optimisation="default"`` and
    ``flush_denormals=False`` keep ORT's defaults."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if flush_denormals:
        # Flush subnormal floats to zero, as tracklm does for PyTorch (``configure_torch``):
        # attention weights of a trained model reach the subnormal range, where exp and
        # softmax run several times slower.
        options.add_session_config_entry("session.set_denormal_as_zero", "1")
    if optimisation == "all":
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    elif optimisation == "basic":
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_full_predict(
    session: Any, batch: MaskedBatch, num_special: int, batch_size: int
) -> np.ndarray:
    """(N, k) top-k module tokens from the ``full`` graph's (b, t, v) logits."""
    ranked = []
    for start in range(0, len(batch.input_ids), batch_size):
        sl = slice(start, start + batch_size)
        logits = session.run(
            ["mlm_logits"],
            {
                "input_ids": batch.input_ids[sl],
                "token_type_ids": batch.token_type_ids[sl],
                "attention_mask": batch.attention_mask[sl],
            },
        )[0]  # (b, t, v)
        rows = np.arange(logits.shape[0])
        ranked.append(_top_k(logits[rows, batch.position[sl]], num_special))
    return np.concatenate(ranked)


def eager_full_logits(
    model: TrackingBert, batch: MaskedBatch, num_special: int, batch_size: int
) -> np.ndarray:
    """Eager PyTorch doing what the exported graph does: full (b, t, v) logits, then top-k."""
    ranked = []
    with torch.inference_mode():
        for start in range(0, len(batch.input_ids), batch_size):
            sl = slice(start, start + batch_size)
            out = model(
                torch.from_numpy(batch.input_ids[sl]),
                torch.from_numpy(batch.token_type_ids[sl]),
                torch.from_numpy(batch.attention_mask[sl]),
            )
            rows = torch.arange(out.mlm_logits.shape[0])
            scores = out.mlm_logits[rows, torch.from_numpy(batch.position[sl]), num_special:]
            ranked.append((torch.topk(scores, TOP_K, dim=1).indices + num_special).numpy())
    return np.concatenate(ranked)


def _best_times(runs: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    """Best wall time of each run over ``repeats`` rounds, the runs interleaved within a round
    (so load from other processes hits all of them alike)."""
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def benchmark_inference(
    model_dir: str | os.PathLike[str],
    data_dir: str | os.PathLike[str],
    split: str = "test",
    max_tracks: int | None = 20_000,
    batch_size: int = 1024,
    threads: int = 2,
    repeats: int = 3,
    variants: str = "all",
) -> dict[str, Any]:
    """Tracks per second of masked-module prediction, eager PyTorch against ONNX Runtime.

    Parameters
    ----------
    model_dir : a model directory (``RUN/model``); it is exported to ONNX in a temporary directory.
    data_dir : prepared dataset with the same vocabulary.
    split : split whose tracks are predicted.
    max_tracks : first tracks of the split to use (None: all).
    batch_size : pairs per forward pass (both runtimes).
    threads : torch threads and ONNX Runtime intra-op threads.
    repeats : timed passes over the inputs per runtime (best kept), after one warm-up pass.
    variants : ``"all"``, or ``"main"`` for eager PyTorch and our ONNX Runtime session only.

    Returns
    -------
    Tracks per second of each runtime, their ratios and the top-1 agreement of the two.
    """
    configure_torch()  # process-wide, as in every tracklm stage that runs a model
    torch.set_num_threads(threads)
    model = TrackingBert.from_pretrained(model_dir).eval()
    batch, num_special = masked_middle_hits(data_dir, split, max_tracks)
    n = len(batch.input_ids)
    if n == 0:
        raise ValueError(f"{data_dir}/{split}: no tracks")
    with tempfile.TemporaryDirectory() as tmp:
        onnx_file = run_export(model_dir, "onnx", Path(tmp) / "model.onnx")  # `tracklm export`
        full_file = export_onnx(model, Path(tmp) / "full.onnx", head="full")
        sessions = {"onnx_tuned": onnx_session(onnx_file, threads, "all")}
        if variants == "all":
            sessions["onnx_default"] = onnx_session(
                onnx_file, None, "default", flush_denormals=False
            )
            full_session = onnx_session(full_file, threads, "all")
        runs: dict[str, Callable[[], Any]] = {
            "eager": lambda: predict_masked_modules(
                model, batch.input_ids, batch.token_type_ids, batch.attention_mask,
                batch.labels, num_special, k=TOP_K, batch_size=batch_size,
            ),
            **{
                name: (lambda s=session: onnx_predict(s, batch, num_special, batch_size))
                for name, session in sessions.items()
            },
        }  # fmt: skip
        if variants == "all":
            runs["eager_full_logits"] = lambda: eager_full_logits(
                model, batch, num_special, batch_size
            )
            runs["onnx_full_logits"] = lambda: onnx_full_predict(
                full_session, batch, num_special, batch_size
            )
        predictions = {name: run() for name, run in runs.items()}  # also the warm-up pass
        seconds = _best_times(runs, repeats)
    agreement = min(
        float(np.mean(predictions[name][:, 0] == predictions["eager"][:, 0]))
        for name in predictions
    )
    if agreement < 0.99:
        raise AssertionError(f"ONNX and eager top-1 predictions agree on only {agreement:.3f}")
    tracks_per_s = {name: n / value for name, value in seconds.items()}
    result = {
        "tracks": n,
        "split": split,
        "batch_size": batch_size,
        "threads": threads,
        "model": model.config.to_dict(),
        "tracks_per_s": tracks_per_s,
        "speedup_onnx_vs_eager": tracks_per_s["onnx_tuned"] / tracks_per_s["eager"],
        "top1_agreement": agreement,
    }
    if variants == "all":
        result["speedup_onnx_default_vs_eager"] = (
            tracks_per_s["onnx_default"] / tracks_per_s["eager"]
        )
        result["speedup_onnx_full_vs_eager_full_logits"] = (
            tracks_per_s["onnx_full_logits"] / tracks_per_s["eager_full_logits"]
        )
        result["speedup_onnx_full_vs_eager"] = (
            tracks_per_s["onnx_full_logits"] / tracks_per_s["eager"]
        )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="model directory (RUN/model)")
    parser.add_argument("--data", required=True, help="prepared dataset directory")
    parser.add_argument("--split", default="test")
    parser.add_argument("--max-tracks", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variants", choices=["all", "main"], default="all")
    args = parser.parse_args()
    result = benchmark_inference(
        args.model, args.data, args.split, args.max_tracks, args.batch_size, args.threads,
        variants=args.variants,
    )  # fmt: skip
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
