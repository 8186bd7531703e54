"""What every layer's pydantic models share: strictness (unknown fields are errors) and one way to say what
is wrong with an input, field by field. `characters` is the bottom layer, so it lives here."""

from __future__ import annotations

from collections.abc import Callable

from pydantic import BaseModel, ConfigDict, ValidationError


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


def describe_validation_error(
    error: ValidationError,
    root: str = "",
    name: Callable[[str], str] = str,
    shows_input: Callable[[str], bool] = lambda field: False,
) -> str:
    """Every problem with its field, e.g. "job.messages.0.role: Input should be 'system', 'user' or 'assistant'".

    `root` prefixes each field's dotted path; `name` renames the path (settings show env var names);
    `shows_input` says for which fields the offending value is quoted (never for secrets or chat text)."""
    problems = []
    for item in error.errors():
        field = ".".join([root, *map(str, item["loc"])] if root else map(str, item["loc"]))
        if not field:
            problems.append(item["msg"])
            continue
        shown = f" (got {item.get('input')!r})" if shows_input(field) else ""
        problems.append(f"{name(field)}: {item['msg']}{shown}")
    return "; ".join(problems)
