"""Gas of fair payment: per job over an epoch of 10,000 jobs, beside per-job escrow.

The honest path costs one anchor per centre per epoch (its per-home sum-tree roots)
and one settlement, whatever the number of jobs; building the trees is off-chain
work, not gas. The peer, measured in the same run on the same embedded chain, is
per-job escrow as iExec and most marketplaces do it (scripts/bench/peer/JobEscrow.sol,
compiled with the same solcjs): the payer deposits each job (ERC-20 transferFrom in),
the centre claims each job with the payer's receipt (transfer out). Disputes cost gas
only when someone cheats: one dispute and its answer are measured on a claim of
10,000 records (a proof of depth 14).

    .venv/bin/python scripts/bench/bench_payment_gas.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import PAYMENT_ANSWER_MAX, PAYMENT_GAS_PER_JOB, Result, print_results, solc_compile
from eth_abi import encode
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from eth_utils import keccak

from ledger.chain import Chain, connect
from ledger.deploy import Contracts, MemberSpec, Prices, bind, deploy_consortium
from ledger.ids import centre_id
from ledger.lock import lock_hash, new_key
from ledger.payment import Grant, Order, Receipt, grant_digest, order_digest, sign_typed
from ledger.pricing import price
from ledger.records import Domain, UsageRecord, record_digest
from ledger.sumtree import SumTree

ROOT = Path(__file__).resolve().parents[2]
TITLE = "Fair payment: gas per job (UsageLedger + Settlement vs per-job escrow)"
ABOUT = (
    "One epoch of 10,000 jobs served by 3 centres for each other's users: each centre anchors "
    "its per-home sum-tree roots and its decision log's root (one entry per job) in one "
    "transaction and one transaction settles the epoch "
    "from collateral; gas per job = (3 anchors + settle) / 10,000 (building the trees is "
    "off-chain). Peer, same run, same embedded chain (py-evm, Cancun): per-job escrow "
    "(`scripts/bench/peer/JobEscrow.sol`: the payer deposits each job with an OpenZeppelin "
    "ERC-20 transferFrom, the centre claims it with the payer's ECDSA receipt, transfer "
    "out plus refund), the design iExec (about 2M gas per task, published) and most "
    "marketplaces use; its figure is the mean of open + claim over the jobs run. A dispute "
    "and its answer are measured on a claim of 10,000 records (sum-tree proof of depth 14). "
    "All figures are `gasUsed` of the transactions, intrinsic and calldata gas included."
)

HONEST = PAYMENT_GAS_PER_JOB
ESCROW = "payment.escrow.gas_per_job"
ANSWER = "payment.dispute.answer_receipt"
ANSWER_KEY = "payment.dispute.answer_key"
EPOCH_JOBS = 10_000
CENTRES = ("hpc-a", "cloud-b", "edge-c")
PRICES = Prices(per_cpu_second=1_000, per_gpu_second=50_000, per_gib_hour=20_000)
WINDOW = 60  # dispute window, seconds (the chain's clock is moved past it)
PEER_SOURCE = Path(__file__).resolve().parent / "peer" / "JobEscrow.sol"


def compile_peer() -> dict[str, Any]:
    """ABI and bytecode of JobEscrow, compiled by the project's solcjs (scripts/solc) as the contracts are."""
    return solc_compile({"peer/JobEscrow.sol": PEER_SOURCE.read_text()}, "JobEscrow")["peer/JobEscrow.sol"]["JobEscrow"]


class World:
    """A fresh consortium of three centres on the embedded chain."""

    def __init__(self) -> None:
        self.chain: Chain = connect("embedded")
        self.accounts: dict[str, LocalAccount] = {name: Account.create() for name in CENTRES}
        for account in self.accounts.values():
            self.chain.fund(account.address, 10**20)
        specs = [
            MemberSpec(name, self.accounts[name].address, f"http://{name}.invalid", os.urandom(32), PRICES)
            for name in CENTRES
        ]
        self.deployment = deploy_consortium(
            self.chain, self.chain.dev_account, specs, 2, 10**15, dispute_window=WINDOW, booking_delay=86_400
        )
        self.c: Contracts = bind(self.chain, self.deployment)
        self.domain = Domain.for_deployment(self.deployment)

    def now(self) -> int:
        return int(self.chain.w3.eth.get_block("latest")["timestamp"])

    def skip(self, seconds: int) -> None:
        tester = self.chain.w3.provider.ethereum_tester  # type: ignore[attr-defined]
        tester.time_travel(self.now() + seconds)
        self.chain.mine(1)

    def gas(self, fn: Any, sender: LocalAccount) -> int:
        return int(self.chain.transact(fn, sender)["gasUsed"])

    def anchor(self, epoch: int, centre: str, trees: dict[str, SumTree]) -> int:
        """The anchor's gas, with a decision log of one entry per record (its root is off-chain work)."""
        homes = list(trees)
        decisions = sum(t.count for t in trees.values())
        return self.gas(
            self.c.usage_ledger.functions.anchor(
                epoch,
                [centre_id(h) for h in homes],
                [trees[h].root for h in homes],
                [trees[h].count for h in homes],
                [trees[h].total for h in homes],
                os.urandom(32) if decisions else bytes(32),
                decisions,
            ),
            self.accounts[centre],
        )


def honest_epoch(world: World, epoch: int, jobs: int, rng: random.Random) -> dict[str, int]:
    """Gas of one epoch of `jobs` jobs: each centre's anchor and the settlement."""
    leaves: dict[str, dict[str, list[tuple[bytes, int]]]] = {c: {h: [] for h in CENTRES if h != c} for c in CENTRES}
    for j in range(jobs):
        centre = CENTRES[j % 3]
        home = rng.choice([h for h in CENTRES if h != centre])
        leaves[centre][home].append((rng.randbytes(32), rng.randrange(1, 100_000)))
    gas = {}
    for centre in CENTRES:
        trees = {home: SumTree(pairs) for home, pairs in leaves[centre].items()}
        gas[f"anchor {centre}"] = world.anchor(epoch, centre, trees)
    world.skip(2 * WINDOW + 1)
    gas["settle"] = world.gas(world.c.settlement.functions.settle(epoch), world.chain.dev_account)
    return gas


def signed_job(world: World, centre: str, home: str, epoch: int) -> tuple[UsageRecord, tuple, bytes]:
    """A real job of a `home` user at `centre`: the record and the Evidence minus proof and key."""
    user = Account.create()
    deadline = world.now() + 3_600
    order = Order(
        request=os.urandom(32),
        centre=centre_id(centre),
        rates_version=1,
        max_price=10**9,
        deadline=deadline,
        nonce=int.from_bytes(os.urandom(32), "big"),
    )
    order_sig = sign_typed(order, world.domain, user.key)
    order_hash = order_digest(order, world.domain)
    grant = Grant(
        order=order_hash,
        account=user.address,
        home=centre_id(home),
        centre=centre_id(centre),
        amount=order.max_price,
        deadline=deadline,
    )
    grant_sig = sign_typed(grant, world.domain, world.accounts[home].key)
    started = world.now()
    meters = {"cpu_millis": 61_000, "wall_millis": 65_000, "max_rss_kib": 512 * 1024, "gpu_millis": 0}
    key = new_key()
    record = UsageRecord(
        record_id=os.urandom(32),
        job_id=os.urandom(32),
        serving_centre=centre_id(centre),
        home_centre=centre_id(home),
        user=os.urandom(32),
        epoch=epoch,
        started_at=started,
        ended_at=started + 65,
        rates_version=1,
        price=min(price(_Meters(**meters), PRICES), grant.amount),
        order=order_hash,
        grant=grant_digest(grant, world.domain),
        lock_hash=lock_hash(key),
        decision=os.urandom(32),
        **meters,
    )
    receipt_sig = sign_typed(Receipt(record=record_digest(record, world.domain)), world.domain, user.key)
    parts = (_tuple(record), _tuple(order), order_sig, _tuple(grant), grant_sig, receipt_sig)
    return record, parts, key


class _Meters:
    def __init__(self, cpu_millis: int, wall_millis: int, max_rss_kib: int, gpu_millis: int) -> None:
        self.cpu_millis, self.wall_millis, self.max_rss_kib, self.gpu_millis = (
            cpu_millis,
            wall_millis,
            max_rss_kib,
            gpu_millis,
        )


def _tuple(obj: Any) -> tuple:
    return tuple(obj.message().values())


def dispute_epoch(world: World, rng: random.Random) -> dict[str, int]:
    """A claim of 10,000 records (depth 14); one dispute answered by receipt, one by the key."""
    epoch, centre, home = 3, CENTRES[0], CENTRES[1]
    first, first_parts, _ = signed_job(world, centre, home, epoch)
    last, last_parts, last_key = signed_job(world, centre, home, epoch)
    pairs = [(record_digest(first, world.domain), first.price)]
    pairs += [(rng.randbytes(32), rng.randrange(1, 100_000)) for _ in range(EPOCH_JOBS - 2)]
    pairs.append((record_digest(last, world.domain), last.price))
    tree = SumTree(pairs)
    assert len(tree.proof(0).hashes) == 14
    world.anchor(epoch, centre, {home: tree})
    gas = {}
    challenger = world.accounts[home]
    for index, need_key in ((0, False), (EPOCH_JOBS - 1, True)):
        fn = world.c.usage_ledger.functions.dispute(centre_id(centre), epoch, centre_id(home), index, need_key)
        gas[f"dispute {'key' if need_key else 'receipt'}"] = world.gas(fn, challenger)
    opened = world.c.usage_ledger.events.Disputed().get_logs(from_block=0)
    by_index = {int(e["args"]["index"]): int(e["args"]["id"]) for e in opened}
    for index, parts, key, name in (
        (0, first_parts, bytes(32), "answer receipt"),
        (EPOCH_JOBS - 1, last_parts, last_key, "answer key"),
    ):
        proof = tree.proof(index)
        evidence = (*parts, key, list(proof.hashes), list(proof.sums))
        gas[name] = world.gas(world.c.usage_ledger.functions.answer(by_index[index], evidence), world.accounts[centre])
    return gas


def escrow_jobs(world: World, jobs: int, rng: random.Random) -> dict[str, float]:
    """Mean gas of open (payer deposits) and claim (centre paid by receipt) over `jobs` jobs."""
    art = compile_peer()
    payer, worker = Account.create(), world.accounts[CENTRES[0]]
    world.chain.fund(payer.address, 10**20)
    token = world.chain.deploy("ConsortiumCredit", world.chain.dev_account, [payer.address], [10**15])
    factory = world.chain.w3.eth.contract(abi=art["abi"], bytecode=art["bytecode"])
    address = world.chain.transact(factory.constructor(token.address), world.chain.dev_account)["contractAddress"]
    escrow = world.chain.w3.eth.contract(address=address, abi=art["abi"])
    world.chain.transact(token.functions.approve(address, 2**256 - 1), payer)  # once, not per job
    opens, claims = [], []
    for job in range(1, jobs + 1):
        max_price = 10**9
        opens.append(world.gas(escrow.functions.open(worker.address, max_price), payer))
        paid = rng.randrange(1, max_price)
        message = encode_defunct(primitive=keccak(encode(["address", "uint256", "uint256"], [address, job, paid])))
        receipt = payer.sign_message(message).signature
        claims.append(world.gas(escrow.functions.claim(job, paid, bytes(receipt)), worker))
    if token.functions.balanceOf(address).call() != 0:
        raise RuntimeError("the escrow peer kept credit: the benchmark's jobs did not all settle")
    return {"open": sum(opens) / jobs, "claim": sum(claims) / jobs}


def run(quick: bool = False) -> list[Result]:
    rng = random.Random(8)
    peer_jobs = 50 if quick else 200
    world = World()
    started = time.perf_counter()
    first = honest_epoch(world, 1, EPOCH_JOBS, rng)  # a fresh deployment's first epoch: storage from zero
    honest = honest_epoch(world, 2, EPOCH_JOBS, rng)  # any later epoch
    disputes = dispute_epoch(world, rng)
    escrow = escrow_jobs(world, peer_jobs, rng)
    seconds = time.perf_counter() - started
    honest_total, first_total = sum(honest.values()), sum(first.values())

    def parts(gas: dict[str, int]) -> str:
        return f"3 anchors ({', '.join(str(gas[f'anchor {c}']) for c in CENTRES)}) + settle {gas['settle']}"

    depth14 = "claim of 10,000 records (depth 14)"
    epoch = f"epoch of {EPOCH_JOBS:,} jobs, 3 centres"
    return [
        Result(
            HONEST,
            epoch,
            "anchors + settle, per job",
            honest_total / EPOCH_JOBS,
            unit="gas",
            runs=EPOCH_JOBS,
            note=f"a later epoch: {parts(honest)}",
        ),
        Result(
            ESCROW,
            "peer: per-job escrow",
            "open + claim, per job",
            escrow["open"] + escrow["claim"],
            unit="gas",
            runs=peer_jobs,
            peer=HONEST,
            note=f"open {escrow['open']:.0f} + claim {escrow['claim']:.0f}; ratio: peer ÷ this design",
        ),
        Result(
            "payment.honest.first_epoch_per_job",
            epoch,
            "anchors + settle, per job (first epoch)",
            first_total / EPOCH_JOBS,
            unit="gas",
            runs=EPOCH_JOBS,
            note=f"a fresh deployment's first epoch: {parts(first)}",
        ),
        Result("payment.dispute.open", depth14, "dispute (locks the bond)", disputes["dispute receipt"], unit="gas"),
        Result(ANSWER, depth14, "answer with a receipt", disputes["answer receipt"], unit="gas"),
        Result(ANSWER_KEY, depth14, "answer with the key (k)", disputes["answer key"], unit="gas"),
        Result(
            PAYMENT_ANSWER_MAX,
            depth14,
            "answer, the costlier of the two",
            max(disputes["answer receipt"], disputes["answer key"]),
            unit="gas",
            note=f"whole benchmark {seconds:.0f} s",
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    print_results(run(quick=parser.parse_args().quick))


if __name__ == "__main__":
    main()
