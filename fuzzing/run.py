"""Run the parser fuzzers under atheris: ``python -m fuzzing.run [--seconds N] [--target NAME]``.

Each target runs in its own process (:mod:`fuzzing._child`) for ``--seconds``, with a
per-input time limit (a slower input is a hang) and a memory limit; ``--jobs`` targets run
at once. New coverage-increasing inputs go to a temporary corpus next to the committed
seeds (which are never modified). A failing input is kept under ``fuzzing/crashes/<target>/``
(``crash-*``, ``timeout-*``, ``oom-*``) with the fuzzer's log; replay it without atheris with
``python -m fuzzing.run --target NAME --replay FILE``.

Prints one row per target (seconds, executions, executions per second, result) and exits
non-zero when any target found a failing input, hung or could not run.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from fuzzing.targets import TARGETS, corpus_dir, load

__all__ = ["main"]

#: Seconds each target fuzzes by default.
DEFAULT_SECONDS = 60
#: libFuzzer ``-timeout``: one input taking longer than this is reported as a hang.
INPUT_TIMEOUT_SECONDS = 5
#: libFuzzer ``-rss_limit_mb`` (and the malloc limit it implies).
RSS_LIMIT_MB = 2048
#: libFuzzer ``-max_len``: the largest input tried, above every parser's own size cap
#: where one is that small, and enough for nested JSON documents.
MAX_INPUT_BYTES = 16 * 1024
#: Time a target process gets beyond ``--seconds`` (start-up, instrumenting Herald, the
#: final stats) before the runner kills it and reports a hang of the whole process.
GRACE_SECONDS = 120
CRASH_DIR = Path(__file__).resolve().parent / "crashes"
_ARTIFACT = re.compile(r"^(crash|timeout|oom|leak)-")
_EXECS = re.compile(r"stat::number_of_executed_units:\s*(\d+)")
_DONE = re.compile(r"Done (\d+) runs in (\d+) second")


@dataclass(frozen=True, slots=True)
class Result:
    """One target's run."""

    target: str
    seconds: float
    execs: int | None
    result: str
    artifacts: tuple[Path, ...] = ()

    @property
    def ok(self) -> bool:
        """Whether the target ran its time without finding anything."""
        return self.result == "ok"


def _execs(log: str) -> int | None:
    found = _EXECS.findall(log) or [m[0] for m in _DONE.findall(log)]
    return int(found[-1]) if found else None


def _classify(returncode: int | None, artifacts: list[Path], log: str) -> str:
    if returncode is None:
        return "hang (process killed)"
    kinds = sorted({_ARTIFACT.match(p.name).group(1) for p in artifacts})  # type: ignore[union-attr]
    if kinds:
        return "FOUND " + ",".join(kinds)
    if returncode != 0:
        if "Uncaught Python exception" in log:
            return "FOUND crash"
        return f"error (exit {returncode})"
    return "ok"


def run_target(name: str, seconds: int, *, python: str = sys.executable) -> Result:
    """Fuzz one target for ``seconds`` in a child process and report what happened."""
    out_dir = CRASH_DIR / name
    out_dir.mkdir(parents=True, exist_ok=True)
    before = set(out_dir.iterdir())
    with tempfile.TemporaryDirectory(prefix=f"herald-fuzz-{name}-") as work:
        argv = [
            python,
            "-m",
            "fuzzing._child",
            name,
            f"-max_total_time={seconds}",
            f"-timeout={INPUT_TIMEOUT_SECONDS}",
            f"-rss_limit_mb={RSS_LIMIT_MB}",
            f"-max_len={MAX_INPUT_BYTES}",
            f"-artifact_prefix={out_dir}{os.sep}",
            "-print_final_stats=1",
            work,  # new inputs land in the first directory: never the committed seeds
            str(corpus_dir(name)),
        ]
        log_path = Path(work) / "fuzz.log"
        started = time.monotonic()
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                argv, stdout=log_file, stderr=subprocess.STDOUT, cwd=Path(__file__).parent.parent
            )
            try:
                returncode: int | None = process.wait(timeout=seconds + GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                returncode = None
        elapsed = time.monotonic() - started
        log = log_path.read_text("utf-8", "replace")
        artifacts = sorted(p for p in set(out_dir.iterdir()) - before if _ARTIFACT.match(p.name))
        result = _classify(returncode, artifacts, log)
        if result != "ok":
            kept = out_dir / f"log-{int(time.time())}.txt"
            kept.write_text(log, "utf-8")
            artifacts.append(kept)
    return Result(name, elapsed, _execs(log), result, tuple(artifacts))


def _table(results: list[Result]) -> str:
    rows = [("target", "seconds", "execs", "execs/s", "result")]
    for r in results:
        rate = f"{r.execs / r.seconds:.0f}" if r.execs is not None and r.seconds else "-"
        rows.append(
            (
                r.target,
                f"{r.seconds:.1f}",
                "-" if r.execs is None else str(r.execs),
                rate,
                r.result,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows
    )


def replay(name: str, files: list[Path]) -> int:
    """Run target ``name`` on ``files`` without atheris; print what each input raised."""
    entry = load(name)
    failures = 0
    for path in files:
        try:
            entry(path.read_bytes())
        except Exception:  # noqa: BLE001 - printing any failure is the point
            failures += 1
            print(f"{path}: FAILED", file=sys.stderr)
            traceback.print_exc()
        else:
            print(f"{path}: ok")
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m fuzzing.run", description=__doc__)
    parser.add_argument("--seconds", type=int, default=DEFAULT_SECONDS, help="per target")
    parser.add_argument(
        "--target", action="append", choices=sorted(TARGETS), help="repeatable; default: all"
    )
    parser.add_argument(
        "--jobs", type=int, default=os.cpu_count() or 1, help="targets fuzzed at once"
    )
    parser.add_argument(
        "--replay", nargs="+", type=Path, metavar="FILE", help="replay inputs (no atheris)"
    )
    args = parser.parse_args(argv)
    names = args.target or list(TARGETS)
    if args.replay:
        if len(names) != 1:
            parser.error("--replay needs exactly one --target")
        return replay(names[0], args.replay)
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results = list(pool.map(lambda n: run_target(n, args.seconds), names))
    print(_table(results))
    for r in results:
        for path in r.artifacts:
            print(f"{r.target}: kept {path}")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
