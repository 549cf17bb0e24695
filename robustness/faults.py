"""Faults at scale: SIGKILL at random moments, ENOSPC at every write, a really full disk.

    python robustness/faults.py [--trials 50] [--json robustness/results/faults.json]
                                [--only index append landmarks enospc tmpfs]

What "nothing lost" is measured as, on the real Mars mosaic (``$LOOKALIKE_DATA``):

- ``index``: ``lookalike index mars_8k --zones 30N --tile-size 32 --stride 16`` (705 tiles, two
  chunks of 512, so a rerun resumes from a kept chunk); ``append``: ``lookalike index mars_8k
  --zones 54S --append`` onto an index of zone 53S; ``landmarks``: ``lookalike landmarks mars_8k
  --window 6900,1900,7500,2500 --threshold 0 --index DIR`` (three landmarks catalogued into the
  53S index). ``--trials`` SIGKILLs each: half at a random time (plain ``python -m lookalike``;
  this process watches the folder and kills a random delay after the first change there,
  uniform between 0 and the time an uninterrupted run takes from its first write to its end,
  the median of 3 runs measured first), half at a random write point (before or after one of
  the ``os.replace``,
  ``os.unlink``, ``os.rmdir``, ``os.fsync`` calls under the folder; ``tests/faultkit.py``).
  After the kill the folder must hold the previous index (an append or a catalogue), the new
  one, or (first build) none that loads; never a half one. Then the same command runs again (in
  this process); its index must verify (``open_index(verify=True)``) and equal the uninterrupted
  run's (codes byte for byte, tile table and catalogue with pandas).
- ``enospc``: the append with ``OSError(ENOSPC)`` injected at every write of a file in the index
  folder, one trial per write (``faultkit.disk_full``): exit status 2 with one
  ``lookalike: error:`` line, the previous index intact (verifies, equal, same generation),
  nothing of the failed write left but the resumable work folder; then the append with space
  again must equal the uninterrupted one.
- ``tmpfs``: the same append on a real tmpfs (a private mount namespace, ``unshare``) with the
  free space swept from 0 to what the append writes: the kernel's own ENOSPC.

Writes JSON (every trial) and a Markdown table beside it (``.md``). Progress with tqdm.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "robustness" / "results"
sys.path.insert(0, str(REPO / "tests"))

from faultkit import (  # noqa: E402
    can_mount_tmpfs,
    differences,
    disk_full,
    index_state,
    kill_after,
    kill_at_point,
    listing,
    point_number,
    real_disk_full,
    stray_files,
    write_points,
)
from lookalike_testkit import run_main  # noqa: E402

from lookalike.errors import LookalikeError  # noqa: E402

INDEX_ARGS = ["mars_8k", "--zones", "30N", "--tile-size", "32", "--stride", "16"]
BASE_ARGS = ["mars_8k", "--zones", "53S"]
APPEND_ARGS = ["mars_8k", "--zones", "54S", "--append"]
WINDOW = "6900,1900,7500,2500"
COMMANDS = {
    "index": lambda where: ["index", *INDEX_ARGS, "--out", where / "index"],
    "append": lambda where: ["index", *APPEND_ARGS, "--out", where / "index"],
    "landmarks": lambda where: [
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
    ],
}
ALREADY = {"index": "already holds an index", "append": "already in"}
PROGRESS = re.compile(r"\r|\x1b\[|/s\]")  # tqdm bars (nested ones move the cursor)


def error_lines(stderr: str) -> list[str]:
    """stderr without tqdm's progress bars."""
    return [line for line in stderr.splitlines() if line.strip() and not PROGRESS.search(line)]


def one_error_line(code: int, stderr: str) -> bool:
    lines = error_lines(stderr)
    return (
        code == 2
        and "Traceback" not in stderr
        and len(lines) == 1
        and lines[0].startswith("lookalike: error:")
    )


def state_or_error(path: Path):
    try:
        return index_state(path), None
    except LookalikeError as exc:
        return None, str(exc)


class Kind:
    """One command: the disk before it, its uninterrupted result, its write points and timing."""

    def __init__(self, name: str, tmp: Path, base: Path | None, env: dict):
        self.name, self.tmp, self.env = name, tmp / name, env
        self.argv = COMMANDS[name]
        self.start = self.tmp / "start"
        self.start.mkdir(parents=True)
        if base is not None:
            shutil.copytree(base, self.start / "index")
        self.before = index_state(self.start / "index") if base is not None else None
        work = self.fresh("uninterrupted")
        self.points, (code, _, err) = write_points(work, lambda: run_main(self.argv(work), **env))
        if code:
            raise SystemExit(f"{name}: the uninterrupted run failed:\n{err}")
        self.after = index_state(work / "index")
        self.table = (work / "lm.parquet").read_bytes() if (work / "lm.parquet").exists() else None
        self.first_change, self.writing = self._timing()

    def fresh(self, label: str) -> Path:
        where = self.tmp / label
        shutil.rmtree(where, ignore_errors=True)
        shutil.copytree(self.start, where)
        return where

    def _timing(self, runs: int = 3) -> tuple[float, float]:
        """Seconds from start to the first change on disk and from there to the end, in a
        child process (medians of ``runs``)."""
        firsts, rests = [], []
        for _ in range(runs):
            where = self.fresh("timing")
            before = listing(where)
            t0 = time.monotonic()
            proc = subprocess.Popen(
                [sys.executable, "-m", "lookalike", *map(str, self.argv(where))],
                cwd=self.tmp,
                env=dict(os.environ, **self.env),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            first = None
            try:
                while proc.poll() is None:
                    if first is None and listing(where) != before:
                        first = time.monotonic() - t0
                    time.sleep(0.005)
            finally:
                if proc.poll() is None:
                    proc.kill()
                proc.wait()
            if proc.returncode:
                raise SystemExit(f"{self.name}: the timing run failed")
            first = first if first is not None else 0.0
            firsts.append(first)
            rests.append(time.monotonic() - t0 - first)
        return statistics.median(firsts), statistics.median(rests)

    def after_kill(self, where: Path) -> str:
        """What a kill left: 'previous', 'new', 'none' (no index loads), or a failure."""
        state, error = state_or_error(where / "index")
        if state is None:
            return "none" if self.before is None else f"LOST: previous index does not load ({error})"
        if self.before is not None and not differences(state, self.before, generation=True):
            return "previous"
        if not differences(state, self.after):
            return "new"
        return "HALF: loads but is neither the previous nor the new index"

    def trial(self, i: int, moment: str, rng: random.Random) -> dict:
        where = self.fresh(f"trial-{i}")
        t0 = time.monotonic()
        if moment == "time":
            delay = rng.uniform(0.0, self.writing)
            killed = kill_after(self.argv(where), delay, cwd=self.tmp, env=self.env, watch=where)
            detail = dict(delay_after_first_write_s=round(delay, 3))
        else:
            point = rng.choice(self.points)
            killed = kill_at_point(self.argv(where), where, point_number(point), cwd=self.tmp, env=self.env)
            detail = dict(point=generic(point.label))
        left = self.after_kill(where)
        code, _, err = run_main(self.argv(where), **self.env)
        state, error = state_or_error(where / "index")
        equal = state is not None and not differences(state, self.after)
        if equal and self.table is not None:
            equal = (where / "lm.parquet").exists() and _same_table(where / "lm.parquet", self.table)
        already = code == 2 and one_error_line(code, err) and ALREADY.get(self.name, "\0") in err
        return dict(
            kind=self.name,
            trial=i,
            moment=moment,
            **detail,
            killed=killed.killed,
            kill_returncode=killed.returncode,
            after_kill=left,
            rerun_code=code,
            rerun=(
                "completed"
                if code == 0
                else "already complete"
                if already
                else f"FAILED: {error_lines(err)[-1:] or err[-300:]}"
            ),
            verified=state is not None,
            equal=equal,
            stray=stray_files(where / "index"),
            seconds=round(time.monotonic() - t0, 2),
            **({} if code == 0 else dict(rerun_stderr=error_lines(err))),
            **({} if state is not None else dict(error=error)),
        )


def generic(name: str) -> str:
    """A file name without its work-folder key and temporary-file pid and token."""
    name = re.sub(r"\.work-[0-9a-f]+", ".work-KEY", name)
    return re.sub(r"\.\d+\.[0-9a-f]+\.tmp$", ".PID.tmp", name)


def _same_table(path: Path, expected: bytes) -> bool:
    import io

    import pandas as pd

    return pd.read_parquet(path).equals(pd.read_parquet(io.BytesIO(expected)))


def run_kills(kind: Kind, trials: int, rng: random.Random) -> list[dict]:
    moments = ["time", "point"] * (trials // 2) + ["time"] * (trials % 2)
    out = []
    for i, moment in enumerate(tqdm(moments, desc=f"SIGKILL {kind.name}", unit="trial")):
        out.append(kind.trial(i, moment, rng))
        shutil.rmtree(kind.tmp / f"trial-{i}", ignore_errors=True)
    return out


def run_enospc(append: Kind) -> list[dict]:
    """ENOSPC at every write of the append to a file in the index folder. The append is run
    again with space after the first, a middle and the last failed write of each file."""
    probe = append.fresh("enospc-probe")
    with disk_full(probe / "index") as counted:
        code, _, err = run_main(append.argv(probe), **append.env)
    if code:
        raise SystemExit(f"enospc probe failed:\n{err}")
    runs: dict[str, list[int]] = {}
    for k, path in enumerate(counted.paths, 1):
        runs.setdefault(path, []).append(k)
    retried = {k for ks in runs.values() for k in (ks[0], ks[len(ks) // 2], ks[-1])}
    out = []
    for k in tqdm(range(1, counted.count + 1), desc="ENOSPC append", unit="write"):
        where = append.fresh(f"enospc-{k}")
        with disk_full(where / "index", at=k) as full:
            code, _, err = run_main(append.argv(where), **append.env)
        state, error = state_or_error(where / "index")
        intact = state is not None and not differences(state, append.before, generation=True)
        left = [f for f in stray_files(where / "index") if not f.startswith(".work-")]
        row = dict(
            kind="enospc",
            write=k,
            file=generic(counted.paths[k - 1]),
            failed_writes=full.failed,
            exit_code=code,
            one_line=one_error_line(code, err),
            message=(error_lines(err) or [""])[-1],
            previous_intact=intact,
            left_behind=left,
            **({} if state is not None else dict(error=error)),
        )
        if k in retried:
            code2, _, _ = run_main(append.argv(where), **append.env)
            after, _ = state_or_error(where / "index")
            row.update(
                retry_code=code2,
                retry_equal=code2 == 0 and after is not None and not differences(after, append.after),
            )
        out.append(row)
        shutil.rmtree(where, ignore_errors=True)
    return out


def run_tmpfs(append: Kind, steps: int) -> list[dict]:
    """The append on a tmpfs with 0 .. (what it writes) bytes free."""
    probe = append.fresh("tmpfs-probe")
    size = lambda p: sum(f.stat().st_size for f in p.rglob("*") if f.is_file())  # noqa: E731
    peak = [0]

    def watch(_point):
        peak[0] = max(peak[0], size(probe / "index"))

    before = size(probe / "index")
    from faultkit import watch_writes

    with watch_writes(probe, watch):
        run_main(append.argv(probe), **append.env)
    needed = peak[0] - before + 64 * 1024
    import hashlib

    generation_file = re.compile(r"(codes|tiles|hash|landmarks)-\d{6}\.\w+|manifest\.json")
    out = []
    for j in tqdm(range(steps + 1), desc="tmpfs append", unit="trial"):
        free = needed * j // steps
        result = real_disk_full(
            append.start / "index",
            append.argv(Path("{root}"))[:-2] + ["--out", "{index}"],
            free,
            mount=append.tmp / f"mnt-{j}",
            env=append.env,
        )
        after = result["after"]
        code = result["returncode"]
        before_state = append.before
        intact = (
            after["ok"]
            and after["generation"] == before_state["generation"]
            and after["codes"] == hashlib.sha256(before_state["codes"]).hexdigest()
        )
        new = (
            after["ok"]
            and after["count"] == append.after["count"]
            and after["codes"] == hashlib.sha256(append.after["codes"]).hexdigest()
        )
        out.append(
            dict(
                kind="tmpfs",
                free_bytes=free,
                exit_code=code,
                one_line=code == 0 or one_error_line(code, result["stderr"]),
                message=(error_lines(result["stderr"]) or [""])[-1],
                previous_intact=intact,
                completed=code == 0 and new,
                left_behind=[
                    f
                    for f in result["files"]
                    if not f.startswith(".work-")
                    and f not in after.get("files", [])
                    and not (not after["ok"] and generation_file.fullmatch(f))
                ],
                **({} if after["ok"] else dict(error=after.get("error"))),
            )
        )
    return out


# ------------------------------------------------------------------ summary
def summarize(trials: list[dict]) -> dict:
    kills = {}
    for name in COMMANDS:
        rows = [t for t in trials if t["kind"] == name]
        if not rows:
            continue
        landed = [t for t in rows if t["killed"]]
        ok_after = {"previous", "new", "none"}
        kills[name] = dict(
            trials=len(rows),
            at_random_time=sum(t["moment"] == "time" for t in rows),
            at_write_point=sum(t["moment"] == "point" for t in rows),
            killed=len(landed),
            finished_before_kill=len(rows) - len(landed),
            after_kill={k: sum(t["after_kill"] == k for t in rows) for k in sorted(ok_after)},
            after_kill_bad=sum(t["after_kill"] not in ok_after for t in rows),
            rerun_completed=sum(t["rerun"] == "completed" for t in rows),
            rerun_already_complete=sum(t["rerun"] == "already complete" for t in rows),
            rerun_failed=sum(t["rerun"].startswith("FAILED") for t in rows),
            verified=sum(t["verified"] for t in rows),
            equal=sum(t["equal"] for t in rows),
            stray_after_rerun=sum(bool(t["stray"]) for t in rows),
            seconds_per_trial=round(sum(t["seconds"] for t in rows) / len(rows), 1),
        )
    out = dict(kills=kills)
    for name in ("enospc", "tmpfs"):
        rows = [t for t in trials if t["kind"] == name]
        if not rows:
            continue
        failed = [t for t in rows if t["exit_code"] != 0]
        out[name] = dict(
            trials=len(rows),
            failed_for_space=len(failed),
            one_line_exit_2=sum(t["one_line"] and t["exit_code"] == 2 for t in failed),
            previous_intact=sum(t["previous_intact"] for t in failed),
            left_behind=sum(bool(t["left_behind"]) for t in rows),
            files=sorted({t.get("file", "") for t in rows} - {""}),
        )
        if name == "enospc":
            out[name]["retried"] = sum("retry_code" in t for t in rows)
            out[name]["retry_equal"] = sum(t.get("retry_equal", False) for t in rows)
        else:
            out[name]["completed"] = sum(t["completed"] for t in rows)
    return out


def to_markdown(result: dict) -> str:
    s = result["summary"]
    lines = [
        "# Faults: SIGKILL, a full disk",
        "",
        f"Produced by `python robustness/faults.py --trials {result['trials_per_kind']}` on "
        f"{result['machine']} ({result['date']}, {result['minutes']:.0f} min). Every trial is in "
        "`faults.json`; the method is in the script's docstring and `tests/faultkit.py`.",
        "",
        "## SIGKILL, then the same command again",
        "",
        "| | index (first build, 705 tiles, 2 chunks) | append (zone 54S onto 53S) | landmarks catalogued into the index |",
        "|---|---:|---:|---:|",
    ]
    kills = s.get("kills", {})
    names = [n for n in COMMANDS if n in kills]

    def row(label, f):
        lines.append(
            f"| {label} | " + " | ".join(str(f(kills[n])) if n in kills else "" for n in COMMANDS) + " |"
        )

    if names:
        row("trials", lambda k: k["trials"])
        row(
            "... killed at a random time after its first write / at a random write point",
            lambda k: f"{k['at_random_time']} / {k['at_write_point']}",
        )
        row("kill landed before the command finished", lambda k: k["killed"])
        row(
            "after the kill: previous index intact (verifies, equal)",
            lambda k: k["after_kill"]["previous"] if "previous" in k["after_kill"] else "",
        )
        row("after the kill: no index (first build, nothing committed)", lambda k: k["after_kill"]["none"])
        row("after the kill: the new index, whole", lambda k: k["after_kill"]["new"])
        row("after the kill: a half index, or the previous one lost", lambda k: f"**{k['after_kill_bad']}**")
        row("run again: completed", lambda k: k["rerun_completed"])
        row(
            "run again: refused, already complete (killed after its commit)",
            lambda k: k["rerun_already_complete"],
        )
        row("run again: failed otherwise", lambda k: f"**{k['rerun_failed']}**")
        row("resumed index verifies", lambda k: f"**{k['verified']}** / {k['trials']}")
        row("resumed index equal to the uninterrupted run", lambda k: f"**{k['equal']}** / {k['trials']}")
        row("files left beside the index after the rerun", lambda k: k["stray_after_rerun"])
        row("seconds per trial (kill + rerun)", lambda k: k["seconds_per_trial"])
        timing = result.get("timing", {})
        lines += [
            "",
            'For a first build the previous state is no index: "previous index intact" '
            'does not apply. "Refused, already complete": killed after it had committed '
            "and tidied up (while the interpreter exits); the rerun says the index already "
            "holds these tiles (exit status 2), as for any finished command run twice. "
            "A kill after the commit but before the work folder is gone is finished by the "
            "rerun (exit 0).",
            "",
            "Uninterrupted runs (median of 3, seconds): "
            + "; ".join(
                f"{n} first writes after {t['first_write_s']}, done {t['then_done_s']} later"
                for n, t in timing.items()
            )
            + ".",
            "",
        ]
    for name, title in (
        ("enospc", "ENOSPC injected at every write of the append"),
        ("tmpfs", "The append on a really full disk (tmpfs, free space swept)"),
    ):
        if name not in s:
            continue
        e = s[name]
        lines += [
            f"## {title}",
            "",
            "| | |",
            "|---|---:|",
            f"| trials | {e['trials']} |",
            f"| failed for want of space | {e['failed_for_space']} |",
            f"| ... with one `lookalike: error:` line and exit status 2 | **{e['one_line_exit_2']}** |",
            f"| ... previous index intact (verifies, equal, same generation) | **{e['previous_intact']}** |",
            f"| files of the failed write left behind (besides the resumable work folder) | {e['left_behind']} |",
        ]
        if name == "enospc":
            lines += [
                f"| run again with space (after the first, a middle and the last failed write "
                f"of each file): equal to the uninterrupted append | **{e['retry_equal']}** / {e['retried']} |",
                "",
                "Writes that failed, by file: " + ", ".join(f"`{f}`" for f in e["files"]) + ".",
            ]
        else:
            lines += [f"| completed (enough space) and equal | {e['completed']} |"]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=50, help="SIGKILL trials per kind")
    parser.add_argument("--tmpfs-steps", type=int, default=16, help="free-space steps on the tmpfs")
    parser.add_argument("--only", nargs="+", choices=["index", "append", "landmarks", "enospc", "tmpfs"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=str(RESULTS / "faults.json"))
    args = parser.parse_args(argv)
    data = os.environ.get("LOOKALIKE_DATA") or str(REPO.parent / "shared" / "data")
    env = dict(LOOKALIKE_DATA=data)
    only = set(args.only or ["index", "append", "landmarks", "enospc", "tmpfs"])
    rng = random.Random(args.seed)
    t0 = time.monotonic()
    trials: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="lookalike-faults-") as tmp:
        tmp = Path(tmp)
        base = tmp / "base"
        code, _, err = run_main(["index", *BASE_ARGS, "--out", base], **env)
        if code:
            raise SystemExit(err)
        kinds = {}
        for name in ("index", "append", "landmarks"):
            if name in only or (name == "append" and only & {"enospc", "tmpfs"}):
                kinds[name] = Kind(name, tmp, None if name == "index" else base, env)
                print(
                    f"{name}: {len(kinds[name].points)} write points, first write after "
                    f"{kinds[name].first_change:.1f} s, then done after {kinds[name].writing:.1f} s",
                    file=sys.stderr,
                )
        for name in ("index", "append", "landmarks"):
            if name in only:
                trials += run_kills(kinds[name], args.trials, rng)
        if "enospc" in only:
            trials += run_enospc(kinds["append"])
        if "tmpfs" in only:
            if can_mount_tmpfs():
                trials += run_tmpfs(kinds["append"], args.tmpfs_steps)
            else:
                print("tmpfs: skipped (unshare cannot mount a tmpfs here)", file=sys.stderr)
        write_point_counts = {n: len(k.points) for n, k in kinds.items()}
        timing = {
            n: dict(first_write_s=round(k.first_change, 2), then_done_s=round(k.writing, 2))
            for n, k in kinds.items()
        }
    result = dict(
        trials_per_kind=args.trials,
        seed=args.seed,
        machine=f"{os.cpu_count()} CPU cores, {platform.system()} {platform.release()}",
        date=time.strftime("%Y-%m-%d"),
        minutes=(time.monotonic() - t0) / 60,
        write_points=write_point_counts,
        timing=timing,
        summary=summarize(trials),
        trials=trials,
    )
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    out.with_suffix(".md").write_text(to_markdown(result))
    print(to_markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
