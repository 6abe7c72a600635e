"""One centre's gateway, served as `xcentre gateway` serves it, for `bench_submit.py` to load with submissions.

The demo's consortium (three centres) is deployed on a chain — anvil when it is
installed (contracts/node_modules, as the tests use it), else the embedded
chain — with one directory per centre: a real OpenLDAP slapd each when slapd is
installed (tests/fixtures/slapd.py), else the embedded directory. hpc-a gets
`--users` extra people (staff, project `physics`) and allocations no run
exhausts. Once everything is deployed and every index has every key, the other
two gateways are stopped, so this process is one gateway: hpc-a's node,
served by `gateway.api.server.serve` — uvicorn in the foreground with its
access log, the function `xcentre gateway` calls — behind a pass-through ASGI
timer (`submit_profile.RequestTimer`, idle until switched on).

Jobs are held, not run: the node's executor (`HeldExecutor`) keeps each
accepted job waiting, so no job's sandbox competes for the two cores with the
submissions being measured (Slurm's jobs are held too, `sbatch --hold`). The
hand-off to the executor's queue (the node's worker pool) is as in production.

Prints one JSON line (the gateway's URL, the people, what it runs on), then
serves until SIGTERM. `/_bench/...` routes switch the stage timers and the
cProfile of `submit_profile.py` on and off.

    .venv/bin/python scripts/bench/submit_server.py --users 64
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from submit_profile import Instrumented, RequestTimer, Stages, ThreadProfiles  # noqa: E402

from auth.directory import Directory  # noqa: E402
from gateway.api.app import create_app  # noqa: E402
from gateway.api.server import serve  # noqa: E402
from gateway.consortium.anvil import answers, anvil_binary, remove_scratch, start_anvil  # noqa: E402
from gateway.consortium.processes import free_port, stop  # noqa: E402
from gateway.demo.local import ConsortiumSpec, LocalConsortium, demo_spec  # noqa: E402
from gateway.jobs.execution import Capacity, Execution, ExecutorError  # noqa: E402
from gateway.node.centre import CentreNode  # noqa: E402
from gateway.node.config import DirectorySettings  # noqa: E402
from ledger.chain import connect  # noqa: E402

CENTRE = "hpc-a"
PROJECT = "physics"
GROUPS_TTL = DirectorySettings().groups_ttl  # a gateway's default, as `xcentre gateway` builds its directory


class HeldExecutor:
    """Runs no job: each waits here until the server stops, so no job's sandbox competes with the submissions."""

    def __init__(self) -> None:
        self.released = threading.Event()

    def run(self, *args: Any, **kwargs: Any) -> Execution:
        """Whatever the executor interface is asked (argv, walltime, limits, the job's name …): wait, then fail."""
        self.released.wait()
        raise ExecutorError("not run: a benchmark's submission")

    def capacity(self) -> Capacity:
        return Capacity(total_cpus=1024, free_cpus=1024)


@dataclass
class BenchConsortium(LocalConsortium):
    """The demo's consortium with hpc-a's jobs held."""

    executor: HeldExecutor = field(default_factory=HeldExecutor)

    def build_centre(self, name: str, **overrides: Any) -> CentreNode:
        if name == CENTRE:
            overrides = {"executor": self.executor} | overrides
        return super().build_centre(name, **overrides)


def bench_spec(users: int) -> tuple[ConsortiumSpec, list[dict[str, str]]]:
    """The demo's spec, hpc-a with `users` more staff in project physics, and credit nobody exhausts."""
    spec = demo_spec()
    people = [
        {
            "uid": f"bench{i:03d}",
            "password": secrets.token_urlsafe(12),
            "cn": f"Bench User {i}",
            "department": "physics",
            "employeeType": "staff",
        }
        for i in range(users)
    ]
    centres = []
    for c in spec.centres:
        more = {}
        if c.name == CENTRE:
            groups = [
                g | {"members": [*g.get("members", []), *(p["uid"] for p in people)]} if g["cn"] == PROJECT else g
                for g in c.groups
            ]
            more = {"users": [*c.users, *people], "groups": groups}
        centres.append(dataclasses.replace(c, allocations={p: 10**15 for p in c.allocations}, **more))
    spec = dataclasses.replace(spec, initial_credit=10**15, centres=centres)
    return spec, [{"username": p["uid"], "password": p["password"]} for p in people]


class Anvil:
    """anvil on loopback, as tests/fixtures/anvil.py starts it."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        binary = anvil_binary()
        if binary is None:
            raise RuntimeError("anvil is not installed (npm ci in contracts/)")
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        with open(folder / "anvil.log", "wb") as log:
            self.process = start_anvil(binary, port, log, home=folder)  # its scratch states in the run's folder
        deadline = time.monotonic() + 30
        while not answers(self.url):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"anvil did not start: {(folder / 'anvil.log').read_text()[-2000:]}")
            time.sleep(0.05)

    def stop(self) -> None:
        stop(self.process.pid, timeout=10)
        remove_scratch(self.folder)  # gigabytes over a long run, in a --keep folder too


def _directories(spec: ConsortiumSpec, folder: Path, kind: str) -> tuple[dict[str, Directory], list[Any]]:
    """One directory per centre: a real slapd each, or the embedded one; and what to stop at the end."""
    password = secrets.token_urlsafe(16)
    directories, running = {}, []
    for c in spec.centres:
        if kind == "slapd":
            from tests.fixtures.slapd import start_slapd

            slapd = start_slapd(
                folder / f"slapd-{c.name}", c.users, c.groups, base_dn=c.base_dn, service_password=password
            )
            running.append(slapd)
            directories[c.name] = Directory(
                slapd.url, slapd.base_dn, slapd.service_dn, password, centre=c.name, groups_ttl=GROUPS_TTL
            )
        else:
            from auth.ldap_embedded import EmbeddedLdap
            from auth.ldif import centre_ldif, service_dn

            ldap = EmbeddedLdap(centre_ldif(c.base_dn, c.users, c.groups, service_password=password))
            running.append(ldap)
            directories[c.name] = Directory(
                ldap.start(), c.base_dn, service_dn(c.base_dn), password, centre=c.name, groups_ttl=GROUPS_TTL
            )
    return directories, running


def _add_bench_routes(app: Any, node: CentreNode, folder: Path) -> tuple[Stages, Any]:
    """`/_bench/stages/on|off`, `GET /_bench/stages`, `/_bench/cprofile/start|stop`: the benchmark's controls."""
    stages, profiles = Stages(), ThreadProfiles()
    instrumented = Instrumented(node, stages)

    async def stages_on() -> dict:
        stages.snapshot(reset=True)
        instrumented.install()
        return {"on": True}

    async def stages_off() -> dict:
        instrumented.remove()
        return stages.snapshot(reset=True)

    async def cprofile_start() -> dict:
        profiles.start()
        return {"on": True}

    async def cprofile_stop() -> dict:
        path = folder / f"submit-{int(time.time())}.pstats"
        profiles.stop(path)
        return {"path": str(path)}

    async def cpu() -> dict:
        t = os.times()
        return {"user": t.user, "system": t.system}

    for path, fn, methods in (
        ("/_bench/stages/on", stages_on, ["POST"]),
        ("/_bench/stages/off", stages_off, ["POST"]),
        ("/_bench/cprofile/start", cprofile_start, ["POST"]),
        ("/_bench/cprofile/stop", cprofile_stop, ["POST"]),
        ("/_bench/cpu", cpu, ["GET"]),
    ):
        app.add_api_route(path, fn, methods=methods, include_in_schema=False)
    return stages, RequestTimer(app, stages)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=64)
    parser.add_argument("--chain", choices=("auto", "anvil", "embedded"), default="auto")
    parser.add_argument("--directory", choices=("auto", "slapd", "embedded"), default="auto")
    parser.add_argument("--keep", type=Path, help="a folder for the data and logs, kept afterwards")
    args = parser.parse_args()
    chain_kind = args.chain if args.chain != "auto" else ("anvil" if anvil_binary() else "embedded")
    directory_kind = (
        args.directory
        if args.directory != "auto"
        else ("slapd" if shutil.which("slapd") or Path("/usr/sbin/slapd").exists() else "embedded")
    )
    logging.getLogger("gateway").setLevel(logging.ERROR)  # the held jobs failed at the end need no word each
    folder = args.keep or Path(tempfile.mkdtemp(prefix="xcentre-bench-submit-"))
    folder.mkdir(parents=True, exist_ok=True)
    spec, people = bench_spec(args.users)
    anvil = Anvil(folder) if chain_kind == "anvil" else None
    directories, running = _directories(spec, folder, directory_kind)
    consortium = None
    try:
        chain = connect(anvil.url if anvil else "embedded")
        consortium = BenchConsortium(chain, spec, directories, folder / "consortium").start()
        for name in list(consortium.centres):  # this process serves one gateway: hpc-a's
            if name != CENTRE:
                consortium.stop_centre(name)
        centre = consortium.centres[CENTRE]
        node = centre.node
        assert node is not None and centre.server is not None
        port = centre.server.port
        centre.server.stop()  # served again below, in the foreground, as `xcentre gateway` serves it
        app = create_app(node)
        _, timed_app = _add_bench_routes(app, node, folder)
        print(
            json.dumps(
                {
                    "url": f"http://127.0.0.1:{port}",
                    "centre": CENTRE,
                    "project": PROJECT,
                    "users": people,
                    "chain": chain_kind,
                    "directory": directory_kind,
                    "workers": node.parts.workers,
                    "folder": str(folder),
                    "pid": os.getpid(),
                }
            ),
            flush=True,
        )
        log = os.open(folder / "gateway.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(log, 1)  # uvicorn's access log, as an operator would send it to a file
        os.dup2(log, 2)
        serve(timed_app, "127.0.0.1", port)
    finally:
        if consortium is not None:
            consortium.executor.released.set()
            consortium.stop()
        for r in running:
            r.stop()
        if anvil is not None:
            anvil.stop()
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # until serve() installs its own
    main()
