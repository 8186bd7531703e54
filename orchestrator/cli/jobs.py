"""`python -m orchestrator jobs list`: recent jobs from Temporal's visibility."""

from __future__ import annotations

import argparse
from datetime import timedelta

from orchestrator.cli.command import Argument, Command, Group, connected
from orchestrator.settings import Settings
from workflows.models import JobType


def duration(text: str) -> timedelta:
    """ "90s", "30m", "1h", "2d" as a timedelta."""
    units = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
    number, unit = text[:-1], text[-1:]
    if unit not in units or not number.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not an age like 90s, 30m, 1h or 2d")
    return timedelta(**{units[unit]: int(number)})


async def cmd_jobs_list(args: argparse.Namespace, settings: Settings) -> int:
    from orchestrator.visibility import recent_jobs

    rows = await recent_jobs(
        await connected(settings),
        job_type=args.job_type,
        character=args.character,
        since=args.since,
        limit=args.limit,
    )
    print(f"{'workflow id':<44} {'type':<18} {'character':<16} {'outcome':<10} {'tries':>5} {'seconds':>8}")
    for row in rows:
        seconds = f"{row.duration_s:.1f}" if row.duration_s is not None else row.status
        attempts = "" if row.attempts is None else str(row.attempts)
        print(
            f"{row.workflow_id:<44} {row.job_type:<18} {row.character:<16} {row.outcome or row.status:<10} "
            f"{attempts:>5} {seconds:>8}"
        )
    return 0


JOBS = Group(
    "jobs",
    help="recent jobs from Temporal's visibility",
    description="Recent chat jobs, newest first.",
    metavar="COMMAND",
    actions=(
        Command(
            "list",
            help="recent jobs: id, type, character, outcome, attempts, duration",
            description="List recent ChatWorkflow runs from visibility (search attributes JobType, CharacterName, "
            "Outcome, Attempts), newest first.",
            arguments=(
                Argument("--job-type", choices=[t.value for t in JobType], help="only this job type"),
                Argument("--character", help="only jobs with this character (its name as in the profile)"),
                Argument(
                    "--since", type=duration, metavar="AGE", help="only jobs started within AGE, e.g. 30m, 1h, 2d"
                ),
                Argument("--limit", type=int, default=50, help="at most this many (default: 50)"),
            ),
            run=cmd_jobs_list,
        ),
    ),
)
