"""The workflow worker's runner: Temporal's sandbox, with the serialization-context lookups made direct.

Since temporalio 1.35 the worker asks the workflow instance for a serialization context once per payload of every
activation and completion (42 payloads in a plain chat job), and the sandboxed instance answers each by compiling
and exec'ing a snippet inside the sandbox with its importer applied. The answer is SDK code reading the instance's
pending commands (dict lookups and a dataclass, no imports, nothing the sandbox restricts), so here it is read
from the in-sandbox instance directly. Workflow code still runs inside the sandbox as before.

The sandbox also imports the workflow's module afresh for every workflow run, to keep one run's module state from
the next: ~2.5 ms of the worker's CPU and ~3 ms of each job's first workflow task for workflows/chat.py, which holds
no state (constants, functions and the workflow class; a run's state is its instance's). So the runner passes the
workflow modules through, as the modules they import already are, and each run uses the module imported once.
The sandbox's run-time restrictions on builtins still apply; calls that only its per-run import would catch
(`datetime.now()` in the module's own code) are caught by the replay tests, which replay every recorded history
under the SDK's own sandbox (tests/workflows/test_replay.py)."""

from __future__ import annotations

from dataclasses import dataclass

from temporalio.converter import SerializationContext
from temporalio.converter._extstore import StorageDriverStoreContext
from temporalio.worker import WorkflowInstance, WorkflowInstanceDetails
from temporalio.worker._command_aware_visitor import CommandInfo
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions
from temporalio.worker.workflow_sandbox._runner import _Instance

# What the SDK's sandboxed instance names its in-sandbox side in the sandbox's globals (temporalio 1.35).
IN_SANDBOX = "__temporal_in_sandbox"


class DirectLookupInstance(_Instance):
    def get_serialization_context(self, command_info: CommandInfo | None) -> SerializationContext | None:
        return self.globals_and_locals[IN_SANDBOX].get_serialization_context(command_info)

    def get_external_store_context(self, command_info: CommandInfo | None) -> StorageDriverStoreContext:
        return self.globals_and_locals[IN_SANDBOX].get_external_store_context(command_info)


@dataclass(frozen=True)
class WorkflowRunner(SandboxedWorkflowRunner):
    @classmethod
    def passing_through(cls, *workflows: type) -> WorkflowRunner:
        """The runner for these workflow classes, their modules passed through (see the module's doc)."""
        modules = {workflow.__module__ for workflow in workflows}
        return cls(restrictions=SandboxRestrictions.default.with_passthrough_modules(*modules))

    def create_instance(self, det: WorkflowInstanceDetails) -> WorkflowInstance:
        return DirectLookupInstance(det, self.runner_class, self.restrictions)
