"""The supervisor's next move in the key generation, decided from one reading of the chain (pure), at the edges
the integration tests do not reach in real time: deadlines passed, a dealer disqualified, complaints open."""

from __future__ import annotations

from dataclasses import replace

import pytest

from gateway.client.supervising import SupervisionUnusable, SupervisorState, _Look, _next_move
from ledger.supervision import Committee, ComplaintState, Deadlines

DEAL, COMPLAINT, ANSWER = 1_000, 1_600, 2_200
STATE = SupervisorState("0x" + "11" * 20, 1, 2, 5, coefficients=(7, 8))


def look(now: int = 900, *, me: int = 2, mine_ok=None, by_me=None, against_me=None, **committee) -> _Look:
    base = Committee(
        supervisors=("a", "b", "c"),
        threshold=2,
        dkg_window=600,
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
