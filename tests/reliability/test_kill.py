"""Killed at any moment: real ``tracklm`` processes SIGKILLed, then resumed or run again.

The processes are the command line itself, started through ``launcher.py`` (which only adds a
progress file and, on request, a checkpoint write that stops halfway). Each kill is followed by
checks of what a kill may leave: never an unreadable checkpoint or a half-written output, no
worker processes left behind, at most one checkpoint interval of training lost, and a rerun
(``--resume`` for pretrain) that ends where an uninterrupted run ends.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tracklm._fs import atomic_output_dir, atomic_output_file
from tracklm.data.prepare import run_prepare
from tracklm.models import TrackingBert
from tracklm.simulate.event import run_simulate
from tracklm.train.pretrain import run_pretrain

pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec.*:FutureWarning")

LAUNCHER = Path(__file__).with_name("launcher.py")
CHECKPOINT_EVERY = 5
MAX_STEPS = 40
RUN_CONFIG = f"""\
batch_size: 16
max_steps: {MAX_STEPS}
warmup_steps: 5
mask_rate_steps: [10, 25]
val_every: 20
val_batches: 2
checkpoint_every: {CHECKPOINT_EVERY}
"""
POLL_SECONDS = 0.005


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """One torch thread here, as in the child processes (OMP_NUM_THREADS=1)."""


def child_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def launch(args: list[str], log: Path, *options: str) -> subprocess.Popen[bytes]:
    """Start ``tracklm ARGS`` through the launcher, stdout and stderr into ``log``."""
    with open(log, "wb") as handle:
        return subprocess.Popen(
            [sys.executable, str(LAUNCHER), *options, "--", *args],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=child_env(),
        )


def wait_until(
    condition: Callable[[], bool], process: subprocess.Popen[bytes], log: Path, timeout: float
) -> None:
    """Poll ``condition`` until it holds; fail if ``process`` ends first or time runs out."""
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            pytest.fail(
                f"the process ended ({process.returncode}) too early:\n{log.read_text()[-2000:]}"
            )
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"gave up waiting after {timeout} s:\n{log.read_text()[-2000:]}")
        time.sleep(POLL_SECONDS)


def descendants(pid: int) -> list[int]:
    """Process ids below ``pid`` (Linux /proc; empty elsewhere)."""
    found = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found += [int(child) for child in children.read_text().split()]
        except OSError:
            continue
    return found + [grandchild for child in found for grandchild in descendants(child)]


def sigkill(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL ``process``; then its worker processes must end by themselves, within seconds."""
    below = descendants(process.pid)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    deadline = time.monotonic() + 15
    alive = below
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [pid for pid in alive if Path(f"/proc/{pid}").exists() and not _zombie(pid)]
    assert not alive, f"processes {alive} outlived their killed parent {process.pid}"


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def temporaries(directory: Path) -> list[Path]:
    """Hidden temporaries of atomic writes anywhere below ``directory``."""
    return sorted(path for path in directory.rglob(".*") if ".tmp-" in path.name)


def last_step(progress: Path) -> int:
    """The last optimiser step the launcher recorded (0 before the first)."""
    lines = progress.read_text().split() if progress.exists() else []
    return int(lines[-1]) if lines else 0


def checkpoint_step(run: Path) -> int:
    """Step of ``last.ckpt``; loading it is the check that it is readable (0 when there is none)."""
    path = run / "checkpoints" / "last.ckpt"
    if not path.exists():
        return 0
    return int(torch.load(path, weights_only=True, map_location="cpu")["global_step"])


# ---------------------------------------------------------------------- atomic outputs
def test_stale_temporaries_of_killed_processes_are_removed_by_the_next_write(tmp_path):
    out, file = tmp_path / "out", tmp_path / "result.json"
    holder = (
        "import sys, time\n"
        "from tracklm._fs import atomic_output_dir, atomic_output_file\n"
        "with atomic_output_dir(sys.argv[1]) as d, atomic_output_file(sys.argv[2]) as f:\n"
        "    (d / 'half.txt').write_text('half'); f.write_text('{')\n"
        "    print('ready', flush=True); time.sleep(60)\n"
    )
    started = [
        subprocess.Popen(
            [sys.executable, "-c", holder, str(out), str(file)],
            stdout=subprocess.PIPE,
            env=child_env(),
        )
        for _ in range(2)
    ]
    for process in started:
        assert process.stdout is not None and process.stdout.readline().strip() == b"ready"
    killed, alive = started
    sigkill(killed)
    try:
        assert not out.exists() and not file.exists()  # the final paths never half-written
        assert len(temporaries(tmp_path)) == 4
        elsewhere = tmp_path / ".out.tmp-otherhost-1-abcdefgh"  # a process on another host
        elsewhere.mkdir()

        with atomic_output_dir(out) as tmp:
            (tmp / "done.txt").write_text("done")
        with atomic_output_file(file) as tmp:
            tmp.write_text("{}")

        assert (out / "done.txt").read_text() == "done" and file.read_text() == "{}"
        left = temporaries(tmp_path)
        # the killed process's two are gone; the live one's and the other host's stay
        assert elsewhere in left and len(left) == 3
        assert all(f"-{alive.pid}-" in path.name for path in left if path != elsewhere)
    finally:
        alive.kill()
        alive.wait()
        for process in started:
            assert process.stdout is not None
            process.stdout.close()


def test_a_replaced_directory_is_never_half_there(tmp_path):
    out = tmp_path / "model"
    with atomic_output_dir(out) as tmp:
        (tmp / "a.txt").write_text("old")
    with atomic_output_dir(out, overwrite=True) as tmp:
        (tmp / "b.txt").write_text("new")
        assert (out / "a.txt").read_text() == "old"  # untouched until the new one is complete
    assert sorted(p.name for p in out.iterdir()) == ["b.txt"]
    assert temporaries(tmp_path) == []


# ---------------------------------------------------------------------- pretrain
@pytest.mark.slow
def test_pretrain_killed_five_times_resumes_to_the_uninterrupted_weights(toy_data, tmp_path):
    """Kills at seeded random steps, in a checkpoint write and right after the last step."""
    config = tmp_path / "run.yaml"
    config.write_text(RUN_CONFIG)
    straight = run_pretrain(toy_data, tmp_path / "straight", config=config, accelerator="cpu")

    run = tmp_path / "run"
    first = ["pretrain", "--data", str(toy_data), "--out", str(run), "--config", str(config)]
    resume = ["pretrain", "--data", str(toy_data), "--out", str(run), "--resume"]
    rng = np.random.default_rng(2024)
    plan = ["random", "checkpoint", "random", "random", "end"]
    lost = []
    for attempt, kind in enumerate(plan):
        args = (first if attempt == 0 else resume) + ["--accelerator", "cpu"]
        progress, log = tmp_path / f"progress-{attempt}", tmp_path / f"log-{attempt}.txt"
        on_disk = checkpoint_step(run) if run.exists() else 0
        options = ["--progress", str(progress)]
        if kind == "checkpoint":
            hang_at, signal_file = on_disk + 2 * CHECKPOINT_EVERY, tmp_path / f"signal-{attempt}"
            options += ["--hang-at-checkpoint", str(hang_at), "--signal", str(signal_file)]
        process = launch(args, log, *options)
        if kind == "checkpoint":
            wait_until(signal_file.exists, process, log, timeout=120)
        else:
            target = MAX_STEPS
            if kind == "random":
                target = int(rng.integers(on_disk + 1, min(on_disk + 12, MAX_STEPS - 4) + 1))
            # On a loaded machine an earlier kill may land after the last step's checkpoint; the
            # resumed run then trains no step, and the "end" kill hits its final writes instead.
            finished = on_disk >= MAX_STEPS
            wait_until(
                lambda progress=progress, target=target, finished=finished: (
                    finished or last_step(progress) >= target
                ),
                process,
                log,
                timeout=120,
            )
            time.sleep(float(rng.uniform(0.0, 0.05)) if kind == "random" else 0.0)
        sigkill(process)

        reached, saved = last_step(progress), checkpoint_step(run)
        assert saved >= reached - CHECKPOINT_EVERY, f"{kind} kill lost steps {saved}..{reached}"
        lost.append(reached - saved)
        if kind == "checkpoint":
            # killed inside the write: the new checkpoint half-written under its temporary
            # name, last.ckpt still the previous one
            half = Path(signal_file.read_text().strip())
            assert half.parent == run / "checkpoints" and half.name.startswith(".last.ckpt.tmp-")
            assert half.exists() and (reached, saved) == (hang_at, hang_at - CHECKPOINT_EVERY)
        if (run / "model").exists():
            TrackingBert.from_pretrained(run / "model")

    run_pretrain(toy_data, run, resume=True, accelerator="cpu")
    assert json.loads((run / "metrics.json").read_text())["step"] == MAX_STEPS
    assert temporaries(run) == []  # what the kills left was removed by the later writes
    weights, again = (
        load_file(straight / "model" / "model.safetensors"),
        load_file(run / "model" / "model.safetensors"),
    )
    assert weights.keys() == again.keys()
    difference = max(float((again[name] - weights[name]).abs().max()) for name in weights)
    assert difference <= 1e-6, (difference, lost)


# ---------------------------------------------------------------------- simulate, prepare
def test_simulate_killed_halfway_leaves_no_output_and_reruns(tmp_path):
    out, log = tmp_path / "events", tmp_path / "log.txt"
    args = ["simulate", "--out", str(out), "--events", "6", "--pileup", "3", "--workers", "2"]
    process = launch(args, log)

    def some_events_written() -> bool:
        return any(len(list(tmp.glob("event*"))) >= 9 for tmp in tmp_path.glob(".events.tmp-*"))

    wait_until(some_events_written, process, log, timeout=120)
    sigkill(process)  # and its two workers end by themselves
    assert not out.exists() and len(temporaries(tmp_path)) == 1

    run_simulate(out, events=6, pileup=3.0)
    manifest = json.loads((out / "manifest.json").read_text())
    assert len([name for name in manifest["files"] if name.startswith("event")]) == 6 * 3
    assert temporaries(tmp_path) == []


def test_prepare_killed_halfway_leaves_no_output_and_reruns_to_the_same_dataset(
    toy_events, toy_data, tmp_path
):
    out, log = tmp_path / "data", tmp_path / "log.txt"
    args = ["prepare", "--events", str(toy_events), "--out", str(out)]
    args += ["--val-fraction", "0.2", "--test-fraction", "0.2"]  # as toy_data was prepared
    process = launch(args, log)
    wait_until(lambda: any(tmp_path.glob(".data.tmp-*/train")), process, log, timeout=120)
    sigkill(process)
    assert not out.exists() and len(temporaries(tmp_path)) == 1

    manifest = run_prepare(toy_events, out, val_fraction=0.2, test_fraction=0.2)
    expected = json.loads((toy_data / "manifest.json").read_text())
    assert manifest["files"] == expected["files"]  # byte for byte the uninterrupted dataset
    assert temporaries(tmp_path) == []
