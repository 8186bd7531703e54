"""Record workflow histories for the replay test: `python -m tests.histories.record [NAME ...]` (default: all).

Runs real jobs on a throwaway dev stack and saves their histories here. Re-record only when a workflow
change is meant to be incompatible (and then version it: running workflows replay the old code path);
keep the old files so the replay test keeps proving old histories still replay: name only the new ones."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import tempfile
from pathlib import Path

import yaml
from temporalio.client import WorkflowFailureError

from orchestrator.client import ChatClient, connect
from orchestrator.devstack import DevStack, settings_on_free_ports
from orchestrator.settings import Settings
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
    "roleplay_regenerated": ChatJob(
        job_id="history-roleplay-regenerated",
        messages=[{"role": "user", "content": "?"}],
        character="Mira",
        user_name="Tam",
        sampling={"max_tokens": 12, "seed": 3},
    ),
    # The same, recorded after escalation-per-reason: the regeneration's sampling is chosen by its reason.
    "roleplay_regenerated_per_reason": ChatJob(
        job_id="history-roleplay-regenerated-per-reason",
        messages=[{"role": "user", "content": "?"}],
        character="Mira",
        user_name="Tam",
        sampling={"max_tokens": 12, "seed": 3},
    ),
    # After the reply's last batch of deltas went from the generate result into the stream (no signal for it).
    "roleplay_unsignalled_tail": ChatJob(
        job_id="history-roleplay-unsignalled-tail",
        messages=[{"role": "user", "content": "Evening, Mira. Got a dry room for a tired sailor?"}],
        character="Mira",
        user_name="Tam",
        sampling={"max_tokens": 48, "seed": 11},
    ),
    # After story-memory: a job that carries memory and whose window has dropped turns its summary does not
    # cover, so the reply is followed by a summary step (prepare_summary, generate, check_summary).
    "roleplay_memory_summarized": ChatJob(
        job_id="history-roleplay-memory-summarized",
        messages=[
            {"role": "user" if i % 2 == 0 else "assistant", "content": text}
            for i, text in enumerate(
                ["I left my brass compass under the third floorboard, Mira.", "*nods* It stays hidden there, Tam."]
                + [
                    f"*sits at the bar* Any news from the {place}?" if i % 2 == 0 else f"Quiet at the {place}, Tam."
                    for i, place in enumerate(
                        ["harbour"] * 2 + ["chapel"] * 2 + ["market"] * 2 + ["quay"] * 2 + ["mill"]
                    )
                ]
            )
        ],
        character="Mira",
        user_name="Tam",
        sampling={"max_tokens": 16, "seed": 7},
        memory={},
        deadline_seconds=600,
    ),
    # After impersonate and the author's note: the user's next message, with the note's copies in the history.
    "roleplay_impersonate_author_note": ChatJob(
        job_id="history-roleplay-impersonate-author-note",
        mode="impersonate",
        messages=[
            {"role": "user", "content": "Evening, Mira. Got a dry room for a tired sailor?"},
            {"role": "assistant", "content": '*Mira looks up from the ledger.* "One room left, under the eaves."'},
        ],
        character="Mira",
        user_name="Tam",
        author_note={"text": "[A storm is coming.]", "depth": 0},
        sampling={"max_tokens": 24, "seed": 4},
        deadline_seconds=600,
    ),
    # After job-priority-and-fairness: the job's generation queues at its priority, its user_id the fairness key.
    "roleplay_user_priority": ChatJob(
        job_id="history-roleplay-user-priority",
        messages=[{"role": "user", "content": "Evening, Mira. Is the stew still warm?"}],
        character="Mira",
        user_name="Tam",
        sampling={"max_tokens": 48, "seed": 11},
        user_id="history-user-1",
        priority=2,
    ),
    # After group-scenes: a group job's round (group_members, then per speaker: prepare, generate, check_reply).
    "group_round": ChatJob(
        job_id="history-group-round",
        messages=[{"role": "user", "content": "*shakes the rain off* Evening, Mira. Evening, Bram."}],
        characters=["Mira", {"name": "Bram Holt", "nickname": "Bram", "description": "A gruff blacksmith."}],
        group={"strategy": "list"},
        user_name="Tam",
        sampling={"max_tokens": 24, "seed": 4},
        deadline_seconds=600,
    ),
    # After speech-ready text: a job with `speech` (an inline profile with a voice); the result's segments are
    # computed in workflow code, so the commands are a plain reply's.
    "roleplay_speech": ChatJob(
        job_id="history-roleplay-speech",
        messages=[{"role": "user", "content": "*shakes off the rain* Evening, Mira. Any soup left?"}],
        character={"name": "Mira", "description": "A sharp-tongued tavern keeper.", "voice": "alto-2"},
        user_name="Tam",
        speech=True,
        sampling={"max_tokens": 48, "seed": 11},
        deadline_seconds=600,
    ),
    # Emotion labels (ChatJob.emotion): emotion_prompt and an emotion generation before the reply's prepare (its
    # note after the history), the reply, then emotion_prompt and an emotion generation for the reply.
    "roleplay_emotion": ChatJob(
        job_id="history-roleplay-emotion",
        messages=[{"role": "user", "content": "*slumps onto a stool* My brother never came home from the sea."}],
        character="Mira",
        user_name="Tam",
        emotion={"of_user": True, "of_reply": True},
        sampling={"max_tokens": 24, "seed": 7},
        deadline_seconds=600,
    ),
    # chat_scene (workflows/scenes.py): prepare, prepare_scene, then per attempt generate and check_scene.
    "scene_last_message": ChatJob(
        job_id="history-scene-last-message",
        job_type="chat_scene",
        scene={"mode": "last_message"},
        messages=[
            {"role": "user", "content": "*shakes the rain off* Evening, Mira. One ale, please."},
            {"role": "assistant", "content": "*Mira slides a mug across the bar and nods at the fire.*"},
        ],
        character="Mira",
        user_name="Tam",
        sampling={"max_tokens": 32, "seed": 5},
        deadline_seconds=600,
    ),
    # After release-2026-11: one patch marker (and one TemporalChangeVersion upsert) for all the changes above, and
    # JobType and CharacterName set by ChatClient's start, not upserted. (roleplay_release_2026_11_start_without_
    # attributes.json is the same job recorded before ChatClient set them: the workflow's upserts, as a raw start.)
    "roleplay_release_2026_11": ChatJob(
        job_id="history-roleplay-release-2026-11",
        messages=[{"role": "user", "content": "Evening, Mira. Is the stew still warm?"}],
        character="Mira",
        user_name="Tam",
        sampling={"max_tokens": 48, "seed": 11},
        user_id="history-user-1",
        priority=2,
    ),
    # The same release with a rejected first reply: the regeneration's sampling chosen by its reason, queued
    # one level up, without those changes' own markers.
    "roleplay_regenerated_release_2026_11": ChatJob(
        job_id="history-roleplay-regenerated-release-2026-11",
        messages=[{"role": "user", "content": "?"}],
        character="Mira",
        user_name="Tam",
        sampling={"max_tokens": 12, "seed": 3},
    ),
    # chat_character: prepare, prepare_card, then per attempt a generation constrained to the card's schema and
    # check_card, record_metrics.
    "character_card": ChatJob(
        job_id="history-character-card",
        job_type="chat_character",
        messages=[
            {"role": "user", "content": "Evening, Mira. Got a dry room for a tired sailor?"},
            {"role": "assistant", "content": '*Mira looks up from the ledger.* "One room left, under the eaves."'},
        ],
        character="Mira",
        user_name="Tam",
        sampling={"max_tokens": 200, "seed": 4},
        deadline_seconds=600,
    ),
}
# After release-2026-12: its one marker (none of 2026-11's), and the metrics record written by the workflow, not a
# record_metrics local activity (the last workflow task has check_reply's marker and no other). The same jobs as
# above, under ids of their own: a plain reply, a rejected first reply, a group round (its record after the round).
JOBS |= {
    f"{name}_release_2026_12": JOBS[source].model_copy(
        update={"job_id": f"history-{name.replace('_', '-')}-release-2026-12"}
    )
    for name, source in [
        ("roleplay", "roleplay_release_2026_11"),
        ("roleplay_regenerated", "roleplay_regenerated_release_2026_11"),
        ("group_round", "group_round"),
    ]
}
# Recorded with small engine limits, so a short chat's window drops turns.
SMALL_LIMITS = {"roleplay_memory_summarized": {"max_input_tokens": 640, "max_total_tokens": 1024}}
# Recorded by a worker whose policy forbids every reply but "?", with 2 attempts: the first reply is rejected,
# so the history has a regeneration (queued one priority level up), and the job ends NoValidReply.
REJECTED = {
    "roleplay_regenerated",
    "roleplay_regenerated_per_reason",
    "roleplay_regenerated_release_2026_11",
    "roleplay_regenerated_release_2026_12",
}
EVERY_REPLY_FORBIDDEN = {"patterns": [{"pattern": r"^(?!\?$)[\s\S]", "why": "forbid every reply"}]}


async def record(settings: Settings, jobs: dict[str, ChatJob]) -> None:
    client = await connect(settings)
    stop = asyncio.Event()
    workers = asyncio.create_task(run_workers(client, settings, stop))
    try:
        chat = ChatClient(client, settings)
        for name, job in jobs.items():
            handle = await chat.submit(job)
            with contextlib.suppress(WorkflowFailureError):  # a failed job's history replays as well
                await handle.result()
            history = await handle.fetch_history()
            (HERE / f"{name}.json").write_text(history.to_json())
            print(f"saved {name}.json ({len(history.events)} events)", file=sys.stderr)
    finally:
        stop.set()
        await workers


def main() -> None:
    names = set(sys.argv[1:]) or set(JOBS)
    unknown = names - set(JOBS)
    if unknown:
        sys.exit(f"no such history: {', '.join(sorted(unknown))}")
    with tempfile.TemporaryDirectory() as state:
        settings = settings_on_free_ports(Path(state))
        policy = Path(state) / "policy.yaml"
        policy.write_text(yaml.safe_dump(EVERY_REPLY_FORBIDDEN))
        plain = names - REJECTED - set(SMALL_LIMITS)
        with DevStack(settings):
            asyncio.run(record(settings, {n: j for n, j in JOBS.items() if n in plain}))
            rejecting = settings.model_copy(update={"policy_file": policy, "max_attempts": 2})
            asyncio.run(record(rejecting, {n: j for n, j in JOBS.items() if n in names & REJECTED}))
        for name in names & set(SMALL_LIMITS):
            small = settings_on_free_ports(Path(state), **SMALL_LIMITS[name])
            with DevStack(small):
                asyncio.run(record(small, {name: JOBS[name]}))


if __name__ == "__main__":
    main()
