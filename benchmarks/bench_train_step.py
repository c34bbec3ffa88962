"""Training-step speed of TrackingBert against transformers' BertForPreTraining with the same config.

One step = forward + backward + AdamW update (fused on the CPU, as ``tracklm pretrain`` uses it,
for both models) on a batch of ``[CLS] A [SEP] B [SEP]`` pairs
(tracks of 4 to 8 hits, width 19, vocabulary 4,010, 30% of the module tokens masked), both
models in the same process, same threads, same data. Also reports the achieved GFLOP/s of our
step (matrix products only, counted analytically) against a measured float32 matmul rate.

Usage: ``python benchmarks/bench_train_step.py --preset paper --batch-size 256 --steps 20 --threads 2``

The fast paths of TrackingBert can be switched for measurement: ``--attention``,
``--dropout-rng`` and ``--no-prune-last-block`` set how "ours" computes, and ``--against
KEY=VALUE`` (repeatable; keys ``attention``, ``dropout_rng``, ``prune_last_block``) adds a second
TrackingBert that differs in those switches, timed interleaved with the others, and reports
``speedup_vs_alt`` (its step time over ours, step by step, median).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from tracklm.models import TrackingBert, TrackingBertConfig
from tracklm.models.bert import ATTENTION_BACKENDS
from tracklm.runtime import configure_torch
from tracklm.train.optim import fused_supported

VOCAB_SIZE = 4010
NUM_SPECIAL = 6
WIDTH = 19
MASK_RATE = 0.3
MASK_ID, CLS_ID, SEP_ID = 4, 2, 3


def make_batch(batch_size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random pairs laid out like ``tracklm.data.sequences.encode_pairs``, with BERT-style masking."""
    rng = np.random.default_rng(seed)
    la, lb = rng.integers(4, 9, batch_size), rng.integers(4, 9, batch_size)
    j = np.arange(WIDTH)[None, :]
    ids = rng.integers(NUM_SPECIAL, VOCAB_SIZE, (batch_size, WIDTH))
    ids[:, 0] = CLS_ID
    ids = np.where(j == la[:, None] + 1, SEP_ID, ids)
    end = la[:, None] + lb[:, None] + 2
    ids = np.where(j == end, SEP_ID, ids)
    attention = j <= end
    ids = np.where(attention, ids, 0)
    types = ((j > la[:, None] + 1) & attention).astype(np.int64)
    is_module = ids >= NUM_SPECIAL
    chosen = is_module & (rng.random(ids.shape) < MASK_RATE)
    labels = np.where(chosen, ids, -100)
    ids = np.where(chosen, MASK_ID, ids)
    return {
        "input_ids": torch.from_numpy(ids),
        "token_type_ids": torch.from_numpy(types),
        "attention_mask": torch.from_numpy(attention),
        "labels": torch.from_numpy(labels),
        "pair_labels": torch.from_numpy(rng.integers(0, 2, batch_size)),
    }


def hf_peer(config: TrackingBertConfig) -> torch.nn.Module:
    import transformers

    hf_config = transformers.BertConfig(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        intermediate_size=config.intermediate_size,
        hidden_act="gelu",
        max_position_embeddings=config.max_length,
        type_vocab_size=config.type_vocab_size,
        layer_norm_eps=config.layer_norm_eps,
        hidden_dropout_prob=config.dropout,
        attention_probs_dropout_prob=config.attention_dropout,
    )
    return transformers.BertForPreTraining(hf_config)


def step_function(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], hf: bool, bf16: bool
) -> Callable[[], None]:
    # The same optimiser for both models: AdamW, fused where tracklm's training uses it (CPU).
    fused = fused_supported(model)
    optimiser = torch.optim.AdamW(
        model.parameters(), lr=1e-4, weight_decay=0.01, fused=fused or None
    )
    model.train()
    if hf:
        inputs = {
            "input_ids": batch["input_ids"],
            "token_type_ids": batch["token_type_ids"],
            "attention_mask": batch["attention_mask"].long(),
            "labels": batch["labels"],
            "next_sentence_label": batch["pair_labels"],
        }
    else:
        inputs = dict(batch)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(**inputs).loss
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()

    return step


def time_steps(step: Callable[[], None], steps: int, warmup: int = 3) -> list[tuple[float, float]]:
    """(wall, cpu) seconds of each step; cpu time resists load from other processes best at 1 thread."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        wall, cpu = time.perf_counter(), time.process_time()
        step()
        times.append((time.perf_counter() - wall, time.process_time() - cpu))
    return times


def matmul_gflops(threads: int, size: int = 1024, repeats: int = 10) -> float:
    """Measured float32 matmul rate (GFLOP/s) of this machine at ``threads`` threads."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.matmul(a, b)
    start = time.perf_counter()
    for _ in range(repeats):
        torch.matmul(a, b)
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


def train_step_flops(
    config: TrackingBertConfig, batch: dict[str, torch.Tensor], masked_only: bool
) -> float:
    """Useful matrix-product FLOPs of one training step (forward x 3 for forward + backward).

    Counted as a dense encoder needs them for the real tokens (padding excluded; every layer
    at every real token, though our last block skips most of them), plus the head at the
    labelled positions (``masked_only``) or everywhere.
    """
    b, t = batch["input_ids"].shape
    d, f, n = config.hidden_size, config.intermediate_size, config.num_layers
    tokens = int(batch["attention_mask"].sum())
    per_layer = tokens * (2 * d * 3 * d + 2 * d * d + 2 * 2 * d * f) + 2 * 2 * tokens * t * d
    head_rows = int((batch["labels"] != -100).sum()) if masked_only else tokens
    head = head_rows * (2 * d * d + 2 * d * config.vocab_size)
    return 3.0 * (n * per_layer + head + b * 2 * d * d)


def parse_switches(pairs: list[str]) -> dict[str, Any]:
    """``["attention=eager", "prune_last_block=false"]`` -> TrackingBert keyword arguments."""
    switches: dict[str, Any] = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        if key == "prune_last_block":
            if value not in ("true", "false"):
                raise SystemExit(f"--against {pair}: prune_last_block takes true or false")
            switches[key] = value == "true"
        elif key in ("attention", "dropout_rng"):
            switches[key] = value
        else:
            raise SystemExit(f"--against {pair}: unknown switch {key!r}")
    return switches


def benchmark_train_step(
    preset: str,
    batch_size: int,
    steps: int,
    threads: int,
    switches: dict[str, Any] | None = None,
    against: dict[str, Any] | None = None,
    dropout: float | None = None,
) -> dict[str, Any]:
    """Time training steps of TrackingBert and of BertForPreTraining with the same config.

    Parameters
    ----------
    preset : TrackingBert preset (``tiny``, ``small``, ``paper``); vocabulary 4,010, width 19.
    batch_size : pairs per step.
    steps : timed steps per model (after 3 warm-up steps), alternating; medians are reported.
    threads : ``torch.set_num_threads``.
    switches : keyword arguments of our ``TrackingBert`` (``attention``, ``dropout_rng``,
        ``prune_last_block``); the library's defaults when None.
    against : switches of a second TrackingBert (``ours_alt``) timed alongside, e.g.
        ``{"attention": "eager"}``; None for none.
    dropout : both dropout rates of the model (e.g. 0 as in the demo recipe); the preset's if None.

    Returns
    -------
    Pairs per second of each model (float32, and ours with bfloat16 autocast where the CPU has
    native bfloat16), their ratio, our achieved GFLOP/s and the float32 matmul rate; with
    ``against``, ``speedup_vs_alt``.
    """
    switches = dict(switches or {})
    configure_torch()  # flush subnormals: process-wide, so ours and the HF peer alike
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    rates = {} if dropout is None else {"dropout": dropout, "attention_dropout": dropout}
    config = TrackingBertConfig.preset(preset, vocab_size=VOCAB_SIZE, max_length=WIDTH, **rates)
    batch = make_batch(batch_size)
    ours = TrackingBert(config, **switches)
    peer = hf_peer(config)
    median: dict[str, float] = {}
    # interleave the two models so that load from other processes hits both alike
    runs = {
        "ours": step_function(ours, batch, hf=False, bf16=False),
        "hf": step_function(peer, batch, hf=True, bf16=False),
    }
    bf16_native = (
        torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    )
    if against is not None:
        alt = TrackingBert(config, **{**switches, **against})
        alt.load_state_dict(ours.state_dict())
        runs["ours_alt"] = step_function(alt, batch, hf=False, bf16=False)
    if bf16_native:
        ours_bf16 = TrackingBert(config, **switches)
        runs["ours_bf16"] = step_function(ours_bf16, batch, hf=False, bf16=True)
        runs["hf_bf16"] = step_function(hf_peer(config), batch, hf=True, bf16=True)
    # Steps alternate between the models, so that load from other processes hits all alike;
    # ratios are taken step by step and their median reported.
    for step in runs.values():
        time_steps(step, 0, warmup=3)
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
    for _ in range(steps):
        for name, step in runs.items():
            times[name] += time_steps(step, 1, warmup=0)
    for name, values in times.items():
        median[name] = statistics.median(wall for wall, _ in values)
    cpu_median = {
        name: statistics.median(cpu for _, cpu in values) for name, values in times.items()
    }

    def paired_ratio(slow: str, fast: str) -> float:
        return statistics.median(a[0] / b[0] for a, b in zip(times[slow], times[fast]))

    flops = train_step_flops(config, batch, masked_only=True)
    result: dict[str, Any] = {
        "preset": preset,
        "switches": switches,
        "dropout": config.dropout,
        "attention_dropout": config.attention_dropout,
        "batch_size": batch_size,
        "threads": threads,
        "steps": steps,
        "masked_rows": int((batch["labels"] != -100).sum()),
        "real_tokens_fraction": float(batch["attention_mask"].float().mean()),
        "ms_per_step": {name: 1e3 * value for name, value in median.items()},
        "pairs_per_s": {name: batch_size / value for name, value in median.items()},
        "cpu_ms_per_step": {name: 1e3 * value for name, value in cpu_median.items()},
        "cpu_time_speedup_vs_hf_fp32": cpu_median["hf"] / cpu_median["ours"],
        "speedup_vs_hf_fp32": paired_ratio("hf", "ours"),
        "ours_gflops_fp32": flops / median["ours"] / 1e9,
        "matmul_gflops_fp32": matmul_gflops(threads),
        "load_average_1min": os.getloadavg()[0],  # other processes on the machine skew wall times
    }
    if against is not None:
        result["alt_switches"] = {**switches, **against}
        result["speedup_vs_alt"] = paired_ratio("ours_alt", "ours")
    if bf16_native:
        result["speedup_bf16_vs_hf_bf16"] = paired_ratio("hf_bf16", "ours_bf16")
        result["speedup_ours_bf16_vs_hf_fp32"] = paired_ratio("hf", "ours_bf16")
    result["ours_fraction_of_matmul_rate"] = (
        result["ours_gflops_fp32"] / result["matmul_gflops_fp32"]
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="paper", choices=["tiny", "small", "paper"])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--attention", default="auto", choices=sorted(ATTENTION_BACKENDS))
    parser.add_argument("--dropout-rng", default="sfc64", choices=["sfc64", "torch"])
    parser.add_argument("--no-prune-last-block", action="store_true")
    parser.add_argument("--against", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument(
        "--dropout", type=float, default=None, help="both dropout rates (preset's by default)"
    )
    args = parser.parse_args()
    switches = {
        "attention": args.attention,
        "dropout_rng": args.dropout_rng,
        "prune_last_block": not args.no_prune_last_block,
    }
    against = parse_switches(args.against) if args.against else None
    result = benchmark_train_step(
        args.preset, args.batch_size, args.steps, args.threads, switches, against, args.dropout
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
