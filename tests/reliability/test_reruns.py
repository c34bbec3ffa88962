"""Identical reruns: the same inputs and seed give the same outputs, bit for bit.

``simulate``, ``prepare`` and ``evaluate`` write identical files (the manifest differs only in its
creation time). Training on the CPU repeats itself exactly at a given number of threads; across
thread counts it does so with ``TRACKLM_THREAD_INVARIANT=1`` (``tracklm.models.cpu_kernels``),
and without it differs by float rounding only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from tracklm.data.prepare import run_prepare
from tracklm.evaluate.report import run_evaluate
from tracklm.io.trackml import event_path, list_events, read_part
from tracklm.models import cpu_kernels
from tracklm.models.layout import TokenLayout
from tracklm.score.run import run_score
from tracklm.score.submission import submission_table, write_submission, write_truth_tracks
from tracklm.simulate.event import run_simulate
from tracklm.train.pretrain import run_pretrain

pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec.*:FutureWarning")

SHORT_RUN = """\
batch_size: 32
max_steps: 8
warmup_steps: 2
val_every: 8
val_batches: 1
checkpoint_every: 8
"""
# Largest weight difference allowed between 1 and 2 threads without TRACKLM_THREAD_INVARIANT
# after SHORT_RUN's 8 steps (measured: about 1e-6, float32 rounding carried through AdamW).
ACROSS_THREADS_TOLERANCE = 1e-4


def same_files(a: Path, b: Path) -> None:
    """Every file below ``a`` and ``b`` byte-identical, the manifests apart from their time."""
    names = sorted(p.relative_to(a).as_posix() for p in a.rglob("*") if p.is_file())
    assert names == sorted(p.relative_to(b).as_posix() for p in b.rglob("*") if p.is_file())
    for name in names:
        if name != "manifest.json":
            assert (a / name).read_bytes() == (b / name).read_bytes(), name
    manifests = [json.loads((root / "manifest.json").read_text()) for root in (a, b)]
    for manifest in manifests:
        del manifest["created"]
    assert manifests[0] == manifests[1]


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "model" / "model.safetensors")


def largest_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[name] - b[name]).abs().max()) for name in a)


def test_simulate_twice(tmp_path):
    first = run_simulate(tmp_path / "a", events=2, pileup=2.0, seed=11)
    second = run_simulate(tmp_path / "b", events=2, pileup=2.0, seed=11)
    same_files(first, second)


def test_prepare_twice(toy_events, toy_data, tmp_path):
    # toy_data is the first run, made with these options
    run_prepare(toy_events, tmp_path / "data", val_fraction=0.2, test_fraction=0.2)
    same_files(toy_data, tmp_path / "data")


def test_evaluate_twice(tiny_model, toy_data, tmp_path):
    reports = [tmp_path / "a", tmp_path / "b"]
    for report in reports:
        run_evaluate(tiny_model, toy_data, report, max_tracks=60, seed=3)
    assert (reports[0] / "metrics.json").read_bytes() == (reports[1] / "metrics.json").read_bytes()
    same_files(*reports)


def test_score_twice(toy_events, tmp_path):
    """A submission that mixes particles (a quarter of the hits moved at random) scores the same."""
    write_truth_tracks(toy_events, tmp_path / "perfect")
    rng = np.random.default_rng(5)
    for event_id in list_events(toy_events):
        table = read_part(event_path(tmp_path / "perfect", event_id, "tracks"), "tracks")
        tracks = table["track_id"].to_numpy().copy()
        moved = rng.random(tracks.size) < 0.25
        tracks[moved] = rng.choice(tracks, size=int(moved.sum()))
        write_submission(
            tmp_path / "mixed", submission_table(event_id, table["hit_id"].to_numpy(), tracks)
        )
    scores = [tmp_path / "a", tmp_path / "b"]
    for out in scores:
        run_score(toy_events, tmp_path / "mixed", out)
    assert (scores[0] / "score.json").read_bytes() == (scores[1] / "score.json").read_bytes()
    assert 0.2 < json.loads((scores[0] / "score.json").read_text())["pixel_trackml_score"] < 0.95


def test_training_repeats_exactly_at_one_thread_count(toy_data, tmp_path):
    config = tmp_path / "short.yaml"
    config.write_text(SHORT_RUN)
    threads = torch.get_num_threads()
    runs = {}
    try:
        for name, count in (("one", 1), ("one again", 1), ("two", 2)):
            torch.set_num_threads(count)
            runs[name] = weights(
                run_pretrain(toy_data, tmp_path / name, config=config, accelerator="cpu")
            )
    finally:
        torch.set_num_threads(threads)
    assert largest_difference(runs["one"], runs["one again"]) == 0.0
    assert largest_difference(runs["one"], runs["two"]) <= ACROSS_THREADS_TOLERANCE


THREAD_COUNTS_SCRIPT = """
import json, sys
import torch
from safetensors.torch import load_file
from tracklm.models import cpu_kernels
from tracklm.train.pretrain import run_pretrain
data, config, root = sys.argv[1:]
assert cpu_kernels.THREAD_INVARIANT
runs = []
for threads in (1, 2):
    torch.set_num_threads(threads)
    run = run_pretrain(data, f"{root}/threads-{threads}", config=config, accelerator="cpu")
    runs.append(load_file(f"{run}/model/model.safetensors"))
print(json.dumps(max(float((runs[0][k] - runs[1][k]).abs().max()) for k in runs[0])))
"""


@pytest.mark.slow
def test_thread_invariant_training_gives_the_same_weights_with_one_and_two_threads(
    toy_data, tmp_path
):
    """A fresh process: MKL's strict mode must be chosen before its first matrix product."""
    config = tmp_path / "short.yaml"
    config.write_text(SHORT_RUN)
    env = {**os.environ, "TRACKLM_THREAD_INVARIANT": "1"}
    env.pop("MKL_CBWR", None)
    result = subprocess.run(
        [sys.executable, "-c", THREAD_COUNTS_SCRIPT, str(toy_data), str(config), str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.splitlines()[-1]) == 0.0


# ---------------------------------------------------------------------- the kernels themselves
def gradients_at(threads: int, compute) -> list[torch.Tensor]:
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return [g.clone() for g in compute()]
    finally:
        torch.set_num_threads(saved)


def test_thread_invariant_layer_norm(monkeypatch):
    generator = torch.Generator().manual_seed(0)
    x64 = torch.randn(5, 6, dtype=torch.float64, generator=generator, requires_grad=True)
    scale = torch.randn(6, dtype=torch.float64, generator=generator, requires_grad=True)
    shift = torch.randn(6, dtype=torch.float64, generator=generator, requires_grad=True)
    function = cpu_kernels.LayerNormFunction.apply
    assert torch.autograd.gradcheck(lambda *a: function(*a, 1e-12), (x64, scale, shift))

    x = torch.randn(3000, 48, generator=generator, requires_grad=True)  # above torch's grain
    grad_out = torch.randn(3000, 48, generator=generator)
    ours = cpu_kernels.LayerNorm(48, eps=1e-12)
    plain = nn.LayerNorm(48, eps=1e-12)
    with torch.no_grad():
        for layer in (ours, plain):
            layer.weight.copy_(torch.linspace(0.5, 1.5, 48))
            layer.bias.copy_(torch.linspace(-1.0, 1.0, 48))

    def backward(layer: nn.Module):
        def compute():
            x.grad, layer.weight.grad, layer.bias.grad = None, None, None
            layer(x).backward(grad_out)
            return [x.grad, layer.weight.grad, layer.bias.grad]

        return compute

    monkeypatch.setattr(cpu_kernels, "THREAD_INVARIANT", True)
    one, two = gradients_at(1, backward(ours)), gradients_at(2, backward(ours))
    for a, b in zip(one, two, strict=True):
        assert torch.equal(a, b)
    for a, b in zip(one, gradients_at(1, backward(plain)), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)


def test_thread_invariant_softmax_gradient_in_packed_attention(monkeypatch):
    monkeypatch.setattr(cpu_kernels, "THREAD_INVARIANT", True)
    generator = torch.Generator().manual_seed(1)

    def attention_inputs(batch, width, heads, head_size, dtype):
        mask = torch.ones(batch, width, dtype=torch.bool)
        mask[::3, width // 2 :] = False  # padding in every third row
        layout = TokenLayout.of(mask, batch, width)
        qkv = torch.randn(int(mask.sum()), 3 * heads * head_size, dtype=dtype, generator=generator)
        return layout, qkv.requires_grad_()

    layout, qkv64 = attention_inputs(3, 6, 2, 4, torch.float64)
    assert torch.autograd.gradcheck(
        lambda q: cpu_kernels.packed_attention(q, layout, 2, None), (qkv64,)
    )

    layout, qkv = attention_inputs(64, 19, 4, 8, torch.float32)  # above torch's grain
    grad_out = torch.randn(qkv.shape[0], 32, generator=generator)

    def compute():
        qkv.grad = None
        cpu_kernels.packed_attention(qkv, layout, 4, None).backward(grad_out)
        return [qkv.grad]

    assert torch.equal(gradients_at(1, compute)[0], gradients_at(2, compute)[0])
