"""How much do module ids say? The masked-module and pair tasks against what the training tracks
themselves say, for growing training sets.

Most held-out tracks repeat a training track module for module: on 300 simulated PU200 events
(1.5 M training tracks) 85% of the test tracks of other events have an exact twin, with a median of
24 twins. Where a hidden hit's visible pattern (the track's length and its module at every
visible hit) matches many training tracks, the modules found at the hidden place in those tracks
are a sample of what the visible modules say about it, so

* the ``sequence`` baseline (the most frequent of them, ``tracklm.evaluate.baselines``) scored on
  the test hits is a classifier like any other: its accuracy is at most the best possible from
  the same information (the Bayes accuracy), up to the test sample's noise;
* the share of the most frequent of them, averaged over those hits (the plug-in estimate), is
  at least the Bayes accuracy on average for a given pattern (the largest of the sampled shares
  is biased upwards), and close to it when the matches are many.

The two bracket the best accuracy any module-token model can reach on those hits, and the model's
accuracy on the same hits (``--report``, a ``tracklm evaluate`` report of the same test tracks)
shows how close it comes. The same is done for the pair task (is pT(B) > pT(A)?): each track's
twins give a sample of log pT, the mean orders a pair (``exact``), and the chance that one
sample exceeds the other gives a plug-in estimate of the best pair accuracy on pairs whose tracks
both have at least ``--min-matches`` twins; with ``--model`` the model's pair head is scored on the
same pairs, and with ``--regression`` the ``regression`` baseline too (about 2 minutes per million
training tracks on 2 cores).

Usage::

    .venv/bin/python benchmarks/information_limit.py --train DATA [DATA ...] --test DATA \\
        --out OUT [--report EVAL] [--model MODEL] [--regression] [--fractions 0.1 0.3 1]

``--train``: prepared datasets (one vocabulary) whose train splits are pooled; ``--fractions``:
shares of their events (a seeded random subset) for the convergence table; ``--test``: the dataset
whose test split is evaluated (``--max-tracks`` random tracks, seed 0, as ``tracklm evaluate``
picks them). Writes ``OUT/information_limit.json`` and ``OUT/information_limit.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tracklm._fs import atomic_output_file
from tracklm.errors import InputError
from tracklm.evaluate.contexts import row_keys
from tracklm.evaluate.pair_baselines import whole_track_keys
from tracklm.evaluate.report import _select_tracks
from tracklm.io.dataset import TrackArrays, open_dataset

log = logging.getLogger("information_limit")
POSITIONS = ("first", "middle", "last")
# The paper's honest figures (its own code, the hit really masked; track A).
PAPER = {"all": 0.800, "first": 0.96, "middle": 0.81, "last": 0.62}


def pooled_train(paths: list[str]) -> TrackArrays:
    """The train splits of ``paths`` as one set of tracks (event ids made distinct per dataset)."""
    parts: list[TrackArrays] = []
    first = None
    for i, path in enumerate(paths):
        ds = open_dataset(path)
        if first is not None and ds.vocab.sha256 != first.vocab.sha256:
            raise InputError(f"--train {path}: another vocabulary than {paths[0]}'s")
        first = first or ds
        part = ds.split("train").take(slice(None))
        if parts and part.tokens.shape[1] != parts[0].tokens.shape[1]:
            raise InputError(f"--train {path}: tracks of another width than {paths[0]}'s")
        part.event_id = part.event_id + 10_000_000 * i
        parts.append(part)
    return TrackArrays.concatenate(parts, parts[0].tokens.shape[1])


def hidden_hit_stats(
    train_tokens: np.ndarray,
    train_lengths: np.ndarray,
    tokens: np.ndarray,
    lengths: np.ndarray,
    hit: np.ndarray,
) -> pd.DataFrame:
    """For each track with ``hit`` hidden: the training tracks with its visible pattern (``n``),
    the share of the most frequent module there (``top_share``) and that module (``top``)."""
    train_tokens = np.asarray(train_tokens, np.int64)
    tokens = np.asarray(tokens, np.int64)
    n = np.zeros(len(tokens), np.int64)
    top = np.full(len(tokens), -1, np.int64)
    top_count = np.zeros(len(tokens), np.int64)
    for length in np.unique(lengths):
        train = train_tokens[train_lengths == length]
        for h in np.unique(hit[lengths == length]):
            rows = np.flatnonzero((lengths == length) & (hit == h))
            cols = [c for c in range(int(length)) if c != h]
            keys = row_keys(np.concatenate([train[:, cols], tokens[rows][:, cols]]))
            frame = pd.DataFrame({"key": keys[: len(train)], "target": train[:, h]})
            counts = frame.groupby(["key", "target"]).size().reset_index(name="c")
            counts = counts.sort_values(["key", "c", "target"], ascending=[True, False, True])
            per_key = counts.groupby("key").agg(
                n=("c", "sum"), top_count=("c", "first"), top=("target", "first")
            )
            found = per_key.reindex(keys[len(train) :])
            ok = found["n"].notna().to_numpy()
            n[rows[ok]] = found["n"].to_numpy()[ok].astype(np.int64)
            top[rows[ok]] = found["top"].to_numpy()[ok].astype(np.int64)
            top_count[rows[ok]] = found["top_count"].to_numpy()[ok].astype(np.int64)
    return pd.DataFrame(
        {"n": n, "top": top, "top_share": np.where(n > 0, top_count / np.maximum(n, 1), np.nan)}
    )


def _share(values: Any) -> float:
    """Mean of a boolean or float selection, NaN when it is empty (no warning)."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    return float(values.mean()) if len(values) else float("nan")


def masked_table(
    train: TrackArrays, tracks: TrackArrays, min_matches: int
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Coverage, lookup accuracy and the plug-in estimate per position, and the per-hit rows."""
    lengths = tracks.lengths.astype(np.int64)
    tokens = tracks.tokens.astype(np.int64)
    frames = []
    for name, hit in zip(POSITIONS, (np.zeros_like(lengths), lengths // 2, lengths - 1)):
        stats = hidden_hit_stats(train.tokens, train.lengths, tokens, lengths, hit)
        stats["position"] = name
        stats["track"] = np.arange(len(lengths))
        stats["true"] = tokens[np.arange(len(lengths)), hit]
        frames.append(stats)
    rows = pd.concat(frames, ignore_index=True)
    rows["lookup_ok"] = rows["top"] == rows["true"]
    many = rows["n"] >= min_matches
    matched = rows["n"] > 0
    out: dict[str, Any] = {
        "hidden_hits": len(rows),
        "coverage": _share(matched),
        f"share_with_{min_matches}_matches": _share(many),
        "lookup_accuracy_where_matched": _share(rows.loc[matched, "lookup_ok"]),
        f"lookup_accuracy_{min_matches}_matches": _share(rows.loc[many, "lookup_ok"]),
        f"plug_in_{min_matches}_matches": _share(rows.loc[many, "top_share"]),
        "by_position": {
            name: {
                "coverage": _share(g["n"] > 0),
                "lookup_accuracy_where_matched": _share(g.loc[g["n"] > 0, "lookup_ok"]),
                f"plug_in_{min_matches}_matches": _share(g.loc[g["n"] >= min_matches, "top_share"]),
            }
            for name, g in rows.groupby("position")
        },
    }
    return out, rows


def join_report(rows: pd.DataFrame, report: Path, min_matches: int) -> dict[str, Any]:
    """The model of a ``tracklm evaluate`` report on the same hidden hits (track A's and B's rows
    of each track and position are both kept: the model saw each hit twice, beside two partners)."""
    pred = pd.read_parquet(report / "predictions.parquet")
    merged = pred.merge(rows, on=["track", "position"], how="inner", validate="many_to_one")
    if len(merged) != len(pred) or not (merged["true_token"] == merged["true"]).all():
        raise InputError(f"--report {report}: not a report of the same test tracks")
    model_ok = merged["model_pred"] == merged["true_token"]
    seq_ok = merged["sequence_pred"] == merged["true_token"] if "sequence_pred" in merged else None
    groups = {
        "all": np.ones(len(merged), bool),
        "matched": merged["n"].to_numpy() > 0,
        "not_matched": merged["n"].to_numpy() == 0,
        f"{min_matches}_matches": merged["n"].to_numpy() >= min_matches,
    }
    lookup_ok = merged["top"] == merged["true_token"]
    out: dict[str, Any] = {}
    many_name = f"{min_matches}_matches"
    for name, sel in groups.items():
        out[name] = {
            "share": _share(sel),
            "model": _share(model_ok[sel]),
            # the look-up has no answer for an unmatched hit: scored only where it has one
            "lookup": _share(lookup_ok[sel & groups["matched"]]) if name != "all" else None,
            # the plug-in estimate is biased up where the matches are few: only where many
            "plug_in": _share(merged.loc[sel, "top_share"]) if name == many_name else None,
        }
    if seq_ok is not None:
        out["all"]["sequence_baseline"] = _share(seq_ok)
    position = merged["position"].to_numpy()
    many = groups[many_name]
    out["by_position"] = {
        name: {
            "model": _share(model_ok[position == name]),
            f"share_with_{min_matches}_matches": _share(many[position == name]),
            f"model_{min_matches}_matches": _share(model_ok[(position == name) & many]),
            f"lookup_{min_matches}_matches": _share(lookup_ok[(position == name) & many]),
            f"plug_in_{min_matches}_matches": _share(
                merged.loc[(position == name) & many, "top_share"]
            ),
        }
        for name in POSITIONS
    }
    return out


def needed_elsewhere(goal: float, share: float, limit: float) -> float:
    """The accuracy the hits outside a group (of ``share``, at best ``limit``) need for ``goal``.

    Above 1, the goal cannot be reached at all; the ceiling overall is ``share * limit + 1 -
    share`` (every other hit right)."""
    return (goal - share * limit) / (1.0 - share) if share < 1 else float("inf")


def exact_log_pt(
    train: TrackArrays, tracks: TrackArrays
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Mean log pT of each track's exact twins, their number, and their samples."""
    tk, qk = whole_track_keys(train.tokens, train.lengths, tracks.tokens, tracks.lengths)
    order = np.argsort(tk, kind="stable")
    sk, lp = tk[order], np.log(train.pt[order].astype(np.float64))
    lo, hi = np.searchsorted(sk, qk, "left"), np.searchsorted(sk, qk, "right")
    samples = [lp[a:b] for a, b in zip(lo, hi)]
    mean = np.array([s.mean() if len(s) else np.nan for s in samples])
    return mean, hi - lo, samples


def pair_table(
    train: TrackArrays, dataset: Any, tracks: TrackArrays, args: argparse.Namespace
) -> dict[str, Any]:
    from tracklm.evaluate.masked import pair_partners
    from tracklm.evaluate.pair_baselines import lookup_log_pt

    partner = pair_partners(tracks.event_id, 0)  # tracklm evaluate's pairs (seed 0)
    labels = tracks.pt[partner] > tracks.pt
    lookup = lookup_log_pt(train, tracks)
    exact, n, samples = exact_log_pt(train, tracks)
    estimates = {"lookup": lookup, "exact": np.where(np.isfinite(exact), exact, lookup)}
    if args.regression:
        from tracklm.evaluate.pt_regression import regression_estimates

        estimates["regression"] = regression_estimates(
            train.tokens, train.lengths, np.log(train.pt.astype(np.float64)), None,
            tracks.tokens, tracks.lengths, dataset.module_centres,
        )[0]  # fmt: skip
    scores = {name: est[partner] - est for name, est in estimates.items()}
    if args.model:
        scores["model"] = model_pair_logits(args.model, dataset, tracks)
    out: dict[str, Any] = {"pairs": len(labels)}
    for k in (1, args.min_matches):
        sel = (n >= k) & (n[partner] >= k)
        entry: dict[str, float | None] = {"share": float(sel.mean())}
        for name, s in scores.items():
            entry[name] = float(((s > 0) == labels)[sel].mean()) if sel.any() else None
        if k > 1:
            best = []
            for i in np.flatnonzero(sel):
                a, b = samples[i], samples[partner[i]]
                q = (b[None, :] > a[:, None]).mean() + 0.5 * (b[None, :] == a[:, None]).mean()
                best.append(max(q, 1.0 - q))
            entry["plug_in"] = float(np.mean(best)) if best else None
        out[f"both_{k}_matches"] = entry
    out["all"] = {name: float(((s > 0) == labels).mean()) for name, s in scores.items()}
    return out


def model_pair_logits(model: str, dataset: Any, tracks: TrackArrays) -> np.ndarray:
    from tracklm.data.batches import input_width
    from tracklm.evaluate.masked import predict_pair_logits
    from tracklm.evaluate.report import evaluation_pairs
    from tracklm.models.bert import TrackingBert

    net = TrackingBert.from_pretrained(model)
    # the pairs and passes of ``tracklm evaluate`` (seed 0, its default batch of 1024 pairs)
    width = input_width(tracks.max_length, "event")
    pairs = evaluation_pairs(tracks, dataset, 0, width, hits=net.config.reads_hits)
    e = pairs.encoded
    return predict_pair_logits(
        net, e.input_ids, e.token_type_ids, e.attention_mask, 1024, hits=pairs.hits
    )


def subset(train: TrackArrays, fraction: float, seed: int = 0) -> TrackArrays:
    events = np.unique(train.event_id)
    keep = np.random.default_rng(seed).permutation(events)[: max(1, round(fraction * len(events)))]
    return train.take(np.flatnonzero(np.isin(train.event_id, keep)))


def _pct(value: Any) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.1%}"


def _needed(value: float) -> str:
    return "over 100%: out of reach" if value > 1 else _pct(value)


def _clean(obj: Any) -> Any:
    """NaN (an empty selection) as null in the JSON."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_clean(v) for v in obj]
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def markdown(result: dict[str, Any]) -> str:
    """The tables of ``information_limit.md``."""
    k = result["min_matches"]
    lines = [
        "# What the module ids say (`benchmarks/information_limit.py`)",
        "",
        f"Test tracks: {result['test']} ({result['test_tracks']}, first, middle and last hit "
        f"hidden); training tracks from {', '.join(result['train'])}.",
        "",
        "## Masked module: the `sequence` look-up as the training set grows",
        "",
        "| training events | training tracks | hidden hits matched (first / middle / last) | "
        f"look-up, matched hits | hits with >= {k} matches | look-up there | plug-in there |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in result["masked"]:
        pos = row["by_position"]
        lines.append(
            f"| {row['events']} | {row['train_tracks']:,} | {_pct(row['coverage'])} ("
            + " / ".join(_pct(pos[p]["coverage"]) for p in POSITIONS)
            + f") | {_pct(row['lookup_accuracy_where_matched'])} | "
            f"{_pct(row[f'share_with_{k}_matches'])} | {_pct(row[f'lookup_accuracy_{k}_matches'])} "
            f"| {_pct(row[f'plug_in_{k}_matches'])} |"
        )
    if "model" in result:
        lines += [
            "",
            "## The model on the same hidden hits (largest training set)",
            "",
            "| hidden hits | share | model | look-up | plug-in |",
            "|---|---|---|---|---|",
        ]
        model = result["model"]
        for name, e in model.items():
            if name == "by_position":
                continue
            lines.append(
                f"| {name.replace('_', ' ')} | {_pct(e['share'])} | {_pct(e['model'])} | "
                f"{_pct(e['lookup'])} | {_pct(e['plug_in'])} |"
            )
        if "sequence_baseline" in model["all"]:
            lines += [
                "",
                "The report's `sequence` baseline on the same hits (counted on its own training "
                f"split, `frequency` where unmatched): {_pct(model['all']['sequence_baseline'])}.",
            ]
        lines += [
            "",
            f"What the paper's figures would need on the hits with fewer than {k} matches, taking "
            f"the better of the look-up and the plug-in as the best possible on the hits with "
            f">= {k}:",
            "",
            f"| hidden hits | paper | share with >= {k} matches | model there | best possible "
            "there | model elsewhere | needed elsewhere | ceiling |",
            "|---|---|---|---|---|---|---|---|",
        ]
        entries = [("all", PAPER["all"], model[f"{k}_matches"], model["all"]["model"])]
        for name in POSITIONS:
            pos = model["by_position"][name]
            entry = {
                "share": pos[f"share_with_{k}_matches"],
                "model": pos[f"model_{k}_matches"],
                "lookup": pos[f"lookup_{k}_matches"],
                "plug_in": pos[f"plug_in_{k}_matches"],
            }
            entries.append((name, PAPER[name], entry, pos["model"]))
        for name, goal, e, overall in entries:
            best = max(e["lookup"], e["plug_in"])
            rest = (overall - e["share"] * e["model"]) / (1 - e["share"])
            lines.append(
                f"| {name} | {_pct(goal)} | {_pct(e['share'])} | {_pct(e['model'])} | "
                f"{_pct(best)} | {_pct(rest)} | {_needed(needed_elsewhere(goal, e['share'], best))}"
                f" | {_pct(e['share'] * best + 1 - e['share'])} |"
            )
    pairs = result["pairs"]
    names = list(pairs["all"])
    lines += [
        "",
        "## The pair task (largest training set)",
        "",
        "| pairs | share | " + " | ".join(names) + " | plug-in |",
        "|---|---|" + "---|" * (len(names) + 1),
    ]
    for key in [name for name in pairs if name.startswith("both_")] + ["all"]:
        e = pairs[key]
        lines.append(
            f"| {key.replace('_', ' ')} | {_pct(e.get('share', 1.0))} | "
            + " | ".join(_pct(e.get(n)) for n in names)
            + f" | {_pct(e.get('plug_in'))} |"
        )
    k_pairs = pairs.get(f"both_{k}_matches", {})
    if "model" in names and k_pairs.get("model") is not None and k_pairs["share"] < 1:
        best_other = max(v for n, v in pairs["all"].items() if n != "model")
        best = max(k_pairs.get("plug_in") or 0.0, *(k_pairs[n] for n in names if n != "model"))
        goal = best_other + 0.05
        rest = (pairs["all"]["model"] - k_pairs["share"] * k_pairs["model"]) / (
            1 - k_pairs["share"]
        )
        lines += [
            "",
            f"Issue 12's pair goal, the best baseline + 5 points: {_pct(goal)}. On the pairs "
            f"whose tracks both have >= {k} twins ({_pct(k_pairs['share'])}) the best is "
            f"{_pct(best)} (the better of the baselines and the plug-in); the model orders "
            f"{_pct(rest)} of the other pairs, and the goal needs "
            f"{_needed(needed_elsewhere(goal, k_pairs['share'], best))} of them.",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--train", nargs="+", required=True, help="prepared datasets, train splits pooled"
    )
    ap.add_argument("--test", required=True, help="prepared dataset whose test split is evaluated")
    ap.add_argument("--out", required=True)
    ap.add_argument("--max-tracks", type=int, default=4000)
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.1, 0.3, 1.0])
    ap.add_argument("--min-matches", type=int, default=20)
    ap.add_argument("--report", help="a tracklm evaluate report of the same test tracks")
    ap.add_argument("--model", help="a model whose pair head is scored on the same pairs")
    ap.add_argument("--regression", action="store_true", help="fit the regression pair baseline")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        train = pooled_train(args.train)
        dataset = open_dataset(args.test)
        test = dataset.split("test")
        tracks = test.take(_select_tracks(test, args.max_tracks, 0))
        result: dict[str, Any] = {
            "train": args.train,
            "test": args.test,
            "test_tracks": len(tracks),
            "min_matches": args.min_matches,
            "masked": [],
        }
        rows = None
        for fraction in sorted(args.fractions):
            part = subset(train, fraction) if fraction < 1 else train
            t0 = time.time()
            table, rows = masked_table(part, tracks, args.min_matches)
            table.update(
                events=len(np.unique(part.event_id)), train_tracks=len(part), fraction=fraction
            )
            log.info(
                "%d events: matched %.3f, look-up %.4f (%.0f s)",
                table["events"],
                table["coverage"],
                table["lookup_accuracy_where_matched"],
                time.time() - t0,
            )
            result["masked"].append(table)
        if args.report and rows is not None:
            result["model"] = join_report(rows, Path(args.report), args.min_matches)
        result["pairs"] = pair_table(train, dataset, tracks, args)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = Path(args.out)
    result = _clean(result)
    for name, text in (
        ("information_limit.json", json.dumps(result, indent=2) + "\n"),
        ("information_limit.md", markdown(result)),
    ):
        with atomic_output_file(out / name) as tmp:
            tmp.write_text(text)
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
