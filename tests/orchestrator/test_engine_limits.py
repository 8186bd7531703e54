"""The engine's limits as one source of truth: the worker reads tgi.env, and at start checks TGI's /info."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from orchestrator.devstack import DevStack, free_port
from orchestrator.engine_check import EngineInfo, engine_info, engine_limit_problems, engine_mismatches
from orchestrator.engines import ENGINES, EngineKind, detected_engine
from orchestrator.settings import Settings, SettingsError, load_settings
from tests.helpers import ROOT, run
from tests.orchestrator.engine_answers import TGI_INFO

TGI_ENV = ROOT / "tgi.env"


def engine_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tgi.env"
    path.write_text(text)
    return path


def settings_with(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, **env: str) -> Settings:
    monkeypatch.chdir(tmp_path)
    for name, value in env.items():
        monkeypatch.setenv(f"CHAT_WORKER_{name}", value)
    return load_settings()


def test_the_repos_tgi_env_gives_the_worker_its_limits(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    settings = settings_with(monkeypatch, tmp_path, ENGINE_ENV_FILE=str(TGI_ENV))
    assert settings.model_name == "Qwen/Qwen2.5-7B-Instruct"
    assert (settings.max_input_tokens, settings.max_total_tokens) == (6144, 8192)
    assert settings.engine_max_concurrent_requests == 8
    assert settings.api_key is None  # commented out in tgi.env


def test_api_key_comes_from_the_engine_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    source = engine_file(tmp_path, TGI_ENV.read_text() + "API_KEY=s3cret\n")
    settings = settings_with(monkeypatch, tmp_path, ENGINE_ENV_FILE=str(source))
    assert settings.api_key is not None and settings.api_key.get_secret_value() == "s3cret"


def test_a_worker_value_that_agrees_with_the_file_is_accepted(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    settings = settings_with(monkeypatch, tmp_path, ENGINE_ENV_FILE=str(TGI_ENV), MAX_INPUT_TOKENS="6144")
    assert settings.max_input_tokens == 6144


def test_a_worker_value_that_disagrees_stops_the_start(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as error:
        settings_with(monkeypatch, tmp_path, ENGINE_ENV_FILE=str(TGI_ENV), MAX_INPUT_TOKENS="1536")
    assert "CHAT_WORKER_MAX_INPUT_TOKENS=1536 disagrees with MAX_INPUT_TOKENS=6144 in" in str(error.value)


def test_a_disagreeing_api_key_is_never_echoed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    source = engine_file(tmp_path, TGI_ENV.read_text() + "API_KEY=engine-secret\n")
    with pytest.raises(SettingsError) as error:
        settings_with(monkeypatch, tmp_path, ENGINE_ENV_FILE=str(source), API_KEY="worker-secret")
    assert "CHAT_WORKER_API_KEY disagrees with API_KEY" in str(error.value)
    assert "secret" not in str(error.value).replace("CHAT_WORKER_API_KEY", "")


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("MODEL_ID=m\nMAX_INPUT_TOKENS=10\nMAX_TOTAL_TOKENS=20\n", "does not set MAX_CONCURRENT_REQUESTS"),
        (
            "MODEL_ID=m\nMAX_INPUT_TOKENS=10\nMAX_TOTAL_TOKENS=lots\nMAX_CONCURRENT_REQUESTS=8\n",
            "MAX_TOTAL_TOKENS in",
        ),
        ("MODEL_ID=m\nMAX_INPUT_TOKENS=100\nMAX_TOTAL_TOKENS=50\nMAX_CONCURRENT_REQUESTS=8\n", "smaller than"),
    ],
)
def test_a_bad_engine_file_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, text: str, says: str
) -> None:
    source = engine_file(tmp_path, text)
    with pytest.raises(SettingsError, match=says):
        settings_with(monkeypatch, tmp_path, ENGINE_ENV_FILE=str(source))


def test_a_missing_engine_file_names_the_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="CHAT_WORKER_ENGINE_ENV_FILE: no such file"):
        settings_with(monkeypatch, tmp_path, ENGINE_ENV_FILE=str(tmp_path / "nope.env"))


@pytest.mark.parametrize(("slots", "workers", "fits"), [("8", "1", True), ("4", "2", True), ("8", "2", False)])
def test_slots_times_workers_must_fit_the_engines_cap(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, slots: str, workers: str, fits: bool
) -> None:
    env = {"ENGINE_ENV_FILE": str(TGI_ENV), "GENERATION_SLOTS": slots, "WORKERS_PER_ENGINE": workers}
    if fits:
        settings_with(monkeypatch, tmp_path, **env)
    else:
        with pytest.raises(SettingsError, match=r"\(8\) × CHAT_WORKER_WORKERS_PER_ENGINE \(2\) = 16 exceeds"):
            settings_with(monkeypatch, tmp_path, **env)


def test_without_an_engine_file_the_local_defaults_hold(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    settings = settings_with(monkeypatch, tmp_path, GENERATION_SLOTS="64")  # no cap known: not checked
    assert (settings.max_input_tokens, settings.max_total_tokens) == (1536, 2048)
    assert settings.engine_max_concurrent_requests is None


def tgi_settings(**overrides: object) -> Settings:
    return Settings(_env_file=None, engine_env_file=TGI_ENV, **overrides)  # type: ignore[arg-type, call-arg]


def test_info_that_matches_has_no_problems() -> None:
    assert engine_mismatches(tgi_settings(), EngineInfo.model_validate(TGI_INFO)) == []


def test_info_that_differs_names_each_problem() -> None:
    info = EngineInfo.model_validate(TGI_INFO | {"max_input_tokens": 4096, "max_concurrent_requests": 4})
    problems = engine_mismatches(tgi_settings(), info)
    assert problems[0] == "CHAT_WORKER_MAX_INPUT_TOKENS=6144 but the engine's is 4096"
    assert "= 8 exceeds the engine's MAX_CONCURRENT_REQUESTS (4)" in problems[1]
    assert len(problems) == 2


async def test_llama_cpp_has_no_info_so_nothing_is_checked(stack: DevStack, settings: Settings) -> None:
    assert await engine_info(settings.inference_base_url) is None
    engine = await detected_engine("auto", settings.inference_base_url)
    assert engine == ENGINES[EngineKind.llamacpp]
    assert await engine_limit_problems(settings, engine) == []


async def test_a_tgi_that_is_not_up_yet_is_not_a_reason_to_refuse() -> None:
    settings = Settings(_env_file=None, inference_base_url=f"http://127.0.0.1:{free_port()}")  # type: ignore[call-arg]
    assert await engine_limit_problems(settings, ENGINES[EngineKind.tgi]) == []


@pytest.fixture
def tgi_info_server() -> Iterator[str]:
    """A FAKE engine answering only GET /info with a TGI body whose limits differ from tgi.env's: a
    misconfigured TGI, which cannot run here (no GPU)."""
    body = json.dumps(TGI_INFO | {"max_input_tokens": 4096, "max_total_tokens": 6144}).encode()

    class Info(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status = 200 if self.path == "/info" else 404
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body if status == 200 else b"{}")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Info)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_the_worker_refuses_to_run_against_a_disagreeing_tgi(tgi_info_server: str) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "CHAT_WORKER_ENGINE_ENV_FILE": str(TGI_ENV),
        "CHAT_WORKER_INFERENCE_BASE_URL": tgi_info_server,
        "CHAT_WORKER_TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",  # never reached: the check comes first
    }
    done = run("worker", env=env, timeout=60)
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert f"the engine at {tgi_info_server} disagrees with this worker" in errors[0]
    assert "CHAT_WORKER_MAX_INPUT_TOKENS=6144 but the engine's is 4096" in errors[0]
    assert "CHAT_WORKER_MAX_TOTAL_TOKENS=8192 but the engine's is 6144" in errors[0]
