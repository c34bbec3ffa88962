"""Foundation pieces: config loading, atomic outputs, manifests, the command line's error contract."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tracklm import cli
from tracklm._fs import atomic_output_dir, write_json
from tracklm.config import from_dict, load_config, merge, to_dict
from tracklm.errors import InputError
from tracklm.manifest import sha256_file, write_manifest


@dataclasses.dataclass
class Inner:
    rate: float = 0.15
    steps: tuple[int, ...] = (10, 20)


@dataclasses.dataclass
class Outer:
    name: str = "tiny"
    layers: int = 2
    inner: Inner = dataclasses.field(default_factory=Inner)
    note: str | None = None


def test_config_from_dict_nested_and_types() -> None:
    config = from_dict(Outer, {"name": "paper", "layers": 12, "inner": {"rate": 1, "steps": [5]}})
    assert config == Outer(name="paper", layers=12, inner=Inner(rate=1.0, steps=(5,)))
    assert isinstance(config.inner.rate, float)


def test_config_unknown_key_is_named() -> None:
    with pytest.raises(InputError, match="unknown key 'layer'"):
        from_dict(Outer, {"layer": 3})
    with pytest.raises(InputError, match=r"config\.inner: unknown key 'rat'"):
        from_dict(Outer, {"inner": {"rat": 0.1}})


def test_config_wrong_type_is_named() -> None:
    with pytest.raises(InputError, match=r"config\.layers: expected an integer"):
        from_dict(Outer, {"layers": "12"})
    with pytest.raises(InputError, match=r"config\.layers: expected an integer"):
        from_dict(Outer, {"layers": True})


def test_config_merge_and_round_trip() -> None:
    base = Outer()
    merged = merge(base, {"inner": {"rate": 0.5}})
    assert merged.inner == Inner(rate=0.5, steps=(10, 20)) and merged.name == "tiny"
    assert from_dict(Outer, to_dict(merged)) == merged


def test_load_config_yaml_errors_name_file(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("name: small\ninner:\n  rate: 0.3\n")
    assert load_config(Outer, good).inner.rate == 0.3
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(InputError, match=r"bad\.yaml: line \d+ invalid YAML"):
        load_config(Outer, bad)
    code = tmp_path / "code.yaml"
    code.write_text("name: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(InputError, match="invalid YAML"):
        load_config(Outer, code)


def test_atomic_output_dir_leaves_nothing_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out"
    with pytest.raises(RuntimeError), atomic_output_dir(target) as tmp:
        (tmp / "partial.txt").write_text("x")
        raise RuntimeError("interrupted")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_output_dir_publishes_and_refuses_existing(tmp_path: Path) -> None:
    target = tmp_path / "out"
    with atomic_output_dir(target) as tmp:
        (tmp / "a.txt").write_text("a")
    assert (target / "a.txt").read_text() == "a"
    with pytest.raises(InputError, match="already exists"), atomic_output_dir(target):
        pass
    with atomic_output_dir(target, overwrite=True) as tmp:
        (tmp / "b.txt").write_text("b")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]


def test_manifest_records_hashes(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "data.bin").write_bytes(b"\x00\x01")
    write_json(tmp_path / "vocab.json", {"a": 1})
    manifest = write_manifest(tmp_path, "prepare", config={"seed": 0})
    on_disk = json.loads((tmp_path / "manifest.json").read_text())
    assert on_disk == manifest
    assert on_disk["stage"] == "prepare" and on_disk["config"] == {"seed": 0}
    assert on_disk["files"]["sub/data.bin"] == sha256_file(tmp_path / "sub" / "data.bin")
    assert "manifest.json" not in on_disk["files"]
    assert {"tracklm", "numpy", "python"} <= set(on_disk["versions"])


def test_cli_bad_option_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["simulate", "--out", "x", "--events", "0"])
    assert info.value.code == 2
    assert "--events" in capsys.readouterr().err


def test_cli_input_error_is_one_line_exit_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tracklm",
            "evaluate",
            "--model",
            str(tmp_path / "nope"),
            "--data",
            str(tmp_path / "nodata"),
            "--out",
            str(tmp_path / "report"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tracklm evaluate: error:")
    assert not (tmp_path / "report").exists()


def test_cli_help_lists_every_verb() -> None:
    text = cli.build_parser().format_help()
    for verb in (
        "simulate",
        "prepare",
        "pretrain",
        "evaluate",
        "embed",
        "finetune",
        "export",
        "demo",
    ):
        assert verb in text


def test_atomic_outputs_get_umask_permissions(tmp_path: Path) -> None:
    import os

    old = os.umask(0o022)
    try:
        with atomic_output_dir(tmp_path / "out") as tmp:
            write_json(tmp / "a.json", {})
    finally:
        os.umask(old)
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "out" / "a.json").stat().st_mode & 0o777 == 0o644
