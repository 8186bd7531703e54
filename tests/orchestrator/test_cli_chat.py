"""`chat`'s interactive conversation driven in-process: scripted input lines, and a stand-in for ChatClient
that answers every job at once (the real stack's conversation runs in test_cli.py, in a terminal)."""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

import orchestrator.client
from characters import Character, export_card
from orchestrator.cli import chat, parser
from orchestrator.settings import Settings
from workflows.models import ChatJob, ChatResult, DeltaEvent, DoneEvent, GroupReply, StreamEvent

ORRIN = Character(name="Orrin", description="{{char}} keeps a lighthouse.", first_mes="Evening, traveller.")


class StandInChat:
    """Takes the place of ChatClient: records each job and streams the same short reply to it. After the first
    job it deletes the card file, so a command that read the card again would fail."""

    def __init__(self, card: Path) -> None:
        self.card = card
        self.jobs: list[ChatJob] = []

    async def submit(self, job: ChatJob) -> SimpleNamespace:
        self.jobs.append(job)
        self.card.unlink(missing_ok=True)
        return SimpleNamespace(id=f"chat-{job.job_id}")

    async def stream(self, job_id: str) -> AsyncIterator[StreamEvent]:
        yield DeltaEvent(attempt=1, text="Aye.")
        result = ChatResult(
            job_id=job_id,
            content="Aye.",
            finish_reason="stop",
            prompt_tokens=10,
            completion_tokens=2,
            attempts=1,
            returned_attempt=1,
        )
        yield DoneEvent(result=result)


def typed(lines: list[str]) -> Iterator[str]:
    yield from lines
    raise EOFError


async def conversation(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, lines: list[str], *options: str) -> StandInChat:
    """`chat --card` with Orrin's card as user Tam, typing `lines` to the stand-in; the jobs it submitted."""
    card = tmp_path / "orrin.json"
    card.write_bytes(export_card(ORRIN, "v2-json", None))
    stand_in = StandInChat(card)
    typing = typed(lines)

    async def no_temporal(settings: Settings) -> None:
        return None

    monkeypatch.setattr(chat, "connected", no_temporal)
    monkeypatch.setattr(orchestrator.client, "ChatClient", lambda client, settings: stand_in)
    monkeypatch.setattr("builtins.input", lambda prompt: next(typing))
    args: argparse.Namespace = parser().parse_args(["chat", "--card", str(card), "--user-name", "Tam", *options])
    assert await chat.cmd_chat(args, Settings(_env_file=None)) == 0  # type: ignore[call-arg]
    return stand_in


# Its own event loop: nothing else (the session's in-process worker) runs between the scripted turns.
@pytest.mark.asyncio(loop_scope="function")
async def test_a_conversation_with_a_card_reads_the_card_once(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = ["Is the lamp lit?", "/regenerate", "/continue", "And the storm?", "/quit"]
    stand_in = await conversation(monkeypatch, tmp_path, lines)

    assert [job.mode for job in stand_in.jobs] == ["reply", "reply", "continue", "reply"]
    assert all(job.character == ORRIN for job in stand_in.jobs)
    out = capsys.readouterr().out
    assert out.startswith("Orrin: Evening, traveller.\n") and out.count("Orrin: Aye.") == 4


@pytest.mark.asyncio(loop_scope="function")
async def test_impersonate_suggests_the_users_message_and_an_empty_line_sends_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = ["/impersonate", "", "/impersonate", "Is the lamp lit?", "", "/quit"]
    stand_in = await conversation(monkeypatch, tmp_path, lines, "--author-note", "Storm coming.")

    modes = [job.mode for job in stand_in.jobs]
    assert modes == ["impersonate", "reply", "impersonate", "reply"]  # the last empty line sends nothing
    greeting, mine, reply = ("assistant", "Evening, traveller."), ("user", "Aye."), ("assistant", "Aye.")
    assert [[(m.role, m.content) for m in job.messages] for job in stand_in.jobs] == [
        [greeting],
        [greeting, mine],  # the suggestion, sent by the empty line
        [greeting, mine, reply],
        [greeting, mine, reply, ("user", "Is the lamp lit?")],  # typed instead of the suggestion
    ]
    assert all(job.author_note is not None and job.author_note.text == "Storm coming." for job in stand_in.jobs)
    out = capsys.readouterr().out
    assert out.count("Tam (suggested): Aye.") == 2 and out.count("Orrin: Aye.") == 2


class StandInGroupChat:
    """Takes the place of ChatClient for a group: every chosen member (the manual speakers, else every member)
    replies "Aye." in the round, its events naming it."""

    def __init__(self) -> None:
        self.jobs: list[ChatJob] = []

    async def submit(self, job: ChatJob) -> SimpleNamespace:
        self.jobs.append(job)
        return SimpleNamespace(id=f"chat-{job.job_id}")

    async def stream(self, job_id: str) -> AsyncIterator[StreamEvent]:
        job = next(j for j in self.jobs if j.job_id == job_id)
        assert job.characters is not None and job.group is not None
        speakers = job.group.speakers or [str(name) for name in job.characters]
        for speaker in speakers:
            yield DeltaEvent(attempt=1, speaker=speaker, text=f"Aye from {speaker}.")
        replies = [GroupReply(speaker=s, content=f"Aye from {s}.", attempts=1) for s in speakers]
        result = ChatResult(
            job_id=job_id,
            content=replies[0].content,
            finish_reason="stop",
            prompt_tokens=10,
            completion_tokens=2,
            attempts=len(replies),
            returned_attempt=1,
            replies=replies,
        )
        yield DoneEvent(result=result)


@pytest.mark.asyncio(loop_scope="function")
async def test_a_group_conversation_takes_rounds_and_as_picks_the_speaker(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stand_in = StandInGroupChat()
    lines = typed(["Evening, all.", "/as theo Your papers?", "/as Nobody hi", "/regenerate", "/quit"])

    async def no_temporal(settings: Settings) -> None:
        return None

    monkeypatch.setattr(chat, "connected", no_temporal)
    monkeypatch.setattr(orchestrator.client, "ChatClient", lambda client, settings: stand_in)
    monkeypatch.setattr("builtins.input", lambda prompt: next(lines))
    command = ["chat", "--character", "Mira", "--character", "Theo Marlowe", "--user-name", "Tam"]
    args: argparse.Namespace = parser().parse_args([*command, "--group-strategy", "list", "--card-mode", "join"])

    assert await chat.cmd_chat(args, Settings(_env_file=None)) == 0  # type: ignore[call-arg]

    first, forced, again = stand_in.jobs  # "/as Nobody" sent nothing
    assert all(job.characters == ["Mira", "Theo Marlowe"] and job.character is None for job in stand_in.jobs)
    assert first.group is not None and (first.group.strategy, first.group.card_mode) == ("list", "join")
    # The greetings open the chat, each member's its own message.
    assert [(m.name, m.role) for m in first.messages[:2]] == [("Mira", "assistant"), ("Theo Marlowe", "assistant")]
    assert forced.group is not None and (forced.group.strategy, forced.group.speakers) == ("manual", ["Theo Marlowe"])
    assert [(m.name, m.content) for m in forced.messages[3:]] == [
        ("Mira", "Aye from Mira."),
        ("Theo Marlowe", "Aye from Theo Marlowe."),
        (None, "Your papers?"),
    ]
    # /regenerate: the last round again, after the same message.
    assert again.messages == forced.messages and again.group is not None and again.group.strategy == "list"
    out = capsys.readouterr().out
    assert out.startswith("Mira: *Mira looks up") and "\nTheo Marlowe: *Theo peers" in out
    assert out.count("Theo Marlowe: Aye from Theo Marlowe.") == 3
