from labkit import secrets


def test_secret_names_are_recognised_but_counts_are_not():
    for name in ["HF_TOKEN", "hf_token", "OPENAI_API_KEY", "apikey", "db_password",
                 "AWS_SECRET_ACCESS_KEY", "some-token", "GITHUB_AUTH"]:
        assert secrets.is_secret_name(name), name
    for name in ["max_tokens", "num_tokens", "kv_cache_tokens", "PATH", "PWD", "keyboard",
                 "matmul_size", "author", "kv_kib_per_token", "time_to_first_token_ms"]:
        assert not secrets.is_secret_name(name), name


def test_scrub_redacts_values_at_any_depth_and_keeps_result_names(monkeypatch):
    monkeypatch.setenv("MY_API_KEY", "sk-abcdef123456")
    obj = {"scalars": {"ms_per_token": 4.2}, "log": ["called with sk-abcdef123456 ok"],
           "n": 1.5}
    out = secrets.scrub(obj)
    assert out["scalars"] == {"ms_per_token": 4.2}
    assert "sk-abcdef123456" not in out["log"][0] and secrets.REDACTED in out["log"][0]
    assert out["n"] == 1.5
    params = secrets.drop_secret_names({"hf_token": "hf_zzzzzzzz", "size": 3})
    assert params == {"size": 3}


def test_short_values_are_not_redacted_everywhere(monkeypatch):
    monkeypatch.setenv("DEBUG_TOKEN", "1")  # would otherwise redact every digit 1
    assert secrets.redact_text("size 1") == "size 1"


def test_safe_environ_has_no_secret_names(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secretvalue")
    env = secrets.safe_environ()
    assert "HF_TOKEN" not in env and "PATH" in env
