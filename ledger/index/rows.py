"""The typed rows the index's queries return: plain frozen values, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field

from ledger.deploy import Prices
from ledger.governance import PROPOSAL_LIFETIME


@dataclass(frozen=True)
class RatesInfo:
    """One published version of a centre's rates: for jobs accepted from `effective_from` on."""

    centre: bytes
    version: int
    effective_from: int  # UTC seconds
    prices: Prices
    block: int = 0


@dataclass(frozen=True)
class PolicyInfo:
    """One published version of a centre's Cedar policy: the sha256 of its text and of its schema
    (zero: none), in force from `published_at` until the next version."""

    centre: bytes
    version: int
    policy_hash: bytes
    schema_hash: bytes
    published_at: int  # UTC seconds (block time)


@dataclass(frozen=True)
class MemberInfo:
    """A member centre as the chain last described it, with the rates in force when asked."""

    id: bytes
    name: str
    account: str
    gateway_url: str
    token_key: bytes
    prices: Prices | None  # of the rates version in force at EventIndex.now(); None if none is
    active: bool
    rates_version: int = 0  # that version's number (0 with prices None)


@dataclass(frozen=True)
class ClaimInfo:
    """One centre's anchored claim on one home for an epoch: the root, leaf count and total of
    the sum tree of its records for that home's users. The centre's own home is anchored too
    (for the audit) but never claimed."""

    centre: bytes
    epoch: int
    home: bytes
    root: bytes
    count: int
    total: int
    voided: bool = False
    anchored_at: int = 0  # UTC seconds (block time): disputes are open for a window from then


@dataclass(frozen=True)
class AnchorInfo:
    """One centre's anchored epoch: its claims per home, in anchoring order."""

    centre: bytes
    epoch: int
    record_count: int  # over every home
    homes: dict[bytes, ClaimInfo]  # home id -> claim
    anchored_at: int
    tx_hash: str
    block: int
    decision_root: bytes = bytes(32)  # Merkle root of the centre's decision log of the epoch (zero: none)
    decision_count: int = 0  # entries in that log
    late: bool = False  # AnchoredLate: after the anchor deadline or the settlement, paid by settleLate, not netted
    late_settled: bool = False  # its LateClaimsSettled is indexed

    @property
    def claims(self) -> dict[bytes, int]:
        """What stands for settlement: totals on other homes, voided ones left out."""
        return {h: c.total for h, c in self.homes.items() if h != self.centre and not c.voided}


@dataclass(frozen=True)
class DisputeInfo:
    """A dispute of one leaf of a claim; status open, answered or voided (with its claim)."""

    id: int
    centre: bytes
    epoch: int
    home: bytes
    index: int
    need_key: bool
    challenger: str
    status: str
    record: bytes | None  # the record digest the answer proved
    block: int


@dataclass(frozen=True)
class CollateralInfo:
    """A member's collateral in Settlement, as the events tell it."""

    account: str
    balance: int
    locked: int
    pending: int  # asked to withdraw
    unlock_epoch: int

    @property
    def free(self) -> int:
        return max(0, self.balance - self.locked - self.pending)


@dataclass(frozen=True)
class SettlementInfo:
    """A settled epoch: net positions in netting order and the transfers made."""

    epoch: int
    net: dict[bytes, int]  # centre id -> net (positive: it was owed)
    transfers: list[tuple[bytes, bytes, int]]  # (debtor, creditor, amount) in order
    tx_hash: str
    block: int


@dataclass(frozen=True)
class LateSettlementInfo:
    """A late anchor's claims paid by `Settlement.settleLate`, apart from its epoch's settlement."""

    epoch: int
    centre: bytes  # the late anchor's centre, the only creditor
    net: dict[bytes, int]  # centre id -> what its collateral moved, `centre` first, then the homes that paid
    transfers: list[tuple[bytes, bytes, int]]  # (debtor, centre, amount) in order
    shortfalls: dict[bytes, int]  # debtor -> what it could not pay of its claim
    tx_hash: str
    block: int


class _Expiring:
    """When a proposal stops taking votes (Governed.PROPOSAL_LIFETIME after its making), for the rows below."""

    created_at: int | None
    executed: bool

    @property
    def expires_at(self) -> int | None:
        """From this block time on, votes on it revert (None while `created_at` is unknown)."""
        return None if self.created_at is None else self.created_at + PROPOSAL_LIFETIME

    def expired(self, at: int) -> bool:
        """Whether, not carried, it takes no more votes at chain time `at`."""
        return not self.executed and self.expires_at is not None and at >= self.expires_at


@dataclass(frozen=True)
class ProposalInfo(_Expiring):
    """A governance proposal and who voted for it."""

    id: int
    action: int  # 0 admit, 1 remove, 2 set quorum, 3 fund
    member_id: bytes
    proposer: bytes
    voters: list[bytes] = field(default_factory=list)
    executed: bool = False
    block: int = 0
    created_at: int | None = None  # block time of its making; None until the index has read it


@dataclass(frozen=True)
class IssuerKeyInfo:
    """A centre's credential issuer key and its validity window (chain block times).

    Valid at time t iff valid_from <= t and (valid_until == 0 or t < valid_until).
    """

    pk: bytes
    key_id: bytes  # keccak256(pk); presentations name a key by key_id[:8].hex()
    valid_from: int
    valid_until: int  # 0: the current key, open-ended
    centre: bytes = b""
    block: int = 0

    def valid_at(self, at: int) -> bool:
        """Whether a credential signed with this key may be presented at time `at`.

        Only the end of the window counts: `valid_from` is a block timestamp, and a
        chain's clock may run ahead of the verifier's (eth-tester stamps blocks mined
        within the same second a second apart), so a key just registered must not
        look "not yet valid".
        """
        return self.valid_until == 0 or at < self.valid_until

    @property
    def short_id(self) -> str:
        """The presentation's key_id: hex of the first 8 bytes of key_id."""
        return self.key_id[:8].hex()


@dataclass(frozen=True)
class EnrolmentInfo:
    """A user's pseudonymous enrolment at its home centre; (home, id) names it."""

    id: bytes
    home: bytes
    enrolled_at: int
    revoked: bool
    revocation_epoch: int | None  # the home's epoch this revocation produced; None if not revoked
    block: int


@dataclass(frozen=True)
class KeyProposalInfo(_Expiring):
    """A governance proposal to set (key_id) or revoke (key_id None) a centre's issuer key."""

    id: int
    centre: bytes
    key_id: bytes | None
    previous_valid_until: int
    proposer: bytes
    voters: list[bytes] = field(default_factory=list)
    executed: bool = False
    block: int = 0
    created_at: int | None = None  # block time of its making; None until the index has read it
