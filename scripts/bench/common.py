"""Shared helpers of the benchmarks: timing, the result record, Markdown tables.

Every ``scripts/bench/bench_*.py`` module exposes ``run(quick: bool = False) ->
list[Result]`` and may set ``TITLE`` (a heading) and ``ABOUT`` (a Markdown
paragraph: what is measured, against which peer). ``run_all.py`` imports each
module, runs it in the same process and writes docs/PERFORMANCE.md.

Result ids are stable strings (``"bbs.sha256.L10.proof_verify"``) because the
targets and the cross-benchmark comparisons in run_all.py look results up by id.
A result may name its ``peer``: the id of another result of the same run; its
ratio is ``value / peer value`` (for times: how many peers one operation costs).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Ids that run_all.py's targets read. bench_signon.py should report its
# throughput under SIGNON_ID, unit "/s".
BBS_PROOF_VERIFY_10 = "bbs.sha256.L10.proof_verify"
ANONCREDS_VERIFY = "anoncreds.verify"
SIGNON_ID = "signon.per_process"
# bench_payment_gas.py: honest-path gas per job, and the larger of the two dispute answers.
PAYMENT_GAS_PER_JOB = "payment.honest.gas_per_job"
PAYMENT_ANSWER_MAX = "payment.dispute.answer_max"
# bench_decisions.py: re-evaluating 100,000 logged decisions (ms for all of them).
DECISIONS_REEVALUATE = "decisions.reevaluate"
# bench_decisions.py: a client's submission with and without the decision log, and committing it per job (ms).
DECISIONS_SUBMIT_WITH = "decisions.submit.with_log"
DECISIONS_SUBMIT_WITHOUT = "decisions.submit.without_log"
DECISIONS_COMMIT = "decisions.commit.per_job"
# bench_group's ids (its module imports them from here, like the others)
GROUP_SIGN = "group.sign"
GROUP_VERIFY = "group.verify"
GROUP_SHARE = "group.share"
GROUP_COMBINE = "group.combine3"
GROUP_DKG = "group.dkg.n5t3"
# bench_audit.py: a 1,000,000-record epoch's records audit, fast path (ms for the epoch) and the naive path
AUDIT_FAST = "audit.records.fast"
AUDIT_NAIVE = "audit.records.naive"
# bench_submit.py: accepted job submissions per second on one gateway process with 32 clients, and their p99 (ms)
SUBMIT_ACCEPTED_32 = "submit.gateway.c32"
SUBMIT_P99_32 = "submit.gateway.c32.p99"
# bench_settlement_gas.py: gas of Settlement.settle, 100 members each claiming on every other
SETTLE_GAS_100 = "settlement.settle.gas.n100"


@dataclass(frozen=True)
class Timing:
    """Distribution of one operation's wall times, in seconds."""

    median: float
    p25: float
    p75: float
    runs: int


@dataclass(frozen=True)
class Result:
    """One measured figure: a median time in ms, or a rate (unit "/s")."""

    id: str
    case: str
    operation: str
    value: float
    unit: str = "ms"
    runs: int = 1
    spread: str = ""  # e.g. "2.05–2.16" (interquartile range), "" when not applicable
    peer: str | None = None
    note: str = ""

    @classmethod
    def from_timing(
        cls, id: str, case: str, operation: str, timing: Timing, *, peer: str | None = None, note: str = ""
    ) -> Result:
        """A median-time result; the spread column shows the interquartile range in ms."""
        return cls(
            id=id,
            case=case,
            operation=operation,
            value=timing.median * 1000,
            unit="ms",
            runs=timing.runs,
            spread=f"{timing.p25 * 1000:.3f}–{timing.p75 * 1000:.3f}",
            peer=peer,
            note=note,
        )


def rate(
    id: str, case: str, operation: str, count: int, seconds: float, *, peer: str | None = None, note: str = ""
) -> Result:
    """A throughput result (unit "/s"): ``count`` operations completed in ``seconds``."""
    if count < 1 or seconds <= 0:
        raise ValueError("a rate needs at least one operation and a positive duration")
    return Result(
        id=id, case=case, operation=operation, value=count / seconds, unit="/s", runs=count, peer=peer, note=note
    )


def measure(fn: Callable[[], object], runs: int, warmup: int = 3) -> Timing:
    """Time ``fn`` ``runs`` times after ``warmup`` untimed calls.

    The garbage collector is paused during the timed calls (as ``timeit`` does)
    so that a collection triggered by one benchmark is not billed to another.
    """
    if runs < 1:
        raise ValueError("runs must be at least 1")
    for _ in range(warmup):
        fn()
    samples: list[float] = []
    gc_was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        for _ in range(runs):
            start = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - start)
    finally:
        if gc_was_enabled:
            gc.enable()
    if len(samples) >= 2:
        q = statistics.quantiles(samples, n=4, method="inclusive")
        p25, p75 = q[0], q[2]
    else:
        p25 = p75 = samples[0]
    return Timing(median=statistics.median(samples), p25=p25, p75=p75, runs=runs)


def _threads() -> list[int]:
    """Thread ids of this process (Linux: /proc/self/task)."""
    try:
        return [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        return [0]


def _per_cpu_busy() -> dict[int, int]:
    """Busy jiffies per CPU from /proc/stat (empty where unavailable)."""
    busy: dict[int, int] = {}
    try:
        for line in open("/proc/stat").read().splitlines():
            name, *fields = line.split()
            if name.startswith("cpu") and name[3:].isdigit():
                f = [int(x) for x in fields]
                busy[int(name[3:])] = sum(f[:8]) - f[3] - (f[4] if len(f) > 4 else 0)
    except (OSError, ValueError):
        pass
    return busy


def _least_busy(cpus: set[int], window_s: float = 0.2) -> int:
    """The CPU of ``cpus`` that other work used least over a short window.

    On a shared machine, pinning to a CPU someone else is saturating would
    bill their load to the benchmark.
    """
    a = _per_cpu_busy()
    time.sleep(window_s)
    b = _per_cpu_busy()
    return min(sorted(cpus), key=lambda c: b.get(c, 0) - a.get(c, 0))


@contextmanager
def one_core() -> Iterator[bool]:
    """Pin this process, every thread of it, to one CPU; yields False where impossible.

    Lets a benchmark show what a multi-threaded operation costs without its
    second core, so a comparison with a single-threaded peer is like for like.
    On Linux an affinity belongs to a thread, so each existing thread is pinned
    (threads started meanwhile inherit the pinning) and all are restored after.
    """
    if not hasattr(os, "sched_setaffinity"):
        yield False
        return
    before = os.sched_getaffinity(0)
    if len(before) < 2:
        yield False
        return
    cpu = {_least_busy(before)}
    for tid in _threads():
        try:
            os.sched_setaffinity(tid, cpu)
        except OSError:
            pass  # the thread ended meanwhile
    try:
        yield True
    finally:
        for tid in _threads():
            try:
                os.sched_setaffinity(tid, before)
            except OSError:
                pass


def ratio(results: dict[str, Result], numerator: str, denominator: str) -> float | None:
    """``numerator value / denominator value`` when both are in this run."""
    a, b = results.get(numerator), results.get(denominator)
    if a is None or b is None or b.value == 0:
        return None
    return a.value / b.value


def fmt_value(value: float, unit: str) -> str:
    """3 decimals for ms, whole numbers for rates."""
    return f"{value:.3f}" if unit == "ms" else f"{value:.0f}"


def markdown_table(headers: list[str], rows: list[list[str]], align: str | None = None) -> str:
    """A GitHub Markdown table; ``align`` is one of l/r per column (default: l)."""
    align = align or "l" * len(headers)
    sep = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(sep) + " |"]
    for row in rows:
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
    return "\n".join(lines)


def results_table(results: list[Result], everything: dict[str, Result]) -> str:
    """The table of one benchmark; peers are resolved against the whole run."""
    rows = []
    for r in results:
        peer = everything.get(r.peer) if r.peer else None
        if r.peer and peer is None:
            peer_cell, peer_value, ratio_cell = f"`{r.peer}` (not measured)", "—", "—"
        elif peer is None:
            peer_cell, peer_value, ratio_cell = "—", "—", "—"
        else:
            peer_cell = f"{peer.case}: {peer.operation}"
            peer_value = f"{fmt_value(peer.value, peer.unit)} {peer.unit}"
            ratio_cell = f"{r.value / peer.value:.2f}×" if peer.value else "—"
        rows.append(
            [
                r.case,
                r.operation,
                f"{fmt_value(r.value, r.unit)} {r.unit}",
                r.spread or "—",
                str(r.runs),
                peer_cell,
                peer_value,
                ratio_cell,
                r.note,
            ]
        )
    return markdown_table(
        [
            "case",
            "operation",
            "median or rate",
            "IQR (ms)",
            "runs",
            "peer (same run)",
            "peer median",
            "this / peer",
            "note",
        ],
        rows,
        "llrrrlrrl",
    )


def print_results(results: list[Result]) -> None:
    """Plain-text output for running one bench module on its own."""
    by_id = {r.id: r for r in results}
    for r in results:
        peer = by_id.get(r.peer) if r.peer else None
        extra = f"  {r.value / peer.value:6.2f}x {peer.operation}" if peer and peer.value else ""
        print(f"{r.case:<42}{r.operation:<32}{fmt_value(r.value, r.unit):>10} {r.unit:<3}{extra}")


def run_alone(run: Callable[..., list[Result]], doc: str | None) -> None:
    """A bench module run on its own: `--quick` (and `--help`) parsed, its figures and their notes printed."""
    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run (fewer records, calls or jobs)")
    args = parser.parse_args()
    results = run(quick=args.quick)
    print_results(results)
    for r in results:
        if r.note:
            print(f"{r.id}: {r.note}")


def solc_compile(sources: dict[str, str], what: str) -> dict[str, dict[str, dict[str, Any]]]:
    """ABI and bytecode of every contract in `sources` (path -> Solidity text), compiled in memory by the
    project's solcjs (scripts/solc) with the settings of scripts/compile_contracts.mjs: {path: {name: unit}}."""
    root = Path(__file__).resolve().parents[2]
    request = {
        "language": "Solidity",
        "sources": {path: {"content": text} for path, text in sources.items()},
        "settings": {
            "evmVersion": "cancun",
            "optimizer": {"enabled": True, "runs": 200},
            "outputSelection": {"*": {"*": ["abi", "evm.bytecode.object"]}},
        },
    }
    out = subprocess.run(
        [str(root / "scripts" / "solc"), "--standard-json"],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=root / "contracts",
    )
    if out.returncode != 0:
        raise RuntimeError(f"scripts/solc failed: {out.stderr.strip()}")
    output = json.loads(out.stdout)
    errors = [e["formattedMessage"] for e in output.get("errors", []) if e["severity"] == "error"]
    if errors:
        raise RuntimeError(f"{what} does not compile:\n" + "\n".join(errors))
    return {
        path: {name: {"abi": u["abi"], "bytecode": "0x" + u["evm"]["bytecode"]["object"]} for name, u in units.items()}
        for path, units in output["contracts"].items()
    }
