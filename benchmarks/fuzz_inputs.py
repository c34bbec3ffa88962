"""Fuzz every tracklm verb with corrupted inputs and count the cases handled cleanly.

Each case copies a clean input, corrupts it (``benchmarks/fuzz_cases.py`` holds the mutations),
runs the verb and checks the result: a corrupted input must end with exit status 2, one error
line naming the file or option at fault, no traceback and no output left behind; a harmless
change (extra columns, CRLF, a byte-order mark, the Codalab pitch columns, a reformatted config
or model config, stray files, a submission's rows shuffled or tracks renumbered) must give exactly
the clean input's outputs.

The mix: a mutation is drawn by weight, then one of the verbs that read its input, uniformly.
The 1,000 cases of seed 0 are 20% TrackML event files (read by ``prepare`` and, the hits files,
``find``; how their parts agree by ``score`` too), 21% detector files (``simulate``, ``prepare``),
17% submission files (``score``), 16% prepared datasets (``pretrain``, ``evaluate``,
``finetune``), 9% model directories (``evaluate``, ``embed``, ``finetune``, ``export``), 8% configs
(``pretrain``, ``finetune``) and 9% options of every verb, over 112 mutations; 16% are benign,
20% run ``score`` and 10% ``find``. The script prints the mix it runs on stderr and records it in the report.

Usage::

    python benchmarks/fuzz_inputs.py --cases 1000 --seed 0 --out /tmp/fuzz.json [--subprocess]

Writes ``{"cases": N, "clean": K, "seconds": S, "mix": {...}, "failures": [{"case", "verb", "exit",
"reason", "stderr"}, ...]}`` to ``--out``, progress to stderr, and ``clean: K/N`` as its last line
on stdout. Verbs run in this process through ``tracklm.cli.main`` (fast: no interpreter start per
case); ``--subprocess`` runs each as ``python -m tracklm`` instead, for the true exit status.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fuzz_cases


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=1000, help="number of cases (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the case draw (default 0)")
    parser.add_argument("--out", type=Path, required=True, help="JSON report to write")
    parser.add_argument(
        "--subprocess", action="store_true", help="run each verb as a process of its own"
    )
    parser.add_argument(
        "--workdir", type=Path, default=None, help="scratch directory (default: a temporary one)"
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    invoke = fuzz_cases.invoke_subprocess if args.subprocess else fuzz_cases.invoke_in_process
    fuzz_cases.quiet_logging()
    cases = fuzz_cases.make_cases(args.cases, args.seed)
    mix = collections.Counter(f"{c.kind}:{c.verb}" for c in cases)
    print(f"mix: {json.dumps(dict(sorted(mix.items())))}", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="fuzz-", dir=args.workdir) as scratch:
        started = time.perf_counter()
        inputs = fuzz_cases.CleanInputs.build(Path(scratch) / "clean")
        print(f"clean inputs made in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        results = []
        for index, case in enumerate(cases):
            result = fuzz_cases.run_case(case, inputs, Path(scratch), invoke)
            results.append(result)
            if not result.clean:
                print(f"FAIL {index} {case.name}: {result.reason}", file=sys.stderr)
            if (index + 1) % 50 == 0:
                clean = sum(r.clean for r in results)
                print(
                    f"{index + 1}/{len(cases)} cases, {clean} clean, "
                    f"{time.perf_counter() - started:.0f} s",
                    file=sys.stderr,
                )
        seconds = time.perf_counter() - started
    clean = sum(r.clean for r in results)
    report = {
        "cases": len(results),
        "clean": clean,
        "seed": args.seed,
        "subprocess": args.subprocess,
        "seconds": round(seconds, 1),
        "mix": {
            "by_kind": dict(sorted(collections.Counter(c.kind for c in cases).items())),
            "by_verb": dict(sorted(collections.Counter(c.verb for c in cases).items())),
            "benign": sum(fuzz_cases.MUTATIONS[f"{c.kind}/{c.mutation}"].benign for c in cases),
            "mutations": len({(c.kind, c.mutation) for c in cases}),
        },
        "failures": [r.failure() for r in results if not r.clean],
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"clean: {clean}/{len(results)}")
    return 0 if clean == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
