"""The performance suite (``make bench``): every scenario of the performance issue in one run.

Run it from the repository root::

    python -m bench.suite            # all scenarios, peers included (about 8 minutes)
    python -m bench.suite --quick    # smoke test of every scenario (about 3 minutes)
    python -m bench.suite --only publish-single,fan-out

Each scenario is one of the benchmark modules, run as a child process with its own hard
time limit (it prints its own table and writes its JSON under ``bench/results/``); the
suite then reads those JSON files and prints one table of targets against measured
figures, peers and ratios, which it also writes as ``bench/results/suite-<UTC>.json`` and
``.md`` (the README's performance table is a copy of the latest one). A target is never
called met without a measured figure; a scenario that failed or timed out says so.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench._common import RESULTS_DIR, machine_facts, raise_keyboard_interrupt, results_stamp

RESULTS_LINE = re.compile(r"^results: (\S+\.json)\s*$", re.M)


@dataclass(frozen=True)
class Scenario:
    """One benchmark run of the suite: a module, its arguments, and its time limit."""

    key: str
    title: str
    module: str
    args: tuple[str, ...]
    quick_args: tuple[str, ...]
    limit_s: float


#: The batch scenarios: Ed25519-signed requests; their --runs comes last (3, quick 1).
BATCH = ("--configs", "ed25519", "--batch")

SCENARIOS = (
    Scenario(
        "publish-single",
        "1. publish-single: signed publishes, 1 KiB, 64 keep-alive clients",
        "bench.publish_security",
        ("--configs", "ed25519,hmac,ed25519-workers,hmac-workers", "--messages", "8000"),
        ("--configs", "ed25519,hmac,ed25519-workers,hmac-workers", "--messages", "1000"),
        300,
    ),
    Scenario(
        "publish-batch-100",
        "2. publish-batch: 100 messages per request",
        "bench.publish_security",
        (*BATCH, "100", "--messages", "40000", "--warmup", "2000", "--concurrency", "16"),
        (*BATCH, "100", "--messages", "4000", "--warmup", "400", "--concurrency", "16"),
        150,
    ),
    Scenario(
        "publish-batch-1000",
        "2. publish-batch: 1,000 messages per request",
        "bench.publish_security",
        (*BATCH, "1000", "--messages", "60000", "--warmup", "4000", "--concurrency", "8"),
        (*BATCH, "1000", "--messages", "8000", "--warmup", "2000", "--concurrency", "8"),
        150,
    ),
    Scenario(
        "latency",
        "3. publish → receive latency at 1,000 msgs/s, one subscriber per topic",
        "bench.latency",
        ("--rate", "1000", "--seconds", "10", "--runs", "3"),
        ("--quick",),
        240,
    ),
    Scenario(
        "fan-out",
        "3–4. fan-out, latency and connections, with peers",
        "bench.fanout",
        (),
        ("--quick",),
        600,
    ),
    Scenario(
        "breakdown",
        "5. pipeline breakdown of publish-single",
        "bench.breakdown",
        ("--messages", "6000", "--runs", "1", "--unprofiled-runs", "0"),
        ("--quick", "--unprofiled-runs", "0"),
        150,
    ),
)


@dataclass
class Outcome:
    """What one scenario's child process left behind."""

    scenario: Scenario
    exit_code: int | None = None
    seconds: float = 0.0
    results: dict[str, Any] | None = None
    results_path: str | None = None
    note: str | None = None


@dataclass
class Row:
    """One line of the summary: a target and what was measured against it."""

    scenario: str
    target: str
    measured: str
    met: bool | None  # None: not measured (the scenario failed or was skipped)
    detail: str = ""


@dataclass
class Suite:
    args: argparse.Namespace
    outcomes: list[Outcome] = field(default_factory=list)


def run_scenario(scenario: Scenario, *, quick: bool, log: Path) -> Outcome:
    """Run one scenario to completion (or its time limit); its output goes to us and ``log``."""
    outcome = Outcome(scenario)
    command = [sys.executable, "-m", scenario.module]
    command += scenario.quick_args if quick else scenario.args
    if scenario.module == "bench.publish_security":
        command += ["--runs", "1" if quick else "3"]
    print(f"\n=== {scenario.title}: {' '.join(command[2:])}", flush=True)
    started = time.monotonic()
    output: list[str] = []
    with subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # Ctrl-C reaches us; we stop the child (it cleans up)
    ) as child:
        assert child.stdout is not None
        deadline = started + scenario.limit_s
        try:
            for line in child.stdout:
                output.append(line)
                print(line, end="", flush=True)
                if time.monotonic() > deadline:
                    outcome.note = f"stopped at its {scenario.limit_s:.0f} s limit"
                    child.send_signal(signal.SIGTERM)
                    break
            outcome.exit_code = child.wait(timeout=max(1.0, deadline + 30 - time.monotonic()))
        except (KeyboardInterrupt, subprocess.TimeoutExpired):
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
            raise
    outcome.seconds = time.monotonic() - started
    text = "".join(output)
    with log.open("a") as out:
        out.write(f"\n=== {scenario.key}\n{text}")
    found = RESULTS_LINE.findall(text)
    if found:
        outcome.results_path = found[-1]
        try:
            outcome.results = json.loads(Path(found[-1]).read_text())
        except (OSError, ValueError) as exc:
            outcome.note = f"results unreadable: {exc}"
    elif outcome.note is None:
        outcome.note = f"no results (exit {outcome.exit_code})"
    return outcome


# -- the summary ---------------------------------------------------------------------------


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def _fmt(value: float | None, unit: str = "", digits: int = 0) -> str:
    if value is None:
        return "—"
    return f"{value:,.{digits}f}{unit}"


def _median(d: dict[str, Any] | None, name: str) -> float | None:
    figure = (d or {}).get(name)
    return _num(figure.get("median")) if isinstance(figure, dict) else None


def _spread(d: dict[str, Any] | None, name: str, unit: str = "") -> str:
    figure = (d or {}).get(name) or {}
    low, high = _num(figure.get("min")), _num(figure.get("max"))
    if low is None or high is None or low == high:
        return ""
    return f" [{_fmt(low, unit)}–{_fmt(high, unit)}]"


def _met(value: float | None, target: float, *, at_least: bool = True) -> bool | None:
    if value is None:
        return None
    return value >= target if at_least else value <= target


def publish_rows(outcome: Outcome, key: str, label: str, target: float) -> list[Row]:
    """Rows for one configuration of a ``bench.publish_security`` run."""
    config = ((outcome.results or {}).get("configs") or {}).get(key)
    if config is None:  # e.g. the Redis configurations without Redis
        return [
            Row(
                outcome.scenario.key,
                f"{label} ≥ {target:,.0f} msgs/s",
                "—",
                None,
                "not run (see the scenario's notes)",
            )
        ]
    rate = _median(config, "publishes_per_s")
    p99 = _median(config, "p99_ms")
    cpu = _median(config, "server_cpu_us_per_publish")
    other = _median(config, "other_processes")
    client = _median(config, "client_cpu_per_wall_max")
    detail = (
        f"server CPU {_fmt(cpu, ' µs')}/message; client CPU/wall {_fmt(client, '', 2)}; "
        f"other processes {_fmt(other, ' cores', 2)}"
    )
    measured = f"{_fmt(rate, ' msgs/s')}{_spread(config, 'publishes_per_s')}"
    if outcome.scenario.key == "publish-single":
        measured += f", p99 {_fmt(p99, ' ms')}"
    return [
        Row(
            outcome.scenario.key,
            f"{label} ≥ {target:,.0f} msgs/s",
            measured,
            _met(rate, target),
            detail,
        )
    ]


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def _step(fan: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((st for st in fan.get("steps", []) if st.get("step") == name), None)


def fanout_rows(outcome: Outcome) -> list[Row]:
    """Rows from ``bench.fanout``: scenario 3 (1,000 subscribers) and 4 (10,000)."""
    systems = (outcome.results or {}).get("systems") or {}
    fan = {name: s.get("fanout") or {} for name, s in systems.items()}
    herald = fan.get("herald", {})
    rows: list[Row] = []
    sat = _num(herald.get("saturation_median"))
    for peer, want in (("mosquitto", 1.0), ("socketio", 2.0)):
        other = _num(fan.get(peer, {}).get("saturation_median"))
        ratio = _ratio(sat, other)
        rows.append(
            Row(
                outcome.scenario.key,
                f"fan-out saturation, 1,000 subscribers ≥ {want:g}× {peer}",
                f"{_fmt(ratio, '×', 2)} ({_fmt(sat, '/s')} vs {_fmt(other, '/s')} deliveries)",
                _met(ratio, want),
                f"medians of {len(herald.get('saturation', []))} runs; lost "
                f"{sum(r.get('deliveries_lost', 0) for r in herald.get('saturation', []))}",
            )
        )
    step = _step(herald, "20,000 deliveries/s")
    p99 = _num(((step or {}).get("latency_ms") or {}).get("p99"))
    mosq = _num(
        (
            (_step(fan.get("mosquitto", {}), "20,000 deliveries/s") or {}).get("latency_ms") or {}
        ).get("p99")
    )
    rows.append(
        Row(
            outcome.scenario.key,
            "broadcast p99 ≤ 25 ms at 20k deliveries/s (20 msgs/s × 1,000)",
            f"p99 {_fmt(p99, ' ms', 1)}",
            _met(p99, 25, at_least=False),
            f"Mosquitto {_fmt(mosq, ' ms', 1)} in the same run",
        )
    )
    con = (systems.get("herald") or {}).get("connections") or {}
    if con:
        paced, burst = con.get("paced") or {}, con.get("saturation") or {}
        lost = (paced.get("deliveries_lost") or 0) + (burst.get("deliveries_lost") or 0)
        rows.append(
            Row(
                outcome.scenario.key,
                f"fan-out to {con.get('subscribers', 0):,} subscribers: runs, loses nothing",
                f"{con.get('connected', 0):,} connected; burst "
                f"{_fmt(_num(burst.get('deliveries_per_s')), '/s')}, lost {lost}",
                con.get("connected") == con.get("subscribers") and lost == 0,
                f"paced {_fmt(_num(paced.get('deliveries_per_s')), '/s')} p99 "
                f"{_fmt(_num((paced.get('latency_ms') or {}).get('p99')), ' ms')}",
            )
        )
        kib = _num(con.get("rss_per_connection_kib"))
        idle = _num(((con.get("idle") or {}).get("cpu") or {}).get("server"))
        peers = ", ".join(
            f"{name} {_fmt(_num((s.get('connections') or {}).get('rss_per_connection_kib')))}"
            for name, s in systems.items()
            if name != "herald" and s.get("connections")
        )
        rows.append(
            Row(
                outcome.scenario.key,
                f"idle connections ≤ 30 KiB RSS each at {con.get('subscribers', 0):,}",
                f"{_fmt(kib, ' KiB', 1)} per connection",
                _met(kib, 30, at_least=False),
                f"idle server CPU/wall {_fmt(idle, '', 2)}" + (f"; {peers} KiB" if peers else ""),
            )
        )
    return rows


def latency_rows(outcome: Outcome) -> list[Row]:
    """The publish → receive latency at 1,000 msgs/s, one subscriber per topic."""
    summary = (outcome.results or {}).get("summary") or {}
    p99 = _median(summary, "latency_p99_ms")
    lost = summary.get("lost")
    detail = (
        f"p50 {_fmt(_median(summary, 'latency_p50_ms'), ' ms', 1)}, p99.9 "
        f"{_fmt(_median(summary, 'latency_p999_ms'), ' ms', 1)}; rate held "
        f"{_fmt(_median(summary, 'achieved_rate'), '/s')}; lost {lost}; server CPU/wall "
        f"{_fmt(_median(summary, 'server_cpu_per_wall'), '', 2)}; {summary.get('runs')} runs"
    )
    return [
        Row(
            outcome.scenario.key,
            "publish→receive p99 ≤ 10 ms at 1,000 msgs/s, whole secured path",
            f"p99 {_fmt(p99, ' ms', 1)}{_spread(summary, 'latency_p99_ms', ' ms')}",
            _met(p99, 10, at_least=False) if lost == 0 else False,
            detail,
        )
    ]


def breakdown_rows(outcome: Outcome) -> list[Row]:
    """One row: where a signed publish's server CPU goes, biggest stages first."""
    found = (outcome.results or {}).get("breakdown") or {}
    stages = found.get("stages") or {}
    parts = sorted(
        (
            (name, float(s["us_per_publish"]))
            for name, s in stages.items()
            if isinstance(s, dict) and _num(s.get("us_per_publish"))
        ),
        key=lambda item: -item[1],
    )
    text = ", ".join(f"{name} {us:,.0f}" for name, us in parts[:7])
    total = _num(found.get("server_cpu_us_per_publish"))
    return [
        Row(
            outcome.scenario.key,
            "cost per stage of a signed publish (no target)",
            f"{_fmt(total, ' µs')} server CPU per publish",
            None,
            f"µs per publish: {text}" if text else "",
        )
    ]


def summary_rows(suite: Suite) -> list[Row]:
    rows: list[Row] = []
    for outcome in suite.outcomes:
        key = outcome.scenario.key
        if outcome.results is None:
            rows.append(Row(key, outcome.scenario.title, "—", None, outcome.note or "failed"))
            continue
        if key == "publish-single":
            rows += publish_rows(outcome, "ed25519", "Ed25519 signatures, SQLite", 3000)
            rows += publish_rows(outcome, "hmac", "HMAC signatures, SQLite", 5000)
            rows += publish_rows(
                outcome, "ed25519-workers", "Ed25519, 2 workers + Redis, SQLite", 3000
            )
            rows += publish_rows(outcome, "hmac-workers", "HMAC, 2 workers + Redis, SQLite", 5000)
        elif key == "publish-batch-100":
            rows += publish_rows(outcome, "ed25519", "batch of 100", 30000)
            rows[-1].met = None  # the target is for batches of 1,000
            rows[-1].target = "batch of 100 (no target; see 1,000)"
        elif key == "publish-batch-1000":
            rows += publish_rows(outcome, "ed25519", "batch of 1,000", 30000)
        elif key == "latency":
            rows += latency_rows(outcome)
        elif key == "fan-out":
            rows += fanout_rows(outcome)
        elif key == "breakdown":
            rows += breakdown_rows(outcome)
        if outcome.note:
            rows[-1].detail += f" ({outcome.note})"
    return rows


def markdown(rows: list[Row], facts: dict[str, Any], stamp: str) -> str:
    mark = {True: "met", False: "**not met**", None: "—"}
    lines = [
        (
            f"Measured {stamp} by `make bench` on {facts.get('cpu_count')} cores, "
            f"{facts.get('platform', platform.platform())}, Python {facts.get('python')}."
        ),
        "",
        "| scenario | target | measured | status | notes |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        cells = [row.scenario, row.target, row.measured, mark[row.met], row.detail]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.suite", description=__doc__.split("\n\n", 1)[0]
    )
    parser.add_argument("--quick", action="store_true", help="smoke test of every scenario")
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated scenarios: " + ", ".join(s.key for s in SCENARIOS),
    )
    args = parser.parse_args(argv)
    wanted = [k.strip() for k in args.only.split(",") if k.strip()]
    unknown = set(wanted) - {s.key for s in SCENARIOS}
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    args.scenarios = [s for s in SCENARIOS if not wanted or s.key in wanted]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, raise_keyboard_interrupt)
    suite = Suite(args)
    stamp = results_stamp(datetime.now(UTC))
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    log = RESULTS_DIR / f"suite-{stamp}.log"
    started = time.monotonic()
    interrupted = False
    try:
        for scenario in args.scenarios:
            suite.outcomes.append(run_scenario(scenario, quick=args.quick, log=log))
    except KeyboardInterrupt:
        interrupted = True
    facts = machine_facts()
    rows = summary_rows(suite)
    table = markdown(rows, facts, stamp)
    elapsed = time.monotonic() - started
    print(f"\n=== summary ({elapsed / 60:.1f} min{', interrupted' if interrupted else ''})")
    print(table)
    base = RESULTS_DIR / f"suite-{stamp}"
    base.with_suffix(".md").write_text(table)
    payload = {
        "benchmark": "suite",
        "finished_at": datetime.now(UTC).isoformat(),
        "quick": args.quick,
        "elapsed_s": round(elapsed, 1),
        "interrupted": interrupted,
        "machine": facts,
        "load_average": os.getloadavg(),
        "scenarios": [
            {
                "key": o.scenario.key,
                "exit_code": o.exit_code,
                "seconds": round(o.seconds, 1),
                "results": o.results_path,
                "note": o.note,
            }
            for o in suite.outcomes
        ],
        "rows": [vars(r) for r in rows],
    }
    base.with_suffix(".json").write_text(json.dumps(payload, indent=2) + "\n")
    print(f"results: {base.with_suffix('.json')}")
    failed = interrupted or any(o.results is None for o in suite.outcomes)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
