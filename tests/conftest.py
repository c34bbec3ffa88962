"""Shared fixtures: the real TrackML reference data in ../shared/data (skipped when absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
TRACKML_DATA = SHARED_DATA / "trackml"


@pytest.fixture(scope="session")
def trackml_data() -> Path:
    """Directory of the real TrackML reference files (detectors.csv, events/, particles/)."""
    if not (TRACKML_DATA / "detectors.csv").is_file():
        pytest.skip(
            f"real TrackML reference data not found at {TRACKML_DATA} (see shared/data/SOURCES.md)"
        )
    return TRACKML_DATA


@pytest.fixture(scope="session")
def real_detectors_csv(trackml_data: Path) -> Path:
    return trackml_data / "detectors.csv"


@pytest.fixture(scope="session")
def real_event_dir(trackml_data: Path) -> Path:
    """Directory holding the real subsampled event 1 (hits, particles, truth, cells)."""
    path = trackml_data / "events"
    if not (path / "event000000001-hits.csv.gz").is_file():
        pytest.skip(f"real TrackML event not found in {path}")
    return path
