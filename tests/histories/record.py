"""Record workflow histories for the replay test: `python -m tests.histories.record`.

Runs real jobs on a throwaway dev stack and saves their histories here. Re-record only when a workflow
change is meant to be incompatible (and then version it: running workflows replay the old code path);
keep the old files so the replay test keeps proving old histories still replay."""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

from orchestrator.client import ChatClient, connect
from orchestrator.devstack import DevStack, settings_on_free_ports
from orchestrator.worker import run_workers
from workflows.models import ChatJob

HERE = Path(__file__).parent
JOBS = {
    "roleplay_ok": ChatJob(
        job_id="history-roleplay-ok",
        messages=[{"role": "user", "content": "Evening, Mira. Got a dry room for a tired sailor?"}],
        character="Mira",
        user_name="Tam",
        sampling={"max_tokens": 48, "seed": 11},
    ),
    "conversation_continue": ChatJob(
        job_id="history-conversation-continue",
        job_type="chat_conversation",
        mode="continue",
        messages=[
            {"role": "user", "content": "Give me a title for a pirate romance."},
            {"role": "assistant", "content": "How about: The Captain's"},
        ],
        sampling={"max_tokens": 32, "seed": 5},
    ),
}


async def record(settings) -> None:  # type: ignore[no-untyped-def]
    client = await connect(settings)
    stop = asyncio.Event()
    workers = asyncio.create_task(run_workers(client, settings, stop))
    try:
        chat = ChatClient(client, settings)
        for name, job in JOBS.items():
            handle = await chat.submit(job)
            await handle.result()
            history = await handle.fetch_history()
            (HERE / f"{name}.json").write_text(history.to_json())
            print(f"saved {name}.json ({len(history.events)} events)", file=sys.stderr)
    finally:
        stop.set()
        await workers


def main() -> None:
    with tempfile.TemporaryDirectory() as state:
        settings = settings_on_free_ports(Path(state))
        with DevStack(settings):
            asyncio.run(record(settings))


if __name__ == "__main__":
    main()
