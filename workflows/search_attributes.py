"""The custom search attributes of chat jobs: what ops filter by in the Temporal UI.

A namespace must have them registered before a workflow sets them: the compose stack's `temporal-setup`
job registers exactly `registration_spec()`. Never chat text: search attributes are stored unencrypted."""

from __future__ import annotations

from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes

JOB_TYPE = SearchAttributeKey.for_keyword("JobType")
CHARACTER_NAME = SearchAttributeKey.for_keyword("CharacterName")
ATTEMPTS = SearchAttributeKey.for_int("Attempts")
OUTCOME = SearchAttributeKey.for_keyword("Outcome")  # ok, flagged, failed, cancelled

SEARCH_ATTRIBUTES: tuple[SearchAttributeKey, ...] = (JOB_TYPE, CHARACTER_NAME, ATTEMPTS, OUTCOME)


def cli_type(key: SearchAttributeKey) -> str:
    """The type as `temporal operator search-attribute create --type` spells it (KEYWORD_LIST → KeywordList)."""
    return "".join(part.title() for part in key.indexed_value_type.name.split("_"))


def registration_spec() -> str:
    """`JobType=Keyword CharacterName=Keyword …`: what deploy/temporal/setup-namespace.sh registers."""
    return " ".join(f"{key.name}={cli_type(key)}" for key in SEARCH_ATTRIBUTES)


def at_start(job_type: str, character_name: str | None) -> TypedSearchAttributes:
    """What a client that knows them sets when it starts a job (part of the start's own visibility record): the
    workflow then upserts neither (see workflows.chat.upserted)."""
    pairs = [SearchAttributePair(JOB_TYPE, job_type)]
    if character_name is not None:
        pairs.append(SearchAttributePair(CHARACTER_NAME, character_name))
    return TypedSearchAttributes(pairs)
