"""The benchmark's table and result file, and what it reads from /proc: no benchmark runs here."""

import re
from pathlib import Path

from bench.long_chat import LongChatResult
from bench.machine import busy_and_total, cpu_model, cpu_seconds_in_stat
from bench.overhead import (
    SubscriberFigures,
    SubscribersResult,
)
from bench.prefix_reuse import ReuseResult
from bench.report import HISTORY_LABELS, Row, checked, format_table, previous_run, table, write_run
from tests.bench.samples import flat, sample_run

CONTRACT_LABELS = [  # other scripts read these rows: the label verbatim, then this run's value
    "ratio of medians",
    "added per job, p50 (job − engine time)",
    "throughput",
    "stand-in's ceiling (slots / delay)",
    "all slots busy while generations wait",
    "lost (no reply)",
    "duplicated (extra generations or replies)",
]
FIRST_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def test_targets_are_judged() -> None:
    met = {check.name: check.met for check in checked(sample_run(ratio=1.02, max_in_flight=9)).targets}
    assert met == {
        "overhead.ratio": True,
        "overhead.added_p50_ms": True,
        "first_token.added_p50_ms": False,
        "capacity.orchestration_cpu_seconds_per_job": True,  # 50 + 40 ms
        "capacity.throughput_share": False,
        "capacity.slots_full_share": False,
        "capacity.max_in_flight": False,  # above the cap is as wrong as below it
        "capacity.lost": True,
        "capacity.duplicated": False,
    }


def test_contract_rows_have_their_label_then_this_runs_value() -> None:
    # Distinct values per row, and a previous run with other values, so that a wrong column cannot pass.
    run = checked(sample_run(ratio=1.234, lost=4, duplicated=7, throughput=12.3))
    before = sample_run(ratio=1.5, lost=9, duplicated=9, throughput=9.9).model_dump()
    lines = table(run, before, "before.json").splitlines()
    expected = {
        "ratio of medians": 1.234,
        "added per job, p50 (job − engine time)": 45,
        "throughput": 12.3,
        "stand-in's ceiling (slots / delay)": 16.0,
        "all slots busy while generations wait": 50.0,
        "lost (no reply)": 4,
        "duplicated (extra generations or replies)": 7,
    }
    assert list(expected) == CONTRACT_LABELS
    for label, value in expected.items():
        [line] = [line for line in lines if line.strip().startswith(label + " ")]
        after = line.split(label, 1)[1]
        assert float(FIRST_NUMBER.findall(after)[0].replace(",", "")) == value, line


def test_columns_line_up_and_numbers_align_right() -> None:
    text = format_table(
        "title", [("section", [Row("short", "1 ms", "≤ 2 ms", "PASS", "3 ms"), Row("a longer label", "100 ms")])]
    )
    lines = text.splitlines()
    assert lines[0] == "title"
    short, longer = lines[-2], lines[-1]
    assert short.index("1 ms") + len("1 ms") == longer.index("100 ms") + len("100 ms")
    assert short.endswith("PASS    3 ms")
    assert longer.endswith("100 ms")  # no trailing blanks


def test_table_shows_status_and_the_previous_run(tmp_path: Path) -> None:
    earlier = sample_run(ratio=1.25)
    write_run(earlier, tmp_path)
    previous, name = previous_run(tmp_path)
    assert name == "20250102T030405Z-abc123.json"
    text = table(checked(sample_run(ratio=1.02)), previous, name)
    ratio_line = next(line for line in text.splitlines() if "ratio of medians" in line)
    assert ratio_line.split()[-7:] == ["1.020", "range", "1.200–1.200", "≤", "1.03", "PASS", "1.250"]
    assert "2 × Test CPU" in text and f"previous: {name}" in text
    assert "inference STAND-IN" in text


def test_no_previous_run(tmp_path: Path) -> None:
    assert previous_run(tmp_path / "missing") == (None, None)


def test_cpu_time_is_read_after_the_command_name() -> None:
    # comm may hold spaces and parentheses; utime 150 and stime 50 ticks at 100 per second.
    stat = "4242 (tricky (name) x) S 1 2 3 4 5 6 7 8 9 10 150 50 0 0 20 0 4 0 100 0 0"
    assert cpu_seconds_in_stat(stat, 100) == 2.0


def test_cpu_model_from_cpuinfo() -> None:
    cpuinfo = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\n\nprocessor\t: 1\n"
    assert cpu_model(cpuinfo) == "AMD EPYC 7B13"
    assert cpu_model("processor\t: 0\n") == "unknown"


def test_machine_busy_ticks_leave_out_idle_and_iowait() -> None:
    stat = "cpu  100 5 20 800 50 1 2 3 0 0\ncpu0 50 2 10 400 25 0 1 1 0 0\n"
    assert busy_and_total(stat) == (131, 981)


def test_long_chat_and_prefix_reuse_sections_show_when_measured() -> None:
    reuse = ReuseResult(
        character="Mira",
        tokenizer="gguf",
        budget=4096,
        low_water=None,
        turns=100,
        first_turn=30,
        mean_reuse=0.899,
        median_reuse=0.97,
        min_reuse=0.3,
        turns_under_half=4,
        mean_prompt_tokens=3000,
    )
    long_chat = LongChatResult(
        budget=4096,
        turns=3,
        first_turn=40,
        drops=1,
        long_p50_ms=210,
        long_p10_ms=200,
        long_p90_ms=260,
        drop_p50_ms=900,
        short_p50_ms=140,
        short_p10_ms=130,
        short_p90_ms=150,
        ratio=1.5,
        long_prompt_tokens=900,
        short_prompt_tokens=200,
    )
    plain = table(checked(sample_run()), None, "")
    assert "Prefix reuse" not in plain and "Long chat" not in plain
    run = checked(sample_run().model_copy(update={"prefix_reuse": reuse, "long_chat": long_chat}))
    met = {check.name: check.met for check in run.targets}
    assert met["prefix_reuse.mean_reuse"] is True and met["long_chat.ratio"] is True
    lines = table(run, None, "").splitlines()
    reused = next(line for line in lines if "mean share of the previous prompt reused" in line)
    assert "89.9 %" in reused and "PASS" in reused
    ratio = next(line for line in lines if "ratio of p50s (long / short)" in line)
    assert "1.50" in ratio and "PASS" in ratio


def subscribed(subscribers: int, updates: int, cpu_worker: float) -> SubscriberFigures:
    history = {"events": 40 + 2 * updates, "bytes": 20000, "workflow_tasks": 6, "signals": 4, "updates": updates}
    return SubscriberFigures(
        subscribers=subscribers,
        repeats=2,
        history={name: flat(value) for name, value in history.items()},
        cpu_worker=flat(cpu_worker),
        cpu_temporal=flat(50),
    )


def test_the_subscribers_section_shows_each_count_beside_the_previous_run() -> None:
    assert "Subscribers" not in table(checked(sample_run()), None, "")
    measured = SubscribersResult(
        max_tokens=100, counts={"0": subscribed(0, 0, 40), "1": subscribed(1, 5, 55), "3": subscribed(3, 13, 81)}
    )
    before = sample_run().model_copy(
        update={"subscribers": measured.model_copy(update={"counts": {"3": subscribed(3, 19, 90)}})}
    )
    lines = table(checked(sample_run().model_copy(update={"subscribers": measured})), before.model_dump(), "b")
    lines = lines.splitlines()
    start = next(i for i, line in enumerate(lines) if "Subscribers, real model" in line)
    section = lines[start : start + 1 + 3 * (1 + len(HISTORY_LABELS) + 2)]  # heading, history, CPU per count
    headings = [line.strip() for line in section if line.strip().endswith("subscribers:")]
    assert headings == ["0 subscribers:", "1 subscribers:", "3 subscribers:"]
    updates = [line for line in section if line.strip().startswith("updates per job")]
    assert [FIRST_NUMBER.findall(line.split("updates per job", 1)[1])[0] for line in updates] == ["0", "5", "13"]
    assert updates[2].endswith("19")  # the previous run's 3 subscribers
    cpu = [line for line in section if "CPU per job: worker process" in line]
    assert [FIRST_NUMBER.findall(line.split("(+ bench client, subscribers)", 1)[1])[0] for line in cpu] == [
        "40",
        "55",
        "81",
    ]


def test_the_intake_rows_show_this_run_and_nothing_for_a_run_before_them() -> None:
    run = checked(sample_run(ratio=1.1))
    before = sample_run(ratio=1.2).model_dump()
    for dropped in (
        "intake_seconds",
        "slots_full_share_after_intake",
        "starts_seconds",
        "starts_slots_full_share",
        "starts_worker_cpu_share",
        "starts_temporal_cpu_share",
        "first_task_wait",
    ):
        del before["capacity"][dropped]  # a result saved before these rows existed
    lines = table(run, before, "before.json").splitlines()

    def row(label: str) -> str:
        [line] = [line for line in lines if line.strip().startswith(label)]
        return line.rstrip()

    assert row("intake: every job's generation queued after").endswith("0.2 s")  # this run's value, no previous one
    assert row("all slots busy from then on").endswith("80.0 %")
    assert row("intake: every start written after").endswith("0.1 s")
    assert row("all slots busy meanwhile").endswith("30.0 %")
    assert row("CPU meanwhile: worker process").endswith("20 %")
    assert row("CPU meanwhile: Temporal dev server").endswith("110 %")
    assert row("intake: a job's first workflow task picked up after its start").endswith("2.5 s  IQR 2.0–3.0")
    assert row("the longest of those").endswith("6.0 s")
