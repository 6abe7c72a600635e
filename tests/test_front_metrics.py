"""Submission timings from front processes: what a front dumps, and the back's GET /metrics adding it in."""

from __future__ import annotations

import json
import logging
import math
import multiprocessing
import os
import stat
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import Histogram
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families

from gateway.api.metrics import (
    BUCKETS,
    LE,
    SUBMISSION_HELP,
    FrontTimings,
    SubmissionsWithFronts,
    histogram_series,
    install_front_timer,
    install_metrics,
    read_front_dump,
)
from gateway.node.centre import CentreNode

#: What the fronts (spawned processes) and the back observe, by status; 0.001 sits on a bound, 20 above all.
FRONT_A = [("202", 0.002), ("202", 0.3), ("429", 0.0005)]
FRONT_B = [("202", 20.0), ("500", 0.05), ("202", 0.001)]
BACK = [("202", 0.001), ("503", 2.0)]


def stub_node() -> CentreNode:
    """Just what NodeCollector and health() read: an empty, reachable node."""
    index = SimpleNamespace(last_block=7, lag=0, reachable=True, head_seen=7)
    books = SimpleNamespace(open=1, last_anchored=0, last_settled=0)
    store = SimpleNamespace(jobs_by_status=dict, open_epoch=lambda: 1)
    epochs = SimpleNamespace(outbox=SimpleNamespace(depth=dict), state=lambda: books)
    return cast(
        CentreNode, SimpleNamespace(name="hpc-a", parts=SimpleNamespace(index=index, store=store, epochs=epochs))
    )


def submissions_app() -> FastAPI:
    app = FastAPI()

    @app.post("/v1/jobs", status_code=202)
    def submit() -> dict[str, str]:
        return {}

    return app


def back(front_timings: Path | None = None) -> TestClient:
    app = submissions_app()
    install_metrics(app, stub_node(), front_timings=front_timings)
    return TestClient(app)


def submission_family(client: TestClient) -> Metric:
    answer = client.get("/metrics")
    assert answer.status_code == 200, answer.text
    (family,) = (f for f in text_string_to_metric_families(answer.text) if f.name == "xcentre_submission_seconds")
    return family


def one_process(observations: list[tuple[str, float]]) -> Histogram:
    """The histogram a single process observing all of these would hold."""
    histogram = Histogram("xcentre_submission_seconds", SUBMISSION_HELP, ["status"], buckets=BUCKETS, registry=None)
    for status, seconds in observations:
        histogram.labels(status).observe(seconds)
    return histogram


def values(samples: Any) -> dict[tuple[str, tuple], float]:
    """(sample name, sorted labels) -> value, without the _created timestamps only a live Histogram has."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for s in samples if not s.name.endswith("_created")}


def front(directory: str, observations: list[tuple[str, float]], posts: int) -> None:
    """A front process: times `posts` real submissions and `observations`, dumps at exit."""
    app = submissions_app()
    timings = install_front_timer(app, Path(directory))
    with TestClient(app) as client:
        for _ in range(posts):
            assert client.post("/v1/jobs").status_code == 202
    for status, seconds in observations:
        timings.histogram.labels(status).observe(seconds)
    timings.close()


def run_front(directory: Path, observations: list[tuple[str, float]], posts: int = 0) -> int:
    process = multiprocessing.get_context("spawn").Process(target=front, args=(str(directory), observations, posts))
    process.start()
    process.join(60)
    assert process.exitcode == 0
    assert process.pid is not None
    return process.pid


def test_one_process_output_is_the_plain_histogram_as_before():
    client = back()
    assert client.post("/v1/jobs").status_code == 202
    text = client.get("/metrics").text
    families = {family.name: family for family in text_string_to_metric_families(text)}
    assert "xcentre_submission_seconds_created" in families  # a registered Histogram's own output, unmerged
    family = families["xcentre_submission_seconds"]
    assert family.type == "histogram" and family.documentation == SUBMISSION_HELP
    buckets = [s.labels["le"] for s in family.samples if s.name.endswith("_bucket")]
    assert buckets == list(LE)
    counts = {s.labels["status"]: s.value for s in family.samples if s.name.endswith("_count")}
    assert counts == {"202": 1.0}


def test_the_back_adds_every_front_dump_bucket_by_bucket(tmp_path):
    pids = {run_front(tmp_path, FRONT_A), run_front(tmp_path, FRONT_B)}
    assert {path.name for path in tmp_path.iterdir()} == {f"front-{pid}.json" for pid in pids}  # no temp left

    (merged,) = SubmissionsWithFronts(one_process(BACK), tmp_path).collect()  # the back's own histogram, plus
    (alone,) = one_process(BACK + FRONT_A + FRONT_B).collect()
    assert (merged.name, merged.type, merged.documentation) == (alone.name, alone.type, alone.documentation)
    assert values(merged.samples) == pytest.approx(values(alone.samples))  # as one process holding them all


def test_the_backs_scrape_counts_its_own_and_exited_fronts_timed_submissions(tmp_path):
    run_front(tmp_path, [], posts=3)  # timed by the front's middleware, then the front exits
    run_front(tmp_path, FRONT_B)
    client = back(tmp_path)
    for _ in range(2):
        assert client.post("/v1/jobs").status_code == 202
    family = submission_family(client)
    assert family.type == "histogram" and family.documentation == SUBMISSION_HELP
    counts = {s.labels["status"]: s.value for s in family.samples if s.name.endswith("_count")}
    assert counts == {"202": 3 + 2 + 2, "500": 1}
    le_500 = [s.labels["le"] for s in family.samples if s.name.endswith("_bucket") and s.labels["status"] == "500"]
    assert le_500 == list(LE)


def dumped(directory: Path, observations: list[tuple[str, float]]) -> str:
    """The text of a real dump of `observations`."""
    timings = FrontTimings(directory)
    for status, seconds in observations:
        timings.histogram.labels(status).observe(seconds)
    text = timings.dump().read_text()
    timings.path.unlink()
    return text


def test_unreadable_dumps_are_skipped_with_a_warning_and_the_scrape_answers(tmp_path, caplog):
    good = dumped(tmp_path, FRONT_A)
    wrong_buckets = json.loads(good) | {"buckets": [0.1, 1.0]}
    falling = json.loads(good)
    falling["series"]["202"]["buckets"][-1] = 0
    bad_count = json.loads(good)
    bad_count["series"]["202"]["count"] = 99
    negative = json.loads(good)
    negative["series"]["429"]["sum"] = -1
    bad = {
        "front-1.json": "{not json",
        "front-2.json": good[: len(good) // 2],  # half-written
        "front-3.json": json.dumps(wrong_buckets),
        "front-4.json": json.dumps(falling),
        "front-5.json": json.dumps(bad_count),
        "front-6.json": json.dumps(negative),
        "front-7.json": json.dumps([1, 2]),
        "front-8.json": json.dumps(json.loads(good) | {"version": 2}),
    }
    for name, text in bad.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "front-9.json").mkdir()
    (tmp_path / "front-10.json").write_text(good)
    (tmp_path / "notes.txt").write_text("not a dump, not read")

    with caplog.at_level(logging.WARNING, logger="gateway.api.metrics"):
        family = submission_family(back(tmp_path))
    assert values(family.samples) == pytest.approx(values(next(iter(one_process(FRONT_A).collect())).samples))
    warned = "\n".join(record.getMessage() for record in caplog.records)
    for name in [*bad, "front-9.json"]:
        assert str(tmp_path / name) in warned
    assert "front-10.json" not in warned and "notes.txt" not in warned


def test_dump_is_atomic_and_private(tmp_path, monkeypatch):
    timings = FrontTimings(tmp_path)
    timings.histogram.labels("202").observe(0.01)
    replaced: list[tuple[str, str]] = []
    real_replace = os.replace

    def replace(source: str, target: str) -> None:
        assert Path(source).parent == tmp_path and not Path(source).match("front-*.json")
        assert sorted(tmp_path.glob("front-*.json")) == []  # nothing the back reads until the rename
        assert json.loads(Path(source).read_text())["series"]["202"]["count"] == 1  # whole before it is visible
        replaced.append((source, target))
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", replace)
    assert timings.dump() == tmp_path / f"front-{os.getpid()}.json"
    assert [str(target) for _, target in replaced] == [str(timings.path)]
    assert stat.S_IMODE(timings.path.stat().st_mode) == 0o600
    assert [path.name for path in tmp_path.iterdir()] == [timings.path.name]


def dump_busily(directory: str, seconds: float) -> None:
    timings = FrontTimings(Path(directory))
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        timings.histogram.labels("202").observe(0.003)
        timings.dump()


def test_a_reader_never_sees_a_partial_dump_from_another_process(tmp_path):
    process = multiprocessing.get_context("spawn").Process(target=dump_busily, args=(str(tmp_path), 2.0))
    process.start()
    seen: list[float] = []
    while process.is_alive() or not seen:
        for path in tmp_path.glob("front-*.json"):
            seen.append(read_front_dump(path)["202"].counts[-1])  # raises on any partial file
    process.join(60)
    assert process.exitcode == 0
    assert len(seen) > 10 and seen == sorted(seen)  # read many times, never going back


def test_start_dumps_periodically_and_close_writes_the_last(tmp_path):
    timings = FrontTimings(tmp_path)
    timings.start(interval=0.02)
    timings.histogram.labels("202").observe(0.01)
    deadline = time.monotonic() + 10
    while not (timings.path.exists() and read_front_dump(timings.path)["202"].counts[-1] == 1):
        assert time.monotonic() < deadline, "no periodic dump"
        time.sleep(0.01)
    timings.histogram.labels("202").observe(0.01)
    timings.close()
    assert read_front_dump(timings.path)["202"].counts[-1] == 2
    assert not any(thread.name == "front-timings" and thread.is_alive() for thread in threading.enumerate())


def test_a_reused_pid_carries_on_the_earlier_fronts_counts(tmp_path, caplog):
    earlier = FrontTimings(tmp_path)
    earlier.histogram.labels("202").observe(0.3)
    earlier.dump()
    later = FrontTimings(tmp_path)  # same pid, same file: as a new front whose pid an exited one had
    later.histogram.labels("202").observe(0.002)
    dump = read_front_dump(later.dump())
    assert dump == histogram_series(one_process([("202", 0.3), ("202", 0.002)]))

    later.path.write_text("garbage")
    with caplog.at_level(logging.WARNING, logger="gateway.api.metrics"):
        fresh = FrontTimings(tmp_path)
    assert str(later.path) in caplog.text
    assert read_front_dump(fresh.dump()) == {}


def test_bad_directories_and_intervals_are_refused(tmp_path):
    missing = tmp_path / "missing"
    a_file = tmp_path / "file"
    a_file.write_text("")
    for directory in (missing, a_file):
        with pytest.raises(ValueError, match=str(directory)):
            FrontTimings(directory)
        with pytest.raises(ValueError, match=str(directory)):
            install_metrics(FastAPI(), stub_node(), front_timings=directory)
        with pytest.raises(ValueError, match=str(directory)):
            install_front_timer(FastAPI(), directory)
    timings = FrontTimings(tmp_path)
    for interval in (0, -1, math.nan, math.inf):
        with pytest.raises(ValueError, match="interval"):
            timings.start(interval)
    timings.start(5)
    with pytest.raises(RuntimeError, match="already started"):
        timings.start(5)
    timings.close()
    with pytest.raises(RuntimeError, match="closed"):
        timings.start(5)
