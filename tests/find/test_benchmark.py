"""``benchmarks/find_tracks.py``: its table says what the results hold."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "find_tracks.py"


def _benchmark() -> Any:
    spec = importlib.util.spec_from_file_location("benchmarks_find_tracks", BENCHMARK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["benchmarks_find_tracks"] = module
    spec.loader.exec_module(module)
    return module


def test_models_get_distinct_output_names_run_directories_and_shipped_models_alike() -> None:
    from tracklm.pretrained import resolve_model, shipped_names

    tag = _benchmark().model_tag
    assert tag(Path("demo/run/model")) == "run"
    assert tag(Path("demo/run-hits/model")) == "run-hits"
    shipped = [tag(resolve_model(name)) for name in shipped_names()]
    assert shipped == list(shipped_names())  # not the package directory they share


def test_markdown_table_has_one_row_per_run_and_time_ratios() -> None:
    module = _benchmark()
    run = dict.fromkeys(module.SCORE_KEYS, 0.5)
    results = {
        "events": 10,
        "seed": 11,
        "runs": {
            "sim": {
                "helix": {**run, "seconds_per_event": 4.0},
                "model": {**run, "seconds_per_event": 10.0},
            }
        },
        "memory": {
            "pileup": 20.0,
            "peak_rss_mib_1_events": 170.0,
            "peak_rss_mib_100_events": 171.0,
        },
    }
    table = module.markdown(results)
    rows = [line for line in table.splitlines() if line.startswith("| sim |")]
    assert len(rows) == 2
    assert rows[1].endswith("| 10.0 | 2.50 |") and rows[0].endswith("| 4.0 | 1.00 |")
    assert "1 events 170 MiB, 100 events 171 MiB" in table
