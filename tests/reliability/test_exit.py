"""A failing command ends with exit status 2, every time: nothing can abort the interpreter at exit.

Once in 33 runs, ``prepare`` with a garbage line in ``detectors.csv`` died of SIGABRT (exit 134)
instead. The cause (core dump): pandas handed pyarrow a Python file object; after the parse error
had returned, a pyarrow worker thread released a buffer of that file's bytes, took the GIL while
the interpreter was finalizing, and was stopped inside a C++ destructor ("terminate called
without an active exception"). ``tracklm.io.native`` gives pyarrow native streams instead.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.csv
import pyarrow.parquet
import pytest

from tracklm.detector.geometry import Detector
from tracklm.io.dataset import open_dataset
from tracklm.io.trackml import event_path, read_part

RUNS = 10


def test_pyarrow_reads_files_from_native_streams(toy_events, toy_data, monkeypatch):
    sources: list[object] = []
    for module, name in ((pyarrow.csv, "read_csv"), (pyarrow.parquet, "read_table")):
        original = getattr(module, name)

        def spy(source, *args, _original=original, **kwargs):
            sources.append(source)
            return _original(source, *args, **kwargs)

        monkeypatch.setattr(module, name, spy)
    Detector.from_csv(toy_events / "detectors.csv")
    read_part(event_path(toy_events, 1, "hits"), "hits")  # gzip-compressed
    open_dataset(toy_data)  # modules.parquet
    assert len(sources) == 3
    assert all(isinstance(source, pa.NativeFile) for source in sources), sources


@pytest.fixture
def bad_geometry_events(toy_events: Path, tmp_path: Path) -> Path:
    """The toy events beside a ``detectors.csv`` whose second data row is garbage."""
    events = tmp_path / "events"
    events.mkdir()
    for path in toy_events.glob("event*"):
        (events / path.name).symlink_to(path)
    header, first, *rest = (toy_events / "detectors.csv").read_text().splitlines(keepends=True)
    (events / "detectors.csv").write_text("".join([header, first, "1,2\n", *rest]))
    return events


def test_prepare_with_a_garbage_geometry_line_exits_2_every_time(bad_geometry_events, tmp_path):
    """Ten real processes, two at a time (the abort needed a busy machine to show)."""
    env = {key: value for key, value in os.environ.items() if key != "OMP_NUM_THREADS"}
    command = [sys.executable, "-m", "tracklm", "prepare", "--events", str(bad_geometry_events)]
    results = []
    for pair in range(RUNS // 2):
        outs = [tmp_path / f"out-{pair}-{i}" for i in range(2)]
        started = [
            subprocess.Popen(
                [*command, "--out", str(out)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
            )
            for out in outs
        ]
        results += [(process.communicate(timeout=120), process.returncode) for process in started]
        assert not any(out.exists() for out in outs)
    for (stdout, stderr), returncode in results:
        lines = stderr.decode().splitlines()
        assert returncode == 2, stderr.decode()[-2000:]
        assert len(lines) == 1 and lines[0].startswith("tracklm prepare: error: "), lines
        assert "detectors.csv" in lines[0] and stdout == b""
