"""Accepted job submissions per second on one gateway with and without front processes, beside sbatch, same run.

Each configuration is a consortium of real processes (`xcentre consortium up` of a copy of
examples/: one anvil, a slapd and a gateway process per centre) in which hpc-a's gateway runs
with `[server] fronts = N`: 0 is one process serving everything (as `bench_submit.py` measures
it, but started as an operator starts it); with N fronts, the back process serves the rest and
runs the jobs, and N front processes share the port and accept the submissions. The copy gives
hpc-a 64 more users (project `physics`) and credit no run exhausts. The crowd and the load are
`bench_submit.py`'s: users signed on with their password, each job's order signed and its grant
taken at the home before the clock starts, then 8, 16 and 32 clients (a minimal asyncio HTTP/1.1
client) POST /v1/jobs with an Idempotency-Key; a submission counts when answered 202 (the job
and its decision committed, WAL, synchronous=FULL, by whichever process answered). Jobs sleep
and the gateway runs one at a time (`workers = 1`), so the accepted ones wait queued and no
sandbox competes for the cores. The gateway's CPU is the back's and the fronts' together (from
/proc). Each configuration is measured `rounds` times, in turn, as the machine's speed drifts. The peer is
`sbatch --hold` at the same concurrency on a real single-node Slurm.

    .venv/bin/python scripts/bench/bench_fronts.py [--quick] [--fronts 0 2] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import hashlib
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_submit import (  # noqa: E402
    JOB,
    LEVELS,
    Load,
    _machine_busy,
    _machine_share,
    _post_raw,
    _results,
    prepare,
    sbatch_levels,
    sign_on,
)
from common import Result, print_results  # noqa: E402

from gateway.consortium.running import RunningConsortium  # noqa: E402
from tests.fixtures.fronts import children  # noqa: E402

EXAMPLES = ROOT / "examples"
USERS = 64
CREDIT = 10**15  # each member's collateral and hpc-a's project allocation: no run exhausts them
#: The job: it sleeps, and one runs at a time, so the others wait queued (held, as bench_submit holds them).
HELD_JOB = JOB | {"command": ["sleep", "600"], "walltime": 900}


def _ssha(password: str) -> str:
    salt = os.urandom(8)
    return "{SSHA}" + base64.b64encode(hashlib.sha1(password.encode() + salt).digest() + salt).decode()


def consortium_copy(folder: Path, fronts: int) -> Path:
    """examples/ copied to `folder`, hpc-a with `fronts` fronts, one job at a time, USERS more users, much credit."""
    examples = folder / "examples"
    shutil.copytree(EXAMPLES, examples)
    members = examples / "consortium.toml"
    members.write_text(re.sub(r"(?m)^initial_credit = .*$", f"initial_credit = {CREDIT}", members.read_text()))
    config = examples / "hpc-a" / "gateway.toml"
    text = re.sub(r"(?m)^physics = .*$", f"physics = {CREDIT}", config.read_text())
    config.write_text(text.replace("\njob_cpus = 4", f"\njob_cpus = 4\nworkers = 1\nserver_fronts = {fronts}", 1))
    ldif = examples / "hpc-a" / "directory.ldif"
    base = "dc=hpc-a,dc=xcentre,dc=org"
    people = "".join(
        f"\ndn: uid=bench{i:02d},ou=people,{base}\nobjectClass: inetOrgPerson\nuid: bench{i:02d}\n"
        f"cn: Bench {i}\nsn: Bench\ndepartmentNumber: physics\nemployeeType: staff\n"
        f"userPassword: {_ssha(f'bench{i:02d}-pw')}\n"
        for i in range(USERS)
    )
    members_of_physics = "".join(f"member: uid=bench{i:02d},ou=people,{base}\n" for i in range(USERS))
    text = ldif.read_text()
    physics = f"dn: cn=physics,ou=groups,{base}\nobjectClass: groupOfNames\ncn: physics\n"
    assert physics in text, "examples/hpc-a/directory.ldif has no physics group as expected"
    ldif.write_text(text.replace(physics, physics + members_of_physics) + people)
    return members


def _cpu_seconds(pid: int) -> float:
    """A process's user + system CPU seconds, 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def gateway(fronts: int) -> Iterator[tuple[dict, list[int]]]:
    """hpc-a's gateway with `fronts` fronts, in a consortium of its own: (info for sign_on, its processes)."""
    with tempfile.TemporaryDirectory(prefix="xcentre-bench-fronts-") as tmp:
        consortium = RunningConsortium.up(consortium_copy(Path(tmp), fronts), Path(tmp) / "run")
        try:
            back = consortium.state.centres["hpc-a"].gateway.pid
            assert back is not None
            processes = [back, *children(back)]
            assert len(processes) == 1 + fronts, processes
            users = [{"username": f"bench{i:02d}", "password": f"bench{i:02d}-pw"} for i in range(USERS)]
            yield {"url": consortium.url("hpc-a"), "users": users, "centre": "hpc-a"}, processes
        finally:
            consortium.down()


def load(url: str, processes: list[int], items: list[tuple[str, dict, str]], clients: int) -> Load:
    before, own, machine = sum(map(_cpu_seconds, processes)), os.times(), _machine_busy()
    result = asyncio.run(_post_raw(url, items, clients))
    after, own_after = sum(map(_cpu_seconds, processes)), os.times()
    result.machine = _machine_share(machine)
    result.cpu = {
        "gateway": after - before,
        "clients": (own_after.user + own_after.system) - (own.user + own.system),
    }
    return result


def note(result: Load) -> str:
    other = {s: n for s, n in result.statuses.items() if s not in (0, 202)}
    text = f"{result.accepted} accepted in {result.seconds:.2f} s"
    text += "; CPU: " + ", ".join(f"{who} {spent / result.seconds:.0%} of a core" for who, spent in result.cpu.items())
    if result.accepted:
        text += f" ({result.cpu['gateway'] / result.accepted * 1000:.2f} ms of gateway CPU a submission)"
    text += f"; the machine's {os.cpu_count()} CPUs {result.machine:.0%} busy"
    return text + (f"; not accepted: {other}" if other else "")


def run(quick: bool = False, fronts: Sequence[int] = (0, 2), rounds: int = 2) -> list[Result]:
    """Each configuration `rounds` times, in turn (0, 1, 2, 0, 1, 2, ...): the machine's speed drifts within a run,
    and a configuration measured once early and once late is compared with the others at both times."""
    count, warm = (150, 32) if quick else (800, 64)
    measured: dict[tuple[int, int], dict[int, Load]] = {}
    for round_ in range(1, rounds + 1):
        for n in fronts:
            with gateway(n) as (info, processes):
                crowd = sign_on(info, HELD_JOB)
                try:
                    asyncio.run(_post_raw(info["url"], prepare(crowd, warm, HELD_JOB), 8))  # warm-up
                    measured[round_, n] = {
                        c: load(info["url"], processes, prepare(crowd, count, HELD_JOB), c) for c in LEVELS
                    }
                finally:
                    crowd.close()
    sbatch = sbatch_levels(count, warm)
    results: list[Result] = []
    for c in LEVELS:
        results += _results("sbatch", c, sbatch[c], None, "")
    for (round_, n), levels in measured.items():
        for c, result in levels.items():
            who = f"gateway, {n} fronts" if n else "gateway, 1 process"
            results += [
                dataclasses.replace(
                    r,
                    id=r.id.replace("submit.gateway", f"fronts.{n}.r{round_}"),
                    operation=r.operation.replace("gateway POST /v1/jobs", f"{who} (round {round_})"),
                )
                for r in _results("gateway", c, result, "sbatch", note(result))
            ]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="150 submissions a level instead of 800")
    parser.add_argument("--fronts", type=int, nargs="+", default=[0, 2], help="front processes to measure")
    parser.add_argument("--rounds", type=int, default=2, help="times each configuration is measured, in turn")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()}", flush=True)
    results = run(args.quick, args.fronts, args.rounds)
    print(f"load average after: {os.getloadavg()}")
    print_results(results)
    for r in results:
        if r.note:
            print(f"{r.id}: {r.note}")


if __name__ == "__main__":
    main()
