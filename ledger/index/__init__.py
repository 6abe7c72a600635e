"""Local index of a consortium's chain events, so gateways never read the chain on the hot path.

`EventIndex.sync()` fetches the logs of the deployment's contracts from the last
indexed block + 1 up to the head, in block windows, decodes them with the contract
ABIs and applies them in (block, log index) order to SQLite tables: members (current
state), every published rates version and policy version of every member, proposals and
votes, anchors with their decision-log roots and their claims per home (voided or
standing), disputes and keys revealed in answers, members' collateral, settlements with
their transfers and shortfalls, late anchors and their own settlements (kept apart from
their epoch's), and from the IdentityRegistry the issuer keys with their validity windows,
key proposals and votes, enrolments and each home's revocation epochs with the block time
each began (so the epoch in force at any time can be read).

    schema.py        the tables and the file's bookkeeping (deployment, last block)
    rows.py          the typed rows queries return (MemberInfo, AnchorInfo, …)
    sync.py          following the chain in block windows, one transaction per window
    projections.py   one handler per event: how it changes the tables
    queries.py       reads, by column name, into typed rows
    event_index.py   EventIndex: the queries over a file a sync keeps current
"""

from ledger.index.event_index import DEFAULT_WINDOW, EventIndex
from ledger.index.rows import (
    AnchorInfo,
    ClaimInfo,
    CollateralInfo,
    DisputeInfo,
    EnrolmentInfo,
    IssuerKeyInfo,
    KeyProposalInfo,
    LateSettlementInfo,
    MemberInfo,
    PolicyInfo,
    ProposalInfo,
    RatesInfo,
    SettlementInfo,
)
from ledger.index.sync import EventIndexError, IndexMismatch

__all__ = [
    "DEFAULT_WINDOW",
    "AnchorInfo",
    "ClaimInfo",
    "CollateralInfo",
    "DisputeInfo",
    "EnrolmentInfo",
    "EventIndex",
    "EventIndexError",
    "IndexMismatch",
    "IssuerKeyInfo",
    "KeyProposalInfo",
    "LateSettlementInfo",
    "MemberInfo",
    "PolicyInfo",
    "ProposalInfo",
    "RatesInfo",
    "SettlementInfo",
]
