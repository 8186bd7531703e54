"""The platform's policy hook: forbidden patterns from a data file, matched case-insensitively."""

from __future__ import annotations

import re
from functools import cached_property
from importlib.resources import files
from pathlib import Path

import yaml
from pydantic import Field, ValidationError, field_validator

from characters import StrictModel, describe_validation_error

DEFAULT_POLICY = files("workflows").joinpath("policy.yaml")


class Rule(StrictModel, frozen=True):
    pattern: str = Field(min_length=1)
    why: str = ""

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as error:
            raise ValueError(f"not a valid regular expression: {error}") from None
        return value


class Policy(StrictModel, frozen=True):
    patterns: list[Rule] = []

    @cached_property
    def _compiled(self) -> list[re.Pattern[str]]:
        return [re.compile(rule.pattern, re.IGNORECASE) for rule in self.patterns]

    def violations(self, text: str) -> list[str]:
        """The patterns the text matches (the patterns, never the text)."""
        return [rule.pattern for rule, regex in zip(self.patterns, self._compiled, strict=True) if regex.search(text)]


class PolicyFileError(ValueError):
    pass


def load_policy(path: Path | None = None) -> Policy:
    source = path if path is not None else DEFAULT_POLICY
    try:
        data = yaml.safe_load(source.read_text(encoding="utf-8")) or {}
        return Policy.model_validate(data)
    except OSError as error:
        raise PolicyFileError(f"policy file {source}: cannot read: {error.strerror or error}") from None
    except yaml.YAMLError as error:
        raise PolicyFileError(f"policy file {source}: not valid YAML: {error}") from None
    except ValidationError as error:
        raise PolicyFileError(f"policy file {source}: {describe_validation_error(error)}") from None
