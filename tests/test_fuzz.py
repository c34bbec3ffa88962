"""The fuzzing harness (``benchmarks/fuzz_cases.py``): a seeded sample of its cases must all be
handled cleanly, and the harness itself must tell a clean result from a broken one.

``benchmarks/fuzz_inputs.py --cases 1000`` runs the full draw; here a sample of ``SAMPLE`` cases
from the same mix runs in the default suite (about 45 s on one core; 17 of them ``score``'s, whose
benign cases each write a report with figures).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SAMPLE = 100
SAMPLE_SEED = 2024

# Lightning 2.6 + torch 2.13: Lightning builds a torch pytree LeafSpec, which torch now deprecates.
pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec.*:FutureWarning")


def _load_fuzz_cases() -> ModuleType:
    """Import ``benchmarks/fuzz_cases.py`` by path (the benchmarks are no package)."""
    name = "benchmarks_fuzz_cases"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / "fuzz_cases.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


fuzz = _load_fuzz_cases()


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """One torch thread (the conftest fixture): deterministic twins, fair to the other core."""


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory):
    fuzz.quiet_logging()
    return fuzz.CleanInputs.build(tmp_path_factory.mktemp("fuzz") / "clean")


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    return tmp_path


def test_seeded_sample_is_clean(inputs, scratch: Path) -> None:
    cases = fuzz.make_cases(SAMPLE, SAMPLE_SEED)
    results = [fuzz.run_case(case, inputs, scratch) for case in cases]
    failures = [
        f"{r.case.name}: {r.reason}\n    " + "\n    ".join(r.stderr.strip().splitlines()[-3:])
        for r in results
        if not r.clean
    ]
    assert not failures, f"{len(failures)} of {len(cases)} cases not clean:\n" + "\n".join(failures)


def test_draw_is_seeded_and_spans_every_verb_and_input_kind() -> None:
    cases = fuzz.make_cases(1000, 0)
    assert cases == fuzz.make_cases(1000, 0)
    assert cases[:50] != fuzz.make_cases(50, 1)
    assert {c.verb for c in cases} == set(fuzz.VERBS)
    assert {c.kind for c in cases} == set(fuzz.KINDS)
    benign = sum(fuzz.MUTATIONS[f"{c.kind}/{c.mutation}"].benign for c in cases)
    assert 50 < benign < 400  # both sorts of case are well represented
    for case in cases:
        assert case.verb in fuzz.MUTATIONS[f"{case.kind}/{case.mutation}"].verbs


def test_a_corrupted_file_is_an_error_case_naming_it(inputs, scratch: Path) -> None:
    case = fuzz.Case("prepare", "events", "cut_gzip", 7)
    result = fuzz.run_case(case, inputs, scratch)
    assert result.clean, result.reason
    assert result.exit == 2
    line = result.stderr.strip().splitlines()[-1]
    assert (
        line.startswith("tracklm prepare: error: ") and ".csv.gz: unreadable or truncated" in line
    )


def test_a_benign_case_is_judged_by_its_outputs(inputs, scratch: Path) -> None:
    result = fuzz.run_case(
        fuzz.Case("prepare", "geometry", "codalab_pitch_layout", 0), inputs, scratch
    )
    assert result.clean, result.reason
    assert result.exit == 0
    # the cached clean run the case was compared with (prepare --detector GEOMETRY)
    clean_run = {"detector": inputs.geometry, "task": "pt"}
    twin = fuzz.twin_output(inputs, "prepare", clean_run, fuzz.invoke_in_process)
    assert fuzz.compare_outputs("prepare", twin, twin) == ""
    # another vocabulary (and so other tokens): the comparison must see it
    assert "differs" in fuzz.compare_outputs("prepare", inputs.data_other, twin)


def _fake(code: int | str, stderr: str, *, leave_output: bool = False):
    """An ``invoke`` standing in for a broken verb."""

    def invoke(argv: list[str]) -> tuple[int | str, str]:
        if leave_output:
            Path(argv[argv.index("--out") + 1]).mkdir(parents=True)
        return code, stderr

    return invoke


BAD_EVENTS = "prepare/events/cut_gzip#7"


@pytest.mark.parametrize(
    ("invoke", "reason"),
    [
        (
            _fake(2, "Traceback (most recent call last):\n  ...\nEOFError: cut\n"),
            "traceback",
        ),
        (_fake(1, "tracklm prepare: error: {path}: unreadable\n"), "exit status 1"),
        (_fake(0, ""), "exit status 0"),
        (_fake(2, "tracklm prepare: error: something is wrong somewhere\n"), "names none"),
        (_fake(2, "tracklm prepare: error: {path}: unreadable\nlater noise\n"), "last stderr"),
        (_fake(2, "tracklm evaluate: error: {path}: unreadable\n"), "last stderr"),
        (
            _fake(2, "tracklm prepare: error: {path}: a\ntracklm prepare: error: {path}: b\n"),
            "more than one",
        ),
        (
            _fake(2, "tracklm prepare: error: {path}: unreadable\n", leave_output=True),
            "left behind",
        ),
    ],
)
def test_a_broken_verb_is_a_failure(inputs, scratch: Path, invoke, reason: str) -> None:
    verb, kind, rest = BAD_EVENTS.split("/")
    mutation, seed = rest.split("#")
    case = fuzz.Case(verb, kind, mutation, int(seed))
    # The corrupted file's path, as the real verb names it.
    good = fuzz.run_case(case, inputs, scratch)
    path = good.stderr.strip().splitlines()[-1].split(": ")[2]

    def with_path(argv: list[str]) -> tuple[int | str, str]:
        code, stderr = invoke(argv)
        return code, stderr.replace("{path}", path)

    result = fuzz.run_case(case, inputs, scratch, with_path)
    assert not result.clean
    assert reason in result.reason


def test_a_benign_case_that_fails_is_a_failure(inputs, scratch: Path) -> None:
    case = fuzz.Case("prepare", "events", "crlf_line_endings", 3)
    result = fuzz.run_case(case, inputs, scratch, _fake(2, "tracklm prepare: error: x: bad\n"))
    assert not result.clean and "benign" in result.reason


def test_score_cases_compare_everything_but_the_finder_time(inputs, scratch: Path) -> None:
    result = fuzz.run_case(fuzz.Case("score", "tracks", "renumbered_tracks", 3), inputs, scratch)
    assert result.clean and result.exit == 0, result.reason

    def score(tracks: Path) -> Path:
        twin = {"tracks": tracks, "task": "pt"}  # the key run_case caches the twin under
        return fuzz.twin_output(inputs, "score", twin, fuzz.invoke_in_process)

    perfect, noisy = score(inputs.tracks), score(inputs.tracks_noisy)
    assert fuzz.compare_outputs("score", perfect, perfect) == ""
    assert "score.json differs" in fuzz.compare_outputs("score", noisy, perfect)
    noisy_score = json.loads((noisy / "score.json").read_text())["pixel_trackml_score"]
    assert 0.3 < noisy_score < 0.95  # a submission with faults to find, not a random one
