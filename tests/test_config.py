"""Configuration: typos in the TOML file, in ``TINGSHUO_*`` variables and in CLI flags are errors that name the
nearest valid setting, never silently ignored; valid settings still load from every source."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tingshuo.config import NOT_SETTINGS, ConfigError, Settings, load_settings, unknown_setting

TINGSHUO = str(Path(sys.executable).with_name("tingshuo"))


@pytest.fixture()
def clean_env(monkeypatch):
    """No TINGSHUO_* setting from the caller's environment leaks into these tests."""
    import os

    for k in list(os.environ):
        if k.upper().startswith("TINGSHUO_") and k.upper() not in NOT_SETTINGS:
            monkeypatch.delenv(k)
    monkeypatch.delenv("TINGSHUO_CONFIG", raising=False)
    return monkeypatch


def _file_error(env, path, text: str) -> str:
    """The ConfigError a config file with ``text`` gives."""
    path.write_text(text, encoding="utf-8")
    env.setenv("TINGSHUO_CONFIG", str(path))
    with pytest.raises(ConfigError) as e:
        Settings()
    return str(e.value)


def test_a_misspelt_key_in_the_file_is_an_error_with_the_nearest_name(clean_env, tmp_path):
    f = tmp_path / "config.toml"
    msg = _file_error(clean_env, f, '[server]\napi_key = ["secret"]\n[tts]\nsped = 1.2\n')
    assert "server.api_key is not a setting; did you mean server.api_keys?" in msg
    assert "tts.sped is not a setting; did you mean tts.speed?" in msg and str(f) in msg
    f.write_text('[server]\napi_keys = ["secret"]\n[tts]\nspeed = 1.2\n', encoding="utf-8")
    s = Settings()
    assert s.server.api_keys == ["secret"] and s.tts.speed == 1.2


def test_an_unknown_table_and_a_bad_value_are_reported(clean_env, tmp_path):
    msg = _file_error(clean_env, tmp_path / "config.toml", '[lmm]\nbackend = "openai"\n[llm]\nn_ctx = "big"\n')
    assert "lmm is not a setting; did you mean llm?" in msg
    assert "llm.n_ctx: Input should be a valid integer" in msg and "'big'" in msg


def test_environment_variables_that_name_no_setting_are_errors(clean_env):
    clean_env.setenv("TINGSHUO_SERVER__API_KEY", "secret")
    with pytest.raises(ConfigError, match=r"TINGSHUO_SERVER__API_KEY: server.api_key is not a setting; "
                                          r"did you mean server.api_keys\?"):
        Settings()
    clean_env.delenv("TINGSHUO_SERVER__API_KEY")
    clean_env.setenv("TINGSHUO_LLM__N_CTX", "2048")
    clean_env.setenv("TINGSHUO_TEST_SEED", "7")  # not a setting, and known not to be
    assert Settings().llm.n_ctx == 2048
    clean_env.setenv("TINGSHUO_ZZZ", "1")
    with pytest.raises(ConfigError, match="TINGSHUO_ZZZ: zzz is not a setting; the top level has cache_dir, vad"):
        Settings()


def test_flag_overrides_are_validated_like_the_file(clean_env):
    with pytest.raises(ConfigError, match=r"tts.speed: Input should be a valid number"):
        load_settings({"tts.speed": "fast"})
    assert load_settings({"tts.speed": 1.3, "llm.max_tokens": 99}).llm.max_tokens == 99


def test_every_setting_path_is_known_and_dict_values_are_not_walked_into():
    assert unknown_setting(["llm", "base_url"]) is None and unknown_setting(["safety", "hotlines", "CN"]) is None
    assert unknown_setting(["duplex", "barge_in_treshold"]) == (
        "duplex.barge_in_treshold is not a setting; did you mean duplex.barge_in_threshold?")


def test_the_cli_says_what_is_wrong_without_a_traceback(tmp_path):
    import os

    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("TINGSHUO_")}
    r = subprocess.run([TINGSHUO, "personas"], capture_output=True, text=True, timeout=60,
                       env={**env, "TINGSHUO_SERVER__API_KEY": "x"})
    assert r.returncode == 2 and "did you mean server.api_keys?" in r.stderr and "Traceback" not in r.stderr
