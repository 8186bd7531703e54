"""The quality section's prompts, its counts and its rows in the table: no benchmark runs here."""

import re
from pathlib import Path

from bench.quality import CHARACTERS, PROMPT_COUNT, TURNS, job, prompts, quality_result
from bench.report import checked, previous_run, table, write_run
from tests.bench.samples import sample_run
from workflows.models import AttemptSummary, ChatResult


def test_the_prompts_are_fixed_roleplay_jobs_with_their_own_seeds() -> None:
    every = prompts(PROMPT_COUNT)
    assert PROMPT_COUNT == 50 == len(every)
    assert [p.seed for p in every] == list(range(1, 51))
    assert prompts(PROMPT_COUNT) == every and prompts(3) == every[:3]
    assert {(p.name, str(p.character)) for p in every} == {(t[0], str(c)) for t in TURNS for c in CHARACTERS}
    assert len({p.user_name for p in every}) == 5
    jobs = [job(p, "run") for p in every]
    assert len({j.job_id for j in jobs}) == 50
    assert all(j.job_type == "chat_roleplay" and j.messages[-1].role == "user" for j in jobs)
    assert all("{" not in m.content for j in jobs for m in j.messages)  # every {user}/{char} filled


def result(outcome: str, *verdicts: list[str]) -> ChatResult:
    details = [
        AttemptSummary(
            attempt=n,
            valid=not reasons or reasons == ["short"],
            reasons=reasons,
            finish_reason="stop",
            completion_tokens=10,
        )
        for n, reasons in enumerate(verdicts, start=1)
    ]
    return ChatResult(
        job_id="j",
        content="x",
        finish_reason="stop",
        prompt_tokens=1,
        completion_tokens=1,
        attempts=len(details),
        returned_attempt=len(details),
        attempt_details=details,
        outcome=outcome,
    )


def test_counts_per_prompt_and_per_attempt() -> None:
    results = [
        result("ok", []),
        result("ok", ["speaks_for_user"], ["short"]),
        result("flagged", ["cut_off"], ["cut_off", "repetitive"], ["out_of_character"]),
        None,  # failed
    ]
    q = quality_result(results, seconds=12.0)
    assert (q.prompts, q.failed, q.attempts) == (4, 1, 6)
    assert (q.valid_first_share, q.valid_end_share, q.flagged_share) == (0.25, 0.5, 0.25)
    assert q.mean_attempts == 2.0  # over the prompts that returned
    assert q.reasons == {"cut_off": 2, "out_of_character": 1, "repetitive": 1, "short": 1, "speaks_for_user": 1}
    assert q.reason_shares["cut_off"] == 2 / 6


def test_the_table_has_the_quality_section_beside_the_previous_run(tmp_path: Path) -> None:
    assert "Reply quality" not in table(checked(sample_run()), None, None)
    earlier = sample_run().model_copy(update={"quality": quality_result([result("ok", ["cut_off"], [])], 1.0)})
    write_run(earlier, tmp_path)
    previous, name = previous_run(tmp_path)
    now = sample_run().model_copy(update={"quality": quality_result([result("ok", [])] * 4, 2.0)})
    lines = table(checked(now), previous, name).splitlines()
    assert any(re.match(r"\d+\. Reply quality", line) and "4 fixed roleplay prompts" in line for line in lines)
    first = next(line for line in lines if "valid at the first attempt" in line)
    assert first.split()[-4:] == ["100", "%", "0", "%"]
    # a reason only the previous run saw still has its row, empty now
    cut = next(line for line in lines if "named cut_off" in line)
    assert cut.split()[-2:] == ["50", "%"]
