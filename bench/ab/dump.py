"""Print one job's history: event types, times relative to the first event, sizes."""

import sys

from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHistory

history = WorkflowHistory.from_json("x", open(sys.argv[1]).read())
t0 = history.events[0].event_time.ToNanoseconds()
for e in history.events:
    name = EventType.Name(e.event_type).removeprefix("EVENT_TYPE_")
    extra = ""
    if e.HasField("marker_recorded_event_attributes"):
        extra = e.marker_recorded_event_attributes.marker_name
    if e.HasField("workflow_execution_signaled_event_attributes"):
        extra = e.workflow_execution_signaled_event_attributes.signal_name
    print(f"{e.event_id:4d} {(e.event_time.ToNanoseconds() - t0) / 1e6:8.1f} ms {e.ByteSize():6d} B {name} {extra}")
