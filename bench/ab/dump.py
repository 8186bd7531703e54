"""`python -m bench.ab.dump HISTORY.json`: one job's history, one line per event: id, time after the first event,
size, type, and a marker's or signal's name (bench/ab/cost.py saves the last job's history of each run)."""

from __future__ import annotations

import sys
from pathlib import Path

from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHistory


def main(path: str) -> None:
    history = WorkflowHistory.from_json("dump", Path(path).read_text())
    first = history.events[0].event_time.ToNanoseconds()
    for event in history.events:
        name = EventType.Name(event.event_type).removeprefix("EVENT_TYPE_")
        extra = ""
        if event.HasField("marker_recorded_event_attributes"):
            extra = event.marker_recorded_event_attributes.marker_name
        if event.HasField("workflow_execution_signaled_event_attributes"):
            extra = event.workflow_execution_signaled_event_attributes.signal_name
        at = (event.event_time.ToNanoseconds() - first) / 1e6
        print(f"{event.event_id:4d} {at:8.1f} ms {event.ByteSize():6d} B {name} {extra}")


if __name__ == "__main__":
    main(sys.argv[1])
