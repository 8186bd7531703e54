"""The workflow worker's runner: Temporal's sandbox, with the serialization-context lookups made direct.

Since temporalio 1.35 the worker asks the workflow instance for a serialization context once per payload of every
activation and completion (42 payloads in a plain chat job), and the sandboxed instance answers each by compiling
and exec'ing a snippet inside the sandbox with its importer applied. The answer is SDK code reading the instance's
pending commands (dict lookups and a dataclass, no imports, nothing the sandbox restricts), so here it is read
from the in-sandbox instance directly. Workflow code still runs, and is imported, inside the sandbox as before."""

from __future__ import annotations

from dataclasses import dataclass

from temporalio.converter import SerializationContext
from temporalio.converter._extstore import StorageDriverStoreContext
from temporalio.worker import WorkflowInstance, WorkflowInstanceDetails
from temporalio.worker._command_aware_visitor import CommandInfo
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner
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
    def create_instance(self, det: WorkflowInstanceDetails) -> WorkflowInstance:
        return DirectLookupInstance(det, self.runner_class, self.restrictions)
