"""The production stack checked statically, everywhere (no Docker engine needed): docker-compose.yml,
tgi.env, the Dockerfile and what ties them to the code. What only a GPU host can check is in
test_compose_stack.py (`make test-compose`)."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

from orchestrator.cli import parser
from orchestrator.devstack import DEV_SERVER_DYNAMIC_CONFIG
from orchestrator.models_pull import DEFAULT_MODEL
from orchestrator.settings import Settings, SettingsError, load_settings
from tests.deploy.compose import (
    ROOT,
    bind_mounts,
    environment,
    load_compose,
    read_env_file,
    services,
)
from workflows.models import generate_task_queue
from workflows.search_attributes import registration_spec

TGI_ENV = ROOT / "tgi.env"
ENGINES = ("tgi", "vllm")
ONE_SHOT = ("temporal-schema", "temporal-setup", "models-pull")


def image_is_pinned(image: str) -> bool:
    """A digest, or a tag that names a version (has a digit) and is not `latest`."""
    if "@sha256:" in image:
        return True
    name, _, tag = image.rpartition(":")
    return bool(name) and "/" not in tag and tag != "latest" and any(c.isdigit() for c in tag)


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, ARG defaults substituted."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    instructions = [
        (line.split(maxsplit=1)[0].upper(), line.split(maxsplit=1)[1].strip())
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    args = dict(a.split("=", 1) for kind, a in instructions if kind == "ARG" and "=" in a)
    return [(kind, re.sub(r"\$\{(\w+)\}", lambda m: args.get(m[1], m[0]), a)) for kind, a in instructions]


def stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile's stages, each starting with its FROM."""
    found: list[list[tuple[str, str]]] = []
    for instruction in dockerfile_instructions():
        if instruction[0] == "FROM":
            found.append([])
        if found:
            found[-1].append(instruction)
    return found


def exec_form(arguments: str) -> list[str]:
    return yaml.safe_load(arguments)  # a JSON array is YAML


# --- docker-compose.yml ------------------------------------------------------------------------------


def test_the_compose_file_parses_and_needs_no_env_file() -> None:
    model = load_compose()  # raises on a ${VAR} without a default
    assert set(model) <= {"name", "services", "volumes", "networks", "secrets"} | {
        k for k in model if k.startswith("x-")
    }
    assert set(services()) == {
        "postgres",
        "temporal-schema",
        "temporal",
        "temporal-setup",
        "temporal-ui",
        "tgi",
        "vllm",
        "worker",
        "codec-server",
        "models-pull",
        "prometheus",
        "grafana",
    }


@pytest.mark.parametrize("name", sorted(services()))
def test_every_service_has_a_pinned_image_or_a_build(name: str) -> None:
    service = services()[name]
    assert "build" in service or image_is_pinned(service["image"]), service.get("image")
    if "build" in service:
        assert (ROOT / service["build"] / "Dockerfile").is_file()


def test_pinned_means_a_version() -> None:
    assert image_is_pinned("temporalio/server:1.32.0") and image_is_pinned("localhost:5000/x:1.2")
    assert image_is_pinned("python@sha256:" + "0" * 64)
    assert not image_is_pinned("temporalio/server") and not image_is_pinned("postgres:latest")
    assert not image_is_pinned("localhost:5000/x") and not image_is_pinned("postgres:alpine")


def test_env_files_and_bind_mounts_exist() -> None:
    for name, service in services().items():
        env_files = service.get("env_file", [])
        for env_file in [env_files] if isinstance(env_files, str) else env_files:
            assert (ROOT / env_file).is_file(), f"{name}: env_file {env_file}"
        for target, source in bind_mounts(service).items():
            assert source.exists(), f"{name}: {source} for {target}"


def test_host_ports_do_not_collide() -> None:
    published = [
        port.rsplit(":", 2)[-2] if port.count(":") == 2 else port.split(":")[0]
        for service in services().values()
        for port in service.get("ports", [])
    ]
    assert published and not [port for port, count in Counter(published).items() if count > 1]


def test_published_ports_stay_on_loopback_by_default() -> None:
    for name, service in services().items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond this host"


def healthchecked(name: str) -> bool:
    if name in {"worker", "models-pull"}:  # built from the Dockerfile: its HEALTHCHECK
        return any(kind == "HEALTHCHECK" for kind, _ in dockerfile_instructions())
    return "healthcheck" in services()[name]


@pytest.mark.parametrize("name", sorted(services()))
def test_depends_on_waits_for_health_or_completion(name: str) -> None:
    everything = services()
    for dependency, rule in everything[name].get("depends_on", {}).items():
        assert dependency in everything, f"{name} depends on an unknown service {dependency}"
        if dependency in ONE_SHOT:
            assert rule["condition"] == "service_completed_successfully", f"{name} → {dependency}"
        elif healthchecked(dependency):
            assert rule["condition"] == "service_healthy", f"{name} → {dependency}"
        else:
            raise AssertionError(f"{name} waits for {dependency}, which has no healthcheck")
        if rule.get("required") is False:
            assert dependency in ENGINES, f"only the engines are optional dependencies, not {dependency}"


def test_one_shot_jobs_are_not_restarted_forever() -> None:
    for name in ONE_SHOT:
        assert services()[name].get("restart", "no") in {"no", "on-failure:5"}, name


def test_the_worker_waits_for_temporals_setup_and_for_whichever_engine_runs() -> None:
    depends = services()["worker"]["depends_on"]
    assert depends["temporal"]["condition"] == "service_healthy"
    assert depends["temporal-setup"]["condition"] == "service_completed_successfully"
    for engine in ENGINES:
        assert depends[engine] == {"condition": "service_healthy", "required": False}


# --- Temporal -------------------------------------------------------------------------------------------


def test_temporal_runs_on_postgres_with_the_current_upstream_images() -> None:
    everything = services()
    server_tag = everything["temporal"]["image"].split(":")[1]
    for job in ("temporal-schema", "temporal-setup"):
        assert everything[job]["image"] == f"temporalio/admin-tools:{server_tag}"  # schema matches the server
    assert not any("auto-setup" in s.get("image", "") for s in everything.values())
    server = environment(everything["temporal"])  # the x-temporal-postgres anchor merged in
    assert server["DB"] == "postgres12" and server["POSTGRES_SEEDS"] == "postgres"
    assert environment(everything["temporal-schema"])["POSTGRES_PWD"] == server["POSTGRES_PWD"]
    assert everything["postgres"]["healthcheck"]["test"][1].startswith("pg_isready")


def test_the_server_gets_a_dynamic_config_file() -> None:
    server = services()["temporal"]
    assert bind_mounts(server)[environment(server)["DYNAMIC_CONFIG_FILE_PATH"]].is_file()


def test_the_servers_dynamic_config_honours_priority_and_fairness_on_the_generation_queue_as_the_dev_stacks_does() -> (
    None
):
    server = services()["temporal"]
    config = yaml.safe_load(bind_mounts(server)[environment(server)["DYNAMIC_CONFIG_FILE_PATH"]].read_text())
    worker = environment(services()["worker"])
    generation_queue = {
        "namespace": worker["CHAT_WORKER_TEMPORAL_NAMESPACE"],
        "taskQueueName": generate_task_queue(worker["CHAT_WORKER_TASK_QUEUE"]),
        "taskType": "Activity",
    }
    assert config["matching.enableFairness"] == [{"value": True}]
    assert DEV_SERVER_DYNAMIC_CONFIG["matching.enableFairness"] is True
    for key in ("matching.numTaskqueueReadPartitions", "matching.numTaskqueueWritePartitions"):
        assert config[key] == [{"value": 1, "constraints": generation_queue}]
        assert DEV_SERVER_DYNAMIC_CONFIG[key] == 1
    assert set(config) == set(DEV_SERVER_DYNAMIC_CONFIG)


@pytest.mark.parametrize("job", ["temporal-schema", "temporal-setup"])
def test_setup_jobs_run_scripts_that_exist(job: str) -> None:
    service = services()[job]
    shell, script = service["entrypoint"]
    assert shell == "/bin/sh"  # the scripts need no executable bit
    mount, _, rest = script.rpartition("/")
    assert (bind_mounts(service)[mount] / rest).is_file()
    subprocess.run(["sh", "-n", str(bind_mounts(service)[mount] / rest)], check=True)  # syntax


def test_search_attributes_registered_are_the_ones_the_project_uses() -> None:
    setup = environment(services()["temporal-setup"])
    assert setup["SEARCH_ATTRIBUTES"] == registration_spec()
    assert registration_spec() == "JobType=Keyword CharacterName=Keyword Attempts=Int Outcome=Keyword"
    assert setup["NAMESPACE"] == environment(services()["worker"])["CHAT_WORKER_TEMPORAL_NAMESPACE"] == "default"
    assert re.fullmatch(r"\d+[hd]", setup["RETENTION"])


# --- the engines and tgi.env ----------------------------------------------------------------------------


def test_tgi_is_pinned_on_the_gpu_with_shm_a_cache_volume_and_a_health_check() -> None:
    tgi = services()["tgi"]
    assert tgi["image"].startswith("ghcr.io/huggingface/text-generation-inference:") and image_is_pinned(tgi["image"])
    assert tgi["env_file"] == "tgi.env"
    [device] = tgi["deploy"]["resources"]["reservations"]["devices"]
    assert device == {"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}
    assert tgi["shm_size"] == "1g"
    assert "hf-cache:/data" in tgi["volumes"] and "hf-cache" in load_compose()["volumes"]
    assert "http://localhost:80/health" in tgi["healthcheck"]["test"]


def test_each_tgi_env_setting_says_why() -> None:
    lines = TGI_ENV.read_text().splitlines()
    for number, line in enumerate(lines):
        if line and not line.startswith("#"):
            assert lines[number - 1].startswith("#"), f"tgi.env: {line} has no comment above it"
            assert " #" not in line, f"tgi.env: {line}: inline comments end up in the value"


def test_tgi_env_is_sized_for_roleplay_on_one_gpu() -> None:
    tgi = read_env_file(TGI_ENV)
    assert tgi["MODEL_ID"] == DEFAULT_MODEL == "Qwen/Qwen2.5-7B-Instruct"
    assert tgi["MAX_CONCURRENT_REQUESTS"] == "8" and tgi["DTYPE"] == "bfloat16"
    longest_reply = Settings.model_fields["max_tokens_cap"].default
    assert int(tgi["MAX_TOTAL_TOKENS"]) - int(tgi["MAX_INPUT_TOKENS"]) >= longest_reply
    assert int(tgi["MAX_BATCH_PREFILL_TOKENS"]) >= int(tgi["MAX_INPUT_TOKENS"])  # or TGI refuses to start
    assert tgi["USAGE_STATS"] == "off" and tgi["HF_HUB_OFFLINE"] == "1"
    assert tgi["HUGGINGFACE_HUB_CACHE"].startswith("/data/")  # inside the hf-cache volume


def test_vllm_is_a_profile_reading_the_same_file() -> None:
    vllm = services()["vllm"]
    assert vllm["profiles"] == ["vllm"] and image_is_pinned(vllm["image"])
    assert vllm["env_file"] == "tgi.env" and "hf-cache:/data" in vllm["volumes"]
    assert vllm["deploy"] == services()["tgi"]["deploy"] and vllm["shm_size"] == "1g"
    assert "http://localhost:80/health" in " ".join(vllm["healthcheck"]["test"])


def test_vllms_command_line_takes_its_values_from_tgi_env(tmp_path: Path) -> None:
    """Runs the service's shell command with a stand-in `vllm` that prints its arguments."""
    stand_in = tmp_path / "vllm"
    stand_in.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    stand_in.chmod(stand_in.stat().st_mode | stat.S_IEXEC)
    vllm = services()["vllm"]
    assert vllm["entrypoint"] == ["/bin/sh", "-c"]
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin", **read_env_file(TGI_ENV)}

    def argv(**extra: str) -> list[str]:
        done = subprocess.run(["/bin/sh", "-c", *vllm["command"]], env=env | extra, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return done.stdout.splitlines()

    assert argv() == [
        *("serve", "Qwen/Qwen2.5-7B-Instruct", "--served-model-name", "Qwen/Qwen2.5-7B-Instruct"),
        *("--host", "0.0.0.0", "--port", "80", "--dtype", "bfloat16"),
        *("--max-model-len", "8192", "--max-num-seqs", "8", "--enable-prefix-caching"),
    ]
    with_options = argv(API_KEY="k e y", REVISION="abc123")
    assert with_options[4:6] == ["--revision", "abc123"] and with_options[-2:] == ["--api-key", "k e y"]


def test_tgi_keeps_its_default_prefix_caching() -> None:
    """TGI 3's launcher turns prefix caching on (flashinfer attention) unless one of these is set, or the GPU is
    older than compute capability 8.0 for some models (launcher/src/main.rs, resolve_attention)."""
    tgi = read_env_file(TGI_ENV) | environment(services()["tgi"])
    assert not {"PREFIX_CACHING", "ATTENTION", "LORA_ADAPTERS"} & tgi.keys()


def test_both_engines_answer_where_the_worker_looks() -> None:
    everything = services()
    url = environment(everything["worker"])["CHAT_WORKER_INFERENCE_BASE_URL"]
    host, port = url.removeprefix("http://").split(":")
    for engine in ENGINES:
        assert host in everything[engine]["networks"]["default"]["aliases"], engine
    assert port == "80"  # TGI's image sets PORT=80; vLLM is started with --port 80 (checked above)


# --- metrics: prometheus and grafana ---------------------------------------------------------------


def prometheus_scrapes() -> dict[str, dict[str, object]]:
    mounts = bind_mounts(services()["prometheus"])
    config = yaml.safe_load(mounts["/etc/prometheus/prometheus.yml"].read_text())
    return {job["job_name"]: job for job in config["scrape_configs"]}


def test_prometheus_scrapes_every_worker_replica_on_the_port_it_serves_metrics() -> None:
    worker = services()["worker"]
    host, _, port = environment(worker)["CHAT_WORKER_METRICS_ADDRESS"].rpartition(":")
    assert host == "0.0.0.0"  # reachable from the prometheus container; compose publishes nothing for it
    assert not worker.get("ports")
    (discovery,) = prometheus_scrapes()["chat-worker"]["dns_sd_configs"]  # type: ignore[misc]
    assert discovery == {"names": ["worker"], "type": "A", "port": int(port), "refresh_interval": "30s"}


def test_prometheus_scrapes_whichever_engine_runs_and_the_temporal_server() -> None:
    everything = services()
    jobs = prometheus_scrapes()
    (engine,) = jobs["engine"]["static_configs"]  # type: ignore[misc]
    assert engine["targets"] == ["engine:80"]
    for name in ENGINES:
        assert "engine" in everything[name]["networks"]["default"]["aliases"]
    metrics_port = environment(everything["temporal"])["PROMETHEUS_ENDPOINT"].rpartition(":")[2]
    (temporal,) = jobs["temporal"]["static_configs"]  # type: ignore[misc]
    assert temporal["targets"] == [f"temporal:{metrics_port}"]


def test_grafana_provisions_the_prometheus_source_and_the_dashboard_it_reads() -> None:
    everything = services()
    mounts = bind_mounts(everything["grafana"])
    provisioning = mounts["/etc/grafana/provisioning"]
    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    prometheus_port = everything["prometheus"]["ports"][0].rpartition(":")[2]
    assert source["url"] == f"http://prometheus:{prometheus_port}" and source["isDefault"]
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "chat-worker.yml").read_text())["providers"]
    dashboards = mounts[provider["options"]["path"]]
    dashboard = json.loads((dashboards / "chat-worker.json").read_text())
    home = environment(everything["grafana"])["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{provider['options']['path']}/chat-worker.json"
    sources = {t["datasource"]["uid"] for p in dashboard["panels"] for t in [p, *p["targets"]]}
    assert sources == {source["uid"]}
    assert everything["grafana"]["depends_on"] == {"prometheus": {"condition": "service_healthy"}}


def test_the_dashboard_has_the_panels_ops_asked_for() -> None:
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "dashboards" / "chat-worker.json").read_text())
    queries = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    for wanted in (
        "chat_worker_jobs_total",  # jobs/s by outcome
        "histogram_quantile(0.95, sum by (le) (rate(chat_worker_response_seconds_bucket",
        "histogram_quantile(0.95, sum by (le) (rate(chat_worker_first_token_seconds_bucket",
        "chat_worker_generations_in_flight",  # slots in use
        "chat_worker_engine_max_concurrent_requests",  # vs the engine's cap
        "approximate_backlog_count",  # Temporal backlog
        "tgi_queue_size",
        "tgi_batch_current_size",
    ):
        assert wanted in queries, wanted
    # (tests/orchestrator/test_metrics.py checks each query against a real scrape.)


# --- the worker ----------------------------------------------------------------------------------------


def worker_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, **overrides: str) -> Settings:
    """The worker container's Settings: its compose environment, tgi.env where the container sees it."""
    worker = services(**overrides)["worker"]
    env = environment(worker)
    env["CHAT_WORKER_ENGINE_ENV_FILE"] = str(bind_mounts(worker)[env["CHAT_WORKER_ENGINE_ENV_FILE"]])
    monkeypatch.chdir(tmp_path)
    for name in [n for n in os.environ if n.startswith("CHAT_WORKER_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return load_settings()


def test_the_worker_settings_match_tgi_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    settings = worker_settings(monkeypatch, tmp_path)
    tgi = read_env_file(TGI_ENV)
    assert settings.model_name == tgi["MODEL_ID"]
    assert settings.max_input_tokens == int(tgi["MAX_INPUT_TOKENS"])
    assert settings.max_total_tokens == int(tgi["MAX_TOTAL_TOKENS"])
    assert settings.engine_max_concurrent_requests == int(tgi["MAX_CONCURRENT_REQUESTS"])
    assert (settings.temporal_address, settings.temporal_namespace) == ("temporal:7233", "default")
    assert (settings.task_queue, settings.generate_task_queue) == ("chat", "chat-generate")


@pytest.mark.parametrize(
    ("replicas", "slots", "fits"),
    [(None, None, True), ("2", "4", True), ("4", "2", True), ("2", "8", False), ("3", "4", False)],
)
def test_slots_times_worker_replicas_must_fit_tgis_cap(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, replicas: str | None, slots: str | None, fits: bool
) -> None:
    overrides = {k: v for k, v in (("WORKER_REPLICAS", replicas), ("WORKER_GENERATION_SLOTS", slots)) if v}
    worker = services(**overrides)["worker"]
    assert worker["deploy"]["replicas"] == environment(worker)["CHAT_WORKER_WORKERS_PER_ENGINE"]
    cap = int(read_env_file(TGI_ENV)["MAX_CONCURRENT_REQUESTS"])
    in_flight = int(worker["deploy"]["replicas"]) * int(environment(worker)["CHAT_WORKER_GENERATION_SLOTS"])
    assert (in_flight <= cap) is fits
    if fits:
        worker_settings(monkeypatch, tmp_path, **overrides)
    else:
        with pytest.raises(SettingsError, match="exceeds the engine's MAX_CONCURRENT_REQUESTS"):
            worker_settings(monkeypatch, tmp_path, **overrides)


def test_models_pull_fills_the_volume_tgi_reads() -> None:
    pull, tgi = services()["models-pull"], services()["tgi"]
    assert pull["profiles"] == ["tools"] and pull["command"] == ["models", "pull"]
    assert pull["env_file"] == tgi["env_file"]  # MODEL_ID, REVISION, HUGGINGFACE_HUB_CACHE
    assert "hf-cache:/data" in pull["volumes"]
    assert environment(pull)["HF_HUB_OFFLINE"] == "0"
    parser().parse_args(pull["command"])


# --- Dockerfile -------------------------------------------------------------------------------------------


def test_keys_reach_the_worker_and_the_codec_server_as_a_secret_file_never_as_a_value() -> None:
    model = load_compose()
    assert model["secrets"]["payload_keys"] == {"file": "./secrets/payload-keys"}
    for name in ("worker", "codec-server"):
        service = model["services"][name]
        assert service["secrets"] == ["payload_keys"]
        assert environment(service)["CHAT_WORKER_PAYLOAD_KEYS_FILE"] == "/run/secrets/payload_keys"
    assert environment(model["services"]["worker"])["CHAT_WORKER_ALLOW_PLAINTEXT"] == "0"
    assert (
        "secrets/" in (ROOT / ".gitignore").read_text().split() and "secrets/" in (ROOT / ".dockerignore").read_text()
    )


def test_the_ui_asks_the_codec_server_at_an_address_the_browser_reaches_and_only_the_ui_may_call_it() -> None:
    ui, codec = services()["temporal-ui"], services()["codec-server"]
    endpoint = environment(ui)["TEMPORAL_CODEC_ENDPOINT"]
    assert endpoint == "http://127.0.0.1:8081" and codec["ports"] == ["127.0.0.1:8081:8081"]
    ui_origin = "http://127.0.0.1:" + ui["ports"][0].split(":")[1]
    assert f"--cors-origin={ui_origin}" in codec["command"] and codec["command"][0] == "codec-server"


def test_the_image_is_private_by_default() -> None:
    env = " ".join(a for kind, a in stages()[-1] if kind == "ENV")
    assert "CHAT_WORKER_ALLOW_PLAINTEXT=0" in env


def test_the_image_is_built_in_stages_from_a_pinned_slim_python() -> None:
    built = stages()
    assert len(built) >= 2
    for stage in built:
        image = stage[0][1].split()[0]
        assert image_is_pinned(image) and re.fullmatch(r"python:3\.11\.\d+-slim-\w+", image), image
    final = built[-1]
    assert any(kind == "COPY" and a.startswith("--from=build") for kind, a in final)
    assert not [a for kind, a in final if kind == "RUN" and re.search(r"apt-get|gcc|build-essential", a)]


def test_the_image_installs_the_project_without_the_local_extra() -> None:
    installs = [a for kind, a in dockerfile_instructions() if kind == "RUN" and "pip install" in a]
    assert installs and not [a for a in installs if "[local" in a or "llama" in a]


def test_the_image_runs_the_worker_as_an_unprivileged_user() -> None:
    final = stages()[-1]
    [user] = [a for kind, a in final if kind == "USER"]
    assert user not in {"root", "0"} and not user.startswith("0:")


def test_the_entrypoint_and_health_check_are_commands_that_exist() -> None:
    final = dict(stages()[-1])
    command = exec_form(final["ENTRYPOINT"]) + exec_form(final["CMD"])
    assert command == ["python", "-m", "orchestrator", "worker"]
    assert (ROOT / "orchestrator" / "__main__.py").is_file()
    parser().parse_args(command[3:])
    health = exec_form(final["HEALTHCHECK"].split("CMD", 1)[1])
    assert health[:3] == ["python", "-m", "orchestrator"]
    assert parser().parse_args(health[3:]).command == "health"


def test_the_build_context_holds_what_the_image_copies_and_not_more() -> None:
    ignored = {line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and line[0] != "#"}
    assert {".git", ".venv", ".state", ".env", "tests"} <= ignored
    copied = [a.split()[:-1] for kind, a in stages()[0] if kind == "COPY"]
    for sources in copied:
        for source in sources:
            assert (ROOT / source).exists() and source not in ignored, source


# --- make test-compose --------------------------------------------------------------------------------------


def test_make_test_compose_exists_and_the_default_run_excludes_the_compose_suite() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^test-compose:", makefile, re.MULTILINE)
    assert "-m tests.deploy.preflight" in makefile and "-m compose" in makefile
    collected = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "tests/deploy/test_compose_stack.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert "deselected" in collected.stdout and "test_compose_stack.py::" not in collected.stdout
