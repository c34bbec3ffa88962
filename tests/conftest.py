"""Shared fixtures: a toy dataset made by tracklm's own simulator, a tiny untrained model over it,
and the real TrackML reference data (skipped when absent: it is not part of the repository; its
directory, ``shared/data/trackml`` beside the checkout, is ``TRACKML_DATA`` below).

``toy_events`` simulates ``TOY_EVENTS`` low pile-up events with the built-in detector (about 3 s
on one core); ``toy_data`` prepares them as ``tracklm prepare`` does, with the default selection
(pixel volumes, 4 to 8 hits). Tests derive expected counts from the dataset itself
(``open_dataset(toy_data).split(...)``), never from the constants here.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
TRACKML_DATA = SHARED_DATA / "trackml"


def pytest_configure(config: pytest.Config) -> None:
    """Under ``pytest -n N`` (``make test``) each worker process is one of N on as many cores:
    one torch thread each, or the workers' thread pools fight over the cores."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)


TOY_EVENTS = 10
TOY_PILEUP = 5.0  # mean pile-up collisions: about 1,400 selected tracks over the 10 events
TOY_SPLIT_FRACTION = 0.2  # of the events, for each of val and test


@pytest.fixture(scope="session")
def toy_events(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A TrackML event directory from ``tracklm simulate`` (built-in detector, seed 0)."""
    from tracklm.simulate.event import run_simulate

    root = tmp_path_factory.mktemp("toy")
    return run_simulate(root / "events", events=TOY_EVENTS, pileup=TOY_PILEUP, seed=0)


@pytest.fixture(scope="session")
def toy_data(toy_events: Path) -> Path:
    """The prepared dataset of ``toy_events`` (train, val and test splits, manifest, vocab)."""
    from tracklm.data.prepare import run_prepare

    out = toy_events.parent / "data"
    run_prepare(
        toy_events,
        out,
        val_fraction=TOY_SPLIT_FRACTION,
        test_fraction=TOY_SPLIT_FRACTION,
    )
    return out


@pytest.fixture(scope="session")
def tiny_model(toy_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained tiny TrackingBERT over the toy vocabulary (seed 1234), as a model directory."""
    import torch

    from tracklm.io.dataset import open_dataset
    from tracklm.models.bert import TrackingBert, TrackingBertConfig

    vocab = open_dataset(toy_data).vocab
    torch.manual_seed(1234)
    model = TrackingBert(TrackingBertConfig.preset("tiny", vocab_size=len(vocab), max_length=19))
    directory = tmp_path_factory.mktemp("toy") / "model"
    model.save_pretrained(directory, vocab)
    return directory


@pytest.fixture(scope="session")
def pixel_toy_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Exact helices through a hand-made detector, as a dataset (tests/reference/pixel_toy.py).

    Only for thresholds that state what that clean geometry allows; use ``toy_data`` otherwise.
    """
    from tests.reference.pixel_toy import write_toy_dataset

    root = tmp_path_factory.mktemp("pixel_toy")
    return write_toy_dataset(root / "data", {"train": 800, "val": 200, "test": 400})


@pytest.fixture(scope="session")
def trackml_data() -> Path:
    """Directory of the real TrackML reference files (detectors.csv, events/, particles/)."""
    if not (TRACKML_DATA / "detectors.csv").is_file():
        pytest.skip(
            f"real TrackML reference data not found at {TRACKML_DATA} "
            "(a TrackML detectors.csv with events/ beside it)"
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


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Two shared cores: one torch thread per process is faster and keeps runs deterministic."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
