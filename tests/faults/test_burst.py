"""Many jobs at once on the real model (issue 12: 200 jobs, 112 failed `Deadline`, 17 of them with a finished
generation that was discarded). The session's real llama.cpp server and Temporal dev server, a worker in a
namespace of its own. Whatever the machine's speed, no job is lost or left running, and a job whose deadline
passed while it had a reply that could be returned gets it back `flagged` (reason `deadline`) instead of nothing.
How many jobs end which way depends on the machine: the test prints the counts and asserts the properties."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from orchestrator.devstack import DevStack
from orchestrator.settings import Settings
from tests.faults.scale import SCALE
from tests.helpers import job, outcomes, verdicts, worker_against
from workflows.models import ChatResult, ErrorType

pytestmark = pytest.mark.faults

# Guards against a stuck job, not timing assertions: past its deadline a job ends within a generation's cancel.
RESULTS_WITHIN_SECONDS = SCALE.burst_deadline_seconds + 180.0


def kind(ended: ChatResult | str) -> str:
    if isinstance(ended, str):
        return f"failed {ended}"
    late = " deadline" if "deadline" in ended.reasons else ""
    return f"{ended.outcome}{late}"


async def test_a_burst_of_jobs_loses_none_and_returns_late_replies_flagged(
    stack: DevStack, settings: Settings, isolated_namespace: str
) -> None:
    async with worker_against(settings, isolated_namespace, settings.inference_base_url) as chat:
        jobs = [
            job(
                sampling={"max_tokens": SCALE.burst_max_tokens, "seed": n},
                deadline_seconds=SCALE.burst_deadline_seconds,
            )
            for n in range(SCALE.burst_jobs)
        ]
        await asyncio.gather(*(chat.submit(j) for j in jobs))
        job_ids = [j.job_id for j in jobs]
        ended = await outcomes(chat, job_ids, RESULTS_WITHIN_SECONDS)
        running = (await chat.temporal.count_workflows("ExecutionStatus = 'Running'")).count
        checked = {j: await verdicts(chat.temporal, chat.handle(j).id) for j in job_ids}
    counts = Counter(kind(e) for e in ended)
    results = [e for e in ended if isinstance(e, ChatResult)]
    print(
        f"\n[faults:{SCALE.name}] burst of {SCALE.burst_jobs} jobs ({SCALE.burst_deadline_seconds:.0f} s deadline, "
        f"{SCALE.burst_max_tokens} tokens): {dict(sorted(counts.items()))}; running at the end: {running}"
    )
    # Every job has a result or the Deadline failure; none is stuck.
    assert set(counts) <= {"ok", "flagged", "ok deadline", "flagged deadline", f"failed {ErrorType.deadline.value}"}
    assert len(ended) == SCALE.burst_jobs and running == 0
    assert all(r.content for r in ended if isinstance(r, ChatResult))
    # Every attempt a result counts was checked; a late reply is flagged, never passed off as ok.
    assert [len(checked[r.job_id]) for r in results] == [r.attempts for r in results]
    assert counts["ok deadline"] == 0
    # Deadline without a reply only when the job had no reply that could be returned.
    failed = [j for j, e in zip(job_ids, ended, strict=True) if e == ErrorType.deadline.value]
    assert [v for j in failed for v in checked[j] if v.cleaned and "policy" not in v.reasons] == []
