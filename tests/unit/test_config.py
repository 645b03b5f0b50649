"""wrangler.toml loading: valid configs, env overrides, and errors that name file, key and problem."""
from __future__ import annotations

from pathlib import Path

import pytest

from durable import config as wconfig
from durable.config import ConfigError
from durable.runtime import start_order

ROOT = Path(__file__).resolve().parents[2]
BASIC = """
name = "shop"
main = "app.py"
compatibility_date = "2026-11-01"
[vars]
LIMIT = 5
[[durable_objects.bindings]]
name = "LOCK"
class_name = "OrderLock"
[[migrations]]
tag = "v1"
new_sqlite_classes = ["OrderLock"]
[[services]]
binding = "OTHER"
service = "other"
[env.staging]
vars = { LIMIT = 9 }
[env.production]
name = "shop"
main = "app.py"
"""


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "app.py").write_text("app = None\n")
    path = tmp_path / "wrangler.toml"
    path.write_text(text)
    return path


def test_loads_keys(tmp_path: Path) -> None:
    cfg = wconfig.load(write(tmp_path, BASIC))
    assert cfg.name == "shop" and cfg.vars == {"LIMIT": 5}
    assert cfg.hosted_classes == ["OrderLock"] and cfg.dependencies == {"other"}


def test_env_overrides_follow_wrangler_rules(tmp_path: Path) -> None:
    staging = wconfig.load(write(tmp_path, BASIC), "staging")
    assert staging.name == "shop-staging" and staging.vars == {"LIMIT": 9}
    assert staging.durable_objects == [] and staging.services == []  # bindings are not inherited
    production = wconfig.load(tmp_path / "wrangler.toml", "production")
    assert production.name == "shop" and production.vars == {}


@pytest.mark.parametrize("text, key, problem", [
    ("bogus = 1\n" + BASIC, "bogus", "unknown key"),
    (BASIC + "\nbogus = 1\n", "env.production.bogus", "unknown key"),
    (BASIC.replace('name = "shop"\n', "", 1), "name", "required key is missing"),
    (BASIC.replace('compatibility_date = "2026-11-01"', 'compatibility_date = "soon"'), "compatibility_date",
     "should match pattern"),
    (BASIC.replace('class_name = "OrderLock"', 'class_nam = "OrderLock"'), "durable_objects.bindings[0]", ""),
    (BASIC.replace('new_sqlite_classes = ["OrderLock"]', 'new_sqlite_classes = []'), "migrations",
     "'OrderLock' is bound but no migration declares it"),
    (BASIC.replace('name = "LOCK"', 'name = "1LOCK"'), "durable_objects.bindings[0].name", "not a valid binding"),
    (BASIC.replace('name = "shop"', 'name = "Shop Worker"', 1), "name", "not a valid worker name"),
    (BASIC + '\n[[migrations]]\ntag = "v1"\n', "migrations[1].tag", "duplicate migration tag"),
    (BASIC + '\n[[migrations]]\ntag = "v2"\ndeleted_classes = ["Nope"]\n', "migrations[1].deleted_classes",
     "no earlier migration creates it"),
])
def test_invalid_configs_name_file_key_and_problem(tmp_path: Path, text: str, key: str, problem: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        wconfig.load(path)
    assert info.value.path == str(path.resolve())
    assert info.value.key.startswith(key)
    assert problem in info.value.problem
    assert str(path.resolve()) in str(info.value)


def test_renamed_class_counts_as_declared(tmp_path: Path) -> None:
    text = BASIC.replace('new_sqlite_classes = ["OrderLock"]', 'new_sqlite_classes = ["OldLock"]')
    text += '\n[[migrations]]\ntag = "v2"\nrenamed_classes = [{from = "OldLock", to = "OrderLock"}]\n'
    assert wconfig.load(write(tmp_path, text)).hosted_classes == ["OrderLock"]


def test_bad_toml_missing_file_unknown_env_missing_main(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        wconfig.load(write(tmp_path, "name = "))
    with pytest.raises(ConfigError, match="file not found"):
        wconfig.load(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match=r"no \[env.qa\] section \(environments: production, staging\)"):
        wconfig.load(write(tmp_path, BASIC), "qa")
    with pytest.raises(ConfigError, match="entry module 'main.py' not found"):
        wconfig.load(write(tmp_path, BASIC.replace('main = "app.py"', 'main = "main.py"', 1)))


def test_shop_configs_start_images_then_base_then_payments_then_gateway() -> None:
    configs = [wconfig.load(p) for p in wconfig.discover(ROOT)]
    assert [c.name for c in start_order(configs)] == ["rest-shop-images", "rest-shop-api", "rest-shop-payments",
                                                      "rest-shop-gateway"]
    production = [wconfig.load(p, "production") for p in wconfig.discover(ROOT)]
    assert {c.name for c in production} == {"rest-shop-api", "rest-shop-payments", "rest-shop-gateway",
                                            "rest-shop-images"}
