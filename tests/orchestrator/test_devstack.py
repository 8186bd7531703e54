"""DevStack's accessors, against the session's running stack."""

import sqlite3
from contextlib import closing
from pathlib import Path

from bench.__main__ import config_from, parser
from orchestrator.devstack import (
    DEV_SERVER_WITHOUT_FAIRNESS,
    LLAMA_SERVER,
    SMOLLM2_KV_BYTES_PER_TOKEN,
    TEMPORAL_DEV_SERVER,
    DevStack,
    free_port,
    listening_port_range,
    port_is_free,
    services,
    settings_on_free_ports,
)


def command_line(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def test_free_ports_are_distinct_free_and_below_the_ephemeral_range() -> None:
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == 50
    assert all(port in listening_port_range() and port < low for port in ports)
    assert all(port_is_free("127.0.0.1", port) for port in ports)


def test_pids_name_the_running_servers(stack: DevStack) -> None:
    pids = stack.pids()
    assert set(pids) == {TEMPORAL_DEV_SERVER, LLAMA_SERVER}
    assert "server start-dev" in command_line(pids[TEMPORAL_DEV_SERVER])
    assert "orchestrator.llama_server" in command_line(pids[LLAMA_SERVER])


def test_the_dev_server_runs_with_the_fair_matcher_and_one_partition_per_queue(stack: DevStack) -> None:
    line = command_line(stack.pids()[TEMPORAL_DEV_SERVER])
    for flag in (
        "--dynamic-config-value matching.enableFairness=true",
        "--dynamic-config-value matching.numTaskqueueReadPartitions=1",
        "--dynamic-config-value matching.numTaskqueueWritePartitions=1",
    ):
        assert flag in line


def test_the_dev_servers_sqlite_file_keeps_a_write_ahead_log_synced_at_checkpoints(stack: DevStack) -> None:
    database = stack.settings.state_dir / "temporal.db"
    with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as reader:
        assert reader.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    # synchronous is a connection's setting, not the file's: the server's command line is what sets it.
    assert "--sqlite-pragma synchronous=normal" in command_line(stack.pids()[TEMPORAL_DEV_SERVER])


def test_the_bench_can_run_the_dev_server_with_the_priority_matcher_alone(tmp_path: Path) -> None:
    args = parser().parse_args(["--fairness", "off"])
    assert config_from(args, parser()).fairness is False
    [temporal] = [
        s
        for s in services(settings_on_free_ports(tmp_path), DEV_SERVER_WITHOUT_FAIRNESS)
        if s.name == TEMPORAL_DEV_SERVER
    ]
    line = " ".join(temporal.command)
    for flag in (
        "--dynamic-config-value matching.enableFairness=false",
        "--dynamic-config-value matching.useNewMatcher=true",
        "--dynamic-config-value matching.numTaskqueueReadPartitions=1",
    ):
        assert flag in line


def test_the_llama_server_runs_with_a_prompt_cache_for_eight_full_conversations(stack: DevStack) -> None:
    line = command_line(stack.pids()[LLAMA_SERVER])
    size = 8 * stack.settings.max_total_tokens * SMOLLM2_KV_BYTES_PER_TOKEN
    for flag in ("--cache True", "--cache_type ram", f"--cache_size {size}", "--logits_all False"):
        assert flag in line
