"""The supervisor's next move in the key generation, decided from one reading of the chain (pure), at the edges
the integration tests do not reach in real time: deadlines passed, a dealer disqualified, complaints open; and,
on the embedded chain, a key generation that goes on without a supervisor who never registered."""

from __future__ import annotations

from dataclasses import replace

import pytest

from gateway.client.supervising import (
    SupervisionUnusable,
    SupervisorState,
    _Look,
    _next_move,
    _seat_problem,
    dkg_step,
    run_local_dkg,
)
from ledger.supervision import Committee, ComplaintState, Deadlines
from tests.test_contracts import advance
from tests.test_supervision_contract import SUPERVISORS, WINDOW, make_world

REGISTRATION, DEAL, COMPLAINT, ANSWER = 1_000, 1_000, 1_600, 2_200
STATE = SupervisorState("0x" + "11" * 20, 1, 2, 5, coefficients=(7, 8))


def look(now: int = 900, *, me: int = 2, mine_ok=None, by_me=None, against_me=None, **committee) -> _Look:
    base = Committee(
        supervisors=("a", "b", "c"),
        threshold=2,
        dkg_window=600,
        registration_deadline=REGISTRATION,
        deadlines=Deadlines(DEAL, COMPLAINT, ANSWER),
        registered=frozenset({1, 2, 3}),
        dealt=frozenset({1, 2, 3}),
        disqualified=frozenset(),
        acknowledged=frozenset(),
        open_complaints=0,
        finalized=False,
    )
    c = replace(base, **committee)
    ok = {d: True for d in c.dealt - c.disqualified - {me}} | (mine_ok or {})
    return _Look(c, me, now, ok, by_me or {}, against_me or {})


def test_registers_first_and_waits_for_the_last_registration():
    assert _next_move(look(registered=frozenset({1, 3}), deadlines=Deadlines(0, 0, 0)), STATE) == ("register",)
    assert _next_move(look(registered=frozenset({2}), deadlines=Deadlines(0, 0, 0)), STATE) is None


def test_past_the_registration_deadline_the_registered_deal_and_an_empty_seat_does_nothing():
    closed = {"registered": frozenset({1, 2}), "dealt": frozenset(), "deadlines": Deadlines(0, 0, 0)}
    assert _next_move(look(REGISTRATION, **closed), STATE) == ("deal",)  # the first deal opens dealing
    assert _next_move(look(REGISTRATION, me=3, **closed), STATE) is None  # too late to register
    assert "its seat is empty" in _seat_problem(look(REGISTRATION, **closed).committee, 3, REGISTRATION)
    assert _seat_problem(look(REGISTRATION, **closed).committee, 2, REGISTRATION) is None
    assert _seat_problem(look(REGISTRATION - 1, **closed).committee, 3, REGISTRATION - 1) is None  # still open
    alone = closed | {"registered": frozenset({2})}
    assert _next_move(look(REGISTRATION, **alone), STATE) is None  # fewer than the threshold: no key, ever
    assert "can never make a key" in _seat_problem(look(**alone).committee, 2, REGISTRATION)
    # dealing is over once everyone registered dealt: the empty seat is not waited for
    opened = {"registered": frozenset({1, 2}), "dealt": frozenset({1, 2})}
    assert _next_move(look(**opened), STATE) == ("acknowledge",)
    assert _next_move(look(**opened, acknowledged=frozenset({1, 2})), STATE) == ("finalize",)


def test_deals_only_before_the_deal_deadline():
    assert _next_move(look(dealt=frozenset({1})), STATE) == ("deal",)
    missed = look(DEAL, dealt=frozenset({1, 3}))
    assert _next_move(missed, STATE) == ("acknowledge",)  # dealing is over without it: the rest goes on


def test_a_bad_share_is_complained_of_until_the_complaint_deadline_then_never_acknowledged():
    bad = {"mine_ok": {1: False}, "by_me": {1: ComplaintState.NONE}}
    assert _next_move(look(**bad), STATE) == ("complain", 1)
    late = look(COMPLAINT, **bad)
    assert _next_move(late, STATE) is None  # too late to complain, and it will not vouch for a bad share
    open_ = {"mine_ok": {1: False}, "by_me": {1: ComplaintState.OPEN}, "open_complaints": 1}
    assert _next_move(look(**open_), STATE) is None  # waits for the answer
    answered = {"mine_ok": {1: False}, "by_me": {1: ComplaintState.ANSWERED}}
    assert _next_move(look(**answered), STATE) == ("acknowledge",)


def test_answers_a_complaint_against_it_before_anything_else_until_the_answer_deadline():
    complained = {"against_me": {1: ComplaintState.OPEN, 3: ComplaintState.NONE}, "open_complaints": 1}
    assert _next_move(look(**complained), STATE) == ("answer", 1)
    assert _next_move(look(**complained, acknowledged=frozenset({2})), STATE) == ("answer", 1)
    assert _next_move(look(ANSWER, **complained, acknowledged=frozenset({2})), STATE) == ("finalize",)


def test_finalizes_once_every_qualified_dealer_acknowledged_or_after_the_answer_deadline():
    assert _next_move(look(acknowledged=frozenset({2})), STATE) is None
    assert _next_move(look(acknowledged=frozenset({1, 2, 3})), STATE) == ("finalize",)
    dropped = look(acknowledged=frozenset({2, 3}), disqualified=frozenset({1}))
    assert _next_move(dropped, STATE) == ("finalize",)  # a disqualified dealer's acknowledgement is not awaited
    assert _next_move(look(ANSWER, acknowledged=frozenset({2})), STATE) == ("finalize",)


def test_a_state_file_that_is_not_one_is_refused(tmp_path):
    path = tmp_path / "state.json"
    path.write_text('{"version": 1, "contract": "0x12"}')
    with pytest.raises(SupervisionUnusable, match="is not a supervisor's state file"):
        SupervisorState.load(path)
    assert SupervisorState.load(tmp_path / "none.json") is None
    STATE.save(path)
    assert SupervisorState.load(path) == replace(STATE, contract="0x1111111111111111111111111111111111111111")


def test_two_supervisors_make_the_key_without_a_third_who_never_registered(tmp_path):
    """On the embedded chain: 2 of 3, sup-3 never registers; past the registration deadline sup-1 and sup-2 make
    the key between them (sup-3's slots zeros), and sup-3's own step then says its seat is empty, sending nothing."""
    world = make_world("embedded")
    supervision = world.fresh(threshold=2, supervisors=SUPERVISORS[:3])
    parties = [(name, world.accounts[name], tmp_path / f"{name}.json") for name in SUPERVISORS[:2]]
    for centre, account, path in parties:
        progress = dkg_step(supervision, account, centre, path)
        assert progress.did == ("registered an encryption key",) and progress.phase == "registration"
        assert progress.waiting.startswith("registration of") and "sup-3 (until" in progress.waiting
    advance(world.chain, WINDOW)
    y = run_local_dkg(supervision, parties)
    assert y == supervision.public_key() and supervision.committee().registered == frozenset({1, 2})
    assert supervision.verification_key(3) is None
    assert supervision.deal_of(1).shares[2 * 128 :] == bytes(128)
    third = world.accounts[SUPERVISORS[2]]
    nonce = world.chain.w3.eth.get_transaction_count(third.address)
    with pytest.raises(SupervisionUnusable, match="its seat is empty"):
        dkg_step(supervision, third, SUPERVISORS[2], tmp_path / "sup-3.json")
    assert world.chain.w3.eth.get_transaction_count(third.address) == nonce
    assert not (tmp_path / "sup-3.json").exists()
