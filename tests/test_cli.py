"""The command line: every verb reaches a function that takes exactly its options."""

from __future__ import annotations

import argparse
import importlib
import inspect
from collections.abc import Callable
from typing import Any

import pytest

from tracklm import cli

# Parameters a verb's function has that its command line does not set (library use only).
LIBRARY_ONLY = {
    "simulate": {"config"},
    "evaluate": {"batch_size"},
    "embed": {"detector", "k", "radius_mm", "seed"},
    "finetune": {"config", "references"},
    "demo": {"config"},
}
COMMON = {"help", "debug", "verbose"}  # handled by main() itself


def _verbs() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    (sub,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {a.dest: a for a in parser._actions if a.dest not in COMMON}


def _target(verb: str) -> Callable[..., Any]:
    module, name = cli._COMMANDS[verb].split(":")
    return getattr(importlib.import_module(module), name)


def test_every_verb_has_a_target_and_every_target_a_verb():
    assert set(_verbs()) == set(cli._COMMANDS)


@pytest.mark.parametrize("verb", sorted(cli._COMMANDS))
def test_target_takes_exactly_the_verbs_options(verb):
    options = _options(_verbs()[verb])
    parameters = inspect.signature(_target(verb)).parameters
    kinds = {p.kind for p in parameters.values()}
    assert not kinds & {inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL}, verb
    assert all(p.kind != inspect.Parameter.POSITIONAL_ONLY for p in parameters.values())
    # every option is passed by name, so each must be a parameter
    assert set(options) <= set(parameters), set(options) - set(parameters)
    # every other parameter is a known library-only one, with a default
    extra = set(parameters) - set(options)
    assert extra <= LIBRARY_ONLY.get(verb, set()), extra
    assert all(parameters[name].default is not inspect.Parameter.empty for name in extra)
    for name, action in options.items():
        default = parameters[name].default
        if action.required:
            continue
        # an option the command line always sets must not hide a different library default
        if default is not inspect.Parameter.empty:
            assert action.default == default, (verb, name, action.default, default)


def test_bad_usage_exits_2_with_one_line(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["pretrain", "--data", "x"])
    assert stop.value.code == 2
    assert "--out" in capsys.readouterr().err


def test_an_unknown_option_is_reported_by_the_verb(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["export", "--model", "m", "--out", "m.onnx", "--colour", "blue"])
    assert stop.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == "tracklm export: error: unrecognized arguments: --colour blue"
