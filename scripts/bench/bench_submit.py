"""Accepted job submissions per second on one gateway process, beside Slurm's `sbatch` on this machine, same run.

One centre's gateway runs in its own process (`submit_server.py`: uvicorn in the
foreground as `xcentre gateway` runs it, on anvil and a real slapd per centre
when they are installed); this process is the crowd: users signed on with
their password beforehand, each job's order signed and its grant taken from the
home beforehand (what a client does before it submits), then 8, 16 and 32
clients (a minimal asyncio HTTP/1.1 client; once more with httpx at 32) POST
/v1/jobs with an Idempotency-Key each. A
submission counts when the gateway answers 202: the job and its policy
decision are committed (SQLite WAL, synchronous=FULL) before the answer. Beside
it, the same concurrencies of `sbatch --hold` on a real single-node Slurm
(tests/fixtures/slurm.py: munged, slurmctld, slurmd, as root), whose answer
likewise means the job is in slurmctld's state. First, the same levels against
the gateway of the code before the throughput work (`--before REV`, a `git
archive` of it served by its own submit_server.py). The same requests' bytes
to the framework alone (`submit_floor.py`: the same server stack, an endpoint
shaped as POST /v1/jobs that does nothing), the floor under any gateway on it.
Then SQLite alone on the same disk (`submit_sqlite.py`) and the server side of
one submission stage by stage (`submit_profile.py`: one client, then 32).

    .venv/bin/python scripts/bench/bench_submit.py [--quick] [--cprofile OUT.pstats] [--before REV | --no-before]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx  # noqa: E402
import submit_sqlite  # noqa: E402
from common import SUBMIT_ACCEPTED_32, SUBMIT_P99_32, Result, print_results, rate  # noqa: E402
from eth_account import Account  # noqa: E402

from gateway.client.http import GatewayClient, GatewayUnreachable  # noqa: E402
from gateway.client.paying import Quote, pay, signing_domain  # noqa: E402
from gateway.consortium.processes import free_port, stop  # noqa: E402

TITLE = "Job submissions on one gateway process, beside sbatch"
BEFORE = "32437a5"  # the last commit before the throughput work: its gateway is measured in the same run
ABOUT = (
    "One gateway (uvicorn, one process, as `xcentre gateway` serves it; anvil and one OpenLDAP slapd per "
    "centre when installed) with 64 users signed on with their password beforehand; each job's order is "
    "signed and its grant taken at the home before the timed phase, as a client does before it submits. "
    "8, 16 and 32 concurrent clients (a minimal asyncio HTTP/1.1 client, each request's bytes made before the "
    "clock starts; once more at 32 with httpx) POST /v1/jobs with an Idempotency-Key; a submission counts when "
    "answered 202 (job and decision committed, WAL, synchronous=FULL). Jobs are held (the executor runs none) "
    "so no sandbox competes for the cores. The "
    "peer is `sbatch --hold` at the same concurrency on a real single-node Slurm (munged, slurmctld, "
    "slurmd) started for the run: an accepted job is in slurmctld's state. Latencies are per request, as "
    "each client sees it. The same levels against the gateway of the code before the throughput work (commit "
    f"{BEFORE}, 'before' rows), in the same run. The same requests to the framework alone (the same server "
    "stack, an endpoint that parses them and does nothing: 'framework alone' rows). Then: SQLite alone on "
    "the same disk (1, 8 and 32 jobs per COMMIT); the server side of a submission stage by stage (one "
    "client; the rows below)."
)

SERVER = Path(__file__).with_name("submit_server.py")
FLOOR = Path(__file__).with_name("submit_floor.py")
FLOOR_SERVER = "empty endpoint's server"
LEVELS = (8, 16, 32)
TARGET_IDS = (SUBMIT_ACCEPTED_32, SUBMIT_P99_32)  # what run_all's targets read: made by _results for 32 clients
USERS = 64
JOB = {"command": ["true"], "walltime": 60, "resources": {"cores": 1, "memory_mib": 256}, "centre": "hpc-a"}
SBATCH_SCRIPT = "#!/bin/sh\ntrue\n"


@dataclass
class Load:
    """One phase's outcome: seconds for the whole batch, each request's latency, how many of each status."""

    seconds: float
    latencies: list[float]
    statuses: dict[int | str, int] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)
    machine: float | None = None  # the share of all the machine's CPUs busy meanwhile (every process)

    @property
    def accepted(self) -> int:
        return sum(n for s, n in self.statuses.items() if s in (0, 202))

    def quantile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _results(kind: str, c: int, load: Load, peer: str | None, note: str) -> list[Result]:
    rid = f"submit.{kind}.c{c}"
    what = {
        "gateway": "gateway POST /v1/jobs",
        "before": "gateway before the throughput work",
        "floor": "the framework alone (an endpoint that does nothing)",
    }.get(kind, "sbatch --hold")
    case = f"{c} clients"
    out = [
        rate(
            rid,
            case,
            f"{what}: accepted",
            max(load.accepted, 1),
            load.seconds,
            peer=peer and f"submit.{peer}.c{c}",
            note=note,
        )
    ]
    for q, label in ((0.5, "p50"), (0.99, "p99")):
        out.append(
            Result(
                f"{rid}.{label}",
                case,
                f"{what}: latency {label}",
                load.quantile(q) * 1000,
                runs=len(load.latencies),
                peer=peer and f"submit.{peer}.c{c}.{label}",
            )
        )
    return out


# --- the gateway ---------------------------------------------------------------


@contextmanager
def gateway_server(users: int, root: Path = ROOT) -> Iterator[dict]:
    """submit_server.py of the code at `root` in its own process; its JSON line once it answers."""
    server = subprocess.Popen(
        [sys.executable, str(root / SERVER.relative_to(ROOT)), "--users", str(users)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=root,
        env=os.environ | {"PYTHONPATH": str(root)},  # its own packages, not this checkout's
    )
    try:
        line = server.stdout.readline() if server.stdout else ""
        if not line:
            raise RuntimeError(f"submit_server.py exited ({server.wait()}) before serving")
        info = json.loads(line)
        _wait_until_served(info["url"], server)
        yield info
    finally:
        stop(server.pid, timeout=60)


@contextmanager
def floor_server() -> Iterator[str]:
    """submit_floor.py (the server stack with an endpoint that does nothing) in its own process; its URL."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="xcentre-bench-floor-") as tmp:
        server = subprocess.Popen(
            [sys.executable, str(FLOOR), str(port), str(Path(tmp) / "access.log")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_until_served(url, server)
            yield url
        finally:
            stop(server.pid, timeout=60)


def _wait_until_served(url: str, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(url + "/v1/members", timeout=2).raise_for_status()
            return
        except httpx.HTTPError:
            if time.monotonic() > deadline or server.poll() is not None:
                raise
            time.sleep(0.1)


@dataclass
class Crowd:
    """The users' sessions and what their orders need."""

    url: str
    clients: list[GatewayClient]
    quote: Quote
    domain: object

    def close(self) -> None:
        for c in self.clients:
            c.close()


def sign_on(info: dict, job: dict = JOB) -> Crowd:
    clients = []
    for user in info["users"]:
        client = GatewayClient(info["url"])
        client.login(user["username"], user["password"])
        clients.append(client)
    quoted = clients[0].quote(job)
    quote = Quote(info["centre"], quoted["rates_version"], quoted["max_price"])
    return Crowd(info["url"], clients, quote, signing_domain(clients[0].consortium()))


def prepare(crowd: Crowd, count: int, whole: dict = JOB) -> list[tuple[str, dict, str]]:
    """`count` submissions of `whole` (the quoted job), users in turn: (token, body, idempotency key), each with
    its order signed by a fresh account and its grant from the home (a hold), as a client makes them before
    submitting."""
    job = {k: v for k, v in whole.items() if k != "centre"}

    def one(i: int) -> tuple[str, dict, str]:
        client = crowd.clients[i % len(crowd.clients)]
        try:
            paid = pay(job, crowd.quote, Account.create(), client.grant, crowd.domain)  # type: ignore[arg-type]
        except GatewayUnreachable:  # a keep-alive connection the server closed as it was reused: once more
            paid = pay(job, crowd.quote, Account.create(), client.grant, crowd.domain)  # type: ignore[arg-type]
        return client.token or "", whole | paid.fields(), str(uuid.uuid4())

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(count)))


def _server_cpu(url: str) -> dict[str, float]:
    return httpx.get(url + "/_bench/cpu", timeout=10).json()


async def _post_all(url: str, items: list[tuple[str, dict, str]], clients: int) -> Load:
    queue = list(reversed(items))
    latencies: list[float] = []
    statuses: dict[int | str, int] = {}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:

        async def client() -> None:
            while queue:
                token, body, key = queue.pop()
                headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": key}
                start = time.perf_counter()
                try:
                    response = await http.post("/v1/jobs", json=body, headers=headers)
                    status: int | str = response.status_code
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                latencies.append(time.perf_counter() - start)
                statuses[status] = statuses.get(status, 0) + 1

        start = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        seconds = time.perf_counter() - start
    return Load(seconds, latencies, statuses)


async def _post_raw(url: str, items: list[tuple[str, dict, str]], clients: int) -> Load:
    """The same requests from a minimal HTTP/1.1 client: each request's bytes made before the clock starts,
    one keep-alive connection per client, the answer read by its Content-Length. httpx costs 2-3 ms of CPU
    per request here, a quarter to a third of what the gateway spends, on the same two cores; this, a tenth."""
    host, port = url.removeprefix("http://").split(":")
    queue = [
        (
            f"POST /v1/jobs HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {token}\r\n"
            f"Idempotency-Key: {key}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data := json.dumps(body).encode())}\r\n\r\n"
        ).encode()
        + data
        for token, body, key in reversed(items)
    ]
    latencies: list[float] = []
    statuses: dict[int | str, int] = {}
    connections = [await asyncio.open_connection(host, int(port)) for _ in range(clients)]

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while queue:
            request = queue.pop()
            start = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - start)
            status = int(head[9:12])
            statuses[status] = statuses.get(status, 0) + 1

    start = time.perf_counter()
    await asyncio.gather(*(client(r, w) for r, w in connections))
    seconds = time.perf_counter() - start
    for _, writer in connections:
        writer.close()
    return Load(seconds, latencies, statuses)


def _machine_busy() -> tuple[float, float]:
    """(busy CPU seconds of the whole machine so far, now): from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK"), time.monotonic()


def _machine_share(before: tuple[float, float]) -> float:
    busy, at = _machine_busy()
    return (busy - before[0]) / ((at - before[1]) * (os.cpu_count() or 1))


def load_gateway(
    url: str, items: list[tuple[str, dict, str]], clients: int, raw: bool = True, server: str = "gateway"
) -> Load:
    before, own, machine = _server_cpu(url), os.times(), _machine_busy()
    load = asyncio.run((_post_raw if raw else _post_all)(url, items, clients))
    after, own_after = _server_cpu(url), os.times()
    load.machine = _machine_share(machine)
    load.cpu = {
        server: (after["user"] + after["system"]) - (before["user"] + before["system"]),
        "clients": (own_after.user + own_after.system) - (own.user + own.system),
    }
    return load


def _note(load: Load) -> str:
    other = {s: n for s, n in load.statuses.items() if s not in (0, 202)}
    cpu = load.cpu
    text = f"{load.accepted} accepted in {load.seconds:.2f} s"
    if cpu:
        text += "; CPU: " + ", ".join(f"{who} {spent / load.seconds:.0%} of a core" for who, spent in cpu.items())
    if load.machine is not None:
        text += f"; the machine's {os.cpu_count()} CPUs {load.machine:.0%} busy (every process)"
    if other:
        text += f"; not accepted: {other}"
    return text


def _floor_note(floor: Load, gateway: Load) -> str:
    """The floor's CPU per request beside the gateway's per accepted submission: the framework's share."""
    text = _note(floor)
    if floor.cpu and gateway.cpu and floor.accepted and gateway.accepted:
        under = floor.cpu[FLOOR_SERVER] / floor.accepted * 1000
        whole = gateway.cpu["gateway"] / gateway.accepted * 1000
        text += f"; server CPU {under:.2f} ms a request against the gateway's {whole:.2f} ms ({under / whole:.0%})"
    return text


def stage_profile(url: str, items: list[tuple[str, dict, str]], clients: int) -> tuple[Load, dict]:
    httpx.post(url + "/_bench/stages/on", timeout=10).raise_for_status()
    try:
        load = asyncio.run(_post_all(url, items, clients))
    finally:
        stages = httpx.post(url + "/_bench/stages/off", timeout=10).json()
    return load, stages


def stage_table(stages: dict, accepted: int) -> list[tuple[str, float, float, int]]:
    """(stage, wall ms and CPU ms per accepted submission, calls), in the order the stages are first left."""
    n = max(accepted, 1)
    return [(name, s["seconds"] * 1000 / n, s["cpu"] * 1000 / n, s["calls"]) for name, s in stages.items()]


def cprofile(url: str, items: list[tuple[str, dict, str]], clients: int, out: Path) -> Load:
    httpx.post(url + "/_bench/cprofile/start", timeout=10).raise_for_status()
    try:
        load = asyncio.run(_post_all(url, items, clients))
    finally:
        path = httpx.post(url + "/_bench/cprofile/stop", timeout=60).json()["path"]
        shutil.copy(path, out)
    return load


@contextmanager
def code_at(rev: str) -> Iterator[Path]:
    """The project's files at git revision `rev` in a temporary folder (the Node tools shared with this one)."""
    with tempfile.TemporaryDirectory(prefix="xcentre-bench-before-") as tmp:
        root = Path(tmp)
        archive = subprocess.run(["git", "archive", rev], cwd=ROOT, check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        (root / "contracts" / "node_modules").symlink_to(ROOT / "contracts" / "node_modules")
        yield root


def load_levels(root: Path, count: int, warm: int) -> dict[int, Load]:
    """The gateway of the code at `root` at each level of clients."""
    with gateway_server(USERS, root) as info:
        crowd = sign_on(info)
        try:
            asyncio.run(_post_all(info["url"], prepare(crowd, warm), 8))  # warm-up: caches, connections
            return {c: load_gateway(info["url"], prepare(crowd, count), c) for c in LEVELS}
        finally:
            crowd.close()


# --- Slurm ---------------------------------------------------------------------


@contextmanager
def slurm_cluster() -> Iterator[object]:
    from tests.fixtures.slurm import missing, start_slurm

    absent = missing()
    if absent:
        raise RuntimeError(f"Slurm is not installed ({', '.join(absent)}): `make system-deps`")
    if os.geteuid() != 0:
        raise RuntimeError("the single-node Slurm needs root (slurmd starts jobs as their user)")
    with tempfile.TemporaryDirectory(prefix="xcentre-bench-slurm-") as tmp:
        cluster = start_slurm(Path(tmp) / "cluster")
        try:
            yield cluster
        finally:
            cluster.stop()


async def _sbatch_all(cluster: object, count: int, clients: int) -> Load:
    sbatch = shutil.which("sbatch", path="/usr/bin:/usr/sbin") or "sbatch"
    env = cluster.env  # type: ignore[attr-defined]
    argv = [sbatch, "--hold", "--parsable", "-J", "bench", "-o", "/dev/null", "-c", "1", "--mem=256M", "-t", "1"]
    remaining = [count]
    latencies: list[float] = []
    statuses: dict[int | str, int] = {}

    async def client() -> None:
        while remaining[0] > 0:
            remaining[0] -= 1
            start = time.perf_counter()
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
            )
            out, _ = await process.communicate(SBATCH_SCRIPT.encode())
            latencies.append(time.perf_counter() - start)
            status: int | str = process.returncode if out.strip() else "no job id"
            statuses[status] = statuses.get(status, 0) + 1

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return Load(time.perf_counter() - start, latencies, statuses)


def load_sbatch(cluster: object, count: int, clients: int) -> Load:
    own, machine = os.times(), _machine_busy()
    load = asyncio.run(_sbatch_all(cluster, count, clients))
    after = os.times()
    load.machine = _machine_share(machine)
    load.cpu = {}
    spent = (after.children_user + after.children_system) - (own.children_user + own.children_system)
    load.statuses = dict(load.statuses)
    cluster.command("scancel", "-u", "root", check=False)  # type: ignore[attr-defined]
    deadline = time.monotonic() + 30
    while cluster.queued() and time.monotonic() < deadline:  # type: ignore[attr-defined]
        time.sleep(0.2)
    load.cpu = {"sbatch processes": spent}  # slurmctld's and munged's own are in the machine's share
    return load


def sbatch_levels(count: int, warm: int) -> dict[int, Load]:
    """`count` jobs of `sbatch --hold` at each level of LEVELS, on a single-node Slurm started for them."""
    with slurm_cluster() as cluster:
        load_sbatch(cluster, warm, 8)  # warm-up
        return {c: load_sbatch(cluster, count, c) for c in LEVELS}


# --- the run -------------------------------------------------------------------


@dataclass
class Profile:
    """The stage tables of the run, for the report (bench_submit.py prints them)."""

    serial: list[tuple[str, float, float, int]] = field(default_factory=list)
    serial_load: Load | None = None
    loaded: list[tuple[str, float, float, int]] = field(default_factory=list)
    loaded_load: Load | None = None


PROFILE = Profile()


def run(quick: bool = False, cprofile_out: Path | None = None, before: str | None = BEFORE) -> list[Result]:
    count, warm, serial = (150, 32, 60) if quick else (800, 64, 200)
    gateway: dict[int, Load] = {}
    earlier: dict[int, Load] = {}
    if before:
        with code_at(before) as root:
            earlier = load_levels(root, count, warm)
    with gateway_server(USERS) as info:
        crowd = sign_on(info)
        try:
            url = info["url"]
            asyncio.run(_post_all(url, prepare(crowd, warm), 8))  # warm-up: caches, connections
            batches = {c: prepare(crowd, count) for c in LEVELS}
            for c in LEVELS:
                gateway[c] = load_gateway(url, batches[c], c)
            with_httpx = load_gateway(url, prepare(crowd, count), 32, raw=False)
            PROFILE.serial_load, stages = stage_profile(url, prepare(crowd, serial), 1)
            PROFILE.serial = stage_table(stages, PROFILE.serial_load.accepted)
            PROFILE.loaded_load, stages = stage_profile(url, prepare(crowd, count), 32)
            PROFILE.loaded = stage_table(stages, PROFILE.loaded_load.accepted)
            if cprofile_out is not None:
                cprofile(url, prepare(crowd, count // 2), 32, cprofile_out)
        finally:
            crowd.close()
    with floor_server() as url:  # the same requests' bytes, to an endpoint that does nothing with them
        load_gateway(url, batches[LEVELS[0]][:warm], 8, server=FLOOR_SERVER)
        floor = {c: load_gateway(url, batches[c], c, server=FLOOR_SERVER) for c in LEVELS}
    sbatch = sbatch_levels(count, warm)
    results: list[Result] = []
    for c in LEVELS:
        results += _results("sbatch", c, sbatch[c], None, _note(sbatch[c]))
    for c in LEVELS:
        results += _results("gateway", c, gateway[c], "sbatch", _note(gateway[c]))
    for c in LEVELS:
        results += _results("floor", c, floor[c], "gateway", _floor_note(floor[c], gateway[c]))
    for c in earlier:
        results += _results("before", c, earlier[c], "sbatch", f"the code of {before}: " + _note(earlier[c]))
    results.append(
        rate(
            "submit.gateway.c32.httpx",
            "32 clients",
            "gateway POST /v1/jobs: accepted, clients on httpx",
            max(with_httpx.accepted, 1),
            with_httpx.seconds,
            peer=SUBMIT_ACCEPTED_32,
            note=_note(with_httpx) + f"; p50 {with_httpx.quantile(0.5) * 1000:.0f} ms, "
            f"p99 {with_httpx.quantile(0.99) * 1000:.0f} ms",
        )
    )
    commits = submit_sqlite.measure(1000 if quick else 4000)
    single = "1 per COMMIT, synchronous=FULL"
    for case, (rows, seconds) in commits.items():
        results.append(
            rate(
                f"submit.sqlite.{case.split(',')[0].replace(' ', '_')}.{case.split('=')[1].lower()}",
                "SQLite alone, this disk",
                f"job + decision rows, {case}",
                rows,
                seconds,
                peer=None if case == single else "submit.sqlite.1_per_COMMIT.full",
                note=f"{seconds / rows * 1000:.3f} ms per job",
            )
        )
    serial_load = PROFILE.serial_load
    if serial_load is not None:
        for name, ms, cpu, calls in PROFILE.serial:
            results.append(
                Result(
                    f"submit.stage.{name.strip().split(' (')[0].replace(' ', '_')}",
                    "1 client, server side, per accepted submission",
                    name.strip(),
                    ms,
                    runs=calls,
                    note=f"CPU {cpu:.3f} ms",
                )
            )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="150 submissions a level instead of 800")
    parser.add_argument("--cprofile", type=Path, metavar="OUT", help="write a cProfile of 32 clients' load")
    parser.add_argument(
        "--before", default=BEFORE, metavar="REV", help=f"git revision measured beside this code (default {BEFORE})"
    )
    parser.add_argument("--no-before", dest="before", action="store_const", const=None, help="measure no revision")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()}", flush=True)
    results = run(quick=args.quick, cprofile_out=args.cprofile, before=args.before)
    print(f"load average after: {os.getloadavg()}")
    print_results(results)
    for r in results:
        if r.note:
            print(f"{r.id}: {r.note}")
    for title, table, load in (
        ("1 client", PROFILE.serial, PROFILE.serial_load),
        ("32 clients", PROFILE.loaded, PROFILE.loaded_load),
    ):
        if load is None:
            continue
        print(
            f"\nserver-side stages, {title}: {load.accepted} accepted in {load.seconds:.2f} s, "
            f"client p50 {load.quantile(0.5) * 1000:.1f} ms (wall ms, CPU ms per accepted submission)"
        )
        for name, ms, cpu, calls in table:
            print(f"  {name:<70}{ms:9.3f}{cpu:9.3f}  ({calls} calls)")


if __name__ == "__main__":
    main()
