"""Corrupted inputs for every ``tracklm`` verb: the case library of the fuzzing harness.

``benchmarks/fuzz_inputs.py`` (the script) and ``tests/test_fuzz.py`` (a seeded sample in the
default suite) both use this module; the test imports it by path, as the other benchmark tests
import their scripts.

A case is (verb, input kind, mutation, seed). ``run_case`` copies a clean input into a scratch
directory, corrupts the copy as the mutation says (its parameters drawn from the seed), runs the
verb through ``tracklm.cli.main`` in this process (or as a real process with ``subprocess=True``)
and classifies what happened:

* an error case is clean when the exit status is 2, stderr holds no traceback, its last line is
  the one error line ``tracklm VERB: error: ...`` and names the file or option at fault, and no
  output is left behind (neither ``--out`` nor a ``.NAME.tmp-*`` beside it);
* a benign case (extra columns, Windows line endings, a byte-order mark, the other pitch layout,
  a stray file, a reformatted config, ...) is clean when the exit status is 0 and the outputs
  equal those the verb gives for the clean input (its "twin", run once and cached).

Clean inputs (``CleanInputs.build``, about 10 s on one core): the pixel volumes (7, 8, 9) of the
real TrackML ``detectors.csv`` when ``../shared/data`` holds it (else of the built-in detector), 4
events simulated on it at pile-up 1, their prepared dataset, a second dataset over a vocabulary one
module smaller, an untrained tiny model over the first, small pretrain and finetune configs, and
two track finders' outputs for ``score``: the perfect submission of the events and a noisy one
(split, merged and left-out tracks, stray hits, a fake track of noise).
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
REAL_DETECTORS = REPO.parent / "shared" / "data" / "trackml" / "detectors.csv"

VERBS = (
    "simulate",
    "prepare",
    "pretrain",
    "evaluate",
    "embed",
    "finetune",
    "export",
    "score",
    "find",
)
KINDS = ("events", "geometry", "tracks", "dataset", "model", "config", "options")
OUT_NAMES = {"embed": "out.parquet", "export": "out.onnx"}
"""Name of the ``--out`` of each verb in a case's directory (a directory unless listed)."""

EVENT_PARTS = ("hits", "particles", "truth")
TASKS = ("holes", "outliers", "extrapolate", "pt")
PRETRAIN_CONFIG = {
    "max_steps": 2,
    "batch_size": 8,
    "warmup_steps": 1,
    "val_every": 1,
    "val_batches": 1,
    "checkpoint_every": 2,
    "num_workers": 0,
    "lr": 0.001,
    "mask_rate_steps": [1, 2],
}
FINETUNE_CONFIG = {
    "batch_size": 16,
    "max_steps": 2,
    "warmup_steps": 1,
    "val_every": 1,
    "val_tracks": 16,
    "eval_tracks": 32,
    "eval_batch_size": 64,
    "accelerator": "cpu",
}


# ---------------------------------------------------------------------------------- clean inputs
@dataclass
class CleanInputs:
    """The clean inputs every case starts from, made once in ``root``.

    Attributes
    ----------
    root : directory holding everything below (and the twins' outputs).
    geometry : ``detectors.csv`` of the pixel volumes.
    events : TrackML event directory (4 events, with ``detectors.csv`` = ``geometry``).
    data : its prepared dataset (val and test fractions 0.25).
    data_other : the same events prepared over ``geometry`` less one module no hit lies on.
    model : an untrained tiny model directory over ``data``'s vocabulary.
    pretrain_config, finetune_config : YAML configs of 2-step runs.
    tracks : the perfect submission of ``events`` (``score --tracks``, one file per event).
    tracks_noisy : a valid submission of the same events that scores well below 1.
    """

    root: Path
    geometry: Path
    events: Path
    data: Path
    data_other: Path
    model: Path
    pretrain_config: Path
    finetune_config: Path
    tracks: Path
    tracks_noisy: Path
    twins: dict[str, Path] = field(default_factory=dict)
    _tables: dict[tuple[int, str], pd.DataFrame] = field(default_factory=dict)

    @classmethod
    def build(cls, root: Path) -> CleanInputs:
        """Make the clean inputs in ``root`` (or reuse those a previous call made there)."""
        import torch
        import yaml

        from tracklm.data.prepare import run_prepare
        from tracklm.detector.geometry import Detector
        from tracklm.io.dataset import open_dataset
        from tracklm.models.bert import TrackingBert, TrackingBertConfig
        from tracklm.score.submission import write_truth_tracks
        from tracklm.simulate.event import run_simulate

        root.mkdir(parents=True, exist_ok=True)
        inputs = cls(
            root=root,
            geometry=root / "geometry.csv",
            events=root / "events",
            data=root / "data",
            data_other=root / "data_other",
            model=root / "model",
            pretrain_config=root / "pretrain.yaml",
            finetune_config=root / "finetune.yaml",
            tracks=root / "tracks",
            tracks_noisy=root / "tracks_noisy",
        )
        if (root / "ready").is_file():
            return inputs
        source = Detector.from_csv(REAL_DETECTORS) if REAL_DETECTORS.is_file() else None
        detector = (source or Detector.builtin("trackml")).select_volumes((7, 8, 9))
        detector.to_csv(inputs.geometry)
        run_simulate(inputs.events, detector=str(inputs.geometry), events=4, pileup=1.0, seed=0)
        splits = {"val_fraction": 0.25, "test_fraction": 0.25}
        run_prepare(inputs.events, inputs.data, **splits)
        # A vocabulary one module smaller: drop a module that no hit lies on.
        used = set()
        for event_id in range(1, 5):
            hits = inputs.table(event_id, "hits")
            used |= set(zip(hits.volume_id, hits.layer_id, hits.module_id))
        ids = detector.ids
        unused = next(i for i, triple in enumerate(map(tuple, ids.tolist())) if triple not in used)
        other = root / "geometry_other.csv"
        detector.modules.drop(index=unused).to_csv(other, index=False, float_format="%.7g")
        run_prepare(inputs.events, inputs.data_other, detector=str(other), **splits)
        vocab = open_dataset(inputs.data).vocab
        torch.manual_seed(1234)
        config = TrackingBertConfig.preset("tiny", vocab_size=len(vocab), max_length=19)
        TrackingBert(config).save_pretrained(inputs.model, vocab)
        inputs.pretrain_config.write_text(yaml.safe_dump(PRETRAIN_CONFIG, sort_keys=False))
        inputs.finetune_config.write_text(yaml.safe_dump(FINETUNE_CONFIG, sort_keys=False))
        write_truth_tracks(inputs.events, inputs.tracks)
        inputs._write_noisy_tracks(np.random.default_rng(7))
        (root / "ready").write_text("")
        return inputs

    def _write_noisy_tracks(self, rng: np.random.Generator) -> None:
        """A submission with a finder's usual faults: each particle's hits one track under a
        shuffled id, then about a fifth of the tracks split in two, a tenth merged into another,
        5% of the hits moved to a random track and 5% left out; noise hits half left out, half
        one fake track."""
        from tracklm.score.submission import submission_table, write_submission

        for event_id in range(1, 5):
            truth = self.table(event_id, "truth")
            particles, track = np.unique(truth.particle_id.to_numpy(), return_inverse=True)
            ids = rng.permutation(np.arange(1, particles.size + 1)) * 3
            track = ids[track.reshape(-1)]
            noise = truth.particle_id.to_numpy() == 0
            track[noise] = np.where(rng.random(noise.sum()) < 0.5, 0, 1)  # 1: the fake track
            n = len(track)
            next_id = int(ids.max()) + 1
            for particle_track in np.unique(track[~noise]):
                rows = np.flatnonzero(track == particle_track)
                draw = rng.random()
                if draw < 0.2 and rows.size >= 2:
                    track[rows[rows.size // 2 :]] = next_id
                    next_id += 1
                elif draw < 0.3:
                    track[rows] = ids[int(rng.integers(ids.size))]
            moved = rng.random(n) < 0.05
            track[moved] = rng.choice(ids, int(moved.sum()))
            track[rng.random(n) < 0.05] = 0
            write_submission(
                self.tracks_noisy, submission_table(event_id, truth.hit_id.to_numpy(), track)
            )

    def table(self, event_id: int, part: str) -> pd.DataFrame:
        """A clean event table (read once)."""
        from tracklm.io.trackml import event_path, read_part

        key = (event_id, part)
        if key not in self._tables:
            self._tables[key] = read_part(event_path(self.events, event_id, part), part)
        return self._tables[key]

    def argv(self, verb: str, out: Path, **paths: Any) -> list[str]:
        """The clean command line of ``verb`` writing ``out``; ``paths`` replace clean inputs.

        Keys of ``paths``: ``events``, ``detector`` (prepare: none by default), ``data``,
        ``model``, ``config``, ``task`` (finetune, default ``pt``), ``tracks`` (score, default
        the perfect submission) and ``extra`` (options appended).
        """
        get = paths.get
        if verb == "simulate":
            argv = ["simulate", "--out", out, "--detector", get("detector", self.geometry)]
            argv += ["--events", "1", "--pileup", "0"]
        elif verb == "prepare":
            argv = ["prepare", "--events", get("events", self.events), "--out", out]
            argv += ["--val-fraction", "0.25", "--test-fraction", "0.25"]
            if get("detector") is not None:
                argv += ["--detector", get("detector")]
        elif verb == "pretrain":
            argv = ["pretrain", "--data", get("data", self.data), "--out", out]
            argv += ["--config", get("config", self.pretrain_config), "--accelerator", "cpu"]
        elif verb == "evaluate":
            argv = ["evaluate", "--model", get("model", self.model)]
            argv += ["--data", get("data", self.data), "--out", out, "--max-tracks", "16"]
        elif verb == "embed":
            argv = ["embed", "--model", get("model", self.model), "--out", out]
        elif verb == "finetune":
            argv = ["finetune", "--task", get("task", "pt"), "--model", get("model", self.model)]
            argv += ["--data", get("data", self.data), "--out", out]
            argv += ["--config", get("config", self.finetune_config)]
        elif verb == "export":
            argv = ["export", "--model", get("model", self.model), "--out", out]
        elif verb == "score":
            argv = ["score", "--events", get("events", self.events)]
            argv += ["--tracks", get("tracks", self.tracks), "--out", out]
        elif verb == "find":
            argv = ["find", "--events", get("events", self.events), "--out", out]
        else:
            raise ValueError(f"unknown verb {verb!r}")
        return [str(a) for a in [*argv, *get("extra", [])]]


# ---------------------------------------------------------------------------------- cases
@dataclass(frozen=True)
class Case:
    """One fuzzing case: run ``verb`` on an input of ``kind`` corrupted by ``mutation``."""

    verb: str
    kind: str
    mutation: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.verb}/{self.kind}/{self.mutation}#{self.seed}"


@dataclass
class Setup:
    """What a mutation made: the command line and how to judge its result.

    Attributes
    ----------
    argv : the verb's command line.
    blame : for an error case, strings one of which the error line must contain (the path of
        the corrupted file, or the option at fault).
    benign : the corruption is no error; the outputs must equal the twin's.
    twin : for a benign case, the ``CleanInputs.argv`` keywords of the clean run to compare with.
    keep : for an error case whose ``--out`` existed before, the entries it must still hold.
    """

    argv: list[str]
    blame: tuple[str, ...] = ()
    benign: bool = False
    twin: dict[str, Any] = field(default_factory=dict)
    keep: tuple[str, ...] | None = None


@dataclass
class Context:
    """What a mutation works with: the clean inputs, a scratch directory, the verb and a seeded rng."""

    inputs: CleanInputs
    work: Path
    verb: str
    rng: np.random.Generator
    task: str = "pt"

    def __post_init__(self) -> None:
        if self.verb == "finetune":
            self.task = self.choice(TASKS)

    @property
    def out(self) -> Path:
        return self.work / OUT_NAMES.get(self.verb, "out")

    def argv(self, **paths: Any) -> list[str]:
        return self.inputs.argv(self.verb, self.out, **{"task": self.task, **paths})

    def choice(self, options: Sequence[Any]) -> Any:
        return options[int(self.rng.integers(len(options)))]

    def copy(self, source: Path, name: str) -> Path:
        target = self.work / name
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            shutil.copyfile(source, target)
        return target


@dataclass(frozen=True)
class Mutation:
    """A way to corrupt one kind of input, for the verbs that read it."""

    name: str
    kind: str
    verbs: tuple[str, ...]
    apply: Callable[[Context], Setup]
    benign: bool = False
    weight: float = 1.0


MUTATIONS: dict[str, Mutation] = {}


def mutation(
    kind: str, verbs: Sequence[str], *, benign: bool = False, weight: float = 1.0
) -> Callable[[Callable[[Context], Setup]], Callable[[Context], Setup]]:
    """Register the decorated function as mutation ``KIND/NAME`` (NAME: the function's)."""

    def register(apply: Callable[[Context], Setup]) -> Callable[[Context], Setup]:
        name = apply.__name__.removeprefix("_")
        MUTATIONS[f"{kind}/{name}"] = Mutation(name, kind, tuple(verbs), apply, benign, weight)
        return apply

    return register


def make_cases(n: int, seed: int) -> list[Case]:
    """``n`` cases drawn with ``numpy.random.default_rng(seed)``: a mutation by weight, then one
    of its verbs uniformly, then the seed of its parameters."""
    rng = np.random.default_rng(seed)
    mutations = list(MUTATIONS.values())
    weights = np.array([m.weight for m in mutations])
    cases = []
    for _ in range(n):
        chosen = mutations[int(rng.choice(len(mutations), p=weights / weights.sum()))]
        verb = chosen.verbs[int(rng.integers(len(chosen.verbs)))]
        cases.append(Case(verb, chosen.kind, chosen.name, int(rng.integers(2**31))))
    return cases


# ---------------------------------------------------------------------------------- CSV text
@dataclass
class CsvText:
    """A CSV file as text fields (the files tracklm writes hold no quotes or commas in fields)."""

    header: list[str]
    rows: list[list[str]]

    @classmethod
    def read(cls, path: Path) -> CsvText:
        data = path.read_bytes()
        if path.suffix == ".gz":
            data = gzip.decompress(data)
        lines = data.decode().splitlines()
        return cls(lines[0].split(","), [line.split(",") for line in lines[1:]])

    def text(self) -> str:
        return "".join(",".join(fields) + "\n" for fields in [self.header, *self.rows])

    def column(self, name: str) -> int:
        return self.header.index(name)

    def drop_column(self, name: str) -> None:
        index = self.column(name)
        for fields in [self.header, *self.rows]:
            del fields[index]


def write_file(path: Path, data: str | bytes) -> None:
    """Write ``data`` to ``path``, gzip-compressed when the name ends in ``.gz``."""
    raw = data.encode() if isinstance(data, str) else data
    path.write_bytes(gzip.compress(raw, mtime=0) if path.suffix == ".gz" else raw)


@dataclass(frozen=True)
class TableRules:
    """What each column of a CSV table may hold, for choosing corruptions that are errors.

    Attributes
    ----------
    required : columns the reader needs.
    integer : integer columns with their numpy dtype names (``int32`` or ``int64``).
    positive : columns whose values must be >= 0 (ids, counts) or > 0 (sizes).
    fractional : float columns whose values are not all whole numbers.
    float64 : float columns read as float64 (the rest are float32).
    """

    required: tuple[str, ...]
    integer: dict[str, str]
    positive: tuple[str, ...]
    fractional: tuple[str, ...]
    float64: tuple[str, ...] = ()


def table_rules(part: str) -> TableRules:
    """The rules of an event part (``hits``, ``particles``, ``truth``), of a submission
    (``tracks``: integers only) or of ``geometry``."""
    from tracklm.detector.table import ID_COLUMNS, TRACKML_COLUMNS
    from tracklm.io.trackml import NON_NEGATIVE_COLUMNS, PART_COLUMNS

    if part == "geometry":
        sizes = ("module_t", "module_maxhu", "module_hv", "pitch_u", "pitch_v")
        return TableRules(
            required=TRACKML_COLUMNS,
            integer=dict.fromkeys(ID_COLUMNS, "int32"),
            positive=(*ID_COLUMNS, *sizes),
            fractional=("cx", "cy", "rot_xu", "rot_yu"),
            float64=TRACKML_COLUMNS[3:],
        )
    columns = PART_COLUMNS[part]
    integer = {c: np.dtype(t).name for c, t in columns.items() if np.dtype(t).kind == "i"}
    fractional = {"hits": ("x", "y"), "particles": ("px", "py"), "truth": ("tx", "tpx")}.get(
        part, ()
    )
    return TableRules(
        required=tuple(columns),
        integer=integer,
        positive=tuple(c for c in columns if c in NON_NEGATIVE_COLUMNS),
        fractional=fractional,
    )


# ---------------------------------------------------------------------------------- targets
@dataclass
class Target:
    """A CSV file to corrupt inside a case's copy of the inputs, and the command line reading it."""

    path: Path
    part: str
    argv: list[str]
    twin: dict[str, Any]


def csv_target(ctx: Context, kind: str) -> Target:
    """An events part (kind ``events``), a detector file (``geometry``) or a submission file
    (``tracks``) to corrupt.

    A detector file is the ``--detector`` of ``simulate`` or ``prepare``, or (``prepare``) the
    ``detectors.csv`` of the events directory. A submission file is one event's in a copy of the
    perfect or the noisy clean submission, gzip-compressed (``.csv.gz``) one time in three.
    """
    if kind == "tracks":
        source = ctx.choice([ctx.inputs.tracks, ctx.inputs.tracks_noisy])
        tracks = ctx.copy(source, "tracks")
        path = tracks / f"event{int(ctx.rng.integers(1, 5)):09d}-tracks.csv"
        target = Target(path, "tracks", ctx.argv(tracks=tracks), {"tracks": source})
        return gzipped(target) if ctx.rng.random() < 1 / 3 else target
    if kind == "geometry":
        if ctx.verb == "prepare" and ctx.rng.random() < 0.5:
            events = ctx.copy(ctx.inputs.events, "events")
            return Target(events / "detectors.csv", "geometry", ctx.argv(events=events), {})
        path = ctx.copy(ctx.inputs.geometry, "detectors.csv")
        return Target(path, "geometry", ctx.argv(detector=path), {"detector": ctx.inputs.geometry})
    events = ctx.copy(ctx.inputs.events, "events")
    # find reads the hits alone: a corrupted truth or particles file is not its input.
    parts = ("hits",) if ctx.verb == "find" else EVENT_PARTS
    event_id, part = int(ctx.rng.integers(1, 5)), ctx.choice(parts)
    path = events / f"event{event_id:09d}-{part}.csv.gz"
    return Target(path, part, ctx.argv(events=events), {})


def gzipped(target: Target) -> Target:
    """The target with its file replaced by its gzip-compressed ``.gz`` twin (a no-op when it is
    compressed already)."""
    if target.path.suffix == ".gz":
        return target
    path = target.path.with_name(target.path.name + ".gz")
    write_file(path, target.path.read_bytes())
    target.path.unlink()
    return Target(path, target.part, target.argv, target.twin)


def _error(target: Target) -> Setup:
    return Setup(target.argv, blame=(str(target.path),))


def _benign(target: Target) -> Setup:
    return Setup(target.argv, benign=True, twin=target.twin)


def _cell(ctx: Context, table: CsvText, columns: Sequence[str]) -> tuple[int, int]:
    """A random data row and one of ``columns``: (row index, field index)."""
    return int(ctx.rng.integers(len(table.rows))), table.column(ctx.choice(list(columns)))


# ------------------------------------------------------ CSV corruptions (events, geometry, tracks)
CSV_VERBS = {
    "events": ("prepare", "find"),
    "geometry": ("simulate", "prepare"),
    "tracks": ("score",),
}
CSV_KIND_WEIGHT = {"events": 1.0, "geometry": 1.0, "tracks": 0.5}
"""Weight of each kind's copy of a CSV corruption, relative to the corruption's own."""


def csv_mutation(
    *,
    benign: bool = False,
    weight: float = 1.0,
    kinds: Sequence[str] = ("events", "geometry", "tracks"),
    not_for: Sequence[str] = (),
) -> Callable[[Callable[[Context, Target], Setup]], Callable[[Context, Target], Setup]]:
    """Register a corruption of a CSV table as one mutation per input kind (weighted by
    ``CSV_KIND_WEIGHT``), for the kind's verbs except those in ``not_for``."""

    def register(
        corrupt: Callable[[Context, Target], Setup],
    ) -> Callable[[Context, Target], Setup]:
        for kind in kinds:

            def apply(ctx: Context, kind: str = kind) -> Setup:
                return corrupt(ctx, csv_target(ctx, kind))

            apply.__name__ = corrupt.__name__
            scaled = weight * CSV_KIND_WEIGHT[kind]
            verbs = [verb for verb in CSV_VERBS[kind] if verb not in not_for]
            mutation(kind, verbs, benign=benign, weight=scaled)(apply)
        return corrupt

    return register


@csv_mutation(kinds=("events", "tracks"))
def cut_gzip(ctx: Context, target: Target) -> Setup:
    """The gzip stream cut at a random byte."""
    target = gzipped(target)
    data = target.path.read_bytes()
    target.path.write_bytes(data[: int(ctx.rng.integers(len(data)))])
    return _error(target)


@csv_mutation(kinds=("events", "tracks"))
def corrupt_gzip(ctx: Context, target: Target) -> Setup:
    """One byte of the compressed data or of the gzip trailer changed."""
    target = gzipped(target)
    data = bytearray(target.path.read_bytes())
    where = int(ctx.rng.integers(10, len(data)))
    data[where] ^= int(ctx.rng.integers(1, 256))
    target.path.write_bytes(bytes(data))
    return _error(target)


@csv_mutation()
def truncate_text(ctx: Context, target: Target) -> Setup:
    """The text cut inside a row, at or before its last comma (a cut elsewhere in the last
    field, or between rows, leaves a well-formed shorter file: undetectable)."""
    table = CsvText.read(target.path)
    text = table.text()
    starts = np.cumsum([0] + [len(",".join(f)) + 1 for f in [table.header, *table.rows]])
    row = int(ctx.rng.integers(len(table.rows) + 1))
    line = text[starts[row] : starts[row + 1]]
    cut = starts[row] + int(ctx.rng.integers(1, line.rindex(",") + 2))
    write_file(target.path, text[:cut])
    return _error(target)


@csv_mutation(weight=0.5)
def empty_file(ctx: Context, target: Target) -> Setup:
    """No bytes at all (or, compressed, an empty text)."""
    write_file(target.path, b"" if ctx.rng.random() < 0.5 else "")
    if target.path.suffix == ".gz" and ctx.rng.random() < 0.5:
        target.path.write_bytes(b"")
    return _error(target)


# For find a header-only hits file is an event without hits, which it accepts (tests/find).
@csv_mutation(weight=0.5, not_for=("find",))
def header_only(ctx: Context, target: Target) -> Setup:
    table = CsvText.read(target.path)
    write_file(target.path, ",".join(table.header) + "\n")
    return _error(target)


@csv_mutation()
def drop_column(ctx: Context, target: Target) -> Setup:
    table = CsvText.read(target.path)
    table.drop_column(ctx.choice(table_rules(target.part).required))
    write_file(target.path, table.text())
    return _error(target)


@csv_mutation()
def rename_column(ctx: Context, target: Target) -> Setup:
    table = CsvText.read(target.path)
    index = table.column(ctx.choice(table_rules(target.part).required))
    name = table.header[index]
    table.header[index] = ctx.choice([name.upper(), f"{name}_", name[:-1], f" {name}"])
    write_file(target.path, table.text())
    return _error(target)


@csv_mutation()
def duplicate_column(ctx: Context, target: Target) -> Setup:
    """A required column appended a second time, same name (identical or other values)."""
    table = CsvText.read(target.path)
    name = ctx.choice(table_rules(target.part).required)
    index = table.column(name)
    same = ctx.rng.random() < 0.5
    table.header.append(name)
    for fields in table.rows:
        fields.append(fields[index] if same else "0")
    write_file(target.path, table.text())
    return _error(target)


@csv_mutation(kinds=("events", "geometry"))
def swap_names(ctx: Context, target: Target) -> Setup:
    """The names of an integer column and a float column swapped (the values stay)."""
    rules = table_rules(target.part)
    table = CsvText.read(target.path)
    a = table.column(ctx.choice(list(rules.integer)))
    b = table.column(ctx.choice(rules.fractional))
    table.header[a], table.header[b] = table.header[b], table.header[a]
    write_file(target.path, table.text())
    return _error(target)


@csv_mutation()
def bad_value(ctx: Context, target: Target) -> Setup:
    """One value made NaN, infinite, too large for its dtype, negative where it may not be,
    fractional in an integer column, or text."""
    rules = table_rules(target.part)
    table = CsvText.read(target.path)
    problem = ctx.choice(["nan", "inf", "huge", "negative", "fraction", "text"])
    columns = {
        "negative": rules.positive,
        "fraction": tuple(rules.integer),
    }.get(problem, rules.required)
    row, index = _cell(ctx, table, columns)
    name = table.header[index]
    if problem == "nan":
        value = ctx.choice(["nan", "NaN", ""])
    elif problem == "inf":
        value = ctx.choice(["inf", "-inf", "Infinity"])
    elif problem == "huge":
        value = {"int32": "3000000000", "int64": "100000000000000000000"}.get(
            rules.integer.get(name, ""), "1e400" if name in rules.float64 else "1e39"
        )
    elif problem == "negative":
        value = ctx.choice(["-1", "-7"]) if name in rules.integer else "-0.5"
        if name not in rules.integer and ctx.rng.random() < 0.5:
            value = "0"  # a size of zero
    elif problem == "fraction":
        value = ctx.choice(["0.5", "3.25", "1e-3"])
    else:
        # not "0x1F": pyarrow reads hexadecimal integers (as 31), a spelling, not a corruption
        value = ctx.choice(["abc", "true", "1.2.3", "--1", "one", "1e", "12abc"])
    table.rows[row][index] = value
    write_file(target.path, table.text())
    return _error(target)


@csv_mutation()
def ragged_row(ctx: Context, target: Target) -> Setup:
    """A data row with a field too many or too few."""
    table = CsvText.read(target.path)
    fields = table.rows[int(ctx.rng.integers(len(table.rows)))]
    if ctx.rng.random() < 0.5:
        fields.append("1")
    else:
        del fields[int(ctx.rng.integers(len(fields)))]
    write_file(target.path, table.text())
    return _error(target)


_GARBAGE = bytes(sorted(set(range(1, 256)) - set(b'\n\r", \t0123456789.+-eEinfaINFA')))


@csv_mutation()
def garbage_bytes(ctx: Context, target: Target) -> Setup:
    """A few bytes of a data field replaced by bytes no number holds (binary, non-UTF-8)."""
    table = CsvText.read(target.path)
    row, index = _cell(ctx, table, table_rules(target.part).required)
    junk = bytes(ctx.choice(_GARBAGE) for _ in range(int(ctx.rng.integers(1, 5))))
    text = table.text().encode()
    lines = text.split(b"\n")
    fields = lines[row + 1].split(b",")
    fields[index] = fields[index][:1] + junk
    lines[row + 1] = b",".join(fields)
    write_file(target.path, b"\n".join(lines))
    return _error(target)


@csv_mutation(weight=0.5)
def header_not_utf8(ctx: Context, target: Target) -> Setup:
    table = CsvText.read(target.path)
    text = table.text().encode()
    write_file(target.path, text[:3] + b"\xff\xfe" + text[3:])
    return _error(target)


@csv_mutation(benign=True, weight=0.5)
def extra_column(ctx: Context, target: Target) -> Setup:
    table = CsvText.read(target.path)
    at = int(ctx.rng.integers(len(table.header) + 1))
    table.header.insert(at, "comment")
    for i, fields in enumerate(table.rows):
        fields.insert(at, ctx.choice(["note", str(i), "1.5", ""]))
    write_file(target.path, table.text())
    return _benign(target)


@csv_mutation(benign=True, weight=0.5)
def crlf_line_endings(ctx: Context, target: Target) -> Setup:
    write_file(target.path, CsvText.read(target.path).text().replace("\n", "\r\n"))
    return _benign(target)


@csv_mutation(benign=True, weight=0.5)
def byte_order_mark(ctx: Context, target: Target) -> Setup:
    write_file(target.path, b"\xef\xbb\xbf" + CsvText.read(target.path).text().encode())
    return _benign(target)


@csv_mutation(benign=True, weight=0.5)
def reorder_columns(ctx: Context, target: Target) -> Setup:
    table = CsvText.read(target.path)
    order = ctx.rng.permutation(len(table.header))
    table.header = [table.header[i] for i in order]
    table.rows = [[fields[i] for i in order] for fields in table.rows]
    write_file(target.path, table.text())
    return _benign(target)


@csv_mutation(benign=True, weight=0.3)
def quoted_fields(ctx: Context, target: Target) -> Setup:
    table = CsvText.read(target.path)
    table.header = [f'"{name}"' for name in table.header]
    table.rows = [[f'"{value}"' for value in fields] for fields in table.rows]
    write_file(target.path, table.text())
    return _benign(target)


@csv_mutation(benign=True, weight=0.3)
def no_final_newline(ctx: Context, target: Target) -> Setup:
    write_file(target.path, CsvText.read(target.path).text().rstrip("\n"))
    return _benign(target)


# ------------------------------------------------------------------ event-specific corruptions
EVENT_VERBS = ("prepare", "score")
"""The verbs that read whole events (the CSV corruptions, read by the same reader, run through
``prepare`` alone; these check how the parts agree, which each verb does on its own)."""


def _event_part(ctx: Context, part: str | None = None) -> tuple[Target, int]:
    events = ctx.copy(ctx.inputs.events, "events")
    event_id = int(ctx.rng.integers(1, 5))
    part = part or ctx.choice(EVENT_PARTS)
    path = events / f"event{event_id:09d}-{part}.csv.gz"
    return Target(path, part, ctx.argv(events=events), {}), event_id


@mutation("events", EVENT_VERBS, weight=0.5)
def _missing_part(ctx: Context) -> Setup:
    target, _ = _event_part(ctx)
    target.path.unlink()
    return Setup(target.argv, blame=(str(target.path.with_suffix("")),))


@mutation("events", EVENT_VERBS, benign=True, weight=0.3)
def _uncompressed_part(ctx: Context) -> Setup:
    """A part stored as plain ``.csv`` instead of ``.csv.gz``."""
    target, _ = _event_part(ctx)
    target.path.with_suffix("").write_bytes(gzip.decompress(target.path.read_bytes()))
    target.path.unlink()
    return _benign(target)


@mutation("events", EVENT_VERBS)
def _duplicate_id(ctx: Context) -> Setup:
    """A hit id (hits, truth) or particle id (particles) given to a second row."""
    target, _ = _event_part(ctx)
    table = CsvText.read(target.path)
    index = table.column("particle_id" if target.part == "particles" else "hit_id")
    a, b = ctx.rng.choice(len(table.rows), 2, replace=False)
    table.rows[b][index] = table.rows[a][index]
    write_file(target.path, table.text())
    return _error(target)


@mutation("events", EVENT_VERBS)
def _dangling_reference(ctx: Context) -> Setup:
    """Truth naming a hit the hits file lacks, or a particle the particles file lacks: a row
    removed from hits or particles, or a truth id changed to one that does not exist."""
    target, event_id = _event_part(ctx)
    table = CsvText.read(target.path)
    truth = ctx.inputs.table(event_id, "truth")
    if target.part == "hits":
        del table.rows[int(ctx.rng.integers(len(table.rows)))]
    elif target.part == "particles":
        # a particle with a hit (the geometry is all pixel, so every hit is selected)
        with_hits = set(truth.particle_id[truth.particle_id != 0].tolist())
        index = table.column("particle_id")
        rows = [i for i, f in enumerate(table.rows) if int(f[index]) in with_hits]
        del table.rows[ctx.choice(rows)]
    else:
        column = ctx.choice(["hit_id", "particle_id"])
        index = table.column(column)
        rows = [i for i, f in enumerate(table.rows) if int(f[table.column("particle_id")]) != 0]
        table.rows[ctx.choice(rows)][index] = str(10**12 + int(ctx.rng.integers(1000)))
    write_file(target.path, table.text())
    return _error(target)


# ------------------------------------------------------------------ geometry-specific corruptions
def _geometry_table(ctx: Context) -> tuple[Target, CsvText]:
    target = csv_target(ctx, "geometry")
    return target, CsvText.read(target.path)


@mutation("geometry", ["simulate", "prepare"])
def _duplicate_module(ctx: Context) -> Setup:
    target, table = _geometry_table(ctx)
    row = table.rows[int(ctx.rng.integers(len(table.rows)))]
    table.rows.insert(int(ctx.rng.integers(len(table.rows) + 1)), list(row))
    write_file(target.path, table.text())
    return _error(target)


@mutation("geometry", ["prepare"])
def _missing_module(ctx: Context) -> Setup:
    """A module that hits lie on removed from the geometry."""
    target, table = _geometry_table(ctx)
    hits = ctx.inputs.table(int(ctx.rng.integers(1, 5)), "hits")
    used = set(zip(*(hits[c].astype(str) for c in ("volume_id", "layer_id", "module_id"))))
    rows = [i for i, f in enumerate(table.rows) if tuple(f[:3]) in used]
    del table.rows[ctx.choice(rows)]
    write_file(target.path, table.text())
    return _error(target)


@mutation("geometry", ["simulate", "prepare"])
def _zero_size(ctx: Context) -> Setup:
    """A module of zero (or negative) thickness, half-length or pitch."""
    target, table = _geometry_table(ctx)
    sizes = ("module_t", "module_maxhu", "module_hv", "pitch_u", "pitch_v")
    row, index = _cell(ctx, table, sizes)
    table.rows[row][index] = ctx.choice(["0", "0.0", "-1"])
    write_file(target.path, table.text())
    return _error(target)


@mutation("geometry", ["simulate", "prepare"])
def _bad_rotation(ctx: Context) -> Setup:
    """A module whose rotation is not a rotation (zeroed, scaled or sheared)."""
    target, table = _geometry_table(ctx)
    row = table.rows[int(ctx.rng.integers(len(table.rows)))]
    columns = [table.column(f"rot_{g}{a}") for g in "xyz" for a in "uvw"]
    how = ctx.choice(["zero", "scale", "shear"])
    for k, index in enumerate(columns):
        value = float(row[index])
        row[index] = {"zero": "0", "scale": f"{2 * value:.7g}"}.get(
            how, f"{value + 0.5:.7g}" if k == 0 else row[index]
        )
    write_file(target.path, table.text())
    return _error(target)


@mutation("geometry", ["simulate", "prepare"], weight=0.5)
def _both_pitch_layouts(ctx: Context) -> Setup:
    """``pitchX`` added beside ``pitch_u``: which one is meant?"""
    target, table = _geometry_table(ctx)
    index = table.column("pitch_u")
    table.header.append("pitchX")
    for fields in table.rows:
        fields.append(fields[index])
    write_file(target.path, table.text())
    return _error(target)


@mutation("geometry", ["simulate", "prepare"], benign=True, weight=0.5)
def _codalab_pitch_layout(ctx: Context) -> Setup:
    """The Codalab layout: ``pitchX``, ``pitchY`` for ``pitch_u``, ``pitch_v``."""
    target, table = _geometry_table(ctx)
    table.header = [{"pitch_u": "pitchX", "pitch_v": "pitchY"}.get(n, n) for n in table.header]
    write_file(target.path, table.text())
    return _benign(target)


@mutation("geometry", ["simulate", "prepare"], benign=True, weight=0.3)
def _shuffled_modules(ctx: Context) -> Setup:
    target, table = _geometry_table(ctx)
    table.rows = [table.rows[i] for i in ctx.rng.permutation(len(table.rows))]
    write_file(target.path, table.text())
    return _benign(target)


# ------------------------------------------------------------ submission-specific corruptions
EVALUATED_SUBSETS = ("8", "7,9", "7,8", "8,9", "9")
"""``--volumes`` proper subsets of the clean events' volumes (7, 8, 9), each with hits in every
event."""


def _tracks_table(ctx: Context) -> tuple[Target, CsvText, int]:
    """A submission file to corrupt, its text and its event id."""
    target = csv_target(ctx, "tracks")
    return target, CsvText.read(target.path), int(target.path.name[5:14])


def _volume_of_rows(ctx: Context, table: CsvText, event_id: int) -> np.ndarray:
    """The volume of the hit of every row of a (clean) submission table."""
    hits = ctx.inputs.table(event_id, "hits")
    volume = dict(zip(hits.hit_id.tolist(), hits.volume_id.tolist(), strict=True))
    index = table.column("hit_id")
    return np.array([volume[int(fields[index])] for fields in table.rows])


@mutation("tracks", ["score"])
def _unknown_hit(ctx: Context) -> Setup:
    """A row naming a hit the event does not have (beyond its ids, 0, or far beyond)."""
    target, table, event_id = _tracks_table(ctx)
    top = int(ctx.inputs.table(event_id, "hits").hit_id.max())
    value = ctx.choice([top + 1, top + 1000, 0, 10**15])
    row = table.rows[int(ctx.rng.integers(len(table.rows)))]
    if ctx.rng.random() < 0.5:
        row[table.column("hit_id")] = str(value)
    else:  # an added row
        table.rows.insert(int(ctx.rng.integers(len(table.rows) + 1)), [row[0], str(value), "1"])
    write_file(target.path, table.text())
    return _error(target)


@mutation("tracks", ["score"], weight=1.5)
def _hit_twice(ctx: Context) -> Setup:
    """A hit in two rows: a row repeated, the hit added to another track, or another row's
    hit id overwritten with it."""
    target, table, _ = _tracks_table(ctx)
    a, b = (int(i) for i in ctx.rng.choice(len(table.rows), 2, replace=False))
    how = ctx.choice(["repeat", "other_track", "overwrite"])
    hit, track = table.column("hit_id"), table.column("track_id")
    if how == "overwrite":
        table.rows[b][hit] = table.rows[a][hit]
    else:
        copy = list(table.rows[a])
        if how == "other_track":
            copy[track] = table.rows[b][track] if table.rows[b][track] != copy[track] else "999"
        table.rows.insert(int(ctx.rng.integers(len(table.rows) + 1)), copy)
    write_file(target.path, table.text())
    return _error(target)


@mutation("tracks", ["score"])
def _missing_hit(ctx: Context) -> Setup:
    """Rows of evaluated hits removed (one to three), or every row of one track."""
    target, table, _ = _tracks_table(ctx)
    if ctx.rng.random() < 0.5:
        track = table.column("track_id")
        gone = ctx.choice(table.rows)[track]
        table.rows = [fields for fields in table.rows if fields[track] != gone]
    else:
        drop = set(ctx.rng.choice(len(table.rows), int(ctx.rng.integers(1, 4)), replace=False))
        table.rows = [fields for i, fields in enumerate(table.rows) if i not in drop]
    write_file(target.path, table.text())
    return _error(target)


@mutation("tracks", ["score"], weight=0.5)
def _missing_tracks_file(ctx: Context) -> Setup:
    target = csv_target(ctx, "tracks")
    target.path.unlink()
    uncompressed = target.path.with_suffix("") if target.path.suffix == ".gz" else target.path
    return Setup(target.argv, blame=(str(uncompressed),))


@mutation("tracks", ["score"], weight=0.5)
def _stray_tracks_file(ctx: Context) -> Setup:
    """A submission file for an event that EVENTS does not have."""
    target = csv_target(ctx, "tracks")
    other = ctx.choice([0, 5, 17, 123456789])
    suffix = ".gz" if target.path.suffix == ".gz" else ""
    stray = target.path.with_name(f"event{other:09d}-tracks.csv{suffix}")
    table = CsvText.read(target.path)
    for fields in table.rows:
        fields[table.column("event_id")] = str(other)
    write_file(stray, table.text())
    return Setup(target.argv, blame=(str(stray),))


@mutation("tracks", ["score"])
def _event_id_disagrees(ctx: Context) -> Setup:
    """The event_id column naming another event than the file name: in one row, in every row,
    or two events' files swapped."""
    target, table, event_id = _tracks_table(ctx)
    how = ctx.choice(["one", "all", "swap"])
    if how == "swap":
        other = int(ctx.choice([e for e in range(1, 5) if e != event_id]))
        stem = target.path.parent / f"event{other:09d}-tracks.csv"
        path = next(p for p in (stem.with_name(stem.name + ".gz"), stem) if p.is_file())
        theirs = CsvText.read(path).text()
        write_file(path, table.text())
        write_file(target.path, theirs)
        return Setup(target.argv, blame=(str(target.path), str(path)))
    value = str(ctx.choice([e for e in (0, 1, 2, 3, 4, 99) if e != event_id]))
    index = table.column("event_id")
    rows = table.rows if how == "all" else [ctx.choice(table.rows)]
    for fields in rows:
        fields[index] = value
    write_file(target.path, table.text())
    return _error(target)


@mutation("tracks", ["score"], weight=0.5)
def _not_a_tracks_dir(ctx: Context) -> Setup:
    """--tracks naming a file, or a directory without submission files (only stray ones)."""
    path = ctx.work / "tracks"
    if ctx.rng.random() < 0.5:
        path.write_text("event_id,hit_id,track_id\n")
    else:
        path.mkdir()
        (path / "README.txt").write_text("no tracks here\n")
    return Setup(ctx.argv(tracks=path), blame=(str(path),))


@mutation("tracks", ["score"], weight=0.5)
def _finder_manifest_unreadable(ctx: Context) -> Setup:
    """TRACKS/manifest.json (the finder's timing) cut, binary, or a list."""
    target = csv_target(ctx, "tracks")
    manifest = target.path.parent / "manifest.json"
    how = ctx.choice(["cut", "binary", "list"])
    if how == "cut":
        manifest.write_text('{"seconds_per_event": 0.')
    elif how == "binary":
        manifest.write_bytes(b"\xff\xfe\x00{")
    else:
        manifest.write_text("[0.5]")
    return Setup(target.argv, blame=(str(manifest),))


@mutation("tracks", ["score"], benign=True, weight=0.5)
def _shuffled_rows(ctx: Context) -> Setup:
    target, table, _ = _tracks_table(ctx)
    table.rows = [table.rows[i] for i in ctx.rng.permutation(len(table.rows))]
    write_file(target.path, table.text())
    return _benign(target)


@mutation("tracks", ["score"], benign=True, weight=0.5)
def _renumbered_tracks(ctx: Context) -> Setup:
    """Every track of a file given another id (0, no track, stays 0): the score is the same."""
    target, table, _ = _tracks_table(ctx)
    index = table.column("track_id")
    old = sorted({fields[index] for fields in table.rows} - {"0"})
    high = ctx.choice([10**4, 2**31, 2**63 - 1])
    new: dict[str, None] = {}
    while len(new) < len(old):
        new[str(int(ctx.rng.integers(1, high, endpoint=True)))] = None
    renamed = dict(zip(old, new, strict=True))
    for fields in table.rows:
        fields[index] = renamed.get(fields[index], "0")
    write_file(target.path, table.text())
    return _benign(target)


@mutation("tracks", ["score"], benign=True, weight=0.6)
def _other_volumes_rows(ctx: Context) -> Setup:
    """Scoring some volumes only: rows of the hits of the other volumes removed, or given any
    track (those of evaluated hits included): ignored either way."""
    target, table, event_id = _tracks_table(ctx)
    volumes = ctx.choice(EVALUATED_SUBSETS)
    outside = ~np.isin(_volume_of_rows(ctx, table, event_id), [int(v) for v in volumes.split(",")])
    how = ctx.choice(["absent", "reassigned", "some_absent"])
    track = table.column("track_id")
    tracks = [fields[track] for fields in table.rows]
    keep = []
    for fields, out in zip(table.rows, outside, strict=True):
        if out and (how == "absent" or (how == "some_absent" and ctx.rng.random() < 0.5)):
            continue
        if out and how != "absent":
            fields[track] = ctx.choice([*tracks, "0", "424242"])
        keep.append(fields)
    table.rows = keep
    write_file(target.path, table.text())
    extra = ["--volumes", volumes]
    argv = ctx.argv(tracks=target.path.parent, extra=extra)
    return Setup(argv, benign=True, twin={**target.twin, "extra": extra})


@mutation("tracks", ["score"], benign=True, weight=0.3)
def _finder_manifest(ctx: Context) -> Setup:
    """TRACKS/manifest.json recording the finder's time, and files no reader looks at."""
    target = csv_target(ctx, "tracks")
    record = {"stage": "find", "seconds_per_event": 0.25, "seconds_per_stage": {"embed": 0.1}}
    (target.path.parent / "manifest.json").write_text(json.dumps(record))
    (target.path.parent / "README.txt").write_text("found on a Tuesday\n")
    backup = target.path.with_name("event000000001-tracks.csv.bak")
    backup.write_text("not,a,submission\n")
    return _benign(target)


# ---------------------------------------------------------------------------------- datasets
DATASET_VERBS = ("pretrain", "evaluate", "finetune")
SPLITS = ("train", "val", "test")
FIELDS = ("tokens", "lengths", "hits", "pt", "eta", "phi", "charge", "vertex", "event_id")


def _dataset(ctx: Context) -> tuple[Path, list[str]]:
    data = ctx.copy(ctx.inputs.data, "data")
    return data, ctx.argv(data=data)


def _npy(ctx: Context, data: Path, fields: Sequence[str] = FIELDS) -> Path:
    return data / ctx.choice(SPLITS) / f"{ctx.choice(list(fields))}.npy"


def _blame_array(path: Path) -> tuple[str, ...]:
    """The file, or its split directory when other arrays are measured against it (lengths)."""
    return (str(path.parent),) if path.stem in ("lengths", "tokens") else (str(path),)


@mutation("dataset", DATASET_VERBS)
def _npy_missing(ctx: Context) -> Setup:
    data, argv = _dataset(ctx)
    path = _npy(ctx, data)
    path.unlink()
    return Setup(argv, blame=(str(path),))


@mutation("dataset", DATASET_VERBS, weight=1.5)
def _npy_truncated(ctx: Context) -> Setup:
    data, argv = _dataset(ctx)
    path = _npy(ctx, data)
    raw = path.read_bytes()
    path.write_bytes(raw[: int(ctx.rng.integers(len(raw)))])
    return Setup(argv, blame=(str(path),))


@mutation("dataset", DATASET_VERBS)
def _npy_not_numpy(ctx: Context) -> Setup:
    """A ``.npy`` that is random bytes, or a pickled object array."""
    data, argv = _dataset(ctx)
    path = _npy(ctx, data)
    if ctx.rng.random() < 0.5:
        path.write_bytes(ctx.rng.integers(0, 256, 200, dtype=np.uint8).tobytes())
    else:
        np.save(path, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    return Setup(argv, blame=(str(path),))


@mutation("dataset", DATASET_VERBS)
def _npy_shape(ctx: Context) -> Setup:
    """An array with a track too many or too few, or tokens one column wider."""
    data, argv = _dataset(ctx)
    path = _npy(ctx, data)
    array = np.load(path)
    if path.stem == "tokens" and ctx.rng.random() < 0.5:
        array = np.concatenate([array, np.zeros((len(array), 1), array.dtype)], axis=1)
    elif ctx.rng.random() < 0.5:
        array = array[:-1]
    else:
        array = np.concatenate([array, array[:1]])
    np.save(path, array)
    return Setup(argv, blame=_blame_array(path))


@mutation("dataset", DATASET_VERBS)
def _npy_dtype(ctx: Context) -> Setup:
    data, argv = _dataset(ctx)
    path = _npy(ctx, data)
    array = np.load(path)
    np.save(path, array.astype(np.float64 if array.dtype.kind in "iu" else np.int64))
    return Setup(argv, blame=(str(path),))


@mutation("dataset", DATASET_VERBS)
def _values_out_of_range(ctx: Context) -> Setup:
    """A token id beyond the vocabulary (or negative), or a length beyond the padded width."""
    data, argv = _dataset(ctx)
    path = _npy(ctx, data, ("tokens", "lengths"))
    array = np.load(path)
    row = int(ctx.rng.integers(len(array)))
    if path.stem == "tokens":
        vocab = json.loads((data / "vocab.json").read_text())
        size = len(vocab["special_tokens"]) + len(vocab["modules"])
        array[row, int(ctx.rng.integers(array.shape[1]))] = ctx.choice([size, size + 50, -1])
    else:
        array[row] = ctx.choice([9, 100, -1])
    np.save(path, array)
    return Setup(argv, blame=(str(path),))


def _edit_json(path: Path, edit: Callable[[Any], Any]) -> None:
    path.write_text(json.dumps(edit(json.loads(path.read_text())), indent=2))


@mutation("dataset", DATASET_VERBS, weight=1.5)
def _manifest_disagrees(ctx: Context) -> Setup:
    """The manifest's track count, padded length or vocabulary hash differs from the files."""
    data, argv = _dataset(ctx)
    manifest = data / "manifest.json"
    what = ctx.choice(["n_tracks", "max_length", "vocab_sha256"])
    split = ctx.choice(SPLITS)

    def edit(record: dict[str, Any]) -> dict[str, Any]:
        if what == "n_tracks":
            record["n_tracks"][split] += ctx.choice([1, -1, 1000])
        elif what == "max_length":
            record["max_length"] = ctx.choice([7, 12, "8"])
        else:
            record["vocab_sha256"] = "0" * 64
        return record

    _edit_json(manifest, edit)
    return Setup(argv, blame=(str(manifest), str(data / split)))


@mutation("dataset", DATASET_VERBS)
def _manifest_unreadable(ctx: Context) -> Setup:
    """The manifest missing, cut short, not JSON, or JSON but not an object."""
    data, argv = _dataset(ctx)
    manifest = data / "manifest.json"
    how = ctx.choice(["missing", "cut", "list", "binary"])
    if how == "missing":
        manifest.unlink()
    elif how == "cut":
        text = manifest.read_text()
        manifest.write_text(text[: int(ctx.rng.integers(len(text) - 1))])
    elif how == "list":
        manifest.write_text("[1, 2]\n")
    else:
        manifest.write_bytes(b"\xff\xfe{\x00")
    return Setup(argv, blame=(str(manifest),))


@mutation("dataset", DATASET_VERBS, weight=1.5)
def _vocab_corrupt(ctx: Context) -> Setup:
    """vocab.json missing, cut, with a wrong hash, a module listed twice, or another
    vocabulary's (whose hash the manifest does not record)."""
    data, argv = _dataset(ctx)
    vocab = data / "vocab.json"
    how = ctx.choice(["missing", "cut", "hash", "twice", "other"])
    blame = (str(vocab),)
    if how == "missing":
        vocab.unlink()
    elif how == "cut":
        text = vocab.read_text()
        vocab.write_text(text[: int(ctx.rng.integers(len(text) - 1))])
    elif how == "hash":
        _edit_json(vocab, lambda v: {**v, "sha256": "f" * 64})
    elif how == "twice":
        from tracklm.detector.vocab import vocab_sha256

        def twice(v: dict[str, Any]) -> dict[str, Any]:
            modules = [*v["modules"], v["modules"][0]]
            return {**v, "modules": modules, "sha256": vocab_sha256(v["special_tokens"], modules)}

        _edit_json(vocab, twice)
    else:
        shutil.copyfile(ctx.inputs.data_other / "vocab.json", vocab)
        blame = (str(vocab), str(data / "manifest.json"))
    return Setup(argv, blame=blame)


@mutation("dataset", DATASET_VERBS)
def _modules_corrupt(ctx: Context) -> Setup:
    """modules.parquet missing, cut short, or with a module fewer than the vocabulary."""
    data, argv = _dataset(ctx)
    path = data / "modules.parquet"
    how = ctx.choice(["missing", "cut", "fewer"])
    if how == "missing":
        path.unlink()
    elif how == "cut":
        raw = path.read_bytes()
        path.write_bytes(raw[: int(ctx.rng.integers(len(raw)))])
    else:
        table = pd.read_parquet(path)
        table.drop(index=int(ctx.rng.integers(len(table)))).to_parquet(path, index=False)
    return Setup(argv, blame=(str(path),))


@mutation("dataset", DATASET_VERBS, weight=0.5)
def _split_missing(ctx: Context) -> Setup:
    data, argv = _dataset(ctx)
    split = data / ctx.choice(SPLITS)
    shutil.rmtree(split)
    return Setup(argv, blame=(str(split),))


@mutation("dataset", ["evaluate", "finetune"])
def _other_vocabulary(ctx: Context) -> Setup:
    """A sound dataset whose vocabulary is not the model's."""
    data = ctx.copy(ctx.inputs.data_other, "data")
    return Setup(ctx.argv(data=data), blame=(str(data / "vocab.json"),))


@mutation("dataset", DATASET_VERBS, weight=0.5)
def _not_a_dataset(ctx: Context) -> Setup:
    """--data naming a file, a missing directory or an empty one."""
    how = ctx.choice(["file", "missing", "empty"])
    path = ctx.work / "data"
    if how == "file":
        path.write_text("not a dataset\n")
    elif how == "empty":
        path.mkdir()
    return Setup(ctx.argv(data=path), blame=(str(path),))


@mutation("dataset", ["evaluate", "finetune", "pretrain"], benign=True, weight=0.6)
def _dataset_stray_files(ctx: Context) -> Setup:
    """Files no reader looks at, beside the dataset's and its splits'."""
    data, argv = _dataset(ctx)
    (data / "NOTES.txt").write_text("prepared on a Tuesday\n")
    np.save(data / ctx.choice(SPLITS) / "extra_weights.npy", np.ones(3))
    return Setup(argv, benign=True)


# ---------------------------------------------------------------------------------- models
MODEL_VERBS = ("evaluate", "embed", "finetune", "export")


def _model(ctx: Context) -> tuple[Path, list[str]]:
    model = ctx.copy(ctx.inputs.model, "model")
    return model, ctx.argv(model=model)


@mutation("model", MODEL_VERBS, weight=1.5)
def _weights_truncated(ctx: Context) -> Setup:
    model, argv = _model(ctx)
    path = model / "model.safetensors"
    raw = path.read_bytes()
    path.write_bytes(raw[: int(ctx.rng.integers(len(raw)))])
    return Setup(argv, blame=(str(path),))


@mutation("model", MODEL_VERBS)
def _weights_garbled_header(ctx: Context) -> Setup:
    """The safetensors header length or JSON header overwritten."""
    model, argv = _model(ctx)
    path = model / "model.safetensors"
    raw = bytearray(path.read_bytes())
    start = int(ctx.rng.integers(0, 40))
    raw[start : start + 4] = ctx.rng.integers(0, 256, 4, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(raw))
    return Setup(argv, blame=(str(path),))


@mutation("model", MODEL_VERBS)
def _weights_tensors(ctx: Context) -> Setup:
    """A tensor missing, one unexpected, or one of the wrong shape (saved with the same metadata)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    model, argv = _model(ctx)
    path = model / "model.safetensors"
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    name = ctx.choice(sorted(tensors))
    how = ctx.choice(["missing", "extra", "shape"])
    if how == "missing":
        del tensors[name]
    elif how == "extra":
        tensors["extra.weight"] = tensors[name].clone()
    else:
        tensors[name] = tensors[name].reshape(-1)[:-1].clone()
    save_file(tensors, str(path), metadata=metadata)
    return Setup(argv, blame=(str(path),))


@mutation("model", MODEL_VERBS, weight=0.5)
def _model_file_missing(ctx: Context) -> Setup:
    model, argv = _model(ctx)
    path = model / ctx.choice(["model.safetensors", "config.json", "vocab.json"])
    path.unlink()
    return Setup(argv, blame=(str(path),))


HF_BERT_CONFIG = {
    "architectures": ["BertForMaskedLM"],
    "model_type": "bert",
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "vocab_size": 30522,
    "max_position_embeddings": 512,
}


@mutation("model", MODEL_VERBS, weight=2.0)
def _config_corrupt(ctx: Context) -> Setup:
    """config.json cut, not an object, another architecture's (a Hugging Face BERT), with an
    unknown key, a wrong type, a value out of range, or another size than the weights."""
    model, argv = _model(ctx)
    path = model / "config.json"
    config = json.loads(path.read_text())
    how = ctx.choice(["cut", "list", "other", "unknown", "type", "range", "size"])
    blame = (str(path),)
    if how == "cut":
        text = path.read_text()
        path.write_text(text[: int(ctx.rng.integers(len(text) - 1))])
        return Setup(argv, blame=blame)
    if how == "list":
        config = [config]
    elif how == "other":
        config = HF_BERT_CONFIG
    elif how == "unknown":
        config["num_experts"] = 8
    elif how == "type":
        key = ctx.choice(["hidden_size", "num_layers", "dropout", "position_embedding"])
        config[key] = ctx.choice(["64", None, [1], True])
    elif how == "range":
        key, value = ctx.choice(
            [
                ("num_heads", 0),
                ("num_heads", 3),
                ("dropout", 1.5),
                ("vocab_size", 0),
                ("max_length", -1),
                ("pad_token_id", 10**6),
                ("position_embedding", "rotary"),
            ]
        )
        config[key] = value
    else:
        config[ctx.choice(["hidden_size", "intermediate_size", "num_layers", "max_length"])] *= 2
        blame = (str(path), str(model / "model.safetensors"))
    path.write_text(json.dumps(config))
    return Setup(argv, blame=blame)


@mutation("model", MODEL_VERBS, weight=1.5)
def _model_vocab_corrupt(ctx: Context) -> Setup:
    """vocab.json cut, with a wrong hash, of another size, or of the same size with another
    module (hash recomputed: only the hash the weights were saved with tells)."""
    from tracklm.detector.vocab import vocab_sha256

    model, argv = _model(ctx)
    path = model / "vocab.json"
    how = ctx.choice(["cut", "hash", "size", "module"])
    if how == "cut":
        text = path.read_text()
        path.write_text(text[: int(ctx.rng.integers(len(text) - 1))])
    elif how == "hash":
        _edit_json(path, lambda v: {**v, "sha256": "0" * 64})
    elif how == "size":
        shutil.copyfile(ctx.inputs.data_other / "vocab.json", path)
    else:

        def other_module(v: dict[str, Any]) -> dict[str, Any]:
            modules = [list(m) for m in v["modules"]]
            modules[int(ctx.rng.integers(len(modules)))] = [7, 2, 99999]
            return {**v, "modules": modules, "sha256": vocab_sha256(v["special_tokens"], modules)}

        _edit_json(path, other_module)
    return Setup(argv, blame=(str(path),))


@mutation("model", MODEL_VERBS, weight=0.5)
def _not_a_model(ctx: Context) -> Setup:
    how = ctx.choice(["file", "missing", "empty"])
    path = ctx.work / "model"
    if how == "file":
        path.write_text("not a model\n")
    elif how == "empty":
        path.mkdir()
    return Setup(ctx.argv(model=path), blame=(str(path),))


@mutation("model", MODEL_VERBS, benign=True, weight=0.8)
def _model_reformatted(ctx: Context) -> Setup:
    """config.json re-indented with its keys in another order, the card gone, a stray file."""
    model, argv = _model(ctx)
    config = json.loads((model / "config.json").read_text())
    keys = [list(config)[i] for i in ctx.rng.permutation(len(config))]
    (model / "config.json").write_text(json.dumps({k: config[k] for k in keys}, indent=4))
    (model / "README.md").unlink()
    (model / "notes.txt").write_text("trained on the toy set\n")
    return Setup(argv, benign=True)


# ---------------------------------------------------------------------------------- configs
CONFIG_VERBS = ("pretrain", "finetune")

BAD_VALUES = {
    "pretrain": [
        ("batch_size", 0),
        ("batch_size", -4),
        ("lr", 0),
        ("lr", -0.1),
        ("max_steps", 0),
        ("warmup_steps", -1),
        ("val_every", 0),
        ("val_batches", 0),
        ("checkpoint_every", 0),
        ("gradient_clip", 0),
        ("weight_decay", -1),
        ("adam_betas", [0.9]),
        ("adam_betas", [0.9, 1.5]),
        ("mask_rates", [1.5, 0.3, 0.5]),
        ("mask_rate_steps", [2, 1]),
        ("val_mask_rate", 0),
        ("early_stopping_patience", 0),
        ("num_workers", -1),
        ("pairing", "triples"),
        ("pair_task", "eta"),
        ("model", "huge"),
        ("precision", "bogus"),
        ("model_overrides", [1, 2]),
        ("model_overrides", {"num_heads": 3}),
        ("model_overrides", {"dropout": 1.5}),
        ("model_overrides", {"num_experts": 4}),
        ("model_overrides", {"hidden_size": "wide"}),
    ],
    "finetune": [
        ("batch_size", 0),
        ("learning_rate", 0),
        ("encoder_learning_rate", -1e-3),
        ("weight_decay", -0.5),
        ("warmup_steps", -2),
        ("max_steps", 0),
        ("val_every", 0),
        ("val_tracks", 0),
        ("eval_tracks", -1),
        ("eval_batch_size", 0),
        ("accelerator", "abacus"),
    ],
}
WRONG_TYPES = [["a", "list"], "many", {"nested": 1}, True, None, 1.5]


def _config(ctx: Context) -> tuple[Path, dict[str, Any]]:
    base = {"pretrain": PRETRAIN_CONFIG, "finetune": FINETUNE_CONFIG}[ctx.verb]
    return ctx.work / "config.yaml", dict(base)


def _write_yaml(path: Path, config: dict[str, Any]) -> None:
    import yaml

    path.write_text(yaml.safe_dump(config, sort_keys=False))


@mutation("config", CONFIG_VERBS)
def _unknown_key(ctx: Context) -> Setup:
    path, config = _config(ctx)
    config[ctx.choice(["learning_rte", "epochs", "batchsize", "Batch_Size"])] = 3
    _write_yaml(path, config)
    return Setup(ctx.argv(config=path), blame=(str(path),))


@mutation("config", CONFIG_VERBS)
def _wrong_type(ctx: Context) -> Setup:
    path, config = _config(ctx)
    key = ctx.choice(sorted(config))
    value = ctx.choice([v for v in WRONG_TYPES if type(v) is not type(config[key])])
    if isinstance(config[key], float) and isinstance(value, int) and not isinstance(value, bool):
        value = "fast"  # an int is a fine float
    config[key] = value
    _write_yaml(path, config)
    return Setup(ctx.argv(config=path), blame=(str(path),))


@mutation("config", CONFIG_VERBS, weight=2.0)
def _out_of_range(ctx: Context) -> Setup:
    path, config = _config(ctx)
    key, value = ctx.choice(BAD_VALUES[ctx.verb])
    config[key] = value
    _write_yaml(path, config)
    return Setup(ctx.argv(config=path), blame=(str(path),))


@mutation("config", CONFIG_VERBS)
def _not_yaml(ctx: Context) -> Setup:
    """Invalid YAML, a list, binary bytes, a Python tag (never executed), or no file."""
    path, _ = _config(ctx)
    how = ctx.choice(["syntax", "list", "binary", "tag", "missing", "directory"])
    if how == "syntax":
        path.write_text("batch_size: [1, 2\nlr: {\n")
    elif how == "list":
        path.write_text("- batch_size\n- 8\n")
    elif how == "binary":
        path.write_bytes(b"\x00\xff\xfe\x89PNG\r\n")
    elif how == "tag":
        path.write_text("batch_size: !!python/object/apply:os.getcwd []\n")
    elif how == "directory":
        path.mkdir()
    return Setup(ctx.argv(config=path), blame=(str(path),))


@mutation("config", CONFIG_VERBS, benign=True, weight=0.6)
def _config_restyled(ctx: Context) -> Setup:
    """The same settings with comments, keys in another order, flow style and other number
    spellings."""
    path, config = _config(ctx)
    lines = ["# a config written by hand", "---"]
    for key in [sorted(config)[i] for i in ctx.rng.permutation(len(config))]:
        value = config[key]
        if isinstance(value, float):
            text = f"{value:.1e}"
        elif isinstance(value, list):
            text = "[" + ", ".join(str(v) for v in value) + "]"
        else:
            text = str(value)
        lines.append(f"{key}:   {text}   # {key}")
    path.write_text("\n".join(lines) + "\n")
    return Setup(ctx.argv(config=path), benign=True)


# ---------------------------------------------------------------------------------- options
BAD_OPTIONS: dict[str, list[tuple[list[str], str]]] = {
    "simulate": [
        (["--events", "0"], "--events"),
        (["--events", "many"], "--events"),
        (["--pileup", "-1"], "--pileup"),
        (["--pileup", "inf"], "--pileup"),
        (["--pileup", "nan"], "--pileup"),
        (["--workers", "0"], "--workers"),
        (["--seed", "1.5"], "--seed"),
    ],
    "prepare": [
        (["--val-fraction", "1"], "--val-fraction"),
        (["--test-fraction", "-0.1"], "--test-fraction"),
        (["--val-fraction", "0.6", "--test-fraction", "0.5"], "--val-fraction"),
        (["--selection", "strips"], "--selection"),
        (["--order", "time"], "--order"),
        (["--workers", "0"], "--workers"),
        (["--seed", "x"], "--seed"),
    ],
    "pretrain": [
        (["--max-steps", "0"], "--max-steps"),
        (["--batch-size", "0"], "--batch-size"),
        (["--batch-size", "100000"], "--batch-size"),
        (["--max-time", "-1"], "--max-time"),
        (["--preset", "huge"], "--preset"),
        (["--devices", "abc"], "--devices"),
        (["--devices", "0"], "--devices"),
        (["--strategy", "bogus"], "--strategy"),
        (["--accelerator", "abacus"], "--accelerator"),
        (["--num-nodes", "0"], "--num-nodes"),
        (["--resume"], "--resume"),
    ],
    "evaluate": [
        (["--max-tracks", "0"], "--max-tracks"),
        (["--split", "holdout"], "--split"),
        (["--protocol", "peek"], "--protocol"),
        (["--seed", "one"], "--seed"),
    ],
    "embed": [(["--projection", "tsne"], "--projection")],
    "finetune": [
        (["--mode", "partial"], "--mode"),
        (["--train-size", "0"], "--train-size"),
        (["--max-steps", "-3"], "--max-steps"),
        (["--max-time", "soon"], "--max-time"),
        (["--task", "vertexing"], "--task"),
    ],
    "export": [(["--format", "tflite"], "--format")],
    "find": [
        (["--method", "dbscan"], "--method"),
        (["--method", "model"], "--model"),  # the model method without a model
        (["--volumes", "pixels"], "--volumes"),
        (["--volumes", "7,,8"], "--volumes"),
        (["--volumes", "-7"], "--volumes"),
    ],
    "score": [
        (["--volumes", "pixels"], "--volumes"),
        (["--volumes", "7,,8"], "--volumes"),
        (["--volumes", "-7"], "--volumes"),
        (["--volumes", ""], "--volumes"),
        (["--volumes", "7.5"], "--volumes"),
        (["--volumes", "7;8;9"], "--volumes"),
        (["--volumes", "all,7"], "--volumes"),
        (["--volumes", "99"], "--volumes"),  # a volume no event has a hit in
        (["--volumes", "99999999999999999999"], "--volumes"),
    ],
}


@mutation("options", VERBS, weight=3.0)
def _bad_option(ctx: Context) -> Setup:
    """An option value out of range or not among its choices."""
    extra, option = ctx.choice(BAD_OPTIONS[ctx.verb])
    return Setup(ctx.argv(extra=extra), blame=(option,))


REQUIRED_OPTIONS = {
    "simulate": ("--out",),
    "prepare": ("--events", "--out"),
    "pretrain": ("--data", "--out"),
    "evaluate": ("--model", "--data", "--out"),
    "embed": ("--model", "--out"),
    "finetune": ("--task", "--model", "--data", "--out"),
    "export": ("--model", "--out"),
    "score": ("--events", "--tracks", "--out"),
    "find": ("--events", "--out"),
}


@mutation("options", VERBS)
def _usage_error(ctx: Context) -> Setup:
    """An unknown option, or a required one left out."""
    argv = ctx.argv()
    if ctx.rng.random() < 0.5:
        return Setup([*argv, "--colour", "blue"], blame=("--colour",))
    option = ctx.choice(REQUIRED_OPTIONS[ctx.verb])
    at = argv.index(option)
    return Setup(argv[:at] + argv[at + 2 :], blame=(option,))


INPUT_OPTIONS = {
    "simulate": ("detector",),
    "prepare": ("events", "detector"),
    "pretrain": ("data", "config"),
    "evaluate": ("model", "data"),
    "embed": ("model",),
    "finetune": ("model", "data", "config"),
    "export": ("model",),
    "score": ("events", "tracks"),
    "find": ("events",),
}


@mutation("options", VERBS, weight=1.5)
def _input_missing(ctx: Context) -> Setup:
    """An input option naming a path that does not exist (or, for events, an empty directory)."""
    key = ctx.choice(INPUT_OPTIONS[ctx.verb])
    path = ctx.work / ctx.choice(["absent", "absent.csv", "absent/deeper"])
    if key == "events" and ctx.rng.random() < 0.5:
        path = ctx.work / "no_events"
        path.mkdir()
        (path / "README.txt").write_text("no events here\n")
    return Setup(ctx.argv(**{key: path}), blame=(str(path),))


@mutation("options", ("simulate", "prepare", "pretrain", "evaluate", "finetune", "score", "find"))
def _out_exists(ctx: Context) -> Setup:
    """--out an existing directory that is not empty: refused, and left as it was."""
    ctx.out.mkdir()
    (ctx.out / "keep.txt").write_text("do not touch\n")
    return Setup(ctx.argv(), blame=(str(ctx.out),), keep=("keep.txt",))


@mutation("options", ["pretrain"], weight=0.5)
def _resume_damaged_run(ctx: Context) -> Setup:
    """--resume of a run whose run.json is cut, not JSON, not an object, of another dataset's
    vocabulary or with a config of unknown keys: refused, and the run left as it was."""
    ctx.out.mkdir()
    record = ctx.out / "run.json"
    vocab = json.loads((ctx.inputs.data / "vocab.json").read_text())["sha256"]
    how = ctx.choice(["cut", "binary", "list", "vocab", "config"])
    blame = (str(record),)
    if how == "cut":
        record.write_text('{"data": "x", "vocab_sha2')
    elif how == "binary":
        record.write_bytes(b"\xff\xfe\x00{")
    elif how == "list":
        record.write_text("[]")
    elif how == "vocab":
        record.write_text(json.dumps({"vocab_sha256": "0" * 64, "seed": 0, "config": {}}))
        blame = (str(record), str(ctx.inputs.data / "vocab.json"))
    else:
        record.write_text(json.dumps({"vocab_sha256": vocab, "config": {"epochs": 3}}))
    return Setup(ctx.argv(extra=["--resume"]), blame=blame, keep=("run.json",))


@mutation("options", VERBS)
def _out_under_a_file(ctx: Context) -> Setup:
    """--out inside a path that is a regular file."""
    blocker = ctx.work / "out_is_a_file"
    blocker.write_text("a file\n")
    out = blocker / OUT_NAMES.get(ctx.verb, "out")
    argv = ctx.argv()
    argv[argv.index("--out") + 1] = str(out)
    return Setup(argv, blame=(str(blocker),))


@mutation("options", ["score"], benign=True, weight=0.3)
def _volumes_respelled(ctx: Context) -> Setup:
    """The default volumes (7, 8, 9) spelled otherwise: same score."""
    volumes = ctx.choice(["9,8,7", " 7, 8 ,9 ", "7,8,9,8", "07,8,9", "8,7,9"])
    return Setup(ctx.argv(extra=["--volumes", volumes]), benign=True)


@mutation("options", ["embed"], weight=0.3)
def _plot_under_a_file(ctx: Context) -> Setup:
    """--plot inside a path that is a regular file: refused before the table is written."""
    blocker = ctx.work / "plots_is_a_file"
    blocker.write_text("a file\n")
    return Setup(ctx.argv(extra=["--plot", blocker / "embedding.png"]), blame=(str(blocker),))


# ---------------------------------------------------------------------------------- running
@dataclass
class Result:
    """The outcome of one case."""

    case: Case
    clean: bool
    exit: int | str
    stderr: str
    reason: str = ""
    seconds: float = 0.0

    def failure(self) -> dict[str, Any]:
        """The record ``fuzz_inputs.py`` writes for a case that is not clean."""
        return {
            "case": self.case.name,
            "verb": self.case.verb,
            "exit": self.exit,
            "reason": self.reason,
            "stderr": self.stderr[-2000:],
        }


Invoke = Callable[[list[str]], tuple[int | str, str]]


class _CurrentStderr(io.TextIOBase):
    """A stream that writes to whatever ``sys.stderr`` is at the time (log records follow the
    capture of each case)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)


def quiet_logging() -> None:
    """Send log records to the current stderr, warnings only (as the CLI would show them)."""
    root = logging.getLogger()
    if not any(getattr(h, "fuzz", False) for h in root.handlers):
        handler = logging.StreamHandler(_CurrentStderr())
        handler.fuzz = True  # type: ignore[attr-defined]
        handler.setFormatter(logging.Formatter("%(message)s"))
        root.addHandler(handler)
    root.setLevel(logging.WARNING)
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)


def invoke_in_process(argv: list[str]) -> tuple[int | str, str]:
    """Run ``tracklm.cli.main(argv)`` here; returns (exit status, stderr).

    An exception escaping ``main`` (any but ``InputError``, which ``main`` turns into status 2)
    is what a user would see as a traceback: it is written to the captured stderr and the status
    is ``"exception"``.
    """
    from tracklm.cli import main

    stderr, stdout = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(stdout):
        try:
            code: int | str = main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except KeyboardInterrupt:
            raise
        except BaseException:
            traceback.print_exc(file=stderr)
            code = "exception"
    return code, stderr.getvalue()


def invoke_subprocess(argv: list[str]) -> tuple[int | str, str]:
    """Run ``python -m tracklm ARGV`` as a process of its own; returns (exit status, stderr)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "src"), env.get("PYTHONPATH")]))
    env.setdefault("OMP_NUM_THREADS", "1")
    done = subprocess.run(
        [sys.executable, "-m", "tracklm", *argv],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    return done.returncode, done.stderr


ERROR_LINE = re.compile(r"tracklm (\S+): error: (.+)")


def classify_error(verb: str, setup: Setup, code: int | str, stderr: str, work: Path) -> str:
    """Why an error case is not clean ("" when it is)."""
    if "Traceback" in stderr:
        return "traceback on stderr"
    if code != 2:
        return f"exit status {code}, expected 2"
    lines = [line for line in stderr.splitlines() if line.strip()]
    if not lines:
        return "nothing on stderr"
    match = ERROR_LINE.fullmatch(lines[-1])
    if match is None or match.group(1) != verb:
        return f"last stderr line is not 'tracklm {verb}: error: ...'"
    if sum(bool(ERROR_LINE.match(line)) for line in lines) != 1:
        return "more than one error line"
    if not any(token in match.group(2) for token in setup.blame):
        return f"error line names none of {list(setup.blame)}"
    return _leftovers(verb, setup, work)


def _leftovers(verb: str, setup: Setup, work: Path) -> str:
    """What output the failed verb left in the case directory ("" for none)."""
    out = work / OUT_NAMES.get(verb, "out")
    if setup.keep is not None:
        if not out.is_dir() or sorted(p.name for p in out.iterdir()) != sorted(setup.keep):
            return f"--out {out} was changed"
    elif out.exists():
        return f"output left behind: {out}"
    if out.suffix == ".parquet" and out.with_suffix(".json").exists():
        return f"output left behind: {out.with_suffix('.json')}"
    stray = sorted(p.name for p in work.rglob(".*.tmp-*"))
    return f"temporary output left behind: {stray[0]}" if stray else ""


def compare_outputs(verb: str, got: Path, expected: Path) -> str:
    """Why the outputs of a benign case differ from the clean twin's ("" when they do not)."""
    if verb == "prepare":
        return _compare_datasets(got, expected)
    if verb == "simulate":
        return _compare_files(got, expected, skip=("manifest.json",))
    if verb == "embed":
        if not pd.read_parquet(got).equals(pd.read_parquet(expected)):
            return "embedding tables differ"
        return _compare_json(got.with_suffix(".json"), expected.with_suffix(".json"))
    if verb == "export":
        return "" if got.read_bytes() == expected.read_bytes() else "ONNX files differ"
    if verb == "score":
        # everything but the finder's time (TRACKS/manifest.json), itself an input
        return _compare_json(got / "score.json", expected / "score.json", skip=_FINDER_TIME)
    if verb == "find":
        # the submission files; the manifest holds the finder's time
        return _compare_files(got, expected, skip=("manifest.json",))
    if verb == "pretrain":
        return _compare_files(
            got / "model", expected / "model", skip=("README.md", "model.safetensors")
        ) or _compare_weights(
            got / "model" / "model.safetensors", expected / "model" / "model.safetensors"
        )
    return _compare_json(got / "metrics.json", expected / "metrics.json")


# Keys of a metrics file that name the inputs or measure time: they may differ between twins.
_VOLATILE = {"model", "data", "seconds", "wall_seconds", "pairs_per_second", "created", "inputs"}


def _stable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items() if k not in _VOLATILE}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    return value


_FINDER_TIME = ("seconds_per_event",)


def _compare_json(got: Path, expected: Path, skip: Sequence[str] = ()) -> str:
    a, b = (_stable(json.loads(p.read_text())) for p in (got, expected))
    for key in skip:
        a.pop(key, None)
        b.pop(key, None)
    return "" if a == b else f"{got.name} differs from the clean input's"


def _compare_files(got: Path, expected: Path, skip: Sequence[str] = ()) -> str:
    names = sorted(p.name for p in expected.iterdir() if p.name not in skip)
    for name in names:
        if (
            not (got / name).is_file()
            or (got / name).read_bytes() != (expected / name).read_bytes()
        ):
            return f"{name} differs from the clean input's"
    return ""


def _compare_weights(got: Path, expected: Path) -> str:
    """Tensors and metadata of two safetensors files (the bytes of the header are not
    reproducible: safetensors writes the metadata in hash-map order)."""
    from safetensors import safe_open

    with safe_open(str(got), framework="np") as a, safe_open(str(expected), framework="np") as b:
        if a.metadata() != b.metadata() or sorted(a.keys()) != sorted(b.keys()):
            return f"{got.name}: metadata or tensor names differ from the clean input's"
        for name in a.keys():  # noqa: SIM118
            if not np.array_equal(a.get_tensor(name), b.get_tensor(name)):
                return f"{got.name}: tensor {name} differs from the clean input's"
    return ""


def _compare_datasets(got: Path, expected: Path) -> str:
    for split in SPLITS:
        for path in sorted((expected / split).glob("*.npy")):
            a, b = np.load(got / split / path.name), np.load(path)
            if a.dtype != b.dtype or not np.array_equal(a, b):
                return f"{split}/{path.name} differs from the clean input's"
    if json.loads((got / "vocab.json").read_text()) != json.loads(
        (expected / "vocab.json").read_text()
    ):
        return "vocab.json differs from the clean input's"
    if not pd.read_parquet(got / "modules.parquet").equals(
        pd.read_parquet(expected / "modules.parquet")
    ):
        return "modules.parquet differs from the clean input's"
    keys = ("n_tracks", "events", "vocab_sha256", "selection", "order", "max_length")
    a, b = (json.loads((p / "manifest.json").read_text()) for p in (got, expected))
    differing = [key for key in keys if a.get(key) != b.get(key)]
    return f"manifest.json differs in {differing[0]}" if differing else ""


def twin_output(inputs: CleanInputs, verb: str, twin: dict[str, Any], invoke: Invoke) -> Path:
    """The output of ``verb`` on the clean inputs (``twin`` as ``CleanInputs.argv`` keywords),
    made once and cached under ``inputs.root / "twins"``."""
    key = json.dumps([verb, {k: str(v) for k, v in sorted(twin.items())}])
    if key not in inputs.twins:
        work = inputs.root / "twins" / f"{len(inputs.twins)}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        out = work / OUT_NAMES.get(verb, "out")
        code, stderr = invoke(inputs.argv(verb, out, **twin))
        if code != 0:
            raise RuntimeError(f"the clean run of {verb} failed ({code}): {stderr[-2000:]}")
        inputs.twins[key] = out
    return inputs.twins[key]


def run_case(
    case: Case, inputs: CleanInputs, scratch: Path, invoke: Invoke = invoke_in_process
) -> Result:
    """Corrupt a copy of the clean input as ``case`` says, run its verb and classify the result."""
    work = scratch / "case"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    started = time.perf_counter()
    try:
        chosen = MUTATIONS[f"{case.kind}/{case.mutation}"]
        context = Context(inputs, work, case.verb, np.random.default_rng(case.seed))
        setup = chosen.apply(context)
        code, stderr = invoke(setup.argv)
        if setup.benign:
            reason = "" if code == 0 else f"exit status {code}, expected 0 (a benign change)"
            if not reason:
                twin = {**setup.twin, "task": context.task}
                expected = twin_output(inputs, case.verb, twin, invoke)
                reason = compare_outputs(case.verb, work / expected.name, expected)
        else:
            reason = classify_error(case.verb, setup, code, stderr, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return Result(case, not reason, code, stderr, reason, time.perf_counter() - started)
