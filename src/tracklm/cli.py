"""The ``tracklm`` command line: one verb per stage, each calling one library function.

Each sub-command parses its options and passes them, by name, to the function named in
``_COMMANDS``. Bad usage or bad input (``InputError``) gives one line on stderr and exit status 2;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tracklm import __version__
from tracklm.errors import InputError
from tracklm.presets import preset_names
from tracklm.simulate.config import SimulationConfig

SELECTIONS_HELP = (
    "track selection: 'pixel-4to8' (the paper's: pixel volumes 7, 8, 9, tracks with 4 to 8 hits, "
    "no pT cut), 'pixel-min4' (at least 4 pixel hits, tracks longer than 12 hits cut to their first 12), "
    "'all-min4' (all 18,728 modules, at least 4 hits, longer tracks cut to their first 24)"
)

# verb -> "module:function"; the function receives the verb's options as keyword arguments.
_COMMANDS = {
    "simulate": "tracklm.simulate.event:run_simulate",
    "prepare": "tracklm.data.prepare:run_prepare",
    "pretrain": "tracklm.train.pretrain:run_pretrain",
    "evaluate": "tracklm.evaluate.report:run_evaluate",
    "embed": "tracklm.tasks.embed:run_embed",
    "finetune": "tracklm.tasks.finetune:run_finetune",
    "export": "tracklm.models.export:run_export",
    "demo": "tracklm.demo:run_demo",
    "score": "tracklm.score.run:run_score",
    "find": "tracklm.find.run:run_find",
    "generate": "tracklm.generate.run:run_generate",
}


def _model_dir(text: str) -> Path:
    """A model directory, or the name of a model shipped with the package (``trackml-pixel``,
    ``trackml-pixel-small``: ``tracklm.pretrained.shipped_names``);
    anything else is left to the loader, which names it in its one-line error."""
    from tracklm.pretrained import resolve_model

    try:
        return resolve_model(text)
    except InputError:
        return Path(text)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return value


def _add_simulate(sub: Any, common: argparse.ArgumentParser) -> None:
    """``tracklm simulate``: options passed by name to ``tracklm.simulate.event.run_simulate``."""
    p = sub.add_parser("simulate", parents=[common], help="simulate TrackML-format events")
    p.add_argument("--out", type=Path, required=True, help="output event directory")
    p.add_argument(
        "--detector", default="trackml", help="'trackml' (built-in) or a detectors.csv path"
    )
    p.add_argument("--events", type=_positive_int, default=10, help="number of events (default 10)")
    p.add_argument(
        "--pileup",
        type=_non_negative_float,
        default=SimulationConfig.mean_pileup_collisions,
        help=f"mean pile-up collisions (default {SimulationConfig.mean_pileup_collisions:g})",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--workers", type=_positive_int, default=1, help="parallel processes (default 1)"
    )
    p.add_argument(
        "--vertex-sigma-z",
        type=_sigma_list,
        default=SimulationConfig.vertex_sigma_z_mm,
        metavar="MM[,MM...]",
        help=(
            "Gaussian z spread of the collision vertices in mm (default "
            f"{SimulationConfig.vertex_sigma_z_mm:g}, TrackML's accuracy-phase events; its "
            "throughput-phase events have about 50); a list is cycled over the events"
        ),
    )


def _sigma_list(text: str) -> float | list[float]:
    """``MM[,MM...]``: one spread, or several (cycled over the events)."""
    values = [_non_negative_float(part) for part in text.split(",")]
    return values[0] if len(values) == 1 else values


def _add_prepare(sub: Any, common: argparse.ArgumentParser) -> None:
    """``tracklm prepare``: options passed by name to ``tracklm.data.prepare.run_prepare``."""
    p = sub.add_parser("prepare", parents=[common], help="tokenize events into a track dataset")
    p.add_argument("--events", type=Path, required=True, help="TrackML event directory")
    p.add_argument("--out", type=Path, required=True, help="output dataset directory")
    p.add_argument(
        "--detector",
        default=None,
        help="'trackml' or a detectors.csv path (default: EVENTS/detectors.csv if present, else trackml)",
    )
    p.add_argument(
        "--selection",
        default="pixel-4to8",
        choices=["pixel-4to8", "pixel-min4", "all-min4"],
        help=SELECTIONS_HELP,
    )
    p.add_argument(
        "--order",
        default="distance",
        choices=["distance", "vertex", "r"],
        help="hit order: distance from the origin (default), from the production vertex, or radius",
    )
    p.add_argument(
        "--val-fraction",
        type=_fraction,
        default=0.1,
        help="fraction of events for validation (default 0.1)",
    )
    p.add_argument(
        "--test-fraction",
        type=_fraction,
        default=0.1,
        help="fraction of events for test (default 0.1)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the event split (default 0)")
    p.add_argument(
        "--workers", type=_positive_int, default=1, help="parallel processes (default 1)"
    )
    p.add_argument(
        "--tolerant", action="store_true", help="skip bad events with a warning instead of failing"
    )


def _add_pretrain(sub: Any, common: argparse.ArgumentParser) -> None:
    """``tracklm pretrain``: options passed by name to ``tracklm.train.pretrain.run_pretrain``."""
    p = sub.add_parser("pretrain", parents=[common], help="pre-train TrackingBERT")
    p.add_argument(
        "--data", type=Path, required=True, help="dataset directory from 'tracklm prepare'"
    )
    p.add_argument("--out", type=Path, required=True, help="run directory")
    p.add_argument(
        "--preset",
        default="tiny",
        choices=preset_names("pretrain"),
        help="model and training preset (paper-cpu: the paper's architecture with a recipe for "
        "CPU budgets; trackml-pixel, trackml-pixel-small: the recipes of the shipped models)",
    )
    p.add_argument("--config", type=Path, default=None, help="YAML file overriding the preset")
    p.add_argument(
        "--max-steps",
        type=_positive_int,
        default=None,
        help="optimiser steps; a new run fits the preset's warm-up, mask-rate stages and decay "
        "into them",
    )
    p.add_argument(
        "--max-time",
        type=_non_negative_float,
        default=None,
        help="minutes; a new run without --max-steps measures its pace and fits the preset's "
        "schedule into them; the run stops then in any case",
    )
    p.add_argument(
        "--batch-size", type=_positive_int, default=None, help="pairs per batch (per device)"
    )
    p.add_argument(
        "--devices", default="1", help="devices per node: a number or 'auto' (default 1)"
    )
    p.add_argument("--num-nodes", type=_positive_int, default=1, help="nodes (default 1)")
    p.add_argument("--strategy", default="auto", help="Lightning strategy, e.g. ddp (default auto)")
    p.add_argument("--accelerator", default="auto", help="cpu, gpu or auto (default auto)")
    p.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its last checkpoint"
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--inputs",
        default=None,
        choices=["tokens", "geometry", "hits"],  # models.config.INPUT_MODES (no torch import here)
        help="what the model reads of each hit: module tokens (the paper's), plus their "
        "geometry, plus the measured hit positions (default: the preset's: geometry in the "
        "trackml-pixel presets, tokens in the others)",
    )
    p.add_argument(
        "--objective",
        default=None,
        choices=["masked", "next-module"],  # models.config.OBJECTIVES (no torch import here)
        help="what the model learns to predict: masked modules from both sides (the paper's) "
        "or each next module and the end of the track, with causal attention (default: the "
        "preset's, masked)",
    )


def _add_evaluate(sub: Any, common: argparse.ArgumentParser) -> None:
    """``tracklm evaluate``: options passed by name to ``tracklm.evaluate.report.run_evaluate``."""
    p = sub.add_parser("evaluate", parents=[common], help="masked-module evaluation with baselines")
    p.add_argument(
        "--model",
        type=_model_dir,
        required=True,
        help="model directory (RUN/model) or shipped name",
    )
    p.add_argument("--data", type=Path, required=True, help="dataset directory")
    p.add_argument("--out", type=Path, required=True, help="report directory")
    p.add_argument(
        "--split", default="test", choices=["train", "val", "test"], help="split (default test)"
    )
    p.add_argument(
        "--protocol",
        default="masked",
        choices=["masked", "unmasked"],
        help="'masked' hides the hit (the honest result); 'unmasked' leaves it visible (the public code's figure)",
    )
    p.add_argument(
        "--max-tracks", type=_positive_int, default=None, help="evaluate at most N tracks"
    )
    p.add_argument("--seed", type=int, default=0, help="seed for pairing tracks (default 0)")
    p.add_argument(
        "--baseline-data",
        type=Path,
        default=None,
        help="dataset whose train split the baselines count on (default: the model's training "
        "data, else this dataset's train split; never the evaluated events)",
    )


def _add_embed(sub: Any, common: argparse.ArgumentParser) -> None:
    """``tracklm embed``: options passed by name to ``tracklm.tasks.embed.run_embed``."""
    p = sub.add_parser("embed", parents=[common], help="export the module embedding table")
    p.add_argument(
        "--model", type=_model_dir, required=True, help="model directory or shipped name"
    )
    p.add_argument("--out", type=Path, required=True, help="output parquet file")
    p.add_argument("--plot", type=Path, default=None, help="PNG of a 2D projection")
    p.add_argument(
        "--projection", default="pca", choices=["pca", "umap"], help="2D projection (default pca)"
    )


def _add_finetune(sub: Any, common: argparse.ArgumentParser) -> None:
    """``tracklm finetune``: options passed by name to ``tracklm.tasks.finetune.run_finetune``."""
    p = sub.add_parser("finetune", parents=[common], help="train a downstream task")
    p.add_argument(
        "--task",
        required=True,
        choices=["holes", "outliers", "extrapolate", "pt", "candidates"],
        help="the task",
    )
    p.add_argument(
        "--model",
        type=_model_dir,
        required=True,
        help="pre-trained model directory or shipped name",
    )
    p.add_argument(
        "--data",
        type=Path,
        required=True,
        help="dataset directory (for --task candidates: events with truth)",
    )
    p.add_argument("--out", type=Path, required=True, help="run directory")
    p.add_argument(
        "--mode",
        default="finetune",
        choices=["finetune", "frozen", "scratch"],
        help="transfer mode",
    )
    p.add_argument(
        "--train-size", type=_positive_int, default=None, help="training tracks (default all)"
    )
    p.add_argument("--max-steps", type=_positive_int, default=None, help="optimiser steps")
    p.add_argument("--max-time", type=_non_negative_float, default=None, help="minutes")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--config",
        type=Path,
        default=None,
        help="YAML file of fine-tuning options (FinetuneConfig keys) over the defaults",
    )


def _add_export(sub: Any, common: argparse.ArgumentParser) -> None:
    """``tracklm export``: options passed by name to ``tracklm.models.export.run_export``."""
    p = sub.add_parser("export", parents=[common], help="export the model for deployment")
    p.add_argument(
        "--model", type=_model_dir, required=True, help="model directory or shipped name"
    )
    p.add_argument("--format", default="onnx", choices=["onnx"], help="format (default onnx)")
    p.add_argument("--out", type=Path, required=True, help="output file")


def _add_demo(sub: Any, common: argparse.ArgumentParser) -> None:
    """``tracklm demo``: options passed by name to ``tracklm.demo.run_demo``."""
    p = sub.add_parser(
        "demo", parents=[common], help="simulate, prepare, pretrain, evaluate end to end"
    )
    p.add_argument("--out", type=Path, required=True, help="demo directory")
    p.add_argument(
        "--minutes",
        type=_non_negative_float,
        default=10.0,
        help="pre-training minutes (default 10)",
    )


def _add_score(sub: Any, common: argparse.ArgumentParser) -> None:
    """``tracklm score``: options passed by name to ``tracklm.score.run.run_score``."""
    p = sub.add_parser(
        "score",
        parents=[common],
        help="TrackML score of a track finder's output (submission files)",
    )
    p.add_argument("--events", type=Path, required=True, help="TrackML event directory (truth)")
    p.add_argument(
        "--tracks",
        type=Path,
        required=True,
        help="directory of eventNNNNNNNNN-tracks.csv files (event_id, hit_id, track_id; 0 = no track)",
    )
    p.add_argument("--out", type=Path, required=True, help="score directory")
    p.add_argument(
        "--volumes",
        default="7,8,9",
        help="evaluated volumes, comma-separated, or 'all' (default 7,8,9: the pixel TrackML "
        "score, weights recomputed over those hits)",
    )


def _add_find(sub: Any, common: argparse.ArgumentParser) -> None:
    """``tracklm find``: options passed by name to ``tracklm.find.run.run_find``."""
    p = sub.add_parser(
        "find",
        parents=[common],
        help="find the tracks of whole events (submission files for 'tracklm score')",
    )
    p.add_argument("--events", type=Path, required=True, help="TrackML event directory")
    p.add_argument("--out", type=Path, required=True, help="tracks directory to write")
    p.add_argument(
        "--method",
        default="helix",
        choices=["helix", "model"],
        help="'helix': seeded helix follower (default); 'model': the same seeds, a pre-trained "
        "model deciding the extension and ranking candidates",
    )
    p.add_argument(
        "--model",
        type=_model_dir,
        default=None,
        help="model directory (RUN/model) or shipped name, for --method model",
    )
    p.add_argument(
        "--volumes",
        default="7,8,9",
        help="volumes to find tracks in, comma-separated, or 'all' (default 7,8,9: the pixels)",
    )
    p.add_argument(
        "--short-veto",
        type=float,
        default=0.0,
        help="--method model: also drop candidates of at most 4 hits whose pseudo-log-likelihood "
        "is below this quantile of the model's values for the event's real tracks (fewer fakes, "
        "some real short tracks lost; default 0: off)",
    )
    p.add_argument(
        "--scorer",
        type=_model_dir,
        default=None,
        help="--method model: a model fine-tuned with 'tracklm finetune --task candidates' that "
        "orders and vetoes the candidates, while --model decides the steps (a scorer given as "
        "--model alone leaves the steps to the helix)",
    )


def _add_generate(sub: Any, common: argparse.ArgumentParser) -> None:
    """``tracklm generate``: options passed by name to ``tracklm.generate.run.run_generate``."""
    p = sub.add_parser(
        "generate", parents=[common], help="complete tracks from seeds, sample new ones, judge both"
    )
    p.add_argument(
        "--model",
        type=_model_dir,
        required=True,
        help="model directory (RUN/model) or shipped name",
    )
    p.add_argument("--data", type=Path, required=True, help="dataset directory")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument(
        "--split", default="test", choices=["train", "val", "test"], help="split (default test)"
    )
    p.add_argument(
        "--seed-hits", type=_non_negative_int, default=3,
        help="complete each track from its first K hits (default 3; 0: no completions)",
    )  # fmt: skip
    p.add_argument(
        "--samples", type=_non_negative_int, default=4000,
        help="tracks to sample from nothing (default 4000; 0: none)",
    )  # fmt: skip
    p.add_argument(
        "--max-tracks", type=_positive_int, default=4000,
        help="complete at most N tracks of the split, chosen at random (default 4000)",
    )  # fmt: skip
    p.add_argument(
        "--strategy", default="greedy", choices=["greedy", "beam", "sample"],
        help="how completions choose each next module (default greedy)",
    )  # fmt: skip
    p.add_argument("--beam-width", type=_positive_int, default=4, help="beams (default 4)")
    p.add_argument(
        "--temperature", type=float, default=1.0, help="sampling temperature (default 1)"
    )
    p.add_argument(
        "--top-k", type=_non_negative_int, default=0,
        help="sample among the k most probable modules only (default 0: all)",
    )  # fmt: skip
    p.add_argument(
        "--stop-score", type=float, default=0.3,
        help="a masked model's score for ending a track (default 0.3)",
    )  # fmt: skip
    p.add_argument(
        "--batch-size", type=_positive_int, default=4096, help="tracks per batch (default 4096)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the subsets and draws (default 0)")


_VERB_OPTIONS = (
    _add_simulate,
    _add_prepare,
    _add_pretrain,
    _add_evaluate,
    _add_embed,
    _add_finetune,
    _add_export,
    _add_demo,
    _add_score,
    _add_find,
    _add_generate,
)
"""The sub-commands in the order ``--help`` lists them."""


def build_parser() -> argparse.ArgumentParser:
    return _build_parsers()[0]


def _build_parsers() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The ``tracklm`` parser and each verb's sub-parser (by verb)."""
    parser = argparse.ArgumentParser(
        prog="tracklm",
        description="Language models for particle tracking: simulate, prepare, pretrain, evaluate, use.",
    )
    parser.add_argument("--version", action="version", version=f"tracklm {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    common.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add_verb in _VERB_OPTIONS:
        add_verb(sub, common)
    return parser, dict(sub.choices)


def _resolve(target: str) -> Callable[..., Any]:
    module_name, function_name = target.split(":")
    return getattr(importlib.import_module(module_name), function_name)


def main(argv: Sequence[str] | None = None) -> int:
    parser, verbs = _build_parsers()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        # The verb's parser reports them, so the message reads "tracklm VERB: error: ...".
        verbs[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    options = vars(args)
    command = options.pop("command")
    debug = options.pop("debug")
    verbose = options.pop("verbose")
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s" if not verbose else "%(asctime)s %(name)s: %(message)s",
    )
    try:
        _resolve(_COMMANDS[command])(**options)
    except InputError as exc:
        if debug:
            raise
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"tracklm {command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tracklm {command}: interrupted", file=sys.stderr)
        return 130
    return 0
