"""What every layer's pydantic models share: strictness (unknown fields are errors) and one way to say what
is wrong with an input, field by field. `characters` is the bottom layer, so it lives here."""

from __future__ import annotations

import re
from collections.abc import Callable

from pydantic import BaseModel, ConfigDict, ValidationError


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


def field_part(part: int | str) -> str:
    """A path step as shown: an index or a name like a field's; any other key (a free-form dict's key, an
    unknown key in the input) can be the user's text, so it is not repeated."""
    return str(part) if isinstance(part, int) or FIELD_NAME.fullmatch(part) else "<key>"


def is_unicode(text: str) -> bool:
    """False for text with a lone surrogate: JSON's `\\ud800` escapes decode to one, UTF-8 has no bytes for it."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def not_unicode_fields(value: object, root: str) -> list[str]:
    """The paths in a decoded JSON value (named as `field_part` does) whose text or key is not Unicode."""
    found, pending = [], [(root, value)]
    while pending:  # not recursive: the value may nest as deep as the JSON decoder allowed
        path, node = pending.pop()
        if isinstance(node, str) and not is_unicode(node):
            found.append(path)
        elif isinstance(node, dict):
            found += [f"{path}.{field_part(key)}" for key in node if isinstance(key, str) and not is_unicode(key)]
            pending += [(f"{path}.{field_part(key)}", item) for key, item in node.items()]
        elif isinstance(node, list):
            pending += [(f"{path}.{index}", item) for index, item in enumerate(node)]
    return sorted(found)


# Enough to fix an input by; a failure that lists every problem of a huge input would be too big for Temporal's
# history ("Failure exceeds size limit") and for a reader.
MAX_LISTED_PROBLEMS = 20


def listed(problems: list[str]) -> str:
    """The problems joined with "; ", the first MAX_LISTED_PROBLEMS of them and how many more there are."""
    shown = "; ".join(problems[:MAX_LISTED_PROBLEMS])
    more = len(problems) - MAX_LISTED_PROBLEMS
    return f"{shown}; and {more} more" if more > 0 else shown


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
        parts = [root] if root else []
        field = ".".join([*parts, *map(field_part, item["loc"])])
        if not field:
            problems.append(item["msg"])
            continue
        shown = f" (got {item.get('input')!r})" if shows_input(field) else ""
        problems.append(f"{name(field)}: {item['msg']}{shown}")
    return listed(problems)
