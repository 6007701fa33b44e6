"""The generated stubs in ``changeover.agones._pb`` are those of the vendored protos:
regenerated here with grpcio-tools (as ``make agones-protos`` does), they are the same."""

from __future__ import annotations

from pathlib import Path

from changeover.agones import regenerate


def test_the_stubs_are_generated_from_the_vendored_protos(tmp_path: Path) -> None:
    assert regenerate.main(tmp_path / "_pb") == 0
    made = {p.name: p.read_bytes() for p in (tmp_path / "_pb").iterdir() if p.is_file()}
    kept = {p.name: p.read_bytes() for p in (regenerate.HERE / "_pb").iterdir() if p.is_file()}
    assert made.keys() == kept.keys()
    stale = [name for name in made if made[name] != kept[name]]
    assert not stale, f"run `make agones-protos`: {stale} differ from the vendored protos"
