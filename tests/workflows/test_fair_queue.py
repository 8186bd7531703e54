"""Fairness and priority on the generation queue, on the real dev server (fair matcher, one partition:
orchestrator.devstack.DEV_SERVER_DYNAMIC_CONFIG) and a real worker with one generation slot.

The engine is the FAKE one (tests/fake_engine.py), as a stand-in for a busy engine: it holds every request until
the test releases it, so that the backlog builds in Temporal's queue behind the one generation it holds. Then
it answers at once, and with one slot the order in which it sees the jobs is the order in which Temporal handed
their generations out. The real model could not hold a backlog still: its replies end when they end, and a
reply it writes may be rejected and regenerated (at a higher priority).

The assertions are on the jobs still in Temporal's queue when the engine began to answer: a worker that takes
tasks ahead of a free slot (slot refill) has taken them out of the queue already, in the queue's order."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Iterable

from temporalio.api.enums.v1 import PendingActivityState

from orchestrator.client import ChatClient
from orchestrator.devstack import DevStack
from orchestrator.settings import Settings
from tests.fake_engine import FakeEngine, reply_stream
from tests.helpers import USER_TEXT, job, outcomes, worker_against
from workflows.models import ChatJob, ChatResult

# A reply that passes validation for the helpers' job (Mira, user Tam).
REPLY = "The rain hammers the shutters while I pour you a drink. Sit down and warm up."
MARKER = re.compile(r"\(ticket ([a-z0-9-]+)\)")
# Guards against a hang, not timing assertions.
BACKLOG_WITHIN_SECONDS = 120.0
RESULTS_WITHIN_SECONDS = 300.0


def queued_job(name: str, **fields: object) -> ChatJob:
    """A job whose user message names it, so that the engine's requests say whose they are."""
    job_id = f"{name}-{uuid.uuid4().hex[:6]}"
    return job(
        job_id=job_id,
        messages=[{"role": "user", "content": f"{USER_TEXT} (ticket {job_id})"}],
        deadline_seconds=600,
        **fields,
    )


def job_seen(request: dict[str, object]) -> str:
    messages = request["messages"]
    assert isinstance(messages, list)
    found = MARKER.search(str(messages[-1]["content"]))
    assert found is not None
    return found.group(1)


async def generation_states(chat: ChatClient, job_ids: Iterable[str]) -> dict[str, PendingActivityState.ValueType]:
    """Each job's pending generation's state (scheduled: in Temporal's queue; started: handed to the worker);
    jobs with none are left out."""
    descriptions = await asyncio.gather(*(chat.handle(j).describe() for j in job_ids))
    return {
        j: activity.state
        for j, description in zip(job_ids, descriptions, strict=True)
        for activity in description.raw_description.pending_activities
        if activity.activity_type.name == "generate"
    }


async def all_queued(chat: ChatClient, jobs: list[ChatJob]) -> None:
    """Returns once every job's generation is scheduled (wrap it in a guard timeout)."""
    # The state is read by describe: there is no event to wait on.
    while len(await generation_states(chat, [j.job_id for j in jobs])) < len(jobs):  # noqa: ASYNC110
        await asyncio.sleep(0.3)


async def handed_out(chat: ChatClient, jobs: list[ChatJob]) -> set[str]:
    """The jobs whose generation Temporal has handed to the worker (the one the engine holds, and any the worker
    took ahead of a free slot); the others wait in Temporal's queue."""
    states = await generation_states(chat, [j.job_id for j in jobs])
    return {j for j, state in states.items() if state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED}


async def served_order(
    settings: Settings, namespace: str, batches: list[list[ChatJob]]
) -> tuple[list[str], set[str], list[ChatResult | str]]:
    """Each batch submitted once the one before it is queued, behind a generation the engine holds; then the
    engine answers. The job ids in the order the engine saw them, the jobs handed out before it answered, and
    every job's outcome."""
    everyone = [j for batch in batches for j in batch]
    async with FakeEngine([], then=reply_stream(REPLY), held=True) as engine:
        async with worker_against(
            settings, namespace, engine.base_url, generation_slots=1, inference_timeout_seconds=600
        ) as chat:
            for batch in batches:
                for chat_job in batch:
                    await chat.submit(chat_job)
                await asyncio.wait_for(all_queued(chat, batch), timeout=BACKLOG_WITHIN_SECONDS)
            early = await handed_out(chat, everyone)
            engine.release()
            ended = await outcomes(chat, [j.job_id for j in everyone], RESULTS_WITHIN_SECONDS)
    return [job_seen(r) for r in engine.requests], early, ended


async def test_a_second_users_jobs_are_served_between_the_first_users_backlog_not_after_it(
    stack: DevStack, settings: Settings, isolated_namespace: str
) -> None:
    a = [queued_job(f"a{n:02}", user_id="user-a") for n in range(40)]
    b = [queued_job(f"b{n}", user_id="user-b") for n in range(5)]
    order, early, ended = await served_order(settings, isolated_namespace, [a, b])
    assert all(isinstance(e, ChatResult) and e.outcome == "ok" for e in ended), ended
    assert sorted(order) == sorted(j.job_id for j in a + b)  # each generation once
    # What waited in Temporal's queue when the engine began to answer, in the order Temporal handed it out:
    # first come, first served would put B's five after all of A's.
    queued = [j for j in order if j not in early]
    b_ids = {j.job_id for j in b}
    b_places = [place for place, j in enumerate(queued) if j in b_ids]
    print(f"\nserved (after {sorted(early)} handed out early): {queued}")
    assert len(queued) >= 40 and len(b_places) == 5  # the premise: a backlog of A's ahead of every B
    # Interleaved: the users take turns, so B's n-th job comes out at most one A job after B's turn.
    assert all(place <= 2 * n + 1 for n, place in enumerate(b_places)), b_places
    assert len(queued) - 1 - b_places[-1] >= 25  # most of A's backlog still to come after B's last


async def test_a_priority_1_job_behind_a_priority_3_backlog_is_served_next(
    stack: DevStack, settings: Settings, isolated_namespace: str
) -> None:
    # One user for all: fairness alone would not put the urgent job ahead.
    backlog = [queued_job(f"a{n:02}", user_id="user-a") for n in range(10)]
    urgent = queued_job("urgent", user_id="user-a", priority=1)
    order, early, ended = await served_order(settings, isolated_namespace, [backlog, [urgent]])
    assert all(isinstance(e, ChatResult) and e.outcome == "ok" for e in ended), ended
    queued = [j for j in order if j not in early]
    print(f"\nserved (after {sorted(early)} handed out early): {queued}")
    assert len(queued) >= 9 and urgent.job_id not in early  # the premise: a backlog ahead of it
    assert queued[0] == urgent.job_id
