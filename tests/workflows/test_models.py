import pytest
from pydantic import ValidationError

from characters import describe_validation_error
from workflows.models import ChatJob, ChatResult


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
    ],
)
def test_bad_jobs_name_the_field(change: dict[str, object], field: str) -> None:
    values = {"job_id": "j", "messages": [{"role": "user", "content": "hi"}], **change}
    with pytest.raises(ValidationError) as error:
        ChatJob.model_validate(values)
    assert field in describe_validation_error(error.value, "job")


def test_result_schema_is_plain_json() -> None:
    schema = ChatResult.model_json_schema()
    assert {"content", "finish_reason", "prompt_tokens", "completion_tokens", "attempts"} <= set(schema["required"])
