"""``tracklm prepare``: a TrackML event directory -> a tokenized track dataset.

Writes (atomically) ``manifest.json``, ``vocab.json``, ``modules.parquet`` and ``train/``,
``val/``, ``test/`` (``tracklm.io.dataset`` layout). Events are streamed: read one event, extract
its tracks, append them to its split's writer, so memory stays at a few events whatever their
number. With ``workers > 1`` events are read in a process pool and written in event order, so the
dataset is the same as with one worker.

Event split rule (``split_events``): the sorted event ids are shuffled with
``numpy.random.default_rng(seed)``; the first ``n_test`` go to test, the next ``n_val`` to
validation, the rest to training, where ``n = round(fraction * n_events)``. With at least 3 events
a split whose fraction is above 0 gets at least one event, and training keeps at least one unless
the fractions sum to 1: then training is empty by request (``--test-fraction 1`` makes a whole
dataset a test set, for evaluating a model trained elsewhere). Each split lists its events in
increasing order.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import logging
import multiprocessing
import os
from collections import deque
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from tracklm._fs import atomic_output_dir
from tracklm._workers import exit_with_parent
from tracklm.data.tracks import ORDERS, Selection, check_modules, extract_tracks, get_selection
from tracklm.detector.geometry import Detector
from tracklm.detector.vocab import ModuleVocab
from tracklm.errors import InputError
from tracklm.io.dataset import SPLITS, SplitWriter, TrackArrays, modules_table
from tracklm.io.trackml import (
    event_path,
    event_prefix,
    events_without_hits,
    list_events,
    read_part,
)
from tracklm.manifest import sha256_file, write_manifest
from tracklm.tracking.constants import TRACKML_FIELD_TESLA

logger = logging.getLogger(__name__)

EVENT_PARTS = ("hits", "particles", "truth")
# Events in flight per worker: enough to keep the pool busy, few enough to bound memory.
_EVENTS_IN_FLIGHT_PER_WORKER = 2
# Fractions given in decimal (0.3 + 0.7) need not sum to exactly 1.0 in binary.
_FRACTION_SLACK = 1e-9


def split_events(
    event_ids: list[int], val_fraction: float, test_fraction: float, seed: int
) -> dict[str, list[int]]:
    """Assign whole events to train, val and test (see the module docstring for the rule).

    Parameters
    ----------
    event_ids : event numbers (any order; duplicates are not allowed).
    val_fraction, test_fraction : fractions of events in [0, 1] whose sum is at most 1.
    seed : seed of the shuffle; the same ids and seed always give the same split.

    Returns
    -------
    ``{"train": [...], "val": [...], "test": [...]}``, each sorted.
    """
    for option, value in (("--val-fraction", val_fraction), ("--test-fraction", test_fraction)):
        if not 0.0 <= value <= 1.0:
            raise InputError(f"{option}: must be in [0, 1], got {value}")
    total = val_fraction + test_fraction
    if total > 1.0 + _FRACTION_SLACK:
        raise InputError(
            f"--val-fraction + --test-fraction must be at most 1 (got {val_fraction} + {test_fraction})"
        )
    ids = np.array(sorted(event_ids), dtype=np.int64)
    n = ids.size
    sizes = {"val": round(val_fraction * n), "test": round(test_fraction * n)}
    if n >= 3:
        for name, fraction in (("val", val_fraction), ("test", test_fraction)):
            if fraction > 0:
                sizes[name] = max(sizes[name], 1)
    # Training keeps at least one event unless the user gave it none: take back from the larger
    # of val and test. With fractions summing to 1, val and test share every event.
    train_minimum = 0 if total >= 1.0 - _FRACTION_SLACK else 1
    while n and sizes["val"] + sizes["test"] > n - train_minimum:
        larger = "val" if sizes["val"] >= sizes["test"] else "test"
        sizes[larger] -= 1
    if not train_minimum:
        sizes["test"] = n - sizes["val"] if test_fraction > 0 else 0
        sizes["val"] = n - sizes["test"]
    shuffled = ids[np.random.default_rng(seed).permutation(n)]
    n_test, n_val = sizes["test"], sizes["val"]
    return {
        "train": sorted(int(i) for i in shuffled[n_test + n_val :]),
        "val": sorted(int(i) for i in shuffled[n_test : n_test + n_val]),
        "test": sorted(int(i) for i in shuffled[:n_test]),
    }


def resolve_detector(events: Path, detector: str | os.PathLike[str] | None) -> Detector:
    """``detector`` if given, else ``EVENTS/detectors.csv`` if present, else the built-in one."""
    if detector is None:
        local = events / "detectors.csv"
        detector = local if local.is_file() else "trackml"
    return Detector.load(detector)


def events_magnetic_field(events: Path) -> dict[str, Any]:
    """The field the events of ``events`` were made with, and where that figure comes from.

    ``tracklm simulate`` records its config in ``EVENTS/manifest.json``
    (``config.simulation.magnetic_field_tesla``). Without that record (real TrackML events, or a
    directory from elsewhere) the events are taken to be TrackML's, made at 2 T.

    Returns
    -------
    ``{"tesla": B, "source": "..."}``, recorded as ``magnetic_field`` in the dataset's manifest.
    """
    path = events / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
        tesla = manifest["config"]["simulation"]["magnetic_field_tesla"]
    except FileNotFoundError:
        reason = "no manifest.json in the events directory"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        reason = f"{path} records no field ({type(exc).__name__}: {exc})"
        logger.warning("%s; taking the TrackML field, %g T", reason, TRACKML_FIELD_TESLA)
    else:
        return {"tesla": float(tesla), "source": f"{path}: config.simulation.magnetic_field_tesla"}
    return {
        "tesla": TRACKML_FIELD_TESLA,
        "source": f"TrackML default (real TrackML data): {reason}",
    }


@dataclass
class _EventResult:
    event_id: int
    tracks: TrackArrays | None
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    error: str | None = None


@dataclass(frozen=True)
class _EventJob:
    """Everything a worker needs to turn one event into tracks."""

    events: Path
    detector: Detector
    vocab: ModuleVocab
    selection: Selection
    order: str


_WORKER_JOB: _EventJob | None = None


def _init_worker(job: _EventJob) -> None:
    global _WORKER_JOB
    exit_with_parent()
    _WORKER_JOB = job


def _worker_prepare(event_id: int) -> _EventResult:
    assert _WORKER_JOB is not None
    return _prepare_event(_WORKER_JOB, event_id)


def _prepare_event(job: _EventJob, event_id: int) -> _EventResult:
    """Read, check and extract one event; input errors come back as the result's ``error``."""
    try:
        paths = {part: event_path(job.events, event_id, part) for part in EVENT_PARTS}
        tables = {part: read_part(path, part) for part, path in paths.items()}
        check_modules(tables["hits"], job.detector, paths["hits"])
        tracks = extract_tracks(
            tables["hits"],
            tables["truth"],
            tables["particles"],
            job.vocab,
            job.selection,
            job.order,
            event_id=event_id,
            sources={part: str(path) for part, path in paths.items()},
        )
    except InputError as exc:
        return _EventResult(event_id, None, error=str(exc).splitlines()[0])
    files = {
        path.name: {"bytes": path.stat().st_size, "sha256": sha256_file(path)}
        for path in paths.values()
    }
    return _EventResult(event_id, tracks, files)


def _results_in_order(
    job: _EventJob, event_ids: list[int], workers: int
) -> Generator[_EventResult, None, None]:
    """Results of ``event_ids`` in the given order, computed by ``workers`` processes."""
    if workers <= 1 or len(event_ids) <= 1:
        for event_id in event_ids:
            yield _prepare_event(job, event_id)
        return
    # spawn: worker processes start clean (no inherited pyarrow thread pools).
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=_init_worker, initargs=(job,)
    ) as pool:
        pending: deque[concurrent.futures.Future[_EventResult]] = deque()
        remaining = iter(event_ids)
        limit = workers * _EVENTS_IN_FLIGHT_PER_WORKER
        try:
            for event_id in remaining:
                pending.append(pool.submit(_worker_prepare, event_id))
                if len(pending) >= limit:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def run_prepare(
    events: str | os.PathLike[str],
    out: str | os.PathLike[str],
    detector: str | os.PathLike[str] | None = None,
    selection: str = "pixel-4to8",
    order: str = "distance",
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    workers: int = 1,
    tolerant: bool = False,
) -> dict[str, Any]:
    """Tokenize the events of a TrackML directory into a dataset directory ``out``.

    Parameters
    ----------
    events : TrackML event directory (``eventNNNNNNNNN-{hits,particles,truth}.csv[.gz]``).
    out : dataset directory to create (must not exist, or be empty).
    detector : ``"trackml"`` or a ``detectors.csv`` path; default ``EVENTS/detectors.csv`` if
        present, else the built-in detector.
    selection : a name of ``tracklm.data.tracks.SELECTIONS``.
    order : hit order, one of ``tracklm.data.tracks.ORDERS``.
    val_fraction, test_fraction : fractions of events (split by event; see ``split_events``).
    seed : seed of the event split.
    workers : processes reading events; the output does not depend on it.
    tolerant : skip bad events with a warning (recorded in the manifest) instead of failing.

    Returns
    -------
    The manifest written to ``out/manifest.json``.
    """
    events = Path(events)
    chosen, event_ids = _check_options(events, selection, order, workers)
    split = split_events(event_ids, val_fraction, test_fraction, seed)
    geometry = resolve_detector(events, detector)
    job = _EventJob(events, geometry, chosen.vocab(geometry), chosen, order)
    config = {
        "selection": chosen.to_dict(),
        "order": order,
        "val_fraction": val_fraction,
        "test_fraction": test_fraction,
        "seed": seed,
        "tolerant": tolerant,
    }
    with atomic_output_dir(out) as tmp:
        job.vocab.save(tmp / "vocab.json")
        modules_table(job.vocab, geometry).to_parquet(tmp / "modules.parquet", index=False)
        written = _write_splits(tmp, job, event_ids, split, workers, tolerant)
        manifest = _write_prepare_manifest(tmp, job, written, config)
    logger.info(
        "prepared %s tracks (train/val/test) from %d events into %s%s",
        "/".join(str(written.n_tracks[name]) for name in SPLITS),
        sum(len(ids) for ids in written.events.values()),
        out,
        f"; skipped {len(written.skipped)} bad events" if written.skipped else "",
    )
    return manifest


def _check_options(
    events: Path, selection: str, order: str, workers: int
) -> tuple[Selection, list[int]]:
    """The selection called ``selection`` and the event ids found in ``events``.

    Raises ``InputError`` naming the option for an unknown selection or order, fewer than one
    worker, or an events directory without events.
    """
    chosen = get_selection(selection)
    if order not in ORDERS:
        raise InputError(f"--order: unknown order {order!r} (choose from {', '.join(ORDERS)})")
    if workers < 1:
        raise InputError(f"--workers: must be at least 1, got {workers}")
    event_ids = list_events(events)
    if not event_ids:
        raise InputError(f"{events}: no events (no eventNNNNNNNNN-hits.csv[.gz] files)")
    orphans = events_without_hits(events)
    if orphans:
        raise InputError(
            f"{events / event_prefix(orphans[0])}-hits.csv[.gz]: missing hits file for event "
            f"{orphans[0]} (its other parts are there)"
        )
    return chosen, event_ids


@dataclass
class _WrittenSplits:
    """What ``_write_splits`` wrote.

    Attributes
    ----------
    events : ids of the events written to each split (keys ``SPLITS``), in increasing order.
    n_tracks : number of tracks written to each split.
    skipped : ``{"event_id", "reason"}`` of each bad event skipped (``tolerant`` only).
    input_files : ``{name: {"bytes", "sha256"}}`` of every event file read.
    """

    events: dict[str, list[int]]
    n_tracks: dict[str, int]
    skipped: list[dict[str, Any]]
    input_files: dict[str, dict[str, Any]]


def _write_splits(
    tmp: Path,
    job: _EventJob,
    event_ids: list[int],
    split: dict[str, list[int]],
    workers: int,
    tolerant: bool,
) -> _WrittenSplits:
    """Extract the tracks of ``event_ids`` and append each event's to its split in ``tmp``.

    Parameters
    ----------
    tmp : the dataset directory being written; ``tmp/train``, ``tmp/val``, ``tmp/test`` are
        created (``tracklm.io.dataset.SplitWriter``).
    job : what each event is turned into tracks with.
    event_ids : the events, in the order they are written.
    split : event ids of each split (``split_events``).
    workers : processes reading events (see ``_results_in_order``).
    tolerant : skip bad events with a warning instead of raising ``InputError``.

    Returns
    -------
    What was written; ``InputError`` when every event was bad.
    """
    split_of = {event_id: name for name, ids in split.items() for event_id in ids}
    written = _WrittenSplits({name: [] for name in SPLITS}, {}, [], {})
    with contextlib.ExitStack() as stack:
        writers = {
            name: stack.enter_context(SplitWriter(tmp / name, job.selection.max_hits))
            for name in SPLITS
        }
        progress = stack.enter_context(
            tqdm(total=len(event_ids), desc="prepare", unit="event", disable=None)
        )
        results = stack.enter_context(
            contextlib.closing(_results_in_order(job, event_ids, workers))
        )
        for result in results:
            progress.update(1)
            if result.error is not None:
                if not tolerant:
                    raise InputError(result.error)
                logger.warning("skipping event %d: %s", result.event_id, result.error)
                written.skipped.append({"event_id": result.event_id, "reason": result.error})
                continue
            assert result.tracks is not None
            name = split_of[result.event_id]
            writers[name].append(result.tracks)
            written.events[name].append(result.event_id)
            written.input_files.update(result.files)
        written.n_tracks = {name: writers[name].n_tracks for name in SPLITS}
    if written.skipped and not any(written.events.values()):
        raise InputError(
            f"{job.events}: all {len(event_ids)} events are bad "
            f"(first: {written.skipped[0]['reason']})"
        )
    return written


def _write_prepare_manifest(
    tmp: Path, job: _EventJob, written: _WrittenSplits, config: dict[str, Any]
) -> dict[str, Any]:
    """Write ``tmp/manifest.json`` (last, once every other file is there) and return it.

    ``config`` holds the options of ``run_prepare`` that shaped the dataset.
    """
    detector_input: dict[str, Any] = {"name": job.detector.name}
    if Path(job.detector.name).is_file():
        # absolute, like the events: the dataset is read from other directories later
        detector_input["name"] = str(Path(job.detector.name).resolve())
        detector_input["sha256"] = sha256_file(job.detector.name)
    return write_manifest(
        tmp,
        "prepare",
        n_tracks=written.n_tracks,
        events=written.events,
        selection=job.selection.name,
        order=job.order,
        vocab_sha256=job.vocab.sha256,
        max_length=job.selection.max_hits,
        skipped_events=written.skipped,
        magnetic_field=events_magnetic_field(job.events),
        inputs={
            "events": str(job.events.resolve()),
            "detector": detector_input,
            "files": written.input_files,
        },
        config=config,
    )
