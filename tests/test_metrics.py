"""What an operator's monitoring reads: GET /metrics (Prometheus text), GET /v1/health, JSON log lines."""

from __future__ import annotations

import io
import json
import logging

import httpx
from prometheus_client.parser import text_string_to_metric_families

from gateway.client.cli import _parser
from gateway.node.logs import configure
from tests.fixtures.consortium import PASSWORDS
from tests.fixtures.payment import paid

QUICK = {"command": ["true"], "walltime": 30}


def scrape(url: str) -> dict[str, dict[tuple, float]]:
    """name -> {labels as sorted tuple: value} of every sample the gateway exposes."""
    answer = httpx.get(url + "/metrics")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def test_metrics_show_jobs_latency_outbox_index_and_epochs(consortium):
    url = consortium.url("hpc-a")
    with httpx.Client(base_url=url) as http:
        token = http.post("/v1/login", json={"username": "alice", "password": PASSWORDS["alice"]}).json()["token"]
        job = QUICK | {"centre": "hpc-a"} | paid(consortium, QUICK, "hpc-a").fields()
        submitted = http.post("/v1/jobs", json=job, headers={"Authorization": f"Bearer {token}"})
        assert submitted.status_code == 202, submitted.text

    samples = scrape(url)
    jobs = {dict(labels)["state"]: value for labels, value in samples["xcentre_jobs"].items()}
    assert set(jobs) >= {"queued", "running", "succeeded", "failed", "timed_out", "denied"}
    assert sum(jobs.values()) == len(consortium.store("hpc-a").list_jobs(limit=100_000))
    assert samples["xcentre_submission_seconds_count"][(("status", "202"),)] >= 1
    assert (("le", "+Inf"), ("status", "202")) in samples["xcentre_submission_seconds_bucket"]
    assert all(value >= 0 for value in samples.get("xcentre_outbox_pending", {}).values())
    index = consortium.centres["hpc-a"].node.parts.index
    assert samples["xcentre_index_block"][()] <= index.last_block
    assert samples["xcentre_index_lag_blocks"][()] >= 0
    assert samples["xcentre_chain_reachable"][()] == 1
    store = consortium.store("hpc-a")
    assert samples["xcentre_epoch_open"][()] == store.open_epoch()
    assert 0 <= samples["xcentre_epoch_last_settled"][()] <= samples["xcentre_epoch_last_anchored"][()]
    assert samples["xcentre_epoch_last_anchored"][()] < store.open_epoch()


def test_health_answers_from_local_state(consortium):
    health = httpx.get(consortium.url("cloud-b") + "/v1/health").json()
    assert health["centre"] == "cloud-b" and health["status"] == "ok"
    assert health["chain"]["reachable"] in (True, None)
    assert health["open_epoch"] == consortium.store("cloud-b").open_epoch()


def test_json_logs_are_one_object_per_line_with_the_fields_collectors_need():
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        configure("json", centre="hpc-a", stream=stream)
        logging.getLogger("gateway.node.centre").warning("epoch %d closed;\nanchor queued", 7)
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            logging.getLogger("ledger.outbox").exception("drain failed")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["level"] == "warning" and first["logger"] == "gateway.node.centre"
    assert first["msg"] == "epoch 7 closed;\nanchor queued" and first["centre"] == "hpc-a"
    assert first["ts"].endswith("Z") and "T" in first["ts"]
    assert second["level"] == "error" and "RuntimeError: boom" in second["exc"]


def test_the_gateway_takes_a_log_format_and_epoch_close_a_no_wait():
    args = _parser().parse_args(["gateway", "--config", "gw.toml", "--log-format", "json"])
    assert args.log_format == "json"
    assert _parser().parse_args(["gateway", "--config", "gw.toml"]).log_format is None  # the config's
    close = ["epoch", "close", "--gateway", "http://x", "--operator-key-file", "k", "--no-wait"]
    assert _parser().parse_args(close).no_wait is True
