from __future__ import annotations

from pathlib import Path

import pytest

from config import WILDCARD, ConfigError, load_config, missing_env, single_upstream

GOOD = """\
server:
  host: 127.0.0.1
  port: 8080
  max_request_body_bytes: 1048576
upstreams:
  vllm-a:
    url: http://vllm-a:8000/v1
    timeout_s: 30
    retries: 1
  openai:
    url: https://api.openai.com/v1
    api_key_env: OPENAI_API_KEY
models:
  clinical:
    routes:
      - upstream: vllm-a
        model: meta-llama/Llama-3.1-8B-Instruct
      - upstream: openai
        model: gpt-4o-mini
keys:
  - tenant: ward-a
    key_env: WARD_A_KEY
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    return path


def test_valid_file_loads_models_routes_and_keys(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD))
    assert config.server.port == 8080
    routes = config.models["clinical"].routes
    assert [(r.upstream, r.model) for r in routes] == [
        ("vllm-a", "meta-llama/Llama-3.1-8B-Instruct"),
        ("openai", "gpt-4o-mini"),
    ]
    assert config.upstreams["vllm-a"].retries == 1
    assert config.upstreams["openai"].timeout_s == 600.0  # the default
    assert config.keys[0].tenant == "ward-a"


def test_unknown_key_is_an_error_naming_key_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("    timeout_s: 30\n", "    timeout_s: 30\n    retrys: 3\n"))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert f"{path}:9: upstreams.vllm-a.retrys: Extra inputs are not permitted" in message


def test_wrong_type_names_key_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("port: 8080", "port: eighty"))
    with pytest.raises(ConfigError, match=r"gateway.yaml:3: server.port: .*integer"):
        load_config(path)


def test_route_to_unknown_upstream_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("- upstream: openai", "- upstream: opneai"))
    with pytest.raises(ConfigError, match=r"models.clinical.routes.1.upstream: unknown upstream 'opneai'"):
        load_config(path)


def test_model_task_is_loaded_and_defaults_to_none(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD.replace("  clinical:\n", "  clinical:\n    task: grounded_qa\n")))
    assert config.models["clinical"].task == "grounded_qa"
    assert load_config(write(tmp_path, GOOD)).models["clinical"].task is None


def test_an_unknown_task_value_names_key_line_and_the_allowed_values(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("  clinical:\n", "  clinical:\n    task: summarise\n"))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}:15: models.clinical.task: Input should be 'transform', 'grounded_qa' or 'open'"


def test_secret_in_file_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("api_key_env: OPENAI_API_KEY", "api_key: sk-live-123"))
    with pytest.raises(ConfigError, match=r"gateway.yaml:\d+: upstreams.openai.api_key: Extra inputs"):
        load_config(path)


def test_key_needs_exactly_one_source(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD + "  - tenant: ward-b\n")
    with pytest.raises(ConfigError, match=r"keys.1: give exactly one of key_env or key_sha256"):
        load_config(path)


def test_azure_needs_api_version(tmp_path: Path) -> None:
    path = write(
        tmp_path, GOOD.replace("url: https://api.openai.com/v1", "url: https://x.openai.azure.com\n    provider: azure")
    )
    with pytest.raises(ConfigError, match=r"upstreams.openai: .*api_version"):
        load_config(path)


def test_not_yaml_and_not_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "models: [unclosed"))
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(write(tmp_path, "- a\n- b\n"))
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")


def test_missing_env_lists_unset_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_config(write(tmp_path, GOOD))
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("WARD_A_KEY", "k")
    assert missing_env(config) == ["OPENAI_API_KEY"]


def test_single_upstream_forwards_every_model() -> None:
    config = single_upstream("http://127.0.0.1:9/v1", "KEY_VAR")
    assert list(config.models) == [WILDCARD]
    assert config.upstreams["default"].api_key_env == "KEY_VAR"
    assert config.server.host == "127.0.0.1"


def test_example_configuration_is_valid() -> None:
    config = load_config(Path(__file__).parents[2] / "docs" / "examples" / "gateway.yaml")
    assert config.models
