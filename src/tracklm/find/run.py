"""``tracklm find``: full-event track finding, one submission file per event.

Reads each event's hits from EVENTS (every hit of the evaluated volumes, noise included), finds
tracks with the chosen method and writes ``TRACKS/eventNNNNNNNNN-tracks.csv`` (``event_id,
hit_id, track_id``; every hit of the event exactly once, ``track_id`` 0 for hits in no track or
outside the evaluated volumes) and ``TRACKS/manifest.json`` with ``seconds_per_event`` and
``seconds_per_stage`` (what ``tracklm score`` reads). Events are processed one at a time, so
memory does not grow with their number.

The detector is ``EVENTS/detectors.csv`` when present, else the built-in TrackML geometry (the
same module ids as the real detector); the field is the one the events' ``simulate`` manifest
records, else TrackML's 2 T.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from tracklm._fs import atomic_output_dir
from tracklm.data.prepare import events_magnetic_field, resolve_detector
from tracklm.detector.geometry import Detector
from tracklm.errors import InputError
from tracklm.find.config import FinderConfig
from tracklm.find.finder import HELIX, Method, StageTimes, find_tracks
from tracklm.find.hits import EventHits
from tracklm.find.layers import FinderLayers
from tracklm.io.trackml import event_path, list_events, read_part
from tracklm.manifest import write_manifest
from tracklm.score.run import DEFAULT_VOLUMES, parse_volumes
from tracklm.score.submission import submission_table, write_submission

logger = logging.getLogger(__name__)

METHODS = ("helix", "model")


def finder_volumes(volumes: str, detector: Detector) -> tuple[int, ...]:
    """The volume ids of ``--volumes`` (``"all"``: every volume of the detector)."""
    parsed = parse_volumes(volumes)
    if parsed is None:
        return tuple(int(v) for v in np.unique(detector.ids[:, 0]))
    return parsed


def load_method(
    method: str,
    model: str | os.PathLike[str] | None,
    detector: Detector,
    volumes: tuple[int, ...],
    scorer: str | os.PathLike[str] | None = None,
) -> tuple[Method, dict[str, Any]]:
    """The finder method named by ``--method`` and what the manifest records about it.

    Raises ``InputError`` for an unknown method, ``--method model`` without ``--model``, a
    ``--model`` or ``--scorer`` given to another method, a ``--scorer`` beside a ``--model``
    that is itself a scorer, or a model whose vocabulary is not the detector's modules of
    ``volumes``.
    """
    if method not in METHODS:
        raise InputError(f"--method: expected one of {', '.join(METHODS)}, got {method!r}")
    if method == "helix":
        if model is not None:
            raise InputError("--model: only --method model uses a model")
        if scorer is not None:
            raise InputError("--scorer: only --method model uses a scorer")
        return HELIX, {}
    if model is None:
        raise InputError("--method model needs --model RUN/model")
    from tracklm.find.model import model_method, scorer_method

    built, record = model_method(Path(model), detector, volumes)
    if scorer is None:
        return built, record
    if record.get("task") is not None:
        raise InputError(
            f"--scorer: --model {model} is already a candidate scorer; give --model a "
            "pre-trained model to decide the steps"
        )
    scoring, scorer_record = scorer_method(Path(scorer), detector, volumes, "--scorer")
    return Method("model", built.decider, scoring.quality), record | {"scorer": scorer_record}


def run_find(
    events: str | os.PathLike[str],
    out: str | os.PathLike[str],
    method: str = "helix",
    model: str | os.PathLike[str] | None = None,
    volumes: str = DEFAULT_VOLUMES,
    short_veto: float = 0.0,
    scorer: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Find the tracks of every event of ``events`` and write their submission files.

    Parameters
    ----------
    events : TrackML event directory (``eventNNNNNNNNN-hits.csv[.gz]``; truth is not read).
    out : the tracks directory to write (must not exist, or be empty).
    method : ``"helix"`` (classical seeded helix follower) or ``"model"`` (the same seeds and
        stages, a pre-trained TrackingBERT deciding the extension and ranking candidates).
    model : model directory (``RUN/model``) for ``--method model``.
    volumes : evaluated volume ids, comma-separated (default the pixel volumes 7,8,9), or
        ``"all"``.
    short_veto : for ``--method model``, the quantile of the model's values for the event's
        real tracks below which a candidate of at most 4 hits is dropped (0: off; see
        ``FinderConfig.model_short_veto_quantile``).
    scorer : for ``--method model``, a model fine-tuned on candidates (``tracklm finetune
        --task candidates``) that orders and vetoes the candidates; ``model`` then decides only
        the steps (``find.model.scorer_method``).

    Returns
    -------
    The content of ``manifest.json``.
    """
    events = Path(events)
    event_ids = list_events(events)
    if not event_ids:
        raise InputError(f"{events}: no eventNNNNNNNNN-hits.csv[.gz] files")
    detector = resolve_detector(events, None)
    volume_ids = finder_volumes(volumes, detector)
    field = events_magnetic_field(events)
    b_field_t = float(field["tesla"])
    if not 0.0 <= short_veto < 1.0:
        raise InputError(f"--short-veto: expected a quantile in [0, 1), got {short_veto}")
    if short_veto > 0 and method != "model":
        raise InputError("--short-veto: only --method model vetoes candidates by the model")
    config = FinderConfig(model_short_veto_quantile=short_veto)
    setup_start = time.perf_counter()
    layers = FinderLayers.from_detector(detector, volume_ids, b_field_t, config.seed_layer_support)
    finder, method_record = load_method(method, model, detector, volume_ids, scorer)
    if short_veto > 0 and (scorer is not None or method_record.get("task") is not None):
        raise InputError(
            "--short-veto: a candidate scorer orders and vetoes the candidates; the short veto "
            "reads a pre-trained model's pseudo-log-likelihood"
        )
    setup_seconds = time.perf_counter() - setup_start
    times = StageTimes()
    per_event: dict[str, dict[str, Any]] = {}
    with atomic_output_dir(out) as tmp:
        for event_id in tqdm(event_ids, desc=f"find ({method})", unit="event", disable=None):
            start = time.perf_counter()
            source = event_path(events, event_id, "hits")
            table = read_part(source, "hits")
            hits, evaluated = EventHits.from_table(table, layers, str(source))
            times.add("read", time.perf_counter() - start)
            found = find_tracks(hits, layers, config, finder, b_field_t, times)
            write_start = time.perf_counter()
            track_id = np.zeros(len(table), dtype=np.int64)
            track_id[evaluated] = found
            write_submission(
                tmp, submission_table(event_id, table["hit_id"].to_numpy(), track_id), event_id
            )
            times.add("write", time.perf_counter() - write_start)
            per_event[str(event_id)] = {
                "hits": int(evaluated.sum()),
                "tracks": int(found.max(initial=0)),
                "hits_in_tracks": int((found > 0).sum()),
                "seconds": time.perf_counter() - start,
            }
        n_events = len(event_ids)
        seconds_per_stage = {stage: s / n_events for stage, s in times.seconds.items()}
        manifest = write_manifest(
            tmp,
            "find",
            inputs={"events": str(events.resolve())},
            method=method,
            model=method_record or None,
            volumes=list(volume_ids),
            detector=str(events / "detectors.csv")
            if (events / "detectors.csv").is_file()
            else "trackml (built-in)",
            magnetic_field=field,
            config=dataclasses.asdict(config),
            events=[int(e) for e in event_ids],
            seconds_per_event=sum(e["seconds"] for e in per_event.values()) / n_events,
            seconds_per_stage=seconds_per_stage,
            setup_seconds=setup_seconds,
            per_event=per_event,
        )
    logger.info(
        "find (%s): %d events, %.1f s per event, %.0f tracks per event -> %s",
        method,
        n_events,
        manifest["seconds_per_event"],
        np.mean([e["tracks"] for e in per_event.values()]),
        out,
    )
    return manifest
