"""`xcentre consortium up|status|down`: a whole consortium on one machine, as separate processes.

`up` makes each centre's keys, starts anvil, funds the centres' chain accounts with gas,
deploys the contracts, starts one slapd per centre from its LDIF, publishes each centre's
policy, runs the supervisors' key generation and starts one `xcentre gateway` per centre,
each with its own data directory. Everything it starts and every port it picks is in the
run folder's state.json, written as it goes, so `status` and `down` find the processes
and `up` after `down` starts the same consortium again (the same chain, ports and data).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import secrets
import shutil
import sqlite3
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from eth_account import Account
from eth_account.signers.local import LocalAccount

from gateway.client.provision import CHAIN_KEY, ISSUER_KEY, TOKEN_KEY, load_members, new_centre_keys
from gateway.consortium import anvil as anvil_node
from gateway.consortium import slapd as slapd_node
from gateway.consortium.processes import STOP_TIMEOUT, alive, free_port, spawn, start_time, stop, wait_until
from gateway.consortium.spec import ConsortiumFile, MemberFiles, load_consortium
from ledger.chain import Chain, connect
from ledger.deploy import Deployment, bind
from ledger.gas import accounts_gas, fund, gas_price, shortfall_message
from ledger.ids import centre_id
from ledger.index.schema import LAST_BLOCK, LAST_BLOCK_HASH
from ledger.primitives.files import write_private

STATE = "state.json"
GATEWAY_START_TIMEOUT = 120.0
GATEWAY_STOP_TIMEOUT = 20.0
LAST_SENT = 64  # a gateway's latest mined transactions `up` looks for on a restarted chain
#: Settings of a centre's gateway file that only `consortium up` knows on one machine.
FILLED_IN = ("port", "data_dir", "chain_url", "deployment", "chain_key_file", "token_key_file", "issuer_key_file")
#: Path settings of a gateway file, made absolute against the file's own folder in the run copy.
PATHS = ("credential_schema", "policy_file", "policy_schema_file", "jobs_dir", "slurm_conf")

Say = Callable[[str], None]


class ConsortiumError(RuntimeError):
    """The consortium cannot be brought up as asked; the message says why and what to do."""


@dataclass
class Proc:
    """One process of the consortium as the state file records it."""

    pid: int | None
    port: int
    log: str
    started: int | None = None  # the process's start time: a pid reused by another process is not ours

    def track(self, pid: int) -> None:
        """Record a process this consortium just started."""
        self.pid, self.started = pid, start_time(pid)

    def running(self) -> bool:
        return alive(self.pid) and (self.started is None or start_time(self.pid) == self.started)

    def stop(self, timeout: float = STOP_TIMEOUT) -> str:
        """Stop the process if it is still the one started (never another that reused its pid); forget it."""
        how = stop(self.pid, timeout) if self.running() else "not running"
        self.pid = self.started = None
        return how


@dataclass
class CentreState:
    gateway: Proc
    slapd: Proc
    url: str
    config: str
    operator_key: str


@dataclass
class State:
    """What state.json records: the consortium file, the chain, and each centre's processes."""

    folder: Path
    file: str
    chain_url: str
    anvil: Proc | None
    deployment: str | None = None
    centres: dict[str, CentreState] = field(default_factory=dict)

    def save(self) -> None:
        data = {
            "file": self.file,
            "chain_url": self.chain_url,
            "anvil": _proc_json(self.anvil),
            "deployment": self.deployment,
            "centres": {
                name: {
                    "gateway": _proc_json(c.gateway),
                    "slapd": _proc_json(c.slapd),
                    "url": c.url,
                    "config": c.config,
                    "operator_key": c.operator_key,
                }
                for name, c in self.centres.items()
            },
        }
        tmp = self.folder / (STATE + ".tmp")
        write_private(tmp, json.dumps(data, indent=2, sort_keys=True) + "\n")  # holds the operator keys: 0600
        os.replace(tmp, self.folder / STATE)

    @classmethod
    def load(cls, folder: Path) -> State | None:
        try:
            data = json.loads((folder / STATE).read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise ConsortiumError(
                f"{folder / STATE} cannot be read ({exc}): remove the folder to start afresh"
            ) from None
        return cls(
            folder=folder,
            file=data["file"],
            chain_url=data["chain_url"],
            anvil=_proc(data.get("anvil")),
            deployment=data.get("deployment"),
            centres={
                name: CentreState(
                    gateway=_proc(c["gateway"]) or Proc(None, 0, ""),
                    slapd=_proc(c["slapd"]) or Proc(None, 0, ""),
                    url=c["url"],
                    config=c["config"],
                    operator_key=c["operator_key"],
                )
                for name, c in data.get("centres", {}).items()
            },
        )

    def processes(self) -> list[tuple[str, Proc]]:
        """Every process, gateways first (the order `down` stops them in)."""
        found = [(f"{n} gateway", c.gateway) for n, c in self.centres.items()]
        found += [(f"{n} slapd", c.slapd) for n, c in self.centres.items()]
        return found + ([("anvil", self.anvil)] if self.anvil else [])


def _proc_json(proc: Proc | None) -> dict | None:
    return None if proc is None else {"pid": proc.pid, "started": proc.started, "port": proc.port, "log": proc.log}


def _proc(data: Any) -> Proc | None:
    return None if not data else Proc(data.get("pid"), int(data["port"]), data.get("log", ""), data.get("started"))


# -- up ------------------------------------------------------------------------------------------------


def up(file: Path, folder: Path, say: Say = print) -> State:
    """Bring the consortium of `file` up in `folder`: everything on a first run, what is not running on a later one.

    Raises ConsortiumError (nothing left running that this call started) when a part cannot start.
    """
    spec = load_consortium(file)
    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    state = State.load(folder)
    if state is not None and Path(state.file) != spec.path:
        raise ConsortiumError(f"{folder} runs the consortium of {state.file}, not {spec.path}: use another folder")
    if state is not None and state.deployment and all(p.running() for _, p in state.processes()):
        say(f"the consortium of {spec.path.name} is already running in {folder} (xcentre consortium status)")
        return state
    started: list[Proc] = []
    try:
        if state is None or not state.deployment:
            state = _first_up(spec, folder, started, say)
        else:
            _up_again(spec, state, started, say)
        _start_gateways(spec, state, started, say)
        _wait_until_each_knows_the_others(spec, state)
    except BaseException:
        for proc in reversed(started):
            proc.stop()
        if state is not None:
            state.save()
        raise
    say(f"the consortium is up; state in {folder / STATE}; stop it with: xcentre consortium down --dir {folder}")
    return state


def _first_up(spec: ConsortiumFile, folder: Path, started: list[Proc], say: Say) -> State:
    configs = {m.name: _gateway_settings(m) for m in spec.members}
    for m in spec.members:  # what an earlier, failed first run left (its chain is gone): keys alone are kept
        for leftover in ("slapd", "data"):
            shutil.rmtree(folder / m.name / leftover, ignore_errors=True)
        (folder / m.name / "supervisor.json").unlink(missing_ok=True)
    (folder / "anvil" / "chain-state.json").unlink(missing_ok=True)
    publics = {m.name: _keys(folder / m.name / "keys", m.name) for m in spec.members}
    if spec.chain.anvil:
        binary = anvil_node.anvil_binary()
        if binary is None:
            raise ConsortiumError(
                "anvil is not installed: run `npm ci` in contracts/ (@foundry-rs/anvil), or put it on PATH"
            )
        proc = Proc(None, free_port(), str(folder / "anvil" / "anvil.log"))
        url = f"http://127.0.0.1:{proc.port}"
        state = State(folder, str(spec.path), url, proc)
        _start_anvil(state, started, say)
    else:
        assert spec.chain.url is not None
        state = State(folder, str(spec.path), spec.chain.url, None)
        if not anvil_node.answers(spec.chain.url):
            raise ConsortiumError(f"no JSON-RPC node answers at {spec.chain.url}")
    ports = {m.name: free_port() for m in spec.members}
    for m in spec.members:
        state.centres[m.name] = CentreState(
            gateway=Proc(None, ports[m.name], str(folder / m.name / "gateway.log")),
            slapd=Proc(None, 0, str(folder / m.name / "slapd" / "slapd.log")),
            url=f"http://127.0.0.1:{ports[m.name]}",
            config=str(folder / m.name / "gateway.toml"),
            operator_key=str(configs[m.name]["operator_key"]),
        )
    state.save()
    chain = connect(state.chain_url)
    funder = _funder(spec, chain)
    accounts = {name: public["account"] for name, public in publics.items()}
    _fund_gas(spec, chain, funder, accounts, say)
    members_file = folder / "members.toml"
    members_file.write_text(_members_toml(spec, publics, state))
    plan = load_members(members_file)  # what `xcentre deploy --members` would read
    deployment = plan.deploy(chain, funder)
    deployment.to_json(folder / "deployment.json")
    say(f"deployed {len(plan.members)} members on {state.chain_url}; deployment in {folder / 'deployment.json'}")
    for m in spec.members:
        _start_slapd(m, configs[m.name], state, started, fresh=True)
        _write_gateway_config(m, configs[m.name], state, deployment)
    say("directories up: " + ", ".join(f"{n} {c.slapd.port}" for n, c in state.centres.items()))
    _publish_policies(spec, chain, deployment, folder, configs, say)
    _supervisors_key(spec, chain, deployment, folder, say)
    state.deployment = str(folder / "deployment.json")
    state.save()
    return state


def _up_again(spec: ConsortiumFile, state: State, started: list[Proc], say: Say) -> None:
    """After `down` (or a crash): start what is not running on the same ports, chain and data."""
    if state.anvil is not None and not state.anvil.running():
        _start_anvil(state, started, say)
        deployment = Deployment.from_json(Path(state.deployment or ""))
        code = anvil_node.rpc(state.chain_url, "eth_getCode", [deployment.consortium, "latest"])
        if code in (None, "0x"):
            raise ConsortiumError(
                f"the chain restarted without the consortium's contracts (its state file was lost): remove "
                f"{state.folder} and run `xcentre consortium up` again"
            )
    if state.anvil is not None:  # whoever restarted it: an `up` cut off after starting anvil checked nothing
        _check_nothing_lost(state)
    for m in spec.members:
        centre = state.centres[m.name]
        if not centre.slapd.running():
            _start_slapd(m, _gateway_settings(m), state, started, fresh=False)


def _check_nothing_lost(state: State) -> None:
    """Refuse a chain that came back without blocks a gateway indexed (anvil killed between two saves of its
    state): the gateways would never build their books on it, and whatever those blocks held (anchors, votes,
    payments) is gone from the chain."""
    try:
        lost = _lost(state)
    except (OSError, ValueError) as exc:
        raise ConsortiumError(f"the chain node at {state.chain_url} does not answer ({exc})") from None
    if lost:
        raise ConsortiumError(
            f"the chain came back at block {anvil_node.block_height(state.chain_url)} without what the gateways "
            f"saw on it ({'; '.join(lost[n] for n in sorted(lost))}): anvil lost blocks when it was stopped "
            f"without saving them (killed: it saves its state every {anvil_node.STATE_INTERVAL} s and when it "
            f"stops). The consortium's books cannot go on on this chain: move {state.folder} aside (it keeps the "
            "centres' keys and signed records) and run `xcentre consortium up` with another --dir"
        )


def _lost(state: State) -> dict[str, str]:
    """What each centre's gateway saw on the chain that the chain no longer has, by centre."""
    lost = {}
    for name in state.centres:
        data = state.folder / name / "data"
        indexed = _last_indexed(data / "index.db")
        if indexed is not None:
            number, digest = indexed
            block = anvil_node.rpc(state.chain_url, "eth_getBlockByNumber", [hex(number), False])
            if not isinstance(block, dict) or block.get("hash") != digest:
                lost[name] = f"{name}'s index up to block {number}"
                continue
        for tx_hash in _last_sent(data / "outbox.db"):  # sent and seen mined, perhaps before the index saw it
            if anvil_node.rpc(state.chain_url, "eth_getTransactionReceipt", [tx_hash]) is None:
                lost[name] = f"{name}'s transaction {tx_hash}"
                break
    return lost


def _last_indexed(path: Path) -> tuple[int, str] | None:
    """(block, its 0x hash): the last block the index file at `path` holds; None for a file with none."""
    rows = dict(_read_only(path, "SELECT key, value FROM meta WHERE key IN (?, ?)", (LAST_BLOCK, LAST_BLOCK_HASH)))
    if LAST_BLOCK not in rows or LAST_BLOCK_HASH not in rows:
        return None
    return int(rows[LAST_BLOCK]), str(rows[LAST_BLOCK_HASH])


def _last_sent(path: Path) -> list[str]:
    """The hashes of the last LAST_SENT transactions the outbox file at `path` saw mined: what a chain that lost
    its last second of blocks lost first."""
    query = "SELECT tx_hash FROM outbox WHERE status = 'done' AND tx_hash IS NOT NULL ORDER BY updated_at DESC, id DESC"
    return [str(row[0]) for row in _read_only(path, query + " LIMIT ?", (LAST_SENT,))]


def _read_only(path: Path, query: str, params: tuple) -> list[tuple]:
    """`query`'s rows from the SQLite file at `path`, opened read only; none when it is absent or unreadable (the
    gateway itself refuses a chain that lost what it indexed, when it starts)."""
    if not path.is_file():
        return []
    try:
        with contextlib.closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as db:
            return db.execute(query, params).fetchall()
    except sqlite3.Error:
        return []


def _start_anvil(state: State, started: list[Proc], say: Say) -> None:
    binary = anvil_node.anvil_binary()
    assert state.anvil is not None
    if binary is None:
        raise ConsortiumError(
            "anvil is not installed: run `npm ci` in contracts/ (@foundry-rs/anvil), or put it on PATH"
        )
    chain_state = state.folder / "anvil" / "chain-state.json"  # saved at every clean stop, loaded at start
    process = anvil_node.spawn_anvil(
        binary, state.anvil.port, Path(state.anvil.log), state=chain_state, home=chain_state.parent
    )
    state.anvil.track(process.pid)
    started.append(state.anvil)
    state.save()
    try:
        wait_until(lambda: anvil_node.answers(state.chain_url), anvil_node.START_TIMEOUT, "anvil", process)
    except (RuntimeError, TimeoutError) as exc:
        hint = (
            f"; if anvil's log says it cannot load {chain_state}, a kill cut its last save short: move the run "
            "folder aside and run `xcentre consortium up` with another --dir"
            if chain_state.exists()
            else ""
        )
        raise ConsortiumError(f"anvil did not start ({exc}): see {state.anvil.log}{hint}") from None
    say(f"chain: anvil on {state.chain_url} (pid {process.pid})")


def _funder(spec: ConsortiumFile, chain: Chain) -> LocalAccount:
    """Who deploys and pays the centres' gas: anvil's funded development account, or the funder key's account."""
    if spec.chain.anvil:
        return chain.dev_account
    assert spec.chain.funder_key_file is not None
    try:
        return Account.from_key(spec.chain.funder_key_file.read_text().strip())
    except (OSError, ValueError) as exc:
        raise ConsortiumError(f"funder_key_file {spec.chain.funder_key_file}: not a hex chain key ({exc})") from None


def _fund_gas(spec: ConsortiumFile, chain: Chain, funder: LocalAccount, accounts: dict[str, str], say: Say) -> None:
    """Top every centre's account up to `gas_per_centre` from the funder; refuse when one still cannot pay gas."""
    price = gas_price(chain)
    if spec.chain.gas_per_centre:
        sent = fund(chain, funder, accounts, spec.chain.gas_per_centre)
        say(
            f"gas: gas price {price} wei; from {funder.address} sent "
            + ", ".join(f"{name} {wei} wei" for name, wei in sent.items())
        )
    short = [g for g in accounts_gas(chain, accounts) if g.short]
    if short:
        raise ConsortiumError(
            shortfall_message(short, price, "set gas_per_centre under [chain] in the consortium file, or send ether")
        )
    if price == 0:
        say("gas: the chain's gas price is 0: the centres' accounts need no gas money")


def _members_toml(spec: ConsortiumFile, publics: dict[str, dict], state: State) -> str:
    """The members file `xcentre deploy` takes, complete with the centres' public keys and gateway URLs."""
    lines = [
        "# Written by `xcentre consortium up` from " + str(spec.path),
        f"quorum = {spec.quorum}",
        f"initial_credit = {spec.initial_credit}",
        f"rate_notice = {spec.rate_notice}",
        f"dispute_window = {spec.dispute_window}",
        f"booking_delay = {spec.booking_delay}",
        f"anchor_window = {spec.anchor_window}",
        f"epoch_length = {spec.epoch_length}",
        "",
        "[supervision]",
        f"dkg_window = {spec.dkg_window}",
    ]
    if spec.supervisors is not None:
        lines.append(f"supervisors = {json.dumps(spec.supervisors)}")
    if spec.supervision_threshold is not None:
        lines.append(f"threshold = {spec.supervision_threshold}")
    for m in spec.members:
        p = m.prices
        lines += [
            "",
            "[[member]]",
            f'name = "{m.name}"',
            f'account = "{publics[m.name]["account"]}"',
            f'gateway_url = "{state.centres[m.name].url}"',
            f'token_key = "{publics[m.name]["token_key"]}"',
            (
                f"prices = {{ per_cpu_second = {p.per_cpu_second}, per_gpu_second = {p.per_gpu_second}, "
                f"per_gib_hour = {p.per_gib_hour} }}"
            ),
        ]
    return "\n".join(lines) + "\n"


def _keys(folder: Path, name: str) -> dict:
    """The centre's public halves: from `xcentre keygen`'s files, made if absent."""
    if not (folder / CHAIN_KEY).exists():
        return new_centre_keys(folder, name)
    from auth.tokens import load_private_key, public_key_bytes
    from ledger.primitives.hex import to_hex

    return {
        "centre": name,
        "account": Account.from_key((folder / CHAIN_KEY).read_text().strip()).address,
        "token_key": to_hex(public_key_bytes(load_private_key(folder / TOKEN_KEY))),
    }


def _gateway_settings(m: MemberFiles) -> dict[str, Any]:
    """The centre's gateway file, its paths made absolute against its folder."""
    try:
        raw = tomllib.loads(m.gateway.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConsortiumError(f"{m.gateway}: cannot read {m.name}'s gateway configuration: {exc}") from None
    if raw.get("centre") != m.name:
        raise ConsortiumError(
            f"{m.gateway}: centre must be {m.name!r} (the member it configures), got {raw.get('centre')!r}"
        )
    for key in ("ldap_base_dn", "ldap_bind_dn", "ldap_bind_password", "operator_key"):
        if not isinstance(raw.get(key), str):
            raise ConsortiumError(f"{m.gateway}: {key} must be set (a string)")
    for key in PATHS:
        if isinstance(raw.get(key), str):
            raw[key] = str((m.gateway.parent / raw[key]).resolve())
    return raw


def _start_slapd(m: MemberFiles, settings: dict, state: State, started: list[Proc], *, fresh: bool) -> None:
    centre = state.centres[m.name]
    folder = state.folder / m.name / "slapd"
    if fresh:
        try:
            server = slapd_node.start_slapd(
                folder,
                m.directory.read_text(),
                base_dn=settings["ldap_base_dn"],
                service_password=settings["ldap_bind_password"],
                admin_password=secrets.token_urlsafe(16),
                detach=True,
            )
        except RuntimeError as exc:
            raise ConsortiumError(f"{m.name}'s directory ({m.directory}) did not start: {exc}") from None
        centre.slapd.port = server.port
        centre.slapd.track(server.pid)
    else:
        process = slapd_node.launch(folder, centre.slapd.port, detach=True)
        centre.slapd.track(process.pid)
        wait_until(lambda: _accepting(centre.slapd.port), 10, f"{m.name} slapd", process)
    started.append(centre.slapd)
    state.save()


def _accepting(port: int) -> bool:
    from gateway.consortium.processes import accepting

    return accepting(port)


def _write_gateway_config(m: MemberFiles, settings: dict, state: State, deployment: Deployment) -> None:
    """The configuration this centre's gateway runs with: its file, with what only `up` knows filled in."""
    centre = state.centres[m.name]
    keys = state.folder / m.name / "keys"
    values = dict(settings)
    values.update(
        host="127.0.0.1",
        port=centre.gateway.port,
        data_dir=str(state.folder / m.name / "data"),
        chain_url=state.chain_url,
        deployment=str(state.folder / "deployment.json"),
        chain_key_file=str(keys / CHAIN_KEY),
        token_key_file=str(keys / TOKEN_KEY),
        issuer_key_file=str(keys / ISSUER_KEY),
        ldap_url=f"ldap://127.0.0.1:{centre.slapd.port}",
    )
    if values.get("sandbox", "bwrap") == "bwrap":
        from gateway.jobs.executor import sandbox_problem

        problem = sandbox_problem()
        if problem is not None:
            print(
                f"warning: {m.name}'s jobs run UNSANDBOXED on this machine (a sandbox {problem}): "
                "fine for a trial on your own machine, never for real users",
                file=sys.stderr,
            )
            values["sandbox"] = "none"
    header = f"# {m.name}'s gateway, written by `xcentre consortium up` from {m.gateway}\n"
    write_private(Path(centre.config), header + _toml(values))


def _toml(values: dict[str, Any]) -> str:
    """A flat TOML document (tables last) of the gateway settings."""
    plain = [f"{k} = {_toml_value(v)}" for k, v in values.items() if not isinstance(v, dict)]
    tables = [
        f"\n[{k}]\n" + "\n".join(f'"{g}" = {_toml_value(a)}' for g, a in v.items())
        for k, v in values.items()
        if isinstance(v, dict)
    ]
    return "\n".join(plain) + "\n" + "".join(t + "\n" for t in tables)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)  # a float as TOML spells it (the settings take no inf or nan)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))


def _publish_policies(
    spec: ConsortiumFile, chain: Chain, deployment: Deployment, folder: Path, configs: dict, say: Say
) -> None:
    """Each centre publishes its policy (and schema) on chain: its gateway serves no other version."""
    from ledger.policies import PolicyUnchanged, publish

    for m in spec.members:
        settings = configs[m.name]
        account = Account.from_key((folder / m.name / "keys" / CHAIN_KEY).read_text().strip())
        policy = Path(settings["policy_file"]).read_text()
        schema_file = settings.get("policy_schema_file")
        schema = Path(schema_file).read_text() if schema_file else None
        try:
            version = publish(chain, deployment, account, policy, schema)
            say(f"{m.name}: policy version {version.version} published")
        except PolicyUnchanged:
            pass


def _supervisors_key(spec: ConsortiumFile, chain: Chain, deployment: Deployment, folder: Path, say: Say) -> None:
    """The supervisors' joint key, made here since one machine holds every supervisor's chain key."""
    from gateway.client.supervising import run_local_dkg
    from ledger.supervision import Supervision

    names = spec.supervisors or [m.name for m in spec.members]
    parties = [
        (
            name,
            Account.from_key((folder / name / "keys" / CHAIN_KEY).read_text().strip()),
            folder / name / "supervisor.json",
        )
        for name in names
    ]
    run_local_dkg(Supervision.of(chain, deployment), parties)
    say(f"supervisors' key made by {', '.join(names)}")


def _start_gateways(spec: ConsortiumFile, state: State, started: list[Proc], say: Say) -> None:
    waiting = []
    for m in spec.members:
        centre = state.centres[m.name]
        if centre.gateway.running():
            continue
        process = spawn(gateway_command(Path(centre.config)), Path(centre.gateway.log), cwd=state.folder / m.name)
        centre.gateway.track(process.pid)
        started.append(centre.gateway)
        state.save()
        waiting.append((m.name, centre, process))
    for name, centre, process in waiting:
        try:
            wait_until(functools.partial(gateway_up, centre.url), GATEWAY_START_TIMEOUT, f"{name}'s gateway", process)
        except (TimeoutError, RuntimeError) as exc:
            raise ConsortiumError(f"{exc}; its log: {centre.gateway.log}\n{_tail(Path(centre.gateway.log))}") from None
        say(f"{name}: gateway on {centre.url} (pid {centre.gateway.pid})")


def _wait_until_each_knows_the_others(spec: ConsortiumFile, state: State) -> None:
    """Ready means more than answering: a user of one centre signs on at another only once that one's index has
    the home's issuer key. So wait for every member's key on chain, then for every gateway's index to pass it."""
    assert state.deployment is not None
    chain = connect(state.chain_url)
    registry = bind(chain, Deployment.from_json(Path(state.deployment))).identity_registry
    assert registry is not None  # deploy_consortium always deploys it
    ids = [centre_id(m.name) for m in spec.members]
    wait_until(
        lambda: all(registry.functions.issuerKeys(i).call() for i in ids),
        GATEWAY_START_TIMEOUT,
        "every centre's issuer key on chain",
    )
    block = chain.block_number()
    for m in spec.members:
        caught_up = functools.partial(_indexed_at_least, state.centres[m.name].url, block)
        wait_until(caught_up, GATEWAY_START_TIMEOUT, f"{m.name}'s index to reach block {block}")


def _indexed_at_least(url: str, block: int) -> bool:
    """Whether the gateway at `url` says its index has reached `block` (GET /v1/health)."""
    try:
        indexed = httpx.get(url + "/v1/health", timeout=2.0).json()["chain"]["indexed_block"]
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return False
    return isinstance(indexed, int) and indexed >= block


def gateway_command(config: Path) -> list[str]:
    """`xcentre gateway --config FILE` with this Python."""
    return [sys.executable, "-m", "gateway.client.cli", "gateway", "--config", str(config)]


def start_gateway(state: State, name: str) -> int:
    """Start one centre's gateway again (after a crash or a kill): same configuration, port and data; its pid."""
    centre = state.centres[name]
    if centre.gateway.running():
        raise ConsortiumError(f"{name}'s gateway is running (pid {centre.gateway.pid})")
    process = spawn(gateway_command(Path(centre.config)), Path(centre.gateway.log), cwd=state.folder / name)
    centre.gateway.track(process.pid)
    state.save()
    return process.pid


def _tail(path: Path, size: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-size:]
    except OSError:
        return "(no log)"


# -- status --------------------------------------------------------------------------------------------


def gateway_up(url: str) -> bool:
    """Whether the gateway at `url` answers."""
    return gateway_health(url) is None


def gateway_health(url: str, timeout: float = 2.0) -> str | None:
    """None when the gateway answers (GET /v1/capacity is 200), else what is wrong."""
    try:
        answer = httpx.get(url + "/v1/capacity", timeout=timeout)
    except httpx.HTTPError as exc:
        return f"does not answer ({type(exc).__name__})"
    return None if answer.status_code == 200 else f"answers {answer.status_code}"


def gateway_books(url: str, timeout: float = 2.0) -> str | None:
    """None when the gateway answers and keeps its books (GET /v1/health "ok"), else what is wrong: a gateway
    that cannot follow its chain still serves, but anchors and settles nothing meanwhile."""
    problem = gateway_health(url, timeout)
    if problem is not None:
        return problem
    try:
        health = httpx.get(url + "/v1/health", timeout=timeout).json()
        if health["status"] == "ok":
            return None
        chain = health["chain"]
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
        return f"answers no health ({type(exc).__name__})"
    return "degraded: " + _HEALTH_ERRORS.get(chain.get("error"), f"{chain.get('error')} (see its log)")


_HEALTH_ERRORS = {
    "unreachable": "its chain node does not answer",
    "history-mismatch": "the chain lacks blocks its index holds (see its log)",
    "sync-failed": "its chain index stopped (see its log)",
    "no-gas-money": "its chain account cannot pay for gas: fund it (xcentre consortium fund)",
}


@dataclass(frozen=True)
class Health:
    """One process's health as `status` shows it."""

    name: str
    pid: int | None
    running: bool
    detail: str
    healthy: bool


def status(folder: Path) -> list[Health]:
    """Every process of the consortium in `folder`: pid alive, and anvil's block height, slapd's port, the
    gateway's answer and whether it keeps its books."""
    state = State.load(folder.resolve())
    if state is None:
        raise ConsortiumError(f"no consortium in {folder.resolve()}: run `xcentre consortium up` first")
    report = []
    if state.anvil is not None:
        height = anvil_node.block_height(state.chain_url) if state.anvil.running() else None
        report.append(
            Health(
                "anvil",
                state.anvil.pid,
                state.anvil.running(),
                f"{state.chain_url} block {height}" if height is not None else f"{state.chain_url} does not answer",
                height is not None,
            )
        )
    else:
        height = anvil_node.block_height(state.chain_url)
        detail = f"block {height}" if height is not None else "does not answer"
        report.append(Health("chain", None, height is not None, f"{state.chain_url} {detail}", height is not None))
    for name, c in state.centres.items():
        up_ = c.slapd.running() and _accepting(c.slapd.port)
        report.append(Health(f"{name} slapd", c.slapd.pid, c.slapd.running(), f"ldap://127.0.0.1:{c.slapd.port}", up_))
        problem = gateway_books(c.url) if c.gateway.running() else "not running"
        report.append(
            Health(
                f"{name} gateway",
                c.gateway.pid,
                c.gateway.running(),
                f"{c.url} {problem or 'answers'}",
                problem is None,
            )
        )
    return report


# -- down ----------------------------------------------------------------------------------------------


def down(folder: Path, say: Say = print) -> State | None:
    """Stop every process (gateways, then directories, then the chain): SIGTERM, then SIGKILL after a timeout.
    The run folder stays (keys, data, chain state): `up` starts the same consortium again."""
    state = State.load(folder.resolve())
    if state is None:
        say(f"no consortium in {folder.resolve()}")
        return None
    for name, proc in state.processes():
        timeout = GATEWAY_STOP_TIMEOUT if name.endswith("gateway") else 10.0
        pid = proc.pid
        how = proc.stop(timeout)
        if how != "not running":
            say(f"{name} (pid {pid}): {how}")
        state.save()
    anvil_node.remove_scratch(state.folder / "anvil")  # stopped: the chain's state is in chain-state.json
    say("the consortium is down")
    return state
