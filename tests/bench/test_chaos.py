"""The chaos run of bench/chaos.py, on a shorter schedule: real redis-server, gateway, workers and upstream
processes; Redis restarted, a worker killed and another frozen while each holds a batch, the gateway restarted
by SIGTERM, the upstream killed. Nothing sampled may be lost or dropped."""

from __future__ import annotations

from bench.chaos import run


def test_no_sample_is_lost_through_restarts_kills_and_outages() -> None:
    report = run(rate=20, scale=0.4, log=lambda _: None)
    assert len(report.faults) == 6 and "holding a batch of" in report.faults[1]
    assert report.answered > 150 and report.failed < report.answered
    assert report.lost == 0 and report.dropped == {} and report.evaluated == report.sampled == report.answered
