"""DevStack's accessors, against the session's running stack."""

from pathlib import Path

from orchestrator.devstack import LLAMA_SERVER, TEMPORAL_DEV_SERVER, DevStack


def command_line(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def test_pids_name_the_running_servers(stack: DevStack) -> None:
    pids = stack.pids()
    assert set(pids) == {TEMPORAL_DEV_SERVER, LLAMA_SERVER}
    assert "server start-dev" in command_line(pids[TEMPORAL_DEV_SERVER])
    assert "llama_cpp.server" in command_line(pids[LLAMA_SERVER])


def test_the_dev_server_runs_with_the_priority_matcher_and_one_partition_per_queue(stack: DevStack) -> None:
    line = command_line(stack.pids()[TEMPORAL_DEV_SERVER])
    for flag in (
        "--dynamic-config-value matching.useNewMatcher=true",
        "--dynamic-config-value matching.numTaskqueueReadPartitions=1",
        "--dynamic-config-value matching.numTaskqueueWritePartitions=1",
    ):
        assert flag in line
