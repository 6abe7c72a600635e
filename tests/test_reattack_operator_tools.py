"""Attacks on the chain-loss check of `consortium up`, the health answer and NoGasMoney.

Each `test_finding_*` failed before its fix and is kept; the `test_held_*` ones show an attack that was
resisted. Most need no consortium: the chain `up` asks is a small JSON-RPC answerer on a thread here (any
client, urllib or web3, can ask it), and the embedded chain or the session's anvil stands for a node where
one is needed; the last runs the example consortium, killed and restarted.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest
from eth_account import Account

from gateway.api.metrics import health
from gateway.consortium.control import CentreState, ConsortiumError, Proc, State, _check_nothing_lost, _last_indexed
from ledger.chain import ChainRevert, ChainUnavailable, NoGasMoney, connect
from ledger.index.schema import LAST_BLOCK, LAST_BLOCK_HASH, open_index, write_meta
from ledger.outbox import Outbox

CENTRES = ("hpc-a", "cloud-b")


def _hash(number: int, history: str = "a") -> str:
    return "0x" + f"{history}{number:x}".rjust(64, "0")


# -- a chain node that answers what `up` asks -------------------------------------------------------------


class FakeChain:
    """Blocks 0..head of one history, and the transactions it holds (hash -> block)."""

    def __init__(self, head: int, transactions: dict[str, int] | None = None) -> None:
        self.head = head
        self.transactions = transactions or {}

    def answer(self, method: str, params: list) -> object:
        if method == "eth_chainId":
            return "0x7a69"
        if method == "eth_blockNumber":
            return hex(self.head)
        if method == "eth_getBlockByNumber":
            tag = params[0]
            number = self.head if tag == "latest" else int(tag, 16)
            if number > self.head:
                return None
            return {"number": hex(number), "hash": _hash(number), "timestamp": hex(1_000 + number), "transactions": []}
        if method in ("eth_getTransactionReceipt", "eth_getTransactionByHash"):
            block = self.transactions.get(str(params[0]).lower())
            if block is None or block > self.head:
                return None
            return {
                "transactionHash": params[0],
                "blockNumber": hex(block),
                "blockHash": _hash(block),
                "status": "0x1",
                "logs": [],
            }
        if method == "eth_getCode":
            return "0x6000"
        raise KeyError(method)


@pytest.fixture
def fake_chain() -> Iterator[tuple[str, FakeChain]]:
    chain = FakeChain(head=5)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            calls = request if isinstance(request, list) else [request]
            answers = []
            for call in calls:
                try:
                    answers.append(
                        {
                            "jsonrpc": "2.0",
                            "id": call["id"],
                            "result": chain.answer(call["method"], call.get("params", [])),
                        }
                    )
                except KeyError:
                    answers.append(
                        {"jsonrpc": "2.0", "id": call["id"], "error": {"code": -32601, "message": "no such method"}}
                    )
            body = json.dumps(answers if isinstance(request, list) else answers[0]).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", chain
    finally:
        server.shutdown()
        server.server_close()


def _run_folder(folder: Path, url: str) -> State:
    state = State(folder, str(folder / "consortium.toml"), url, Proc(None, 0, ""), str(folder / "deployment.json"))
    for name in CENTRES:
        (folder / name / "data").mkdir(parents=True)
        state.centres[name] = CentreState(Proc(None, 0, ""), Proc(None, 0, ""), "http://127.0.0.1:1", "", "")
    return state


def _index(path: Path, block: int, history: str = "a") -> None:
    db = open_index(path)
    try:
        write_meta(db, LAST_BLOCK, str(block))
        write_meta(db, LAST_BLOCK_HASH, _hash(block, history))
    finally:
        db.close()


# -- findings -------------------------------------------------------------------------------------------------


def test_finding_health_publishes_the_chain_nodes_credentials(tmp_path):
    """GET /v1/health answers anyone, without a session, and now carries `chain.error` verbatim. A node down
    names its URL ("the chain node at http://user:password@… does not answer"): a chain URL with credentials
    (basic auth, a provider's key) is handed to every caller, where the gateway's logs take them out
    (`node.logs.without_credentials`)."""
    chain = connect("http://operator:s3cret-key@127.0.0.1:9", require_node=False)  # nothing listens on port 9
    with pytest.raises(ChainUnavailable) as down:
        chain.block_number()
    index = SimpleNamespace(reachable=False, last_error=down.value, last_block=5, head_seen=5, lag=0)
    outbox = SimpleNamespace(depth=lambda: {}, pending_failing_with=lambda error: 0)
    node = SimpleNamespace(
        name="hpc-a",
        parts=SimpleNamespace(
            index=index, store=SimpleNamespace(open_epoch=lambda: 1), epochs=SimpleNamespace(outbox=outbox)
        ),
    )
    answer = health(node)
    assert answer["status"] == "degraded"  # the change's point, which holds
    assert "s3cret-key" not in json.dumps(answer), answer["chain"]["error"]


def test_finding_up_accepts_a_chain_that_lost_an_anchor_the_outbox_recorded_as_sent(tmp_path, fake_chain):
    """anvil mines the block holding a gateway's anchor (the outbox marks it done on its receipt) and is
    killed before its next save and before the index synced that block (or the index's sync after the drain
    met the dead node). The index's last block is still on the restarted chain, so `up` accepts it; the
    anchor is gone from the chain, and `resend_anchors` never sends it again: `enqueue` of the same key
    returns the done item. The epoch is never anchored, never settled (nor any after it, for withdrawals)."""
    url, chain = fake_chain
    state = _run_folder(tmp_path, url)
    anchor_tx = "0x" + "ab" * 32
    chain.transactions = {anchor_tx: 6}  # mined in block 6, which the restarted chain (head 5) lacks
    for name in CENTRES:
        _index(tmp_path / name / "data" / "index.db", 5)  # indexed up to block 5: still there
    outbox = Outbox(tmp_path / "hpc-a" / "data" / "outbox.db")
    try:
        outbox.register("anchor", lambda payload: anchor_tx)
        outbox.enqueue("anchor", "anchor:1", {"epoch": 1})
        assert [r.status for r in outbox.drain()] == ["done"]
        assert outbox.enqueue("anchor", "anchor:1", {"epoch": 1}) and outbox.pending() == []  # never sent again
    finally:
        outbox.close()
    with pytest.raises(ConsortiumError, match="hpc-a"):
        _check_nothing_lost(state)


@pytest.fixture(params=["embedded", "anvil"])
def any_chain(request):
    if request.param == "embedded":
        return connect("embedded")
    return connect(request.getfixturevalue("anvil_url"))


def test_finding_an_account_that_holds_some_gas_money_but_too_little_is_not_told_so(any_chain):
    """NoGasMoney is judged against a plain transfer (21,000 gas), not the transaction's own gas. An account
    drained by its own anchors down to a few transfers' worth (the usual way a gateway runs dry) gets the
    node's raw refusal instead (eth-tester's ValidationError, anvil's "gas required exceeds allowance"), not
    the README's promise ("told so, with its account and balance and how to fund it")."""
    chain = any_chain
    fees = chain._fees()
    price = fees.get("maxFeePerGas", fees.get("gasPrice", 0))
    poor = Account.create()
    chain.fund(poor.address, 3 * 21_000 * price)  # three plain transfers' worth: far from a deployment's
    with pytest.raises(NoGasMoney, match=poor.address):
        chain.deploy("ConsortiumCredit", poor, [poor.address], [1])


def test_finding_health_is_ok_while_every_write_fails_for_want_of_gas_money(tmp_path):
    """The gateway's account cannot pay: every anchor, settlement and vote stays pending (NoGasMoney is
    transient, the outbox retries it forever), nothing reaches the chain, and yet GET /v1/health is "ok" and
    `consortium status` says the gateway keeps its books."""
    outbox = Outbox(tmp_path / "outbox.db")
    try:

        def no_money(_: dict) -> str:
            raise NoGasMoney(f"the account {Account.create().address} holds 0 wei, too little to pay for gas")

        outbox.register("anchor", no_money)
        outbox.enqueue("anchor", "anchor:1", {"epoch": 1})
        for _ in range(5):
            outbox.drain()
        assert outbox.pending()[0].attempts == 5
        index = SimpleNamespace(reachable=True, last_error=None, last_block=5, head_seen=5, lag=0)
        node = SimpleNamespace(
            name="hpc-a",
            parts=SimpleNamespace(
                index=index, store=SimpleNamespace(open_epoch=lambda: 2), epochs=SimpleNamespace(outbox=outbox)
            ),
        )
        assert health(node)["status"] != "ok"
    finally:
        outbox.close()


# -- held -----------------------------------------------------------------------------------------------------


def test_held_a_block_still_in_the_wal_of_a_running_or_killed_gateway_is_read(tmp_path):
    """The index is WAL: its last block may sit in index.db-wal only (the writer still open, or killed with
    its -wal and -shm left). The read-only reader sees it, also on a copy taken mid-write, with or without the
    -shm, and leaves the files as it found them."""
    path = tmp_path / "index.db"
    writer = open_index(path)
    try:
        writer.execute("PRAGMA wal_autocheckpoint=0")
        write_meta(writer, LAST_BLOCK, "7")
        write_meta(writer, LAST_BLOCK_HASH, _hash(7))
        assert (tmp_path / "index.db-wal").stat().st_size > 0
        assert _last_indexed(path) == (7, _hash(7))
        for with_shm in (True, False):
            copy = tmp_path / f"copy-{with_shm}"
            copy.mkdir()
            for suffix in ("", "-wal") + (("-shm",) if with_shm else ()):
                shutil.copy(tmp_path / f"index.db{suffix}", copy / f"index.db{suffix}")
            assert _last_indexed(copy / "index.db") == (7, _hash(7)), with_shm
    finally:
        writer.close()


def test_held_a_gateway_that_never_indexed_and_odd_folder_names(tmp_path, fake_chain):
    url, _ = fake_chain
    folder = tmp_path / "run ?mode=rw#x%20"  # the URI the reader opens escapes it: no other file, no write mode
    folder.mkdir()
    state = _run_folder(folder, url)
    open_index(folder / "hpc-a" / "data" / "index.db").close()  # claimed, no block yet
    (folder / "cloud-b" / "data" / "index.db").write_bytes(b"")  # created, nothing in it
    assert _last_indexed(folder / "hpc-a" / "data" / "index.db") is None
    _check_nothing_lost(state)  # nothing indexed: nothing lost
    _index(folder / "cloud-b" / "data" / "index.db", 5)
    _check_nothing_lost(state)  # block 5 with its hash: a clean restart
    _index(folder / "hpc-a" / "data" / "index.db", 6)
    with pytest.raises(ConsortiumError, match=r"hpc-a's index up to block 6") as refused:
        _check_nothing_lost(state)
    assert "cloud-b" not in str(refused.value)


def test_held_another_history_at_the_same_height_is_refused(tmp_path, fake_chain):
    url, _ = fake_chain
    state = _run_folder(tmp_path, url)
    _index(tmp_path / "hpc-a" / "data" / "index.db", 5, history="b")  # block 5 of another history
    with pytest.raises(ConsortiumError, match=r"hpc-a's index up to block 5"):
        _check_nothing_lost(state)


def test_held_a_revert_and_a_dead_node_are_never_taken_for_no_gas_money():
    chain = connect("embedded")
    owner = Account.create()
    chain.fund(owner.address, 10**18)
    ledger = chain.deploy("UsageLedger", owner, Account.create().address, 60, 60, 0)
    other = Account.create()
    chain.fund(other.address, 10**18)
    with pytest.raises(ChainRevert, match="Unauthorized"):
        chain.transact(ledger.functions.setSettlement(other.address), other)
    down = connect("http://127.0.0.1:9", require_node=False)
    with pytest.raises(ChainUnavailable):
        down.transact(ledger.functions.setSettlement(other.address), other)


def test_held_a_failed_balance_read_keeps_the_first_error(monkeypatch):
    """The estimate fails (not a revert), then the balance read fails too: the estimate's error stands."""
    chain = connect("embedded")
    owner = Account.create()
    chain.fund(owner.address, 10**18)
    ledger = chain.deploy("UsageLedger", owner, Account.create().address, 60, 60, 0)
    empty = Account.create()

    def balance_fails(*_: object, **__: object) -> int:
        raise ChainUnavailable("the chain node went away")

    monkeypatch.setattr(type(chain.w3.eth), "get_balance", balance_fails)
    with pytest.raises(Exception) as info:
        chain.transact(ledger.functions.setSettlement(empty.address), empty)
    assert not isinstance(info.value, (NoGasMoney, ChainUnavailable))  # the estimate's own refusal stands


def test_held_sqlite_is_opened_read_only(tmp_path):
    """The check never writes a gateway's index: its reader is mode=ro (a write through it fails)."""
    path = tmp_path / "index.db"
    _index(path, 3)
    before = path.read_bytes()
    assert _last_indexed(path) == (3, _hash(3))
    assert path.read_bytes() == before
    ro = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    with pytest.raises(sqlite3.OperationalError):
        ro.execute("DELETE FROM meta")
    ro.close()


@pytest.fixture
def request_cleanup() -> Iterator:
    started = []
    yield started.append
    for proc in started:
        proc.kill()
        proc.wait()


def test_finding_an_up_cut_off_after_restarting_anvil_leaves_the_next_up_unchecked(
    tmp_path, fake_chain, monkeypatch, request_cleanup
):
    """`up` restarts a killed anvil, records its pid in state.json, and is cut off (its terminal hangs up:
    SIGHUP ends it with no `except` run, anvil left running) before `_check_nothing_lost`. The next `up`
    finds anvil running, never checks, and starts the gateways on a chain that lost what they indexed,
    saying "the consortium is up". The check belongs to every `up` that starts something, not only to the
    one that started anvil."""
    import subprocess

    from gateway.consortium import control
    from gateway.consortium.processes import start_time
    from gateway.consortium.spec import load_consortium

    url, _ = fake_chain  # the restarted chain: head 5
    file = Path(__file__).resolve().parents[1] / "examples" / "consortium.toml"
    spec = load_consortium(file)
    stand_in = subprocess.Popen(["sleep", "120"])  # "running": the anvil the cut-off `up` started (a fix may stop it)
    request_cleanup(stand_in)
    anvil = Proc(stand_in.pid, 0, "", start_time(stand_in.pid))
    state = State(tmp_path, str(spec.path), url, anvil, str(tmp_path / "deployment.json"))
    for m in spec.members:
        (tmp_path / m.name / "data").mkdir(parents=True)
        state.centres[m.name] = CentreState(Proc(None, 0, ""), Proc(None, 0, ""), "http://127.0.0.1:1", "", "")
        _index(tmp_path / m.name / "data" / "index.db", 6)  # they indexed block 6, which the chain lost
    state.save()
    for name in ("_start_slapd", "_start_gateways", "_wait_until_each_knows_the_others"):
        monkeypatch.setattr(control, name, lambda *a, **k: None)  # what would start real processes
    with pytest.raises(ConsortiumError, match="lost blocks"):
        control.up(file, tmp_path, say=lambda _: None)


# -- anvil's save every second (these start one anvil each, no consortium) ------------------------------------

needs_anvil = pytest.mark.skipif(
    __import__("gateway.consortium.anvil", fromlist=["anvil_binary"]).anvil_binary() is None, reason="no anvil"
)


def _up_again_folder(folder: Path, url_port: int) -> Path:
    """A run folder as `down` (or a crash) leaves it: state.json with a deployment, nothing running."""
    from gateway.consortium.spec import load_consortium

    file = Path(__file__).resolve().parents[1] / "examples" / "consortium.toml"
    spec = load_consortium(file)
    anvil = Proc(None, url_port, str(folder / "anvil" / "anvil.log"))
    state = State(folder, str(spec.path), f"http://127.0.0.1:{url_port}", anvil, str(folder / "deployment.json"))
    for m in spec.members:
        state.centres[m.name] = CentreState(Proc(None, 0, ""), Proc(None, 0, ""), "http://127.0.0.1:1", "", "")
    (folder / "anvil").mkdir(parents=True, exist_ok=True)
    state.save()
    return file


@needs_anvil
def test_finding_a_save_cut_short_by_a_kill_makes_up_die_with_a_traceback(tmp_path, monkeypatch, capsys):
    """anvil now rewrites chain-state.json in place every second (same inode, truncated then written, no
    rename, no fsync): a kill -9 or a power cut during a save leaves it cut short (polling a 3.5 MB state,
    16% of reads found it unparsable). The next `up` starts anvil, which exits with status 2, and
    `wait_until`'s RuntimeError escapes `xcentre consortium up` as a traceback, naming neither the file
    nor what to do; the README says a killed anvil "comes back from its last save"."""
    from gateway.client.cli import main
    from gateway.consortium import control
    from gateway.consortium.processes import free_port

    file = _up_again_folder(tmp_path, free_port())
    (tmp_path / "anvil" / "chain-state.json").write_text('{"block":{"number":"0x5","coinbase":"0x00')  # cut short
    for name in ("_start_slapd", "_start_gateways", "_wait_until_each_knows_the_others"):
        monkeypatch.setattr(control, name, lambda *a, **k: None)
    code = main(["consortium", "up", "--file", str(file), "--dir", str(tmp_path)])
    assert code == 1
    assert "chain-state.json" in capsys.readouterr().err


@needs_anvil
def test_held_a_quiet_chains_kill_and_a_clean_down_up_are_not_refused(tmp_path, capsys):
    """Consortium-level: anvil killed -9 while nothing new was mined since its last save, and a clean
    down/up, each start the same consortium again with every gateway keeping its books."""
    import os
    import signal
    import time

    from gateway.client.cli import main
    from gateway.consortium import slapd as slapd_node
    from gateway.consortium.control import status
    from gateway.consortium.processes import alive, wait_until

    if not slapd_node.installed():
        pytest.skip(slapd_node.INSTALL_HINT)
    file = str(Path(__file__).resolve().parents[1] / "examples" / "consortium.toml")
    run = tmp_path / "run"
    started: set[int] = set()
    try:
        assert main(["consortium", "up", "--file", file, "--dir", str(run)]) == 0
        state = State.load(run)
        assert state is not None and state.anvil is not None
        started |= {p.pid for _, p in state.processes() if p.pid}
        wait_until(lambda: all(h.healthy for h in status(run)), 60, "healthy")
        time.sleep(2.5)  # quiet: the last save holds every block
        os.kill(state.anvil.pid, signal.SIGKILL)
        wait_until(lambda: not alive(state.anvil.pid), 10, "anvil gone")
        assert main(["consortium", "up", "--file", file, "--dir", str(run)]) == 0, capsys.readouterr().err
        started |= {p.pid for _, p in State.load(run).processes() if p.pid}  # type: ignore[union-attr]
        wait_until(lambda: all(h.healthy for h in status(run)), 60, "healthy after the kill")
        assert main(["consortium", "down", "--dir", str(run)]) == 0
        assert main(["consortium", "up", "--file", file, "--dir", str(run)]) == 0, capsys.readouterr().err
        started |= {p.pid for _, p in State.load(run).processes() if p.pid}  # type: ignore[union-attr]
        wait_until(lambda: all(h.healthy for h in status(run)), 60, "healthy after down/up")
    finally:
        main(["consortium", "down", "--dir", str(run)])
        assert not [pid for pid in started if alive(pid)]
