"""Unit tests for ``bench/gen_builds.py``: deterministic, the promised changes, the sizes."""

from __future__ import annotations

import os
import random
import zlib
from pathlib import Path
from typing import Any

import pytest

from bench_scripts import load_bench

gen = load_bench("gen_builds")
KIB = 1024


def tree(root: Path) -> dict[str, tuple[bytes, int, int]]:
    """Relative path → (bytes, mode, mtime) of every file."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            st = p.stat()
            out[p.relative_to(root).as_posix()] = (p.read_bytes(), st.st_mode, int(st.st_mtime))
    return out


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return gen.generate(tmp_path_factory.mktemp("a") / "builds", gen.Sizes.tiny(), seed=7)


def test_the_same_seed_gives_the_same_builds(series: Any, tmp_path: Path) -> None:
    again = gen.generate(tmp_path / "builds", gen.Sizes.tiny(), seed=7)

    for a, b in zip(series.builds, again.builds, strict=True):
        assert tree(a) == tree(b)


def test_another_seed_gives_other_content(series: Any, tmp_path: Path) -> None:
    other = gen.generate(tmp_path / "builds", gen.Sizes.tiny(), seed=8)

    n_a = tree(series.builds[-1])
    n_b = tree(other.builds[-1])
    assert n_a[gen.ARCHIVE_PATH][0] != n_b[gen.ARCHIVE_PATH][0]
    assert n_a[gen.EXE_PATH][0] != n_b[gen.EXE_PATH][0]  # other edits, same source ELF


def test_four_builds_named_n3_to_n(series: Any) -> None:
    assert [p.name for p in series.builds] == ["N-3", "N-2", "N-1", "N"]
    assert len(series.steps) == 3


def test_sizes_are_the_ones_asked_for(series: Any) -> None:
    sizes = gen.Sizes.tiny()
    for i in range(4):
        f = series.files(i)
        archive = f[gen.ARCHIVE_PATH]
        # Each build inserts one region and removes another of at most 1/64 of the size.
        assert abs(archive - sizes.archive_bytes) <= 3 * sizes.archive_bytes // 64
        paks = [v for k, v in f.items() if k.startswith(gen.PAK_DIR)]
        assert len(paks) == sizes.pak_count
        for size in paks:  # compressed entries come out at roughly half their raw size
            assert sizes.pak_bytes * 0.6 <= size <= sizes.pak_bytes * 2
        scripts = [k for k in f if k.startswith(gen.SCRIPT_DIR)]
        assert len(scripts) == sizes.scripts + i  # +2 -1 per build
        libs = [k for k in f if k.startswith(f"{gen.LIB_DIR}/lib")]
        assert len(libs) == sizes.libs
        assert f[gen.EXE_PATH] <= sizes.elf_cap + i * 8 * 1024  # up to 8 edits of 1 KiB


def test_quick_and_default_sizes_are_what_the_benchmark_promises() -> None:
    assert gen.Sizes().archive_bytes >= 1_000_000_000
    assert gen.Sizes().scripts >= 100
    assert gen.Sizes.quick().archive_bytes < 16 * gen.MB


def test_executable_is_machine_code_recompiled_not_rewritten(series: Any) -> None:
    b = series.builds
    old = (b[2] / gen.EXE_PATH).read_bytes()
    new = (b[3] / gen.EXE_PATH).read_bytes()
    step = series.steps[2]

    assert old != new
    assert step.exe_edits >= 1
    assert step.exe_refs_changed > 0  # calls and loads across an edit were re-linked
    # Most bytes survive, shifted: a 64-byte window of the new file is found in the old one.
    rng = random.Random(0)
    probes = [rng.randrange(len(new) - 64) for _ in range(200)]
    found = sum(new[at : at + 64] in old for at in probes)
    assert found > 100
    # ...but not in place: the edits shift what follows them.
    assert sum(old[at : at + 64] == new[at : at + 64] for at in probes) < found
    assert os.access(b[3] / gen.EXE_PATH, os.X_OK)


def test_recompile_keeps_calls_pointing_at_their_function() -> None:
    # NOP code with one call from CALLSITE to TARGET: wherever the edits land, the call
    # must still reach TARGET, and an edit between the two must change its displacement.
    moved = 0
    for seed in range(5):
        code = bytearray(b"\x90" * 16384)
        code[200:208], code[12000:12016] = b"CALLSITE", b"TARGET-FUNCTION!"
        code[208] = 0xE8
        code[209:213] = (12000 - 213).to_bytes(4, "little", signed=True)
        binary = gen.Binary(bytes(code), (0, len(code)), 0)

        new, edits, changed = gen.recompile(binary, random.Random(seed), 2)

        call = new.data.index(b"CALLSITE") + 8
        target = new.data.index(b"TARGET-FUNCTION!")
        assert edits >= 1 and new.data != binary.data
        assert new.data[call] == 0xE8
        assert int.from_bytes(new.data[call + 1 : call + 5], "little", signed=True) == (
            target - (call + 5)
        )
        if target - call != 12000 - 208:
            moved += 1
            assert changed >= 1
    assert moved  # at least one seed put an edit between the call and its target


def test_libraries_are_renamed_after_their_content(series: Any) -> None:
    for i, step in enumerate(series.steps):
        assert step.renamed_libs
        before, after = series.files(i), series.files(i + 1)
        for old_name, new_name in step.renamed_libs:
            assert old_name != new_name
            assert f"{gen.LIB_DIR}/{old_name}" in before
            assert f"{gen.LIB_DIR}/{old_name}" not in after
            assert f"{gen.LIB_DIR}/{new_name}" in after
            stem = old_name.rsplit("-", 1)[0]
            assert new_name.startswith(stem + "-") and new_name.endswith(".so")


def test_pak_entries_are_inserted_in_the_middle_and_changed(series: Any) -> None:
    b = series.builds
    step = series.steps[2]
    assert step.pak_inserted and step.pak_changed
    pak = step.pak_inserted[0].split("/", 1)[0]
    old = gen.read_pak_index(b[2] / gen.PAK_DIR / pak)
    new = gen.read_pak_index(b[3] / gen.PAK_DIR / pak)

    inserted = [e.split("/", 1)[1] for e in step.pak_inserted if e.startswith(pak + "/")]
    names = list(new)
    assert names == sorted(names)
    for name in inserted:
        assert name not in old and name in new
    # In the middle, not appended: old entries follow the first inserted one, and moved.
    first = min(names.index(n) for n in inserted)
    after = [n for n in names[first + 1 :] if n in old]
    assert after
    assert all(new[n][0] != old[n][0] for n in after)
    changed = [e.split("/", 1)[1] for e in step.pak_changed if e.startswith(pak + "/")]
    raw = (b[3] / gen.PAK_DIR / pak).read_bytes()
    raw_old = (b[2] / gen.PAK_DIR / pak).read_bytes()
    for name in changed:
        if name not in new:
            continue  # changed, then removed in the same build
        off, stored, _, _ = new[name]
        o_off, o_stored, _, _ = old[name]
        head = gen._ENTRY_HEAD.size
        assert (
            raw[off + head : off + head + stored] != raw_old[o_off + head : o_off + head + o_stored]
        )


def test_pak_entries_are_real_zlib_or_stored(series: Any) -> None:
    path = series.builds[0] / gen.PAK_DIR / "pakchunk0-Linux.pak"
    raw = path.read_bytes()
    methods = set()
    for off, stored, size, method in gen.read_pak_index(path).values():
        data = raw[off + gen._ENTRY_HEAD.size : off + gen._ENTRY_HEAD.size + stored]
        if method == gen.ZLIB:
            assert len(zlib.decompress(data)) == size
        else:
            assert len(data) == size
        methods.add(method)
    assert methods == {gen.ZLIB, gen.STORED}


def test_a_few_scripts_are_edited_added_and_removed(series: Any) -> None:
    for i, step in enumerate(series.steps):
        before = tree(series.builds[i])
        after = tree(series.builds[i + 1])
        assert 3 <= len(step.scripts_edited) <= len([k for k in after if "Scripts" in k]) // 5
        for rel in step.scripts_edited:
            assert before[rel][0] != after[rel][0]
        assert all(rel not in before and rel in after for rel in step.scripts_added)
        assert all(rel in before and rel not in after for rel in step.scripts_removed)
        unchanged = [
            k
            for k in before
            if k.startswith(gen.SCRIPT_DIR) and k in after and k not in step.scripts_edited
        ]
        assert unchanged
        assert all(before[k] == after[k] for k in unchanged)  # bytes, mode and mtime kept


def test_archive_changes_in_a_few_regions_only(series: Any) -> None:
    b = series.builds
    step = series.steps[0]
    old = (b[0] / gen.ARCHIVE_PATH).read_bytes()
    new = (b[1] / gen.ARCHIVE_PATH).read_bytes()

    kinds = sorted(kind for kind, _, _ in step.archive_regions)
    assert kinds == ["delete", "insert", "overwrite", "overwrite", "overwrite"]
    assert old != new
    # Everything before the first edited region is untouched.
    first = min(at for _, at, _ in step.archive_regions)
    assert old[:first] == new[:first]
    changed = sum(n for kind, _, n in step.archive_regions if kind != "delete")
    assert changed < len(old) // 4


def test_unchanged_files_are_links_with_their_old_mtime(series: Any) -> None:
    b = series.builds
    both = series.files(2).keys() & series.files(3).keys()
    same = [k for k in both if (b[2] / k).stat().st_ino == (b[3] / k).stat().st_ino]
    assert same  # untouched scripts and the library that was not recompiled
    assert all((b[3] / k).stat().st_mtime < gen.EPOCH + 3 * gen.DAY for k in same)
    assert (b[3] / gen.EXE_PATH).stat().st_mtime == gen.EPOCH + 3 * gen.DAY
    assert (b[0] / gen.EXE_PATH).stat().st_mtime == gen.EPOCH


def test_cli_writes_a_series(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gen.Sizes, "quick", gen.Sizes.tiny)  # the CLI's path, at unit-test size

    assert gen.main([str(tmp_path / "out"), "--quick", "--archive-mb", "1"]) == 0

    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["N", "N-1", "N-2", "N-3"]
    assert "libs renamed" in capsys.readouterr().out
