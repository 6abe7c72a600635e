"""Gas of settling an epoch at consortium scale: running nets beside the naive n x n netting.

Every member claims on every other (n(n-1) standing claims); one transaction settles the
epoch. Measured for 16, 32, 64 and 100 members on anvil (Prague, a 2G block gas limit so
the naive path can be measured past the usual 30M), the naive path in the same run: the
contracts as committed before running nets (`git show NAIVE_REV:contracts/src/...`, or the
revision given by --naive-rev), compiled into memory with the same solcjs, never written
to the tree. The naive finalize reads n x n claims from storage.

    .venv/bin/python scripts/bench/bench_settlement_gas.py [--quick] [--naive-rev REV]
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import SETTLE_GAS_100, Result, print_results, solc_compile
from eth_account import Account
from eth_account.signers.local import LocalAccount

from gateway.consortium.anvil import anvil_binary
from ledger.chain import Chain, ChainRevert, connect
from ledger.deploy import MemberSpec, Prices, bind, deploy_consortium

ROOT = Path(__file__).resolve().parents[2]
TITLE = "Settlement at consortium scale: gas of settle, running nets vs the naive n × n netting"
ABOUT = (
    "One epoch in which every member claims on every other (n(n−1) claims, one record each), "
    "anchored by every member, then one `Settlement.settle`. This design keeps a running net "
    "per (epoch, centre) as claims are anchored and voided, so settle reads n nets; the naive "
    "path, measured in the same run on the same anvil (Prague, block gas limit raised to 2G so "
    "it can be measured at all), is the contracts before that change, whose finalize reads the "
    "n × n claims: on a chain with the usual 30M block gas limit its settle of 100 members "
    "cannot be mined. Figures are `gasUsed` of the settle transaction."
)
SIZES = (16, 32, 64, 100)
QUICK_SIZES = (16, 32)
GAS_LIMIT = 2_000_000_000
LIMITS = ("--gas-limit", str(GAS_LIMIT), "--balance", str(10**9))
USUAL_BLOCK_LIMIT = 30_000_000
GENESIS = 16
CREDIT = 10**15
ADMIT = 0
ID = "settlement.settle.gas.n{}"
assert ID.format(100) == SETTLE_GAS_100
NAIVE_ID = "settlement.settle.naive.n{}"
OLD_CONTRACTS = ("Consortium", "UsageLedger", "ConsortiumCredit", "Settlement")
NAIVE_REV = "781546a23a9727bc4aac10620633e6f40805b245"  # the last commit whose finalize nets n x n claims
ROOT_OF_ONE_RECORD = bytes(31) + b"\x01"  # settle never reads a claim's root


@contextmanager
def anvil() -> Iterator[str]:
    """A fresh anvil (Prague) with a block gas limit high enough for the naive path."""
    binary = anvil_binary()
    if binary is None:
        raise RuntimeError("anvil is not installed: run `npm ci` in contracts/")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [str(binary), "--host", "127.0.0.1", "--port", str(port), "--hardfork", "prague", "--quiet", *LIMITS],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not _answers(url):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("anvil did not start")
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _answers(url: str) -> bool:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}).encode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, body, {"Content-Type": "application/json"}), timeout=1):
            return True
    except OSError:
        return False


def _git(*args: str) -> str:
    """A read-only git command's output (the tree is never changed)."""
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout


def compile_naive(rev: str) -> dict[str, dict[str, Any]]:
    """ABI and bytecode of the contracts at git revision `rev`, compiled in memory by scripts/solc."""
    names = _git("ls-tree", "--name-only", rev, "contracts/src/").split()
    sources = {}
    for path in names:
        if path.endswith(".sol"):
            sources[path.removeprefix("contracts/")] = _git("show", f"{rev}:{path}")
    built = solc_compile(sources, f"the contracts at {rev}")
    return {name: built[f"src/{name}.sol"][name] for name in OLD_CONTRACTS}


def members(chain: Chain, n: int) -> tuple[list[MemberSpec], dict[bytes, LocalAccount]]:
    accounts = [Account.create() for _ in range(n)]
    for acct in accounts:
        chain.fund(acct.address, 10**18)
    specs = [
        MemberSpec(f"m{i:03d}", a.address, f"http://m{i:03d}.example:8000", bytes([i % 256]) * 32, Prices(1, 10, 3))
        for i, a in enumerate(accounts)
    ]
    return specs, {s.id: a for s, a in zip(specs, accounts, strict=True)}


def _deploy(chain: Chain, art: dict[str, Any], sender: LocalAccount, *args: Any) -> Any:
    factory = chain.w3.eth.contract(abi=art["abi"], bytecode=art["bytecode"])
    address = chain.transact(factory.constructor(*args), sender)["contractAddress"]
    return chain.w3.eth.contract(address=address, abi=art["abi"])


def new_world(chain: Chain, n: int) -> tuple[Any, Any, Any, dict[bytes, LocalAccount], list[MemberSpec]]:
    """This design, deployed as `xcentre deploy` does; members past GENESIS admitted by vote."""
    specs, accounts = members(chain, n)
    first = min(n, GENESIS)
    d = deploy_consortium(
        chain,
        chain.dev_account,
        specs[:first],
        1,
        CREDIT,
        dispute_window=0,
        anchor_bond=1_000,
        reserve=CREDIT * (n - first),
    )
    c = bind(chain, d)
    _admit(chain, c.consortium, c.credit, c.settlement, specs, accounts, first)
    return c.consortium, c.usage_ledger, c.settlement, accounts, specs


def naive_world(chain: Chain, n: int, built: dict[str, dict[str, Any]]) -> tuple[Any, Any, Any, dict, list]:
    """The naive contracts, deployed as the deployment script of that revision did."""
    specs, accounts = members(chain, n)
    first = min(n, GENESIS)
    me = chain.dev_account
    consortium = _deploy(chain, built["Consortium"], me, [s.as_tuple() for s in specs[:first]], 1, 0)
    ledger = _deploy(chain, built["UsageLedger"], me, consortium.address, 0, 86_400, 0)
    credit = _deploy(chain, built["ConsortiumCredit"], me, [me.address], [CREDIT * n])
    settlement = _deploy(chain, built["Settlement"], me, consortium.address, ledger.address, credit.address, 1_000, 0)
    chain.transact(ledger.functions.setSettlement(settlement.address), me)
    chain.transact(credit.functions.approve(settlement.address, CREDIT * first), me)
    for s in specs[:first]:
        chain.transact(settlement.functions.depositFor(s.account, CREDIT), me)
    _admit(chain, consortium, credit, settlement, specs, accounts, first)
    return consortium, ledger, settlement, accounts, specs


def _admit(chain: Chain, consortium: Any, credit: Any, settlement: Any, specs, accounts, first: int) -> None:
    n = len(specs)
    if n > first:
        chain.transact(credit.functions.approve(settlement.address, CREDIT * (n - first)), chain.dev_account)
    for s in specs[first:]:
        chain.transact(consortium.functions.propose(ADMIT, s.as_tuple()), accounts[specs[0].id])
        chain.transact(settlement.functions.depositFor(s.account, CREDIT), chain.dev_account)


def settle_gas(chain: Chain, world: tuple[Any, Any, Any, dict, list], seed: int) -> int:
    """Every member anchors a claim on every other; the gas of the settle that follows."""
    _, ledger, settlement, accounts, specs = world
    rng = random.Random(seed)
    ids = [s.id for s in specs]
    for c in ids:
        homes = [h for h in ids if h != c]
        totals = [rng.randint(1, 10**9) for _ in homes]
        roots = [ROOT_OF_ONE_RECORD] * len(homes)
        fn = ledger.functions.anchor(1, homes, roots, [1] * len(homes), totals, bytes(32), 0)
        chain.transact(fn, accounts[c])
    chain.w3.provider.make_request("evm_increaseTime", [2])  # type: ignore[arg-type]
    chain.mine()
    receipt = chain.transact(settlement.functions.settle(1), accounts[ids[0]])
    return int(receipt["gasUsed"])


def run(quick: bool = False, naive_rev: str = NAIVE_REV) -> list[Result]:
    sizes = QUICK_SIZES if quick else SIZES
    built = compile_naive(naive_rev)
    out: list[Result] = []
    with anvil() as url:
        chain = connect(url)
        for n in sizes:
            case = f"{n} members, {n * (n - 1):,} claims"
            gas = settle_gas(chain, new_world(chain, n), n)
            try:
                naive: int | None = settle_gas(chain, naive_world(chain, n, built), n)
            except ChainRevert as exc:
                naive, failure = None, str(exc)
            out.append(
                Result(
                    ID.format(n),
                    case,
                    "settle (running nets)",
                    gas,
                    unit="gas",
                    note=f"{gas / n:,.0f} gas per member",
                )
            )
            if naive is None:
                out.append(Result(NAIVE_ID.format(n), case, "settle (naive n × n)", 0, unit="gas", note=failure))
                continue
            over = " — over a 30M block gas limit" if naive > USUAL_BLOCK_LIMIT else ""
            out.append(
                Result(
                    NAIVE_ID.format(n),
                    f"naive path: {case}",
                    "settle (naive n × n)",
                    naive,
                    unit="gas",
                    peer=ID.format(n),
                    note=f"ratio: naive ÷ running nets{over}",
                )
            )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--naive-rev", default=NAIVE_REV, help="git revision of the naive contracts")
    args = parser.parse_args()
    print_results(run(quick=args.quick, naive_rev=args.naive_rev))


if __name__ == "__main__":
    main()
