"""Typed bindings of the Supervision contract: the supervisors' key generation and the openings.

One method per contract function, on `Chain.transact`/`Chain.call` (so a revert is a
`ChainRevert` naming the contract's error on both backends). Points cross as the
contract holds them, raw (96 bytes x‖y), and come back as `G1Point`s where they were
checked on chain; a rejected share's point is kept as the bytes its sender sent,
since it may be no point at all. Supervisors are numbered 1..n, their position in
the committee plus one; members are named by their centre names.

Every request is an opening of its own, in the pool of its ciphertext's C1 (named by
the id of the first opening of that C1): decryption shares are the pool's, one per
supervisor, their proofs bind the pool id, each is given for one opening, and the t-th
accepted share opens each opening an accepted share was given for (no other).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from eth_account.signers.local import LocalAccount
from py_arkworks_bls12381 import G1Point
from web3.contract import Contract
from web3.contract.contract import ContractFunction
from web3.logs import DISCARD
from web3.types import TxReceipt

from auth.group.opening import Share
from auth.group.points import g1_from_raw, g1_raw
from ledger.chain import Chain
from ledger.deploy import Deployment, bind
from ledger.ids import centre_id, centre_name


class ComplaintState(IntEnum):
    """`Supervision.complaint`: none, open, answered (validly, or its dealer was disqualified for it)."""

    NONE = 0
    OPEN = 1
    ANSWERED = 2


class ShareState(IntEnum):
    """`Supervision.shareOf`: none, accepted (its proof verified), rejected (kept on the record)."""

    NONE = 0
    ACCEPTED = 1
    REJECTED = 2


@dataclass(frozen=True)
class Deadlines:
    """The key generation's deadlines, UTC seconds; all 0 until dealing opens (with the last registration, or with
    the first deal once registration closed)."""

    deal: int
    complaint: int
    answer: int


@dataclass(frozen=True)
class Committee:
    """The committee and its key generation at a glance (supervisor i is `supervisors[i - 1]`)."""

    supervisors: tuple[str, ...]
    threshold: int
    dkg_window: int
    registration_deadline: int
    """Registrations are taken before this time; the key is made among those who registered."""
    deadlines: Deadlines
    registered: frozenset[int]
    dealt: frozenset[int]
    disqualified: frozenset[int]
    acknowledged: frozenset[int]
    open_complaints: int
    finalized: bool

    @property
    def n(self) -> int:
        return len(self.supervisors)

    def index_of(self, centre: str) -> int:
        """The centre's supervisor index; 0 when it is not a supervisor."""
        return self.supervisors.index(centre) + 1 if centre in self.supervisors else 0


@dataclass(frozen=True)
class DealInfo:
    """A dealer's deal as posted: t raw commitments joined, n encrypted 128-byte shares joined."""

    dealer: int
    commitments: bytes
    shares: bytes


@dataclass(frozen=True)
class Opening:
    """One request to open a group signature, and how far its pool went."""

    id: int
    requester: str
    home: str
    transaction: bytes
    signature_hash: bytes
    reason: str
    requested_at: int
    c1: G1Point
    c2: G1Point
    accepted: int
    """Accepted shares of its pool."""
    opened: bool
    """Opened to its own T: its pool reached t accepted shares, one of them given for it."""
    tracing_key: G1Point | None
    enrolment: bytes | None
    pool: int
    """The pool of its C1: the id of the first opening of that C1, the id its shares' proofs bind."""


@dataclass(frozen=True)
class Pool:
    """The decryption shares of one ciphertext C1 and the openings of it, in request order."""

    id: int
    c1: G1Point
    accepted: int
    opened: bool
    openings: tuple[int, ...]


@dataclass(frozen=True)
class ShareInfo:
    """Supervisor `index`'s share for an opening's pool, as submitted (d raw, possibly no point at all)."""

    opening: int
    index: int
    state: ShareState
    d: bytes
    c: int
    z: int
    given: int = 0
    """The opening it was given for (whose claim its supervisor checked); 0 for none."""


@dataclass(frozen=True)
class Submitted:
    """What one submitted share did: accepted or rejected, and the opening's tracing key if it opened its pool."""

    accepted: bool
    tracing_key: G1Point | None


def _indexes(mask: int, n: int) -> frozenset[int]:
    return frozenset(i for i in range(1, n + 1) if mask >> (i - 1) & 1)


def _point(raw: bytes, what: str) -> G1Point | None:
    """A point the contract checked (or None for the empty bytes of 'not yet')."""
    return g1_from_raw(bytes(raw), what=what, allow_identity=True) if raw else None


class Supervision:
    """The Supervision contract of one deployment."""

    def __init__(self, chain: Chain, contract: Contract) -> None:
        self.chain = chain
        self.contract = contract
        self.address: str = contract.address

    @classmethod
    def of(cls, chain: Chain, deployment: Deployment) -> Supervision:
        """The deployment's contract; ValueError for a deployment written before it had one."""
        contract = bind(chain, deployment).supervision
        if contract is None:
            raise ValueError("this deployment has no Supervision contract")
        return cls(chain, contract)

    # -- key generation ---------------------------------------------------------------------

    def register(self, account: LocalAccount, encryption_key: G1Point | bytes) -> TxReceipt:
        """Posts the caller's encryption key E_i (a point, or its 96 raw bytes)."""
        key = g1_raw(encryption_key) if isinstance(encryption_key, G1Point) else bytes(encryption_key)
        return self._send(self.contract.functions.register(key), account)

    def deal(self, account: LocalAccount, commitments: bytes, shares: bytes) -> TxReceipt:
        """Posts the caller's deal: t × 96 raw commitments, n × 128 encrypted shares (auth.group.dkg.Dealer)."""
        return self._send(self.contract.functions.deal(bytes(commitments), bytes(shares)), account)

    def complain(self, account: LocalAccount, dealer: int) -> TxReceipt:
        """The caller's share from `dealer` does not verify."""
        return self._send(self.contract.functions.complain(dealer), account)

    def answer(self, account: LocalAccount, complainer: int, share: int) -> bool:
        """Reveals the complainer's share; True when the contract found it valid, False when it disqualified
        the caller for it."""
        receipt = self._send(self.contract.functions.answer(complainer, share), account)
        return bool(self.contract.events.ComplaintAnswered().process_receipt(receipt, errors=DISCARD))

    def acknowledge(self, account: LocalAccount) -> TxReceipt:
        """Every share the caller received verified (or was answered)."""
        return self._send(self.contract.functions.acknowledge(), account)

    def finalize(self, account: LocalAccount) -> tuple[G1Point, tuple[int, ...]]:
        """Generates the key: (Y, the qualified dealers' indexes)."""
        receipt = self._send(self.contract.functions.finalize(), account)
        event = self.contract.events.KeyGenerated().process_receipt(receipt, errors=DISCARD)[0]["args"]
        return g1_from_raw(bytes(event["publicKey"]), what="the public key"), tuple(event["qualified"])

    # -- openings ---------------------------------------------------------------------------

    def request_opening(
        self, account: LocalAccount, signature: bytes, home: str, transaction: bytes, reason: str
    ) -> int:
        """Asks the committee to open `signature` (of `home`'s member, for the usage record `transaction`); the id."""
        fn = self.contract.functions.requestOpening(bytes(signature), centre_id(home), bytes(transaction), reason)
        receipt = self._send(fn, account)
        return int(self.contract.events.OpeningRequested().process_receipt(receipt, errors=DISCARD)[0]["args"]["id"])

    def submit_share(self, account: LocalAccount, opening: int, share: Share) -> Submitted:
        """The caller's decryption share with its proof (auth.group.opening.decryption_share, for the opening's
        pool id), given for `opening`; a bad one is recorded as rejected, not refused."""
        return self.submit_raw_share(account, opening, g1_raw(share.d), share.c, share.z)

    def submit_raw_share(self, account: LocalAccount, opening: int, d: bytes, c: int, z: int) -> Submitted:
        """As submit_share, with D_i as raw bytes (which need not be a point)."""
        receipt = self._send(self.contract.functions.submitShare(opening, bytes(d), c, z), account)
        events = self.contract.events
        accepted = bool(events.ShareAccepted().process_receipt(receipt, errors=DISCARD))
        return Submitted(accepted=accepted, tracing_key=self._opened(receipt).get(opening))

    def identify(self, account: LocalAccount, opening: int, enrolment: bytes) -> TxReceipt:
        """The home records the enrolment it mapped the opened tracing key to."""
        return self._send(self.contract.functions.identify(opening, bytes(enrolment)), account)

    # -- views ------------------------------------------------------------------------------

    def committee(self) -> Committee:
        fns = self.contract.functions
        supervisors = self.supervisors()
        n = len(supervisors)
        registered, dealt, disqualified, acknowledged, open_complaints, finalized = self._call(fns.dkgStatus())
        return Committee(
            supervisors=supervisors,
            threshold=int(self._call(fns.threshold())),
            dkg_window=int(self._call(fns.dkgWindow())),
            registration_deadline=int(self._call(fns.registrationDeadline())),
            deadlines=self.deadlines(),
            registered=_indexes(registered, n),
            dealt=_indexes(dealt, n),
            disqualified=_indexes(disqualified, n),
            acknowledged=_indexes(acknowledged, n),
            open_complaints=int(open_complaints),
            finalized=bool(finalized),
        )

    def supervisors(self) -> tuple[str, ...]:
        return tuple(centre_name(bytes(i)) for i in self._call(self.contract.functions.supervisors()))

    def threshold(self) -> int:
        return int(self._call(self.contract.functions.threshold()))

    def supervisor_index(self, centre: str) -> int:
        """The centre's index (1-based), 0 for none."""
        return int(self._call(self.contract.functions.supervisorIndex(centre_id(centre))))

    def encryption_key(self, i: int) -> G1Point | None:
        return _point(self._call(self.contract.functions.encryptionKey(i)), f"E_{i}")

    def deal_of(self, i: int) -> DealInfo | None:
        commitments, shares = self._call(self.contract.functions.dealOf(i))
        return DealInfo(i, bytes(commitments), bytes(shares)) if commitments else None

    def complaint(self, dealer: int, complainer: int) -> ComplaintState:
        return ComplaintState(self._call(self.contract.functions.complaint(dealer, complainer)))

    def revealed_share(self, dealer: int, complainer: int) -> int:
        return int(self._call(self.contract.functions.revealedShare(dealer, complainer)))

    def qualified(self, i: int) -> bool:
        return bool(self._call(self.contract.functions.qualified(i)))

    def disqualified(self, i: int) -> bool:
        return bool(self._call(self.contract.functions.disqualified(i)))

    def acknowledged(self, i: int) -> bool:
        return bool(self._call(self.contract.functions.acknowledged(i)))

    def public_key(self) -> G1Point | None:
        """Y, None until the key is generated."""
        return _point(self._call(self.contract.functions.publicKey()), "the public key")

    def verification_key(self, j: int) -> G1Point | None:
        """Y_j = x_j·G, None until the key is generated (and for a seat that did not register)."""
        return _point(self._call(self.contract.functions.verificationKey(j)), f"Y_{j}")

    def deadlines(self) -> Deadlines:
        deal, complaint, answer = self._call(self.contract.functions.deadlines())
        return Deadlines(int(deal), int(complaint), int(answer))

    def opening_count(self) -> int:
        return int(self._call(self.contract.functions.openingCount()))

    def opening(self, opening: int) -> Opening:
        """The opening (ChainRevert UnknownOpening for an id never given)."""
        o = self._call(self.contract.functions.opening(opening))
        (requester, home, transaction, signature_hash, reason, requested_at) = o[:6]
        (c1, c2, accepted, opened, tracing_key, enrolment, pool) = o[6:]
        return Opening(
            id=opening,
            requester=centre_name(bytes(requester)),
            home=centre_name(bytes(home)),
            transaction=bytes(transaction),
            signature_hash=bytes(signature_hash),
            reason=str(reason),
            requested_at=int(requested_at),
            c1=g1_from_raw(bytes(c1), what="C1"),
            c2=g1_from_raw(bytes(c2), what="C2"),
            accepted=int(accepted),
            opened=bool(opened),
            tracing_key=_point(tracing_key, "T"),
            enrolment=bytes(enrolment) if any(enrolment) else None,
            pool=int(pool),
        )

    def pool(self, pool: int) -> Pool:
        """The pool named `pool` (ChainRevert UnknownOpening for an id that names no pool)."""
        c1, accepted, opened, openings = self._call(self.contract.functions.poolOf(pool))
        return Pool(pool, g1_from_raw(bytes(c1), what="C1"), int(accepted), bool(opened), tuple(map(int, openings)))

    def share_of(self, opening: int, i: int) -> ShareInfo:
        """Supervisor i's share for the opening's pool (state NONE for an unknown opening)."""
        state, d, c, z, given = self._call(self.contract.functions.shareOf(opening, i))
        return ShareInfo(opening, i, ShareState(state), bytes(d), int(c), int(z), int(given))

    # -- internals --------------------------------------------------------------------------

    def _opened(self, receipt: TxReceipt) -> dict[int, G1Point]:
        """The openings a transaction opened (`Opened`), with their tracing keys."""
        opened = self.contract.events.Opened().process_receipt(receipt, errors=DISCARD)
        return {int(e["args"]["id"]): g1_from_raw(bytes(e["args"]["tracingKey"]), allow_identity=True) for e in opened}

    def _send(self, fn: ContractFunction, account: LocalAccount) -> TxReceipt:
        return self.chain.transact(fn, account)

    def _call(self, fn: ContractFunction) -> Any:
        return self.chain.call(fn)
