from pathlib import Path

import pytest

from orchestrator.settings import Settings, SettingsError, load_settings


def test_defaults_are_the_embedded_stack(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings()
    assert settings.temporal_address == "127.0.0.1:7233"
    assert settings.temporal_namespace == "default"
    assert (settings.task_queue, settings.generate_task_queue) == ("chat", "chat-generate")
    assert settings.inference_base_url == "http://127.0.0.1:8088"
    assert settings.temporal_ui_port == 8233
    assert settings.generation_slots == 8
    assert settings.generation_reserve == 1
    assert settings.workflow_task_slots == 8
    assert settings.state_dir == Path(".state")


def test_env_vars_with_the_prefix_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CHAT_WORKER_GENERATION_SLOTS", "4")
    monkeypatch.setenv("CHAT_WORKER_GENERATION_RESERVE", "0")
    monkeypatch.setenv("CHAT_WORKER_WORKFLOW_TASK_SLOTS", "16")
    monkeypatch.setenv("CHAT_WORKER_INFERENCE_BASE_URL", "http://tgi:80/")
    settings = load_settings()
    assert (settings.generation_slots, settings.generation_reserve, settings.workflow_task_slots) == (4, 0, 16)
    assert settings.inference_base_url == "http://tgi:80"
    assert (settings.inference_host, settings.inference_port) == ("tgi", 80)


def test_dotenv_file_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("CHAT_WORKER_TEMPORAL_ADDRESS=temporal:7233\nCHAT_WORKER_API_KEY=s3cret\n")
    monkeypatch.chdir(tmp_path)
    settings = load_settings()
    assert settings.temporal_host == "temporal"
    assert settings.api_key is not None and settings.api_key.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("CHAT_WORKER_GENERATION_SLOTS", "0", "CHAT_WORKER_GENERATION_SLOTS"),
        ("CHAT_WORKER_GENERATION_SLOTS", "many", "CHAT_WORKER_GENERATION_SLOTS"),
        ("CHAT_WORKER_GENERATION_RESERVE", "-1", "CHAT_WORKER_GENERATION_RESERVE"),
        (
            "CHAT_WORKER_GENERATION_RESERVE",
            "9",
            r"CHAT_WORKER_GENERATION_RESERVE \(9\) must not exceed CHAT_WORKER_GENERATION_SLOTS \(8\)",
        ),
        ("CHAT_WORKER_WORKFLOW_TASK_SLOTS", "1", "CHAT_WORKER_WORKFLOW_TASK_SLOTS"),
        ("CHAT_WORKER_TEMPORAL_ADDRESS", "localhost", "CHAT_WORKER_TEMPORAL_ADDRESS"),
        ("CHAT_WORKER_INFERENCE_BASE_URL", "tgi:80", "CHAT_WORKER_INFERENCE_BASE_URL"),
        ("CHAT_WORKER_LOG_LEVEL", "LOUD", "CHAT_WORKER_LOG_LEVEL"),
        ("CHAT_WORKER_MAX_INPUT_TOKENS", "4096", "max_input_tokens must be smaller than max_total_tokens"),
    ],
)
def test_invalid_value_fails_naming_the_field(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, variable: str, value: str, named: str
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=named):
        load_settings()


def test_api_key_is_never_echoed_in_errors(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CHAT_WORKER_API_KEY", "s3cret")
    monkeypatch.setenv("CHAT_WORKER_MAX_TOTAL_TOKENS", "100")
    with pytest.raises(SettingsError) as error:
        load_settings()
    assert "s3cret" not in str(error.value)


def test_settings_are_immutable() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    with pytest.raises(ValueError):
        settings.generation_slots = 3  # type: ignore[misc]


def test_an_invalid_variable_the_caller_does_not_read_takes_the_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CHAT_WORKER_TEMPORAL_ADDRESS", "nonsense")
    monkeypatch.setenv("CHAT_WORKER_POLICY_FILE", "policy.yaml")
    settings = load_settings(reads={"policy_file"})
    assert settings.policy_file == Path("policy.yaml") and settings.temporal_address == "127.0.0.1:7233"
    for reads in (None, {"policy_file", "temporal_address"}):
        with pytest.raises(SettingsError, match="CHAT_WORKER_TEMPORAL_ADDRESS"):
            load_settings(reads=reads)


def test_valid_variables_hold_whatever_the_caller_reads(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CHAT_WORKER_GENERATION_SLOTS", "4")
    assert load_settings(reads=set()).generation_slots == 4


def test_reads_names_settings() -> None:
    with pytest.raises(ValueError, match="not settings: temporal_adress"):
        load_settings(reads={"temporal_adress"})
