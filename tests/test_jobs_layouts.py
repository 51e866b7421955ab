"""The job tracker remembers the block layouts that hold no SlurmJobs datapoint, so that such a block costs one
lookup (fructosa/jobs/tracker.py ``JobTracker.observe``): whatever blocks come (the same paths again, paths that
differ only in their job's part, job paths that are not per-job metrics, lmaster's own blocks), what it keeps must
be what searching every block's path bytes gives."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fructosa.jobs import tracker as tracker_module
from fructosa.jobs.tracker import JobTracker
from fructosa.wire.blocks import Block

pytestmark = pytest.mark.timeout(120)

NOW = 1_800_000_000.0
PATHS = (
    "CPUPercent.total",
    "SlurmJobs.count",
    "SlurmJobs.job_7.cpu_percent",
    "SlurmJobs.job_7.rss",
    "SlurmJobs.job_8.cpu_percent",
    "SlurmJobs.job_x.rss",  # not a job id
    "SlurmJobs.job_9.other",  # not a per-job metric
    "SlurmJobx.job_7.rss",  # not the sensor
)
blocks = st.lists(
    st.tuples(st.sampled_from(("n1", "n2")), st.lists(st.sampled_from(PATHS), min_size=1, max_size=6, unique=True),
              st.booleans()),
    min_size=1, max_size=25,
)  # fmt: skip


def kept(tracker: JobTracker) -> dict:
    return {
        job: {node: (dict(samples.latest), samples.latest_time, samples.series and {
            metric: (list(series.times), list(series.means)) for metric, series in samples.series.items()
        }) for node, samples in record.samples.items()}
        for job, record in tracker.records.items()
    }  # fmt: skip


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(blocks)
def test_remembered_layouts_keep_what_searching_every_block_keeps(sequence: list) -> None:
    remembering, searching = JobTracker(clock=lambda: NOW), JobTracker(clock=lambda: NOW)
    for number, (node, paths, own) in enumerate(sequence):
        block = Block.of([(f"{node}.{path}", (NOW + number, float(number))) for path in paths])
        remembering.observe(block, None if own else node)
        searching._without_jobs.clear()  # forgets every layout: searches each block
        searching.observe(block, None if own else node)
    assert kept(remembering) == kept(searching)
    expected = {  # by hand: the per-job metrics of digit job ids
        job: {node for node, paths, _ in sequence if any(p.startswith(f"SlurmJobs.job_{job}.") for p in paths
                                                         if p.rsplit(".", 1)[1] in ("cpu_percent", "rss"))}
        for job in ("7", "8")
    }  # fmt: skip
    assert {job: set(nodes) for job, nodes in kept(remembering).items()} == {j: n for j, n in expected.items() if n}


def test_a_layout_without_jobs_is_searched_once_and_the_memory_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracker_module, "MAX_CACHED_LAYOUTS", 3)
    tracker = JobTracker(clock=lambda: NOW)
    for node in ("n1", "n2", "n3", "n4", "n5"):
        tracker.observe(Block.of([(f"{node}.CPUPercent.total", (NOW, 1.0))]), node)
    assert len(tracker._without_jobs) == 3
    with_job = Block.of([("n1.SlurmJobs.job_5.rss", (NOW, 1e9))])
    tracker.observe(with_job, "n1")
    tracker.observe(with_job, "n1")  # the same layout again: still searched, never remembered
    assert len(tracker._without_jobs) == 3 and tracker.records["5"].samples["n1"].latest == {"rss": 1e9}
