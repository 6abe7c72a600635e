"""Pricing: integer, rounded up, monotone, bounded by the price at the job's limits (max_price),
and fixed when a job is accepted."""

from __future__ import annotations

import dataclasses
import json
import random
import time
from dataclasses import dataclass
from fractions import Fraction

import pytest

from gateway.jobs.executor import Execution
from gateway.jobs.pricing import PricingError, cap_to_limits, max_price, price
from ledger.pricing import KIB_MILLIS_PER_GIB_HOUR


@dataclass(frozen=True)
class P:  # the shape of ledger.deploy.Prices
    per_cpu_second: int
    per_gpu_second: int
    per_gib_hour: int


def ex(cpu: int = 0, wall: int = 0, rss: int = 0, gpu: int = 0) -> Execution:
    return Execution(
        exit_code=0,
        timed_out=False,
        cpu_millis=cpu,
        wall_millis=wall,
        max_rss_kib=rss,
        gpu_millis=gpu,
        started_at=0,
        ended_at=wall // 1000,
    )


def exact(e: Execution, p: P) -> Fraction:
    return (
        Fraction(e.cpu_millis * p.per_cpu_second, 1000)
        + Fraction(e.gpu_millis * p.per_gpu_second, 1000)
        + Fraction(e.max_rss_kib * e.wall_millis * p.per_gib_hour, KIB_MILLIS_PER_GIB_HOUR)
    )


def rand_prices(rng: random.Random) -> P:
    return P(rng.randrange(0, 10**6), rng.randrange(0, 10**7), rng.randrange(0, 10**6))


def test_exact_values_and_rounding_up() -> None:
    p = P(per_cpu_second=7, per_gpu_second=100, per_gib_hour=5)
    assert price(ex(), p) == 0
    assert price(ex(cpu=1000), p) == 7
    assert price(ex(cpu=1001), p) == 8  # 7.007 -> 8
    assert price(ex(cpu=1), p) == 1  # any use costs at least one unit
    assert price(ex(gpu=500), p) == 50
    assert price(ex(gpu=501), p) == 51  # 50.1 -> 51
    one_gib, one_hour = 1024 * 1024, 3_600_000
    assert price(ex(rss=one_gib, wall=one_hour), p) == 5
    assert price(ex(rss=one_gib, wall=one_hour + 1), p) == 6
    assert price(ex(rss=1, wall=1), p) == 1
    # each term rounds up separately
    assert price(ex(cpu=1, gpu=1, rss=1, wall=1), p) == 3
    assert isinstance(price(ex(cpu=123456), p), int)


def test_zero_prices_cost_nothing() -> None:
    assert price(ex(cpu=10**9, wall=10**9, rss=10**9, gpu=10**9), P(0, 0, 0)) == 0


def test_price_is_the_exact_sum_rounded_up_per_term() -> None:
    rng = random.Random(1234)
    for _ in range(2000):
        p = rand_prices(rng)
        e = ex(rng.randrange(0, 10**9), rng.randrange(0, 10**9), rng.randrange(0, 10**8), rng.randrange(0, 10**9))
        got = price(e, p)
        assert exact(e, p) <= got < exact(e, p) + 3


def test_price_within_limits_never_exceeds_max_price() -> None:
    rng = random.Random(42)
    for _ in range(3000):
        p = rand_prices(rng)
        walltime, cores = rng.randrange(1, 200_000), rng.randrange(0, 256)
        memory_mib, gpus = rng.randrange(0, 2_000_000), rng.randrange(0, 9)
        wall = rng.randrange(0, walltime * 1000 + 1)
        e = ex(
            cpu=rng.randrange(0, cores * walltime * 1000 + 1),
            wall=wall,
            rss=rng.randrange(0, memory_mib * 1024 + 1),
            gpu=rng.randrange(0, gpus * walltime * 1000 + 1),
        )
        bound = max_price(walltime, cores, memory_mib, gpus, p)
        assert price(e, p) <= bound
        # the bound is attained at the limits: it is the tightest such bound
        at_limits = ex(
            cpu=cores * walltime * 1000, wall=walltime * 1000, rss=memory_mib * 1024, gpu=gpus * walltime * 1000
        )
        assert price(at_limits, p) == bound


def test_price_is_monotone_in_every_meter() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        p = rand_prices(rng)
        e = ex(rng.randrange(0, 10**7), rng.randrange(0, 10**7), rng.randrange(0, 10**7), rng.randrange(0, 10**7))
        base = price(e, p)
        for field in ("cpu_millis", "wall_millis", "max_rss_kib", "gpu_millis"):
            bigger = dataclasses.replace(e, **{field: getattr(e, field) + rng.randrange(1, 10**6)})
            assert price(bigger, p) >= base
        dearer = P(
            p.per_cpu_second + rng.randrange(0, 100),
            p.per_gpu_second + rng.randrange(0, 100),
            p.per_gib_hour + rng.randrange(0, 100),
        )
        assert price(e, dearer) >= base


def test_max_price_is_monotone_in_every_limit() -> None:
    rng = random.Random(99)
    for _ in range(1000):
        p = rand_prices(rng)
        args = [rng.randrange(1, 10**5), rng.randrange(0, 64), rng.randrange(0, 10**6), rng.randrange(0, 8)]
        base = max_price(*args, p)
        for i in range(4):
            bigger = list(args)
            bigger[i] += rng.randrange(1, 1000)
            assert max_price(*bigger, p) >= base


def test_max_price_simple_case() -> None:
    p = P(per_cpu_second=2, per_gpu_second=10, per_gib_hour=3600)
    # 60 s x 4 cores x 2 + 60 s x 1 gpu x 10 + 1 GiB for 60 s at 3600/GiB-hour
    assert max_price(60, 4, 1024, 1, p) == 480 + 600 + 60


def test_cap_to_limits_keeps_price_under_max_price() -> None:
    rng = random.Random(5)
    for _ in range(1000):
        p = rand_prices(rng)
        walltime, cores = rng.randrange(1, 10_000), rng.randrange(1, 64)
        memory_mib, gpus = rng.randrange(1, 100_000), rng.randrange(0, 4)
        # a run that overshot: grace period after walltime, more threads than cores, more memory
        e = ex(
            cpu=rng.randrange(0, 10**9),
            wall=walltime * 1000 + rng.randrange(0, 5000),
            rss=rng.randrange(0, 10**9),
            gpu=rng.randrange(0, 10**8),
        )
        capped = cap_to_limits(e, walltime, cores, memory_mib, gpus)
        assert price(capped, p) <= max_price(walltime, cores, memory_mib, gpus, p)
        assert price(capped, p) <= price(e, p)
        assert capped.exit_code == e.exit_code and capped.stdout_tail == e.stdout_tail
    within = ex(cpu=1000, wall=2000, rss=1024, gpu=0)
    assert cap_to_limits(within, 10, 1, 10, 0) == within


@pytest.mark.parametrize("bad", [-1, 1.5, "3", None, True])
def test_bad_meters_and_prices_raise(bad) -> None:
    good = P(1, 1, 1)
    fake = type("Fake", (), {"cpu_millis": bad, "gpu_millis": 0, "max_rss_kib": 0, "wall_millis": 0})()
    with pytest.raises(PricingError):
        price(fake, good)
    with pytest.raises(PricingError):
        price(ex(cpu=1), P(bad, 1, 1))
    with pytest.raises(PricingError):
        max_price(bad, 1, 1, 1, good)
    with pytest.raises(PricingError):
        max_price(1, 1, bad, 1, good)
    with pytest.raises(ValueError):  # PricingError is a ValueError
        max_price(1, 1, 1, 1, P(1, 1, bad))


def test_wrong_shapes_raise() -> None:
    with pytest.raises(PricingError):
        price(object(), P(1, 1, 1))
    with pytest.raises(PricingError):
        price(ex(), object())
    with pytest.raises(PricingError):
        cap_to_limits({"cpu_millis": 1}, 1, 1, 1, 1)


# -- integration: prices are fixed when a job is accepted (real gateways on anvil, real slapd) ---------


@pytest.fixture(scope="module")
def fresh(slapd_factory, tmp_path_factory):
    """A consortium of its own: this module changes a centre's rates on chain. On an anvil of its own too,
    as it times a job against when rates apply: the shared node's clock is moved ahead by tests of the
    dispute windows, and a quiet anvil mines no block that would bring its chain time up to date."""
    from tests.fixtures.anvil import running_anvil
    from tests.fixtures.consortium import start_consortium

    with running_anvil(tmp_path_factory.mktemp("rates-anvil")) as anvil_url:
        running = start_consortium(slapd_factory, anvil_url, tmp_path_factory.mktemp("rates"))
        yield running
        running.stop()


def _eventually(check, within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "the condition did not come true in time"
        time.sleep(0.05)


def _publish(consortium, name: str, prices) -> int:
    """Publish `prices` as `name`'s next rates, due as soon as the notice allows; returns when they apply."""
    from ledger.deploy import bind

    contract = bind(consortium.chain, consortium.deployment).consortium
    chain_now = consortium.chain.w3.eth.get_block("latest")["timestamp"]
    due = max(chain_now, int(time.time())) + contract.functions.rateNotice().call() + 1
    consortium.chain.transact(contract.functions.publishRates(prices.as_tuple(), due), consortium.centres[name].account)
    return due


def test_rates_changed_while_a_job_runs_do_not_price_it(fresh) -> None:
    """Rates x1000 published, and in force, while a job runs: its record keeps the version it was accepted under,
    the next job is priced at the new one, and the audit recomputes both from the chain."""
    from gateway.books.auditor import audit_epoch
    from gateway.client.dispatch import finish, submit_anywhere, with_home_session
    from gateway.client.http import GatewayClient
    from gateway.client.wallet import PaymentKeys
    from ledger.deploy import Prices
    from ledger.records import UsageRecord
    from tests.fixtures.consortium import PASSWORDS

    node = fresh.centres["hpc-a"].node
    index, store = node.parts.index, node.parts.store
    accepted = index.rates_in_force("hpc-a", index.now())
    p = accepted.prices
    dearer = Prices(p.per_cpu_second * 1000, p.per_gpu_second * 1000, p.per_gib_hour * 1000)
    notice = fresh.spec.rate_notice
    job = {"command": ["python3", "-c", f"import time; time.sleep({notice + 4}); print('done')"], "walltime": 60}
    # the later job's walltime is short: at rates x1000 its price at its limits is what alice's project can hold
    later_job = {"command": ["python3", "-c", "print('later')"], "walltime": 5}
    keys = PaymentKeys()
    with GatewayClient(fresh.url("hpc-a")) as home:
        home.login("alice", PASSWORDS["alice"])
        sign_on = with_home_session(home)
        first = submit_anywhere(fresh.url("hpc-a"), job, sign_on, centre="hpc-a", keys=keys)
        job_id = first.view["id"]
        assert store.get_job(job_id).rates_version == accepted.version == first.paid.order.rates_version
        _eventually(lambda: store.get_job(job_id).status == "running")
        due = _publish(fresh, "hpc-a", dearer)
        _eventually(lambda: index.sync() >= 0 and index.rates_in_force("hpc-a", index.now()).prices == dearer)
        assert index.member("hpc-a").prices == dearer  # what hpc-a charges for new jobs now ...
        assert store.get_job(job_id).status == "running", store.get_job(job_id)  # ... took effect while it ran
        with first.client:
            view = finish(first, keys).view
        second_submission = submit_anywhere(fresh.url("hpc-a"), later_job, sign_on, centre="hpc-a", keys=keys)
        assert second_submission.paid.order.rates_version == accepted.version + 1  # ordered at the new rates
        with second_submission.client:
            later = finish(second_submission, keys).view
    assert view["status"] == later["status"] == "succeeded", [store.get_job(v["id"]).detail for v in (view, later)]
    record = UsageRecord.from_json(store.record(view["record_id"]).record)
    assert record.rates_version == accepted.version and record.ended_at >= due
    assert record.price == price(record, accepted.prices) > 0
    assert record.price < price(record, dearer)
    second = UsageRecord.from_json(store.record(later["record_id"]).record)
    assert second.rates_version == accepted.version + 1 and second.price == price(second, dearer) > 0

    closures = fresh.close_epoch_everywhere()
    report = audit_epoch(fresh.chain, fresh.deployment, closures[0]["epoch"])
    assert report.ok, report.findings
    assert report.totals["hpc-a"].amount == record.price + second.price


def test_a_job_whose_rates_version_is_unknown_is_not_priced(fresh) -> None:
    """A job kept from before rates were pinned, or naming a version the chain never had, fails with the
    reason when it completes: no record priced at some other rates."""
    from gateway.api.schemas import JobRequest

    store = fresh.store("hpc-a")
    fresh.stop_centre("hpc-a")
    job = JobRequest.model_validate({"command": ["true"], "walltime": 5, "centre": "hpc-a"}).model_dump()
    old, _ = store.create_job("alice@hpc-a", "hpc-a", job, "hpc-a")
    bogus, _ = store.create_job("alice@hpc-a", "hpc-a", job, "hpc-a", rates_version=99)
    node = fresh.start_centre("hpc-a")
    store = node.parts.store
    for job_id, named in ((old.id, "none recorded"), (bogus.id, "99")):
        _eventually(lambda job_id=job_id: store.get_job(job_id).status not in ("queued", "running"))
        done = store.get_job(job_id)
        assert done.status == "failed" and done.record_id is None
        assert f"the rates version it was accepted under ({named}) is not among hpc-a's published rates" in done.detail


def test_an_operator_publishes_and_lists_rates_with_the_cli(fresh, tmp_path, capsys) -> None:
    from eth_account import Account

    from gateway.client.cli import main
    from ledger.rates import history

    key = tmp_path / "chain.key"
    key.write_text(fresh.centres["cloud-b"].account.key.hex())
    common = ["--chain", fresh.anvil_url, "--deployment", str(fresh.deployment_file)]
    prices = ["--per-cpu-second", "50000", "--per-gpu-second", "0", "--per-gib-hour", "250000"]
    before = history(fresh.chain, fresh.deployment, "cloud-b")

    assert main(["rates", "publish", *common, "--key-file", str(key), *prices]) == 0
    published = json.loads(capsys.readouterr().out)
    chain_now = fresh.chain.w3.eth.get_block("latest")["timestamp"]
    assert published["centre"] == "cloud-b" and published["version"] == len(before) + 1
    assert published["effective_from"] >= chain_now + fresh.spec.rate_notice
    assert published["prices"] == {"per_cpu_second": 50000, "per_gpu_second": 0, "per_gib_hour": 250000}

    assert main(["rates", "show", *common, "--centre", "cloud-b"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [v["version"] for v in shown] == list(range(1, len(before) + 2)) and shown[-1] == published

    # back-dated, or not after the latest version: refused on chain, nothing published
    for start in (chain_now - 60, published["effective_from"]):
        assert main(["rates", "publish", *common, "--key-file", str(key), *prices, "--effective-from", str(start)]) == 1
        assert "RatesTooSoon" in capsys.readouterr().err
    stranger = tmp_path / "stranger.key"
    stranger.write_text(Account.create().key.hex())
    fresh.chain.fund(Account.from_key(stranger.read_text()).address, 10**18)
    assert main(["rates", "publish", *common, "--key-file", str(stranger), *prices]) == 1
    assert "NotMember" in capsys.readouterr().err
    assert main(["rates", "show", *common, "--centre", "Not A Centre"]) == 1
    assert "error:" in capsys.readouterr().err
    assert len(history(fresh.chain, fresh.deployment, "cloud-b")) == len(before) + 1
