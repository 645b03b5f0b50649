"""Secrets: .dev.vars and the environment, generated dev values, and that they never leak."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest

from durable import config as wconfig
from durable.config import ConfigError
from durable.env import Env, load_secrets

TOML = """
name = "svc"
main = "app.py"
compatibility_date = "2026-11-01"
[secrets]
required = ["JWT_KEY", "API_TOKEN"]
"""


@pytest.fixture
def cfg(tmp_path: Path):
    (tmp_path / "app.py").write_text("app = None\n")
    (tmp_path / "wrangler.toml").write_text(TOML)
    return wconfig.load(tmp_path / "wrangler.toml")


def test_dev_vars_then_environment_wins(cfg, tmp_path: Path) -> None:
    (tmp_path / ".dev.vars").write_text('JWT_KEY="from-file"\nAPI_TOKEN=file-token\nUNDECLARED=x\n')
    found = load_secrets(cfg, state_dir=tmp_path / "state", local_dev=True, environ={"API_TOKEN": "from-env"})
    assert found == {"JWT_KEY": "from-file", "API_TOKEN": "from-env"}


def test_missing_secret_in_dev_is_generated_stable_and_warned(cfg, tmp_path: Path, caplog) -> None:
    with caplog.at_level(logging.WARNING):
        first = load_secrets(cfg, state_dir=tmp_path / "state", local_dev=True, environ={})
    second = load_secrets(cfg, state_dir=tmp_path / "state", local_dev=True, environ={})
    assert first == second and len(first["JWT_KEY"]) >= 32 and first["JWT_KEY"] != first["API_TOKEN"]
    assert "secret JWT_KEY is not set" in caplog.text and first["JWT_KEY"] not in caplog.text
    assert (tmp_path / "state" / "dev-secrets.json").stat().st_mode & 0o777 == 0o600


def test_missing_secret_outside_dev_is_an_error(cfg, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="missing secret\\(s\\) JWT_KEY, API_TOKEN"):
        load_secrets(cfg, state_dir=tmp_path, local_dev=False, environ={})


def test_env_repr_hides_secrets() -> None:
    env = Env(vars={"MODE": "dev"}, secrets={"JWT_KEY": "super-secret-value"}, bindings={})
    assert env.JWT_KEY == "super-secret-value" and env.MODE == "dev"
    assert "super-secret-value" not in repr(env) and "JWT_KEY=<secret>" in repr(env)
    with pytest.raises(AttributeError, match="available: JWT_KEY, MODE"):
        env.NOPE  # noqa: B018
