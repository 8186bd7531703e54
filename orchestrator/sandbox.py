"""The workflow worker's runner: Temporal's sandbox, with the serialization-context lookups made direct.

Since temporalio 1.35 the worker asks the workflow instance for a serialization context once per payload of every
activation and completion (42 payloads in a plain chat job), and the sandboxed instance answers each by compiling
and exec'ing a snippet inside the sandbox with its importer applied. The answer is SDK code reading the instance's
pending commands (dict lookups and a dataclass, no imports, nothing the sandbox restricts), so here it is read
from the in-sandbox instance directly. Workflow code still runs, and is imported, inside the sandbox as before.

The sandbox imports the workflow's module afresh for every workflow run. Without its bytecode cached beside it (a
checkout run under PYTHONDONTWRITEBYTECODE, as on the project's machines, or edited since) that import compiles the
source: ~7 ms of the worker's CPU per job for workflows/chat.py. So the runner writes the module's bytecode once,
when the worker prepares the workflow. An installed package has it already (pip compiles at install)."""

from __future__ import annotations

import importlib.util
import py_compile
import sys
from dataclasses import dataclass
from pathlib import Path

from loguru import logger
from temporalio.converter import SerializationContext
from temporalio.converter._extstore import StorageDriverStoreContext
from temporalio.worker import WorkflowInstance, WorkflowInstanceDetails
from temporalio.worker._command_aware_visitor import CommandInfo
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner
from temporalio.worker.workflow_sandbox._runner import _Instance
from temporalio.workflow import _Definition as WorkflowDefinition

# What the SDK's sandboxed instance names its in-sandbox side in the sandbox's globals (temporalio 1.35).
IN_SANDBOX = "__temporal_in_sandbox"


class DirectLookupInstance(_Instance):
    def get_serialization_context(self, command_info: CommandInfo | None) -> SerializationContext | None:
        return self.globals_and_locals[IN_SANDBOX].get_serialization_context(command_info)

    def get_external_store_context(self, command_info: CommandInfo | None) -> StorageDriverStoreContext:
        return self.globals_and_locals[IN_SANDBOX].get_external_store_context(command_info)


def bytecode_current(cached: Path, source: Path) -> bool:
    """Whether the import system would load `cached` for `source` rather than compile: the interpreter's magic
    number, and for a timestamp-checked file the source's mtime and size as recorded (hash-checked: taken as is)."""
    try:
        header = cached.read_bytes()[:16]
    except FileNotFoundError:
        return False
    if len(header) < 16 or header[:4] != importlib.util.MAGIC_NUMBER:
        return False
    if int.from_bytes(header[4:8], "little") != 0:
        return True
    stat = source.stat()
    recorded_mtime, recorded_size = int.from_bytes(header[8:12], "little"), int.from_bytes(header[12:16], "little")
    return recorded_mtime == int(stat.st_mtime) & 0xFFFFFFFF and recorded_size == stat.st_size & 0xFFFFFFFF


def bytecode_cached(module_name: str) -> Path | None:
    """The module's bytecode file, written now unless the import system would already load it (`bytecode_current`);
    None where there is none (no source file) or it cannot be written (a read-only install: logged, and every run
    then compiles the source)."""
    source = getattr(sys.modules.get(module_name), "__file__", None)
    if source is None or not source.endswith(".py"):
        return None
    cached = Path(importlib.util.cache_from_source(source))
    try:
        if not bytecode_current(cached, Path(source)):
            py_compile.compile(source, cfile=str(cached), doraise=True)
    except (OSError, py_compile.PyCompileError) as error:
        logger.warning("no bytecode cached for {} ({}): every workflow run compiles it", module_name, error)
        return None
    return cached


@dataclass(frozen=True)
class WorkflowRunner(SandboxedWorkflowRunner):
    def prepare_workflow(self, defn: WorkflowDefinition) -> None:
        bytecode_cached(defn.cls.__module__)
        super().prepare_workflow(defn)

    def create_instance(self, det: WorkflowInstanceDetails) -> WorkflowInstance:
        return DirectLookupInstance(det, self.runner_class, self.restrictions)
