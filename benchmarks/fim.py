#!/usr/bin/env python3
"""FIM speed against the reference tools, measured in the same run on the same trees.

For each tree (~20k mixed files / 1 GB, and 100k files of 1-8 KiB):
- baseline hashing: Vigil's FimEngine.build_baseline (uncapped, a process per core) vs `sha256sum`
  over every file (one process, as an operator would run it) and vs `aide --init`;
- verification of the unchanged tree: FimEngine.verify (stat everything, re-hash what changed and
  this run's slice of the rotating re-hash) vs `aide --check`, which re-hashes everything.
Caches are warm for every tool (each tree is read once before timing). Prints a table of seconds and
ratios (reference / Vigil: above 1 means Vigil is faster).

    python benchmarks/fim.py [--quick] [--keep DIR] [--only mixed|small]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _trees import mixed_tree, small_tree  # noqa: E402

from checks.fim import FimArgs  # noqa: E402
from checks.fim.scan import FimEngine  # noqa: E402

CPU: dict[float, float] = {}  # wall seconds of a timed run -> CPU seconds it used (its processes and children)


def _cpu() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def timed(fn: Callable[[], object]) -> float:
    """Wall seconds of ``fn``; the CPU seconds it used (user + system, child processes included) go to CPU."""
    c0 = _cpu()
    t0 = time.perf_counter()
    fn()
    wall = time.perf_counter() - t0
    CPU[wall] = _cpu() - c0
    return wall


def run(cmd: list[str], **kw: object) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)  # type: ignore[call-overload]


def sha256sum_all(tree: Path) -> None:
    # find | xargs keeps the argument lists short; -P1: one process, as sha256sum is normally run.
    run(["bash", "-c", f"find {tree} -type f -print0 | xargs -0 -n 2000 sha256sum > /dev/null"])


def aide_conf(work: Path, tree: Path) -> Path:
    conf = work / "aide.conf"
    conf.write_text(
        f"database_in=file:{work}/aide.db\n"
        f"database_out=file:{work}/aide.db.new\n"
        "gzip_dbout=no\n"
        "report_url=stdout\n"
        "FIMR = p+i+n+u+g+s+m+c+sha256\n"
        f"{tree} FIMR\n"
    )
    return conf


def aide_init(conf: Path, work: Path) -> None:
    run(["aide", "--init", "-c", str(conf)])
    os.replace(work / "aide.db.new", work / "aide.db")


def aide_check(conf: Path) -> None:
    # Exit code 0 means no differences; anything else on an unchanged tree is a failure.
    subprocess.run(["aide", "--check", "-c", str(conf)], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


def bench_tree(name: str, tree: Path, work: Path, files: int, size: int) -> list[tuple[str, float, float, str]]:
    sha256sum_all(tree)  # warm the cache
    conf = aide_conf(work, tree)
    t_sha = timed(lambda: sha256sum_all(tree))
    t_aide_init = timed(lambda: aide_init(conf, work))
    t_aide_check = timed(lambda: aide_check(conf))

    args = FimArgs(paths=(str(tree),), hash_rate_mb_s=0, max_files=10_000_000)
    db = work / "vigil-fim.db"
    engine = FimEngine(args, db, lower_priority=False)
    try:
        stats: list[object] = []
        t_vigil_base = timed(lambda: stats.append(engine.build_baseline()))
        t_vigil_verify = timed(lambda: engine.verify(None))
    finally:
        engine.close()
    mb = size / 1e6
    return [
        (f"{name}: baseline hashing, sha256sum", t_sha, t_sha / t_vigil_base, f"{mb / t_sha:,.0f} MB/s"),
        (f"{name}: baseline, aide --init", t_aide_init, t_aide_init / t_vigil_base, ""),
        (f"{name}: baseline, vigil", t_vigil_base, 1.0,
         f"{mb / t_vigil_base:,.0f} MB/s, {files / t_vigil_base:,.0f} files/s"),
        (f"{name}: verify unchanged, aide --check", t_aide_check, t_aide_check / t_vigil_verify, ""),
        (f"{name}: verify unchanged, vigil", t_vigil_verify, 1.0, f"{files / t_vigil_verify:,.0f} files/s"),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="trees 10x smaller (for a smoke run)")
    ap.add_argument("--keep", type=Path, default=None, help="build the trees here and keep them")
    ap.add_argument("--only", choices=("mixed", "small"), default=None, help="run one of the two trees")
    args = ap.parse_args()
    if shutil.which("aide") is None or shutil.which("sha256sum") is None:
        sys.exit("needs aide and sha256sum (Debian: apt-get install aide coreutils)")
    scale = 10 if args.quick else 1
    base = args.keep or Path(tempfile.mkdtemp(prefix="vigil-bench-"))
    rows: list[tuple[str, float, float, str]] = []
    try:
        for name, make, kw in (
            ("mixed 20k/1GB", mixed_tree, {"files": 20_000 // scale, "total_mb": 1024 // scale}),
            ("small 100k", small_tree, {"files": 100_000 // scale}),
        ):
            if args.only and not name.startswith(args.only):
                continue
            tree = base / name.split()[0] / "tree"
            work = base / name.split()[0] / "work"
            work.mkdir(parents=True, exist_ok=True)
            if not tree.exists():
                files, size = make(tree, **kw)  # type: ignore[operator]
            else:
                files = sum(len(f) for _, _, f in os.walk(tree))
                size = sum((Path(d) / x).stat().st_size for d, _, fs in os.walk(tree) for x in fs)
            for f in work.glob("*"):
                f.unlink()
            rows += bench_tree(name, tree, work, files, size)
    finally:
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)
    print(f"{'measure':<44}{'seconds':>9}{'ratio':>8}{'cpu s':>8}  note")
    for label, secs, ratio, note in rows:
        print(f"{label:<44}{secs:>9.2f}{ratio:>8.2f}{CPU.get(secs, 0.0):>8.2f}  {note}")
    print("ratio = reference seconds / vigil seconds (targets: >= 3 vs sha256sum, >= 4 vs aide --init, "
          ">= 20 vs aide --check)")
    print("cpu s = user + system seconds of every process of the run: wall seconds of a multi-process run "
          "approach cpu s / 2 only when both cores are free")
    print(f"load average when done: {os.getloadavg()[0]:.2f} (other work on the machine slows the "
          "two-process vigil runs more than the one-process reference tools)")


if __name__ == "__main__":
    main()
