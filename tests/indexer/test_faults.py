"""Faults while an index is written or served: SIGKILL at write points, a full disk, files changed
under an open index. "Nothing lost" means: after any of them the previous index (or none, for a
first build) loads and verifies, never a half one; the same command run again gives the index an
uninterrupted run gives (codes byte for byte, equal tables); a full disk is one line on stderr.

How kills are made (``faultkit``): every call that changes the disk under the index folder
(``os.replace``, ``os.unlink``, ``os.rmdir``, ``os.fsync``) is a write point, and a process killed
just before or after one leaves exactly the files there. Each scenario runs once in this process
with the folder copied at every write point (a copy per distinct disk state: the disk a kill
there would leave); every copy is opened, and the command is run again on a few of them. One
real SIGKILL per scenario (a child ``lookalike`` that kills itself at a chosen point) checks that
a real kill leaves what the copies say. ``robustness/faults.py`` runs 50 random kills per kind.

Scenarios, on the real Mars mosaic: a first build of 705 tiles of 32 px in zone 30N (two
chunks of 512: resume is per chunk); an ``--append`` of zone 54S to an index of 53S; landmarks of
a window over 53S/54S catalogued into that index.
"""

from __future__ import annotations

import errno
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from faultkit import (
    can_mount_tmpfs,
    differences,
    disk_full,
    distinct,
    index_state,
    kill_at_point,
    point_number,
    real_disk_full,
    snapshots,
    stray_files,
)
from lookalike_testkit import (
    assert_user_error,
    make_index,
    random_codes,
    run_main,
    synthetic_tiles,
)

from lookalike.errors import IndexCorruptError
from lookalike.indexer import store
from lookalike.indexer.encoding import Encoder
from lookalike.indexer.store import MANIFEST, open_index, update_tables, write_index

# real models, subprocesses and whole builds: `make test` runs these, `make test-fast` does not
pytestmark = pytest.mark.slow

INDEX_ARGS = ["mars_8k", "--zones", "30N", "--tile-size", "32", "--stride", "16"]  # 705 tiles
BASE_ARGS = ["mars_8k", "--zones", "53S"]
APPEND_ARGS = ["mars_8k", "--zones", "54S", "--append"]
WINDOW = "6900,1900,7500,2500"  # three landmarks, two on tiles of 53S


def index_argv(where: Path) -> list:
    return ["index", *INDEX_ARGS, "--out", where / "index"]


def append_argv(where: Path) -> list:
    return ["index", *APPEND_ARGS, "--out", where / "index"]


def landmarks_argv(where: Path) -> list:
    return [
        "landmarks",
        "mars_8k",
        "--window",
        WINDOW,
        "--threshold",
        "0",
        "--out",
        where / "lm.parquet",
        "--index",
        where / "index",
    ]


class Scenario:
    """One command run uninterrupted with the disk copied at every write point."""

    def __init__(self, tmp: Path, name: str, argv, data_dir: Path, base: Path | None = None):
        self.name, self.argv, self.env = name, argv, dict(LOOKALIKE_DATA=data_dir)
        self.start = tmp / name / "start"  # the disk before the command
        self.start.mkdir(parents=True)
        if base is not None:
            shutil.copytree(base, self.start / "index")
        self.before = index_state(self.start / "index") if base is not None else None
        work = tmp / name / "run"
        shutil.copytree(self.start, work)
        self.copies, (code, _, err) = snapshots(
            work, tmp / name / "copies", lambda: run_main(argv(work), **self.env)
        )
        assert code == 0, err
        self.after = index_state(work / "index")
        self.final = work

    def point(self, start: str, end: str = ""):
        """The first write point whose label starts with ``start`` and ends with ``end``, and
        the disk a kill there leaves."""
        for point, copy in self.copies:
            if point.label.startswith(start) and point.label.endswith(end):
                return point, copy
        raise AssertionError(f"no write point {start!r}..{end!r} in {[p.label for p, _ in self.copies]}")

    def copy_at(self, start: str, end: str = "") -> Path:
        return self.point(start, end)[1]


@pytest.fixture(scope="module")
def scenarios(tmp_path_factory, data_dir):
    tmp = tmp_path_factory.mktemp("faults")
    base = tmp / "base"
    code, _, err = run_main(["index", *BASE_ARGS, "--out", base], LOOKALIKE_DATA=data_dir)
    assert code == 0, err
    return dict(
        index=Scenario(tmp, "index", index_argv, data_dir),
        append=Scenario(tmp, "append", append_argv, data_dir, base),
        landmarks=Scenario(tmp, "landmarks", landmarks_argv, data_dir, base),
        base=base,
    )


PROGRESS = re.compile(r"\r|/s\]\s*$")  # tqdm's bars share stderr with the error line


def assert_one_error_line(code: int, stderr: str, *needles: str) -> None:
    """``assert_user_error`` for commands that showed progress bars before failing."""
    assert_user_error(
        code, "\n".join(line for line in stderr.splitlines() if not PROGRESS.search(line)), *needles
    )


def rerun(scenario: Scenario, copy: Path, tmp_path: Path, monkeypatch=None):
    """Run the scenario's command again on a copy of a killed disk; returns (code, stderr, where,
    tiles encoded)."""
    where = tmp_path / "rerun"
    shutil.copytree(copy, where)
    encoded = []
    if monkeypatch is not None:
        features = Encoder.features

        def counting(self, images, *a, **kw):
            encoded.append(len(images))
            return features(self, images, *a, **kw)

        monkeypatch.setattr(Encoder, "features", counting)
    code, _, err = run_main(scenario.argv(where), **scenario.env)
    return code, err, where, sum(encoded)


def check_whole(scenario: Scenario, copy: Path) -> str:
    """A killed disk holds the previous index, the new one, or (first build) none that loads."""
    try:
        state = index_state(copy / "index")
    except IndexCorruptError:
        assert scenario.before is None, f"the previous index at {copy} no longer loads"
        return "none"
    if scenario.before is not None and not differences(state, scenario.before):
        return "previous"
    assert not differences(state, scenario.after), differences(state, scenario.after)
    return "new"


# ------------------------------------------------------------------ a: lookalike index
def test_index_killed_at_any_write_point_leaves_no_half_index(scenarios):
    s = scenarios["index"]
    outcomes = [check_whole(s, copy) for _, copy in distinct(s.copies)]
    # the kill points cover both chunks, every index file and the manifest commit
    labels = [p.label for p, _ in s.copies]
    for wanted in (
        "chunk-000000.parquet",
        "chunk-000001.parquet",
        "codes-000001.npy",
        "tiles-000001.arrow",
        "columns-000001.arrow",
        "ids-000001.npy",
        "hash-000001.npz",
        f"replace index/{MANIFEST}",
    ):
        assert any(label.endswith(wanted) for label in labels), wanted
    new = outcomes.index("new")
    assert new > 0 and outcomes == ["none"] * new + ["new"] * (len(outcomes) - new)


@pytest.mark.parametrize(
    "start, end, chunks_kept",
    [
        ("after replace", "chunk-000000.parquet", 1),  # the first chunk of 512 is kept
        ("before replace", f"index/{MANIFEST}", 2),  # all written but the commit
    ],
)
def test_index_killed_then_run_again_resumes_and_equals_an_uninterrupted_build(
    scenarios, tmp_path, monkeypatch, start, end, chunks_kept
):
    s = scenarios["index"]
    copy = s.copy_at(start, end)
    assert len(list((copy / "index").glob(".work-*/chunk-*.parquet"))) == chunks_kept
    code, err, where, encoded = rerun(s, copy, tmp_path, monkeypatch)
    assert code == 0, err
    assert not differences(index_state(where / "index"), s.after)
    assert stray_files(where / "index") == []
    # resumed: only the tiles of chunks not finished before the kill are encoded again
    assert encoded == max(s.after["count"] - 512 * chunks_kept, 0)


@pytest.mark.parametrize(
    "kind, end",
    [
        ("index", "chunk-000000.npy"),  # the work folder half removed
        ("append", "index/codes-000001.npy"),  # the previous generation's files not yet removed
    ],
)
def test_killed_after_the_commit_run_again_tidies_up_and_is_done(scenarios, tmp_path, kind, end):
    """Killed between the commit and the removal of its work folder (and of the previous
    generation's files): the index is complete; the same command again recognises its own
    build in the manifest, removes the leftovers and succeeds."""
    s = scenarios[kind]
    copy = s.copy_at("before unlink", end)
    assert not differences(index_state(copy / "index"), s.after)
    assert stray_files(copy / "index")
    code, err, where, _ = rerun(s, copy, tmp_path)
    assert code == 0, err
    assert not differences(index_state(where / "index"), s.after, generation=True)
    assert stray_files(where / "index") == []


@pytest.mark.parametrize("kind, message", [("index", "already holds an index"), ("append", "already in")])
def test_a_finished_command_run_again_is_still_refused(scenarios, tmp_path, kind, message):
    """Only a build interrupted while tidying up is taken for done; an index that simply holds
    the tiles already is refused as before."""
    s = scenarios[kind]
    code, err, where, _ = rerun(s, s.final, tmp_path)
    assert_one_error_line(code, err, message)
    assert not differences(index_state(where / "index"), s.after, generation=True)
    # and the refused append keeps no features for a rerun that would be refused again
    assert stray_files(where / "index") == []


def test_index_sigkill_at_a_chunk_boundary_then_resume(scenarios, tmp_path, monkeypatch):
    """A real SIGKILL right after the first chunk of 512 tiles is kept."""
    s = scenarios["index"]
    point, _ = s.point("after replace", "chunk-000000.parquet")
    killed_dir = tmp_path / "killed"
    killed = kill_at_point(index_argv(killed_dir), killed_dir, point_number(point), cwd=tmp_path, env=s.env)
    assert killed.killed, killed.stderr
    with pytest.raises(IndexCorruptError):
        open_index(killed_dir / "index")
    assert len(list((killed_dir / "index").glob(".work-*/chunk-*.parquet"))) == 1
    code, err, where, n = rerun(s, killed_dir, tmp_path / "again", monkeypatch)
    assert code == 0, err
    assert n == s.after["count"] - 512
    assert not differences(index_state(where / "index"), s.after)


# ------------------------------------------------------------------ b: --append, landmarks
def test_append_killed_at_any_write_point_keeps_the_previous_index(scenarios):
    s = scenarios["append"]
    outcomes = [check_whole(s, copy) for _, copy in distinct(s.copies)]
    new = outcomes.index("new")
    assert new > 0 and outcomes == ["previous"] * new + ["new"] * (len(outcomes) - new)


@pytest.mark.parametrize(
    "start, end",
    [
        ("after replace", "chunk-000000.parquet"),  # the appended scene's features kept
        ("before replace", f"index/{MANIFEST}"),  # new generation written, not committed
    ],
)
def test_append_killed_then_run_again_equals_an_uninterrupted_append(scenarios, tmp_path, start, end):
    s = scenarios["append"]
    code, err, where, _ = rerun(s, s.copy_at(start, end), tmp_path)
    assert code == 0, err
    assert not differences(index_state(where / "index"), s.after)
    assert stray_files(where / "index") == []


def test_append_sigkill_during_the_commit(scenarios, tmp_path):
    s = scenarios["append"]
    killed_dir = tmp_path / "killed"
    shutil.copytree(s.start, killed_dir)
    point, _ = s.point("before replace", f"index/{MANIFEST}")
    killed = kill_at_point(append_argv(killed_dir), killed_dir, point_number(point), cwd=tmp_path, env=s.env)
    assert killed.killed, killed.stderr
    assert not differences(index_state(killed_dir / "index"), s.before, generation=True)
    code, err, where, _ = rerun(s, killed_dir, tmp_path / "again")
    assert code == 0, err
    assert not differences(index_state(where / "index"), s.after)


def _landmark_table(where: Path) -> pd.DataFrame | None:
    return pd.read_parquet(where / "lm.parquet") if (where / "lm.parquet").exists() else None


def test_landmarks_killed_at_any_write_point_keep_the_index(scenarios):
    s = scenarios["landmarks"]
    assert s.after["landmarks"] is not None and (s.after["landmarks"]["row"] >= 0).sum() == 2
    outcomes = [check_whole(s, copy) for _, copy in distinct(s.copies)]
    new = outcomes.index("new")
    assert new > 0 and outcomes == ["previous"] * new + ["new"] * (len(outcomes) - new)
    table = _landmark_table(s.final)
    for _, copy in distinct(s.copies):  # the landmark table is written whole or not at all
        found = _landmark_table(copy)
        assert found is None or found.equals(table)


def test_landmarks_sigkill_during_the_catalogue_commit_then_again(scenarios, tmp_path):
    s = scenarios["landmarks"]
    killed_dir = tmp_path / "killed"
    shutil.copytree(s.start, killed_dir)
    point, _ = s.point("before replace", f"index/{MANIFEST}")
    killed = kill_at_point(
        landmarks_argv(killed_dir), killed_dir, point_number(point), cwd=tmp_path, env=s.env
    )
    assert killed.killed, killed.stderr
    assert not differences(index_state(killed_dir / "index"), s.before, generation=True)
    code, err, where, _ = rerun(s, killed_dir, tmp_path / "again")
    assert code == 0, err
    assert not differences(index_state(where / "index"), s.after)
    assert _landmark_table(where).equals(_landmark_table(s.final))
    assert stray_files(where / "index") == []


def test_landmarks_run_twice_equal_once(scenarios, tmp_path):
    """A kill after the catalogue's commit leaves it done; running again changes nothing."""
    s = scenarios["landmarks"]
    code, err, where, _ = rerun(s, s.copy_at("after replace", f"index/{MANIFEST}"), tmp_path)
    assert code == 0, err
    assert not differences(index_state(where / "index"), s.after)


# ------------------------------------------------------------------ c: a full disk
def _new_rows(n=40, seed=7):
    tiles = synthetic_tiles(n, seed).assign(tile_id=[f"new{i}" for i in range(n)])
    return random_codes(n, 64, seed), tiles


STORE_WRITES = {
    "append": lambda path: write_index(path, *_new_rows(), bits=64, append=True),
    "tiles": lambda path: update_tables(path, tiles=open_index(path).tiles.assign(extra=1)),
    "landmarks": lambda path: update_tables(
        path, landmarks=pd.DataFrame(dict(label=["crater"] * 3, posterior=[0.9, 0.5, 0.7], row=[0, 5, -1]))
    ),
}


def first_middle_last(paths: list[str]) -> list[int]:
    """1-based numbers of the first, a middle and the last write of each file."""
    runs: dict[str, list[int]] = {}
    for k, path in enumerate(paths, 1):
        runs.setdefault(path, []).append(k)
    return sorted({k for ks in runs.values() for k in (ks[0], ks[len(ks) // 2], ks[-1])})


@pytest.mark.parametrize("kind", sorted(STORE_WRITES))
def test_disk_full_at_any_write_leaves_the_previous_index(tmp_path, kind):
    """ENOSPC at the first, a middle and the last write of every file the store writes
    (``robustness/faults.py`` tries every write)."""
    write = STORE_WRITES[kind]
    make_index(tmp_path / "start", n=300)
    shutil.copytree(tmp_path / "start", tmp_path / "probe")
    with disk_full(tmp_path / "probe") as probe:
        write(tmp_path / "probe")
    files = {p.split(".")[1].split("-")[0] for p in probe.paths}
    written = {
        "append": ["codes", "tiles", "rowsums", "ids", "columns", "cells"],
        "tiles": ["tiles", "rowsums", "ids", "columns", "cells"],
    }.get(kind, [kind])
    assert files == {"manifest", *written}, probe.paths
    for k in first_middle_last(probe.paths):
        path = tmp_path / f"k{k}"
        shutil.copytree(tmp_path / "start", path)
        before, listing = index_state(path), sorted(p.name for p in path.iterdir())
        with disk_full(path, at=k) as full, pytest.raises(OSError) as raised:
            write(path)
        assert raised.value.errno == errno.ENOSPC and full.failed
        assert not differences(index_state(path), before, generation=True), f"write {k}"
        # nothing of the failed write is left taking up the space that ran out
        assert sorted(p.name for p in path.iterdir()) == listing, f"write {k}"
        write(path)  # with space again, the same write works
        assert index_state(path)["generation"] == before["generation"] + 1


@pytest.fixture(scope="module")
def append_writes(scenarios, tmp_path_factory, data_dir):
    """Writes of the CLI append of zone 54S, counted on a fresh copy of the base index."""
    where = tmp_path_factory.mktemp("count") / "index"
    shutil.copytree(scenarios["base"], where)
    with disk_full(where) as full:
        code, _, err = run_main(["index", *APPEND_ARGS, "--out", where], LOOKALIKE_DATA=data_dir)
    assert code == 0, err
    return full.paths


@pytest.mark.parametrize("which", ["first", "manifest"])
def test_disk_full_during_cli_append_is_one_line_and_keeps_the_index(
    scenarios, append_writes, tmp_path, data_dir, which
):
    """ENOSPC in the work folder's first chunk file, and in the manifest, the last write."""
    k = dict(first=1, manifest=len(append_writes))[which]
    assert ".manifest.json." in append_writes[-1] and ".work-" in append_writes[0]
    where = tmp_path / "index"
    shutil.copytree(scenarios["base"], where)
    before = index_state(where)
    with disk_full(where, at=k):
        code, _, err = run_main(["index", *APPEND_ARGS, "--out", where], LOOKALIKE_DATA=data_dir)
    assert_one_error_line(code, err, "no space left on device", "intact")
    assert not differences(index_state(where), before, generation=True)
    assert [f for f in stray_files(where) if not f.startswith(".work-")] == []
    code, _, err = run_main(["index", *APPEND_ARGS, "--out", where], LOOKALIKE_DATA=data_dir)
    assert code == 0, err
    assert not differences(index_state(where), scenarios["append"].after)


def test_disk_full_on_a_real_tmpfs(scenarios, tmp_path, data_dir):
    """The kernel's own ENOSPC: the append on a tmpfs with 64 KiB free (private mount namespace)."""
    if not can_mount_tmpfs():
        pytest.skip("unshare cannot mount a tmpfs here (no user namespaces)")
    result = real_disk_full(
        scenarios["base"],
        ["index", *APPEND_ARGS, "--out", "{index}"],
        64 << 10,
        mount=tmp_path / "mnt",
        env=dict(LOOKALIKE_DATA=data_dir),
    )
    assert_one_error_line(result["returncode"], result["stderr"], "no space left on device")
    before = scenarios["append"].before
    assert result["after"]["ok"] and result["after"]["count"] == before["count"]
    import hashlib

    assert result["after"]["codes"] == hashlib.sha256(before["codes"]).hexdigest()
    assert result["after"]["generation"] == before["generation"]


# ------------------------------------------------------------------ d: files changed under a server
def _hits(index, queries, k=20):
    from lookalike.indexer.search import search_index

    return [search_index(index, q, k=k)[["tile_id", "distance"]] for q in queries]


def test_served_index_keeps_its_generation_while_the_folder_is_rewritten(tmp_path):
    from lookalike.explorer.served import cached_index

    path = tmp_path / "served"
    make_index(path, n=3000, bits=128)
    index = cached_index(path)
    queries = [np.asarray(index.codes[i]) for i in (0, 17, 2999)]
    expected = _hits(index, queries)
    old_files = {f["name"] for f in index.manifest["files"].values()}

    codes, tiles = random_codes(500, 128, seed=3), synthetic_tiles(500, seed=3)
    tiles["tile_id"] = [f"more{i}" for i in range(500)]
    write_index(path, codes, tiles, bits=128, append=True)  # generation 2: old files removed
    update_tables(path, landmarks=pd.DataFrame(dict(label=["crater"], posterior=[1.0], row=[3])))
    assert not {p.name for p in path.iterdir()} & (old_files - {"hash-000001.npz"})

    for before, after in zip(expected, _hits(index, queries)):
        pd.testing.assert_frame_equal(before, after)
    # pages holding the generation they opened keep it (above); whoever asks next gets the new one
    served = cached_index(path)
    assert served is not index and served.n == 3500 and index.n == 3000
    reopened = open_index(path)
    assert reopened.n == 3500 and reopened.manifest["generation"] == 3
    assert reopened.landmarks is not None
    new_hit = _hits(reopened, [codes[0]], k=1)[0]
    assert new_hit["tile_id"].iloc[0] == "more0" and new_hit["distance"].iloc[0] == 0


IN_PLACE = r"""
import json, os, sys
import numpy as np
from lookalike.errors import LookalikeError
from lookalike.explorer.served import cached_index
from lookalike.indexer.search import Query, search_index

for case in sys.argv[1:]:
    what, role, path = case.split(":", 2)
    print(json.dumps(dict(case=case, started=True)), flush=True)
    index = cached_index(path)
    queries = [np.asarray(index.codes[0]), Query(tile_id=index.tiles["tile_id"].iat[17])]
    before = [search_index(index, q, k=20)["tile_id"].tolist() for q in queries]
    target = os.path.join(path, index.manifest["files"][role]["name"])
    stat = os.stat(target)
    if what == "truncate":
        os.truncate(target, 100)
    else:  # same size, other bytes, as a copy over the file would leave
        with open(target, "r+b") as fh:
            fh.seek(128)
            fh.write(os.urandom(stat.st_size - 128))
        # file systems stamp writes with a coarse clock: date the rewrite a second later, as
        # it is when it does not fall in the same clock tick as the opening
        os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    out = {}
    for label, query, hits_before in zip(("code", "tile"), queries, before):
        try:
            hits = search_index(index, query, k=20)["tile_id"].tolist()
            out[label] = "same" if hits == hits_before else "different"
        except LookalikeError as exc:
            out[label] = "LookalikeError: " + str(exc)
    print(json.dumps(dict(case=case, outcome=out)), flush=True)
"""


def test_files_changed_in_place_under_an_open_index(tmp_path):
    """A server whose index files are truncated or rewritten in place (``cp`` over them, a
    botched copy) answers from the generation it opened or fails with a ``LookalikeError``;
    it never dies (a scan over a truncated memory map is a SIGBUS). Runs in a child process so
    that such a crash fails this test instead of killing the test run."""
    cases = []
    for what, role in (
        ("truncate", "codes"),
        ("overwrite", "codes"),
        ("truncate", "tiles"),
        ("truncate", "hash"),
    ):
        path = tmp_path / f"{what}-{role}"
        make_index(path, n=3000, bits=128)
        cases.append(f"{what}:{role}:{path}")
    done = subprocess.run(
        [sys.executable, "-c", IN_PLACE, *cases], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert done.returncode == 0, (
        f"died (exit {done.returncode}) in {lines[-1]['case']}: {done.stderr[-2000:]}"
    )
    results = {
        line["case"].split(":")[0] + " " + line["case"].split(":")[1]: line["outcome"]
        for line in lines
        if "outcome" in line
    }
    assert len(results) == len(cases)
    for case, outcome in results.items():
        if case.endswith(("codes", "tiles")):  # mapped files: a change in place cannot be answered around
            assert all(v.startswith("LookalikeError") and "changed on disk" in v for v in outcome.values()), (
                case,
                outcome,
            )
        else:  # the hash model is read only to encode a picture
            assert set(outcome.values()) == {"same"}, (case, outcome)


def test_open_index_while_a_writer_commits_gets_one_generation(tmp_path, monkeypatch):
    """A reader that read the manifest just before an append replaced it finds the files it
    names removed; it opens the new generation instead of calling the index corrupt."""
    path = tmp_path / "i"
    make_index(path, n=200)
    real = store.checksum_file
    done = []

    def commit_meanwhile(p, *a, **kw):
        if not done:
            done.append(True)
            with monkeypatch.context() as m:
                m.setattr(store, "checksum_file", real)
                write_index(path, *_new_rows(), bits=64, append=True)
        return real(p, *a, **kw)

    monkeypatch.setattr(store, "checksum_file", commit_meanwhile)
    index = open_index(path)
    monkeypatch.undo()
    assert done and index.manifest["generation"] == 2 and index.n == 240
    assert not differences(
        index_state(path),
        dict(
            codes=np.asarray(index.codes).tobytes(),
            tiles=index.tiles,
            landmarks=index.landmarks,
            count=index.n,
            generation=2,
        ),
        generation=True,
    )
