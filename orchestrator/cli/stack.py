"""`python -m orchestrator dev | worker | demo`: the embedded stack, a worker, and the demo exchange."""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid

from characters import bundled_character
from orchestrator.cli.chat import reply_of, summary_line
from orchestrator.cli.command import Argument, Command, connected
from orchestrator.errors import CliError
from orchestrator.settings import Settings
from workflows.models import ChatJob, JobType

DEMO_MESSAGE = "*shakes the rain off my coat* Evening, Mira. Quiet night?"


async def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from orchestrator.engine_check import engine_limit_problems
    from orchestrator.worker import run_workers, settings_engine, stop_on_signals

    engine = await settings_engine(settings)
    problems = await engine_limit_problems(settings, engine)
    if problems:
        raise CliError(
            f"the engine at {settings.inference_base_url} disagrees with this worker: " + "; ".join(problems)
        )
    client = await connected(settings)
    await run_workers(client, settings, stop_on_signals(), engine=engine)
    return 0


async def cmd_dev(args: argparse.Namespace, settings: Settings) -> int:
    from orchestrator.devstack import DevStack
    from orchestrator.metrics import dev_settings, metrics_runtime
    from orchestrator.worker import run_workers, stop_on_signals

    settings = dev_settings(settings)
    if settings.metrics_address is not None:
        metrics_runtime(settings.metrics_address)  # a taken port stops the start before the stack is up
    with DevStack(settings):
        stop = stop_on_signals()
        client = await connected(settings)
        print(f"dev stack up. Temporal Web UI: {settings.ui_url}  (Ctrl-C stops everything)", file=sys.stderr)
        if settings.metrics_address is not None:
            print(f"worker metrics (Prometheus): http://{settings.metrics_address}/metrics", file=sys.stderr)
        print("try: python -m orchestrator chat --character Mira --message 'Hello there'", file=sys.stderr)
        async with asyncio.TaskGroup() as running:
            running.create_task(run_workers(client, settings, stop))
            if settings.payload_keys_file is not None:
                running.create_task(dev_codec_server(settings, stop))
    return 0


async def dev_codec_server(settings: Settings, stop: asyncio.Event) -> None:
    """With a keys file, the local Web UI reads jobs through a codec server (no token: it is on loopback)."""
    from orchestrator.codec import read_keys
    from orchestrator.codec_server import codec_server_running

    assert settings.payload_keys_file is not None
    keys = read_keys(settings.payload_keys_file)
    async with codec_server_running(keys, "127.0.0.1", settings.codec_port, [settings.ui_url]):
        await stop.wait()


async def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from orchestrator.client import ChatClient
    from orchestrator.devstack import DevStack
    from orchestrator.worker import workers_running

    job = ChatJob(
        job_id=f"demo-{uuid.uuid4().hex[:12]}",
        job_type=JobType.roleplay,
        messages=[{"role": "user", "content": args.message}],
        character=args.character,
        user_name=args.user_name,
    )
    with DevStack(settings):
        client = await connected(settings)
        async with workers_running(client, settings):
            print(f"{args.user_name}: {args.message}")
            result = await reply_of(ChatClient(client, settings), job)
    print(f"{bundled_character(args.character).name}: {result.content}")
    print(summary_line(result), file=sys.stderr)
    print(
        f"job {job.job_id} is saved in {settings.state_dir / 'temporal.db'}; see it in the Temporal Web UI at "
        f"{settings.ui_url}/namespaces/{settings.temporal_namespace}/workflows while `make dev` runs.",
        file=sys.stderr,
    )
    return 0


DEV = Command(
    "dev",
    help="run the embedded stack (Temporal dev server + llama.cpp + worker) until Ctrl-C",
    description="Start the Temporal dev server (SQLite under CHAT_WORKER_STATE_DIR, default .state/, Web UI "
    "on CHAT_WORKER_TEMPORAL_UI_PORT, default 8233), the llama.cpp server with SmolLM2-135M on "
    "CHAT_WORKER_INFERENCE_BASE_URL (default http://127.0.0.1:8088) and a worker, and keep them "
    "running until Ctrl-C or SIGTERM, which stops all three. Logs of the servers go to .state/logs/. "
    "With CHAT_WORKER_PAYLOAD_KEYS_FILE, payloads are encrypted and a codec server on 127.0.0.1:"
    "CHAT_WORKER_CODEC_PORT (default 8081) lets the Web UI show them. The worker serves Prometheus metrics on "
    "CHAT_WORKER_METRICS_ADDRESS (default 127.0.0.1:9464; empty: off). "
    "Submit jobs from another terminal with `python -m orchestrator chat`.",
    run=cmd_dev,
)

WORKER = Command(
    "worker",
    help="run a worker against an existing Temporal server and inference engine",
    description="Poll task queues 'chat' (workflows) and 'chat-generate' (generation, at most "
    "CHAT_WORKER_GENERATION_SLOTS at once, default 8) until SIGTERM or Ctrl-C, which lets in-flight "
    "generations finish first. At start, a TGI engine's GET /info must match the worker's token limits "
    "and cover its slots, or the worker refuses to run (engines without /info are not checked). With "
    "CHAT_WORKER_METRICS_ADDRESS (host:port) it serves Prometheus metrics there on /metrics.",
    run=cmd_worker,
)

DEMO = Command(
    "demo",
    help="start the embedded stack, run one roleplay exchange, print the reply, stop",
    description="What `make demo` runs: the dev stack and a worker start, one roleplay job runs through "
    "Temporal against the real local model, the reply is printed, everything stops. The job stays "
    "in the dev server's history under .state/.",
    arguments=(
        Argument("--character", default="Mira", help="bundled character (default: Mira)"),
        Argument("--message", default=DEMO_MESSAGE, help="the user's message"),
        Argument("--user-name", default="Traveller", help="the user's name (default: Traveller)"),
    ),
    run=cmd_demo,
)
