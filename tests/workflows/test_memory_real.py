"""Story memory on the real stack (Temporal dev server, llama.cpp on SmolLM2): a 60-turn chat whose distinctive
fact is only in its first turns. The job's window drops those turns, the workflow summarises them after the
reply (the fact's turns are in the summary's input), `covers` advances to where the window starts, and the next
job of the chat carries the memory: its prompt, as the worker sends it and as the `context` command prints it,
holds the summary. No summary or fact text reaches the logs."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from temporalio.client import Client

from orchestrator.client import ChatClient, workflow_id
from orchestrator.settings import Settings
from tests.helpers import arun, generate_requests, job, stack_env, verdicts
from workflows.models import ChatJob, Memory, Message

FACT = "Captain Vell's brass compass"
SECRET = f"Listen, Mira: I buried {FACT} under the third floorboard by the hearth. Tell no one."
KEPT = f"{FACT}, under the third floorboard by the hearth. Your secret is safe with me, Tam."
PLACES = "harbour chapel market lighthouse quay cellar bridge mill".split()
# A guard against a hung job on a loaded machine, not a timing assertion.
GUARD_SECONDS = 1200


def conversation(turns: int) -> list[Message]:
    """`turns` exchanges ending on the user's; the fact only in the first."""
    messages = [Message(role="user", content=SECRET), Message(role="assistant", content=f"*nods slowly* {KEPT}")]
    for turn in range(1, turns):
        place = PLACES[turn % len(PLACES)]
        messages.append(Message(role="user", content=f"*sits at the bar* Day {turn}. Anything new at the {place}?"))
        if turn < turns - 1:
            messages.append(Message(role="assistant", content=f"*wipes a mug* Day {turn}: quiet at the {place}, Tam."))
    return messages


def chat_job(messages: list[Message], memory: Memory) -> ChatJob:
    return job(messages=[m.model_dump() for m in messages], memory=memory, deadline_seconds=600)


async def printed_context(chat_job: ChatJob, settings: Settings, tmp_path: Path) -> dict:
    path = tmp_path / f"{chat_job.job_id}.json"
    path.write_text(chat_job.model_dump_json())
    done = await arun("context", "--job-file", str(path), env=stack_env(settings))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


async def test_a_long_chat_summarises_what_its_window_dropped_and_the_next_job_carries_it(
    chat: ChatClient, client: Client, settings: Settings, tmp_path: Path, worker_logs: list[str]
) -> None:
    first = chat_job(conversation(60), Memory())
    printed = await printed_context(first, settings, tmp_path)
    until = printed["memory"]["summarize_until"]
    assert until is not None and until > 2  # the fact's turns are out of the window
    assert FACT not in "".join(m["content"] for m in printed["messages"])

    result = await asyncio.wait_for((await chat.submit(first)).result(), timeout=GUARD_SECONDS)
    requests = await generate_requests(client, workflow_id(first.job_id))
    summaries = [r for r in requests if r.purpose == "summary"]
    assert summaries, "no summary was generated"
    assert SECRET in summaries[0].messages[-1].content and KEPT in summaries[0].messages[-1].content
    assert first.messages[until].content not in summaries[0].messages[-1].content  # still in the window
    assert result.memory is not None, result
    checked = await verdicts(client, workflow_id(first.job_id), check="check_summary")
    assert result.memory.covers == until, f"no summary passed: {[(v.reasons, len(v.cleaned)) for v in checked]}"
    assert result.memory.summary and result.memory.facts == []

    reply = Message(role="assistant", content=result.content)
    question = Message(role="user", content="Do you still have what I left with you on my first night?")
    second = chat_job([*first.messages, reply, question], result.memory)
    printed = await printed_context(second, settings, tmp_path)
    assert result.memory.summary in printed["memory"]["text"]
    assert printed["memory"]["covers"] == until and printed["memory"]["summarize_until"] is None
    assert printed["window"]["first_message"] == until  # the new summary did not move the window

    next_result = await asyncio.wait_for((await chat.submit(second)).result(), timeout=GUARD_SECONDS)
    sent = [r for r in await generate_requests(client, workflow_id(second.job_id)) if r.purpose == "reply"]
    assert [m.model_dump() for m in sent[0].messages] == printed["messages"]
    assert result.memory.summary in sent[0].messages[0].content
    assert next_result.memory == result.memory  # no drop since: no summary, the memory as it came

    logged = "\n".join(worker_logs)
    assert FACT not in logged and result.memory.summary not in logged
