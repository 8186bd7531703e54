import pytest
from pydantic import ValidationError

from characters import describe_validation_error
from workflows.models import MAX_LOREBOOK_ENTRIES, MAX_MESSAGE_BYTES, ChatJob, ChatResult, job_problems


def test_job_round_trips_as_plain_json() -> None:
    job = ChatJob.model_validate(
        {
            "job_id": "abc-1",
            "job_type": "chat_roleplay",
            "messages": [{"role": "user", "content": "hi"}],
            "character": {"name": "Orrin", "description": "A lighthouse keeper."},
            "sampling": {"temperature": 0.5},
        }
    )
    assert ChatJob.model_validate_json(job.model_dump_json()) == job
    assert job.character is not None and not isinstance(job.character, str)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"job_id": "has space"}, "job.job_id"),
        ({"job_type": "chat_poetry"}, "job.job_type"),
        ({"messages": [{"role": "user", "content": ""}]}, "job.messages.0.content"),
        ({"sampling": {"top_p": 0}}, "job.sampling.top_p"),
        ({"sampling": {"max_tokens": 0}}, "job.sampling.max_tokens"),
        ({"temperature": 0.5}, "job.temperature"),
        ({"user_id": "has space"}, "job.user_id"),
        ({"user_id": ""}, "job.user_id"),
        ({"user_id": "u" * 65}, "job.user_id"),
        ({"user_id": 42}, "job.user_id"),
        ({"priority": 0}, "job.priority"),
        ({"priority": 6}, "job.priority"),
        ({"priority": 2.5}, "job.priority"),
        ({"priority": "1"}, "job.priority"),  # strict: a string or a boolean is a mistake, not a level
        ({"priority": True}, "job.priority"),
    ],
)
def test_bad_jobs_name_the_field(change: dict[str, object], field: str) -> None:
    values = {"job_id": "j", "messages": [{"role": "user", "content": "hi"}], **change}
    with pytest.raises(ValidationError) as error:
        ChatJob.model_validate(values)
    assert field in describe_validation_error(error.value, "job")


def test_user_id_and_priority_are_optional_and_round_trip() -> None:
    plain = ChatJob.model_validate({"job_id": "j", "messages": [{"role": "user", "content": "hi"}]})
    assert plain.user_id is None and plain.priority == 3
    keyed = ChatJob.model_validate({**plain.model_dump(), "user_id": "tenant-7:u.42_" + "x" * 50, "priority": 1})
    assert len(keyed.user_id or "") == 64
    assert ChatJob.model_validate_json(keyed.model_dump_json()) == keyed


def test_result_schema_is_plain_json() -> None:
    schema = ChatResult.model_json_schema()
    assert {"content", "finish_reason", "prompt_tokens", "completion_tokens", "attempts"} <= set(schema["required"])


def capped_job(entries: int = 0, content_bytes: int = 2, messages: int = 1) -> ChatJob:
    book = {"entries": [{"keys": ["k"], "content": "lore"}] * entries}
    history = [{"role": "user", "content": "é" * (content_bytes // 2)} for _ in range(messages)]
    return ChatJob.model_validate(
        {"job_id": "j", "messages": history, "character": {"name": "O", "character_book": book}}
    )


def test_a_job_at_every_cap_has_no_problems() -> None:
    assert job_problems(capped_job(entries=MAX_LOREBOOK_ENTRIES, content_bytes=MAX_MESSAGE_BYTES, messages=40)) == []


@pytest.mark.parametrize(
    ("job", "problem"),
    [
        (capped_job(entries=3000), "job.character.character_book.entries: at most 1000 entries (got 3000)"),
        # Two-byte characters: the cap is on UTF-8 bytes, not characters.
        (
            capped_job(content_bytes=MAX_MESSAGE_BYTES + 2),
            "job.messages.0.content: at most 32768 bytes as UTF-8 (got 32770)",
        ),
        (capped_job(content_bytes=30_000, messages=60), "job: at most 1572864 bytes as JSON (got 1"),
    ],
)
def test_a_job_over_a_cap_is_named_by_field_and_size_never_by_its_text(job: ChatJob, problem: str) -> None:
    problems = job_problems(job)
    assert len(problems) == 1 and problems[0].startswith(problem)
    assert "é" not in problems[0] and "lore" not in problems[0]


def test_an_unknown_key_is_named_only_when_it_looks_like_a_field_name() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as error:
        ChatJob.model_validate(
            {"job_id": "j", "job_typ": "x", "messages": [{"role": "user", "content": "hi", "my secret words": 1}]}
        )
    described = describe_validation_error(error.value, "job")
    assert "job.job_typ: Extra inputs are not permitted" in described
    assert "job.messages.0.<key>: Extra inputs are not permitted" in described and "secret" not in described
