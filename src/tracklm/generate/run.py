"""``tracklm generate``: complete tracks from seeds and sample new ones; judge both.

Output directory::

    GEN/conditional.parquet     completed tracks, one row per hit (seeds and generated hits)
    GEN/unconditional.parquet   tracks sampled from nothing, one row per hit
    GEN/metrics.json            the judgements (below)
    GEN/report.md, GEN/*.png    a short report with its figures
    GEN/manifest.json           stage "generate"

* Conditional (``--seed-hits K``, default 3): the first K hits of each selected track of the
  split (tracks with more than K hits) are completed step by step until the model ends the
  track (``generate.decode``), and compared hit by hit with the true track
  (``generate.metrics``); the same for the helix follower from the same seeds
  (``generate.follower``), the ``baseline`` that holds the model's information (module centres,
  or measured hits for a model that reads them). The completions are also judged as a sample.
* Unconditional (``--samples N``, default 4,000): N tracks sampled from nothing (always by
  sampling, with ``--temperature`` and ``--top-k``), judged against N held-out simulated tracks
  of the split: physics observables (``generate.judge``) by Wasserstein-1 and quantiled KL, each
  beside its floor (the same distance between independent simulated samples of the same size,
  drawn from the val split, or the train split where val is too small), the fraction of tracks
  no helix can fit, and the AUC of a classifier told to separate them.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from tracklm._fs import atomic_output_dir, write_json
from tracklm.errors import InputError
from tracklm.evaluate.metrics import json_ready
from tracklm.generate import judge
from tracklm.generate.decode import DecodeOptions, Generated, complete
from tracklm.generate.follower import HelixFollower
from tracklm.generate.metrics import conditional_metrics
from tracklm.generate.report import write_report
from tracklm.io.dataset import PreparedDataset, TrackArrays, open_dataset
from tracklm.manifest import write_manifest
from tracklm.models.bert import TrackingBert
from tracklm.models.inputs import check_hits_present
from tracklm.tasks.common import TaskContext

log = logging.getLogger(__name__)

MAX_FLOOR_SAMPLES = 3


def run_generate(
    model: str | os.PathLike[str],
    data: str | os.PathLike[str],
    out: str | os.PathLike[str],
    split: str = "test",
    seed_hits: int = 3,
    samples: int = 4000,
    max_tracks: int | None = 4000,
    strategy: str = "greedy",
    beam_width: int = 4,
    temperature: float = 1.0,
    top_k: int = 0,
    stop_score: float = 0.3,
    batch_size: int = 4096,
    seed: int = 0,
) -> dict[str, Any]:
    """Generate tracks with a pre-trained model and judge them (the ``tracklm generate`` verb).

    Parameters
    ----------
    model : model directory (``RUN/model``), of either objective.
    data : dataset directory.
    out : output directory (must not exist, or be empty).
    split : the split whose tracks seed the completions and serve as the reference sample.
    seed_hits : K, seeds of each completion; 0 skips the conditional judgement.
    samples : N, tracks sampled from nothing; 0 skips the unconditional judgement.
    max_tracks : complete a random subset of at most this many tracks (seeded); None for all.
    strategy, beam_width, temperature, top_k, stop_score, batch_size : ``DecodeOptions``.
    seed : seed of the subsets and of sampling.

    Returns
    -------
    The content of ``metrics.json``.
    """
    from tracklm.evaluate.masked import pick_device
    from tracklm.runtime import configure_torch

    configure_torch()
    _check_counts(seed_hits, samples, max_tracks)
    options = DecodeOptions(
        strategy=strategy, beam_width=beam_width, temperature=temperature, top_k=top_k,
        stop_score=stop_score, batch_size=batch_size, seed=seed,
    )  # fmt: skip
    out = Path(out)
    with atomic_output_dir(out) as tmp:
        net = TrackingBert.from_pretrained(model, map_location=pick_device())
        dataset = open_dataset(data)
        net.check_vocab(dataset.vocab, str(dataset.path / "vocab.json"))
        tracks = dataset.split(split)
        if len(tracks) == 0:
            raise InputError(f"{dataset.path / split}: the split holds no tracks")
        check_hits_present(
            net.config.reads_hits, tracks.hits, str(dataset.path / split / "hits.npy")
        )
        max_hits = tracks.max_length
        if seed_hits >= max_hits:
            raise InputError(f"--seed-hits: {seed_hits} leaves nothing to generate in tracks of at most {max_hits} hits")  # fmt: skip
        options = dataclasses.replace(options, max_hits=max_hits)
        context = TaskContext.from_dataset(dataset)
        rng = np.random.default_rng(seed)
        metrics: dict[str, Any] = {
            "model": str(model),
            "model_objective": net.config.objective,
            "model_inputs": net.config.inputs,
            "data": str(data),
            "split": split,
            "decoding": {k: v for k, v in dataclasses.asdict(options).items() if k != "batch_size"},
        }
        figures: dict[str, Any] = {}
        floors = _floor_sources(dataset, split)
        if seed_hits > 0:
            metrics["conditional"], figures["conditional"] = _conditional(
                net, dataset, context, tracks, seed_hits, max_tracks, options, floors, rng
            )
            completed = figures["conditional"]["generated"]
            _hits_table(completed, tracks.take(figures["conditional"]["rows"]), dataset, seed_hits).to_parquet(tmp / "conditional.parquet", index=False)  # fmt: skip
        if samples > 0:
            metrics["unconditional"], figures["unconditional"] = _unconditional(
                net, dataset, context, tracks, samples, options, floors, rng
            )
            _hits_table(figures["unconditional"]["generated"], None, dataset, 0).to_parquet(tmp / "unconditional.parquet", index=False)  # fmt: skip
        write_json(tmp / "metrics.json", json_ready(metrics))
        write_report(tmp, metrics, figures)
        write_manifest(
            tmp,
            "generate",
            inputs={"model": str(model), "data": str(data)},
            config={
                "split": split,
                "seed_hits": seed_hits,
                "samples": samples,
                "max_tracks": max_tracks,
                **metrics["decoding"],
            },
            vocab_sha256=dataset.vocab.sha256,
        )
    log.info("generated tracks and their judgement written to %s", out)
    return metrics


def _check_counts(seed_hits: int, samples: int, max_tracks: int | None) -> None:
    if seed_hits < 0:
        raise InputError(f"--seed-hits: must be at least 0, got {seed_hits}")
    if samples < 0:
        raise InputError(f"--samples: must be at least 0, got {samples}")
    if seed_hits == 0 and samples == 0:
        raise InputError("--seed-hits 0 and --samples 0: nothing to generate")
    if max_tracks is not None and max_tracks < 1:
        raise InputError(f"--max-tracks: must be at least 1, got {max_tracks}")


def _decode(net: TrackingBert, dataset: PreparedDataset, tokens: np.ndarray, lengths: np.ndarray,
            hits: np.ndarray | None, options: DecodeOptions, what: str) -> tuple[Generated, float]:  # fmt: skip
    """Decode with a progress bar; returns the tracks and tracks per second."""
    start = time.perf_counter()
    with tqdm(total=len(lengths), desc=what, unit="track", disable=None, leave=False) as bar:
        generated = complete(
            net, dataset.vocab, tokens, lengths, hits if net.config.reads_hits else None, options,
            progress=lambda done: _advance(bar, done),
        )  # fmt: skip
    seconds = time.perf_counter() - start
    return generated, len(lengths) / max(seconds, 1e-9)


def _advance(bar: tqdm, done: int) -> None:
    bar.update(done - bar.n)


def _conditional(
    net: TrackingBert,
    dataset: PreparedDataset,
    context: TaskContext,
    tracks: TrackArrays,
    k: int,
    max_tracks: int | None,
    options: DecodeOptions,
    floors: list[TrackArrays],
    rng: np.random.Generator,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Complete the selected tracks from K seeds; the model's, and the helix follower's, figures."""
    eligible = np.flatnonzero(np.asarray(tracks.lengths) > k)
    if eligible.size == 0:
        raise InputError(f"--seed-hits: no track of the split has more than {k} hits")
    rows = np.sort(rng.permutation(eligible)[: max_tracks or eligible.size])
    chosen = tracks.take(rows)
    true_tokens = np.asarray(chosen.tokens, dtype=np.int64)
    true_lengths = np.asarray(chosen.lengths, dtype=np.int64)
    hits = np.array(chosen.hits, dtype=np.float32)
    seeds = true_tokens[:, :k]
    generated, speed = _decode(net, dataset, seeds, np.full(len(rows), k), hits[:, :k], options,
                               f"complete from {k} seeds")  # fmt: skip
    centres = context.centres_mm

    def judged(tokens: np.ndarray, lengths: np.ndarray) -> dict[str, Any]:
        return conditional_metrics(tokens, lengths, true_tokens, true_lengths, k, centres)

    result = judged(generated.tokens, generated.lengths)
    result["tracks_per_second"] = speed
    baselines = {}
    for name, use_hits in (("helix", False), ("helix_hits", True)):
        follower = HelixFollower(context, use_hits=use_hits, max_length=options.max_hits)
        done = follower.complete(seeds, np.full(len(rows), k), hits[:, :k])
        baselines[name] = judged(done.tokens, done.lengths)
    fair = "helix_hits" if net.config.reads_hits else "helix"
    result["baseline"] = {"name": fair, **baselines[fair]}
    result["baselines"] = baselines
    reference = (true_tokens, true_lengths, hits)
    result["sample"], values = _judge_sample(
        generated, reference, floors, context, rng, "--max-tracks"
    )
    return result, {"generated": generated, "rows": rows, "values": values}


def _unconditional(
    net: TrackingBert,
    dataset: PreparedDataset,
    context: TaskContext,
    tracks: TrackArrays,
    n: int,
    options: DecodeOptions,
    floors: list[TrackArrays],
    rng: np.random.Generator,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Sample n tracks from nothing and judge them against n held-out tracks."""
    n = min(n, len(tracks))
    sampling = dataclasses.replace(options, strategy="sample")
    empty = np.zeros((n, options.max_hits), dtype=np.int64)
    nothing = None if not net.config.reads_hits else np.zeros((n, options.max_hits, 3), np.float32)
    generated, speed = _decode(net, dataset, empty, np.zeros(n, dtype=np.int64), nothing,
                               sampling, "sample from nothing")  # fmt: skip
    picked = tracks.take(np.sort(rng.permutation(len(tracks))[:n]))
    reference = (np.asarray(picked.tokens, dtype=np.int64), np.asarray(picked.lengths, dtype=np.int64), np.array(picked.hits, dtype=np.float32))  # fmt: skip
    judged, values = _judge_sample(generated, reference, floors, context, rng, "--samples")
    return {"samples": n, "tracks_per_second": speed, **judged}, {
        "generated": generated,
        "values": values,
    }


def _floor_sources(dataset: PreparedDataset, split: str) -> list[TrackArrays]:
    """Splits independent of ``split`` to draw floor samples from (val first, then train)."""
    return [dataset.split(name) for name in ("val", "train", "test") if name != split]


def _judge_sample(
    generated: Generated,
    reference: tuple[np.ndarray, np.ndarray, np.ndarray],
    floors: list[TrackArrays],
    context: TaskContext,
    rng: np.random.Generator,
    option: str,
) -> tuple[dict[str, Any], dict[str, dict[str, np.ndarray]]]:
    """Observables' distances (with floors), unfittable fraction and classifier AUC of a sample;
    and the generated and reference observables themselves (for the figures). ``option`` names
    the command-line option that set the sample's size (in the error when no floor fits)."""
    n = len(generated.lengths)
    ref_tokens, ref_lengths, _ = reference
    floor_samples = _floor_samples(floors, n, rng)
    if not floor_samples:
        raise InputError(
            f"{option} {n}: no split but the judged one holds {n} tracks to measure the floors "
            f"with (independent simulated samples of the same size); ask for fewer"
        )
    # Module centres for every sample alike: the model's positions, where it predicts them, are
    # judged by the conditional distances; here a sample is judged by its modules.
    # one helix fit per sample serves its observables and its unfittable tracks
    gen_fits = judge.fit_tracks(generated.tokens, generated.lengths, context)
    ref_fits = judge.fit_tracks(ref_tokens, ref_lengths, context)
    gen_obs = judge.track_observables(generated.tokens, generated.lengths, context, fits=gen_fits)
    ref_obs = judge.track_observables(ref_tokens, ref_lengths, context, fits=ref_fits)
    floor_obs = [judge.track_observables(t, length, context) for t, length in floor_samples]
    gen_bad = judge.unfittable(generated.tokens, generated.lengths, context, fits=gen_fits)
    ref_bad = judge.unfittable(ref_tokens, ref_lengths, context, fits=ref_fits)
    result = {
        "observables": judge.compare_samples(gen_obs, ref_obs, floor_obs),
        "floor_samples": len(floor_samples),
        "unfittable_fraction": float(gen_bad.mean()),
        "reference_unfittable_fraction": float(ref_bad.mean()),
        "classifier_auc": judge.classifier_auc(
            (generated.tokens, generated.lengths), (ref_tokens, ref_lengths), context, seed=0
        ),
    }
    return result, {"generated": gen_obs, "reference": ref_obs}


def _floor_samples(floors: list[TrackArrays], n: int, rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:  # fmt: skip
    """Up to ``MAX_FLOOR_SAMPLES`` disjoint samples of n tracks from the first split that holds n."""
    for source in floors:
        count = min(MAX_FLOOR_SAMPLES, len(source) // n) if n else 0
        if count >= 1:
            order = rng.permutation(len(source))
            out = []
            for i in range(count):
                rows = np.sort(order[i * n : (i + 1) * n])
                out.append((np.asarray(source.tokens[rows], dtype=np.int64), np.asarray(source.lengths[rows], dtype=np.int64)))  # fmt: skip
            return out
    return []


def _hits_table(generated: Generated, truth: TrackArrays | None, dataset: PreparedDataset, k: int) -> pd.DataFrame:  # fmt: skip
    """One row per hit of every generated track: track, hit index, seed or generated, token,
    module ids, predicted position (NaN for a model that predicts none; a seed's measured one)."""
    width = generated.tokens.shape[1]
    position = np.arange(width)[None, :]
    real = position < generated.lengths[:, None]
    track, hit = np.nonzero(real)
    tokens = generated.tokens[track, hit]
    triples = dataset.vocab.decode(tokens)
    if generated.positions_mm is not None:
        xyz = generated.positions_mm[track, hit].astype(np.float64)
    else:
        xyz = np.full((len(track), 3), np.nan)
        if truth is not None:  # the seeds' measured positions
            seed = hit < k
            xyz[seed] = np.asarray(truth.hits)[track[seed], hit[seed]]
    table = {
        "track": track.astype(np.int64),
        "hit": hit.astype(np.int16),
        "seed": hit < k,
        "token": tokens.astype(np.int32),
        "volume_id": triples[:, 0].astype(np.int32),
        "layer_id": triples[:, 1].astype(np.int32),
        "module_id": triples[:, 2].astype(np.int32),
        "x_mm": xyz[:, 0].astype(np.float32),
        "y_mm": xyz[:, 1].astype(np.float32),
        "z_mm": xyz[:, 2].astype(np.float32),
    }
    if truth is not None:
        table["event_id"] = np.asarray(truth.event_id)[track]
        table["particle_id"] = np.asarray(truth.particle_id)[track]
    return pd.DataFrame(table)
