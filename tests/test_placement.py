"""gateway.jobs.placement: in which order a client offers a job to the member centres."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.api.schemas import PlacementRequest
from gateway.jobs.placement import rank_centres as rank
from gateway.jobs.pricing import max_price
from ledger.deploy import Prices


@dataclass(frozen=True)
class Member:
    name: str
    prices: Prices | None
    rates_version: int = 1

    @property
    def gateway_url(self) -> str:
        return f"http://{self.name}.example"


def rank_centres(members, job, here, free=None) -> list[str]:
    """Names in ranking order; every centre has ample room unless `free` says otherwise."""
    members = list(members)
    free = {m.name: 1024 for m in members} if free is None else free
    return [c.centre for c in rank(members, job, here, free)]


HPC = Member("hpc-a", Prices(per_cpu_second=40_000, per_gpu_second=0, per_gib_hour=200_000))
CLOUD = Member("cloud-b", Prices(per_cpu_second=25_000, per_gpu_second=0, per_gib_hour=100_000))
AI = Member("ai-c", Prices(per_cpu_second=60_000, per_gpu_second=500_000, per_gib_hour=300_000))
MEMBERS = [HPC, CLOUD, AI]


def request(walltime: int = 600, **resources: object) -> PlacementRequest:
    return PlacementRequest(walltime=walltime, resources=resources)


# -- price ----------------------------------------------------------------------------------------


def test_auto_ranks_every_member_by_maximum_price():
    job = request(walltime=3600, cores=4, memory_mib=8192)
    ranked = rank_centres(MEMBERS, job, here="ai-c")
    assert ranked == ["cloud-b", "hpc-a", "ai-c"]
    costs = [max_price(3600, 4, 8192, 0, next(m for m in MEMBERS if m.name == n).prices) for n in ranked]
    assert costs == sorted(costs) and len(set(costs)) == 3


def test_auto_ranking_counts_every_resource():
    # cheap cores but dear memory, against dear cores but cheap memory
    cores = Member("cores-x", Prices(per_cpu_second=1_000, per_gpu_second=0, per_gib_hour=10_000_000))
    memory = Member("memory-y", Prices(per_cpu_second=50_000, per_gpu_second=0, per_gib_hour=1_000))
    assert rank_centres([cores, memory], request(cores=64, memory_mib=1024), here="none")[0] == "cores-x"
    assert rank_centres([cores, memory], request(cores=1, memory_mib=512 * 1024), here="none")[0] == "memory-y"
    # GPU-seconds count for GPU jobs only
    gpu = Member("gpu-z", Prices(per_cpu_second=10_000, per_gpu_second=10_000_000, per_gib_hour=1_000))
    plain = Member("plain-w", Prices(per_cpu_second=20_000, per_gpu_second=0, per_gib_hour=1_000))
    assert rank_centres([gpu, plain], request(), here="none")[0] == "gpu-z"
    assert rank_centres([gpu, plain], request(gpus=1, queue="gpu"), here="none")[0] == "plain-w"


def test_ties_go_to_the_centre_asked_first_then_by_name():
    same = Prices(per_cpu_second=10, per_gpu_second=10, per_gib_hour=10)
    members = [Member(n, same) for n in ("c-3", "a-1", "b-2")]
    assert rank_centres(members, request(), here="b-2") == ["b-2", "a-1", "c-3"]
    assert rank_centres(members, request(), here="c-3") == ["c-3", "a-1", "b-2"]
    assert rank_centres(members, request(), here="elsewhere") == ["a-1", "b-2", "c-3"]


def test_here_first_only_on_ties():
    dear_here = Member("here", Prices(per_cpu_second=11, per_gpu_second=0, per_gib_hour=0))
    cheap = Member("there", Prices(per_cpu_second=10, per_gpu_second=0, per_gib_hour=0))
    assert rank_centres([dear_here, cheap], request(), here="here") == ["there", "here"]


def test_the_ranking_does_not_depend_on_the_members_order():
    job = request(walltime=100, cores=2)
    assert rank_centres(MEMBERS, job, "hpc-a") == rank_centres(list(reversed(MEMBERS)), job, "hpc-a")


def test_auto_with_no_members_offers_nothing():
    assert rank_centres([], request(), here="hpc-a") == []


def test_a_member_without_rates_in_force_is_not_offered():
    # admitted, but its first rates are not yet in force: it cannot price a job, so it would refuse it
    unpriced = Member("new-d", None)
    assert rank_centres([*MEMBERS, unpriced], request(), here="new-d") == ["cloud-b", "hpc-a", "ai-c"]
    assert rank_centres([unpriced], request(), here="hpc-a") == []


def test_members_may_be_any_iterable():
    assert rank_centres(iter(MEMBERS), request(), here="hpc-a") == ["cloud-b", "hpc-a", "ai-c"]


# -- capacity -------------------------------------------------------------------------------------


def test_centres_with_room_come_first_then_those_short_of_room_then_the_silent():
    job = request(cores=4)
    free = {"cloud-b": 2, "hpc-a": None, "ai-c": 4}
    assert rank_centres(MEMBERS, job, "hpc-a", free) == ["ai-c", "cloud-b", "hpc-a"]
    assert rank_centres(MEMBERS, job, "hpc-a", {}) == ["cloud-b", "hpc-a", "ai-c"]  # nobody said: price alone


def test_each_candidate_says_where_to_go_what_it_costs_and_its_room():
    job = request(walltime=3600, cores=2)
    first, *_ = rank(MEMBERS, job, "hpc-a", {"cloud-b": 8, "hpc-a": 8, "ai-c": 8})
    assert (first.centre, first.gateway_url, first.free_cpus) == ("cloud-b", "http://cloud-b.example", 8)
    assert first.max_price == max_price(3600, 2, 1024, 0, CLOUD.prices) and first.has_room


def test_each_candidate_names_the_rates_version_its_price_is_at() -> None:
    """What a client's order for that centre names: its max price is at exactly that version."""
    job = PlacementRequest(walltime=60)
    members = [HPC, Member("cloud-b", CLOUD.prices, rates_version=3)]
    ranked = rank(members, job, "hpc-a", {m.name: 8 for m in members})
    assert {c.centre: c.rates_version for c in ranked} == {"hpc-a": 1, "cloud-b": 3}
