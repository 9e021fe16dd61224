"""Credentials: read in the kaggle client's order, and every way they can be missing, unreadable or rejected is one line
of advice without the secret."""
from __future__ import annotations

import json

import pytest

from lorakit_fixtures import error_line, SECRET, TOKEN, USERNAME, no_secret, push


def _home_kaggle(kit):
    folder = kit.repo.parent / "home" / ".kaggle"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _kaggle_json(kit):
    return kit.repo.parent / "kaggle-config" / "kaggle.json"


def _credentials_json(kit, token):
    (_home_kaggle(kit) / "credentials.json").write_text(json.dumps({
        "refresh_token": "refresh-0123456789", "access_token": token, "username": USERNAME, "scopes": [],
        "access_token_expiration": "2099-01-01T00:00:00+00:00",
    }))


@pytest.mark.parametrize("source", ["token value", "token file", "access_token", "kaggle.json", "username+key",
                                    "auth login"])
def test_credentials_are_read_in_the_clients_order(kit, monkeypatch, source):
    kit.state.tokens = {TOKEN: USERNAME}
    if source == "token value":
        monkeypatch.setenv("KAGGLE_API_TOKEN", TOKEN)  # wins over the kaggle.json beside it
    elif source == "token file":
        path = kit.repo.parent / "token.txt"
        path.write_text(TOKEN + "\n")
        monkeypatch.setenv("KAGGLE_API_TOKEN", str(path))
    elif source == "access_token":
        (_home_kaggle(kit) / "access_token").write_text(TOKEN)
    elif source == "kaggle.json":
        _credentials_json(kit, TOKEN)  # kaggle.json wins over kaggle auth login's cache
    elif source == "username+key":
        _kaggle_json(kit).unlink()
        monkeypatch.setenv("KAGGLE_USERNAME", USERNAME)
        monkeypatch.setenv("KAGGLE_KEY", SECRET)
    else:
        _kaggle_json(kit).unlink()
        _credentials_json(kit, TOKEN)
    code, out, err = kit.run("scores")
    assert code == 0, err
    bearer = source not in ("kaggle.json", "username+key")
    assert kit.state.calls("ListSubmissions")[-1][3] == (f"bearer:{USERNAME}" if bearer else f"basic:{USERNAME}")
    assert len(kit.state.calls("IntrospectToken")) == int(source in ("token value", "token file", "access_token"))
    assert TOKEN not in out + err and SECRET not in out + err


def test_credentials_none_found(kit):
    _kaggle_json(kit).unlink()
    code, out, err = kit.run("scores")
    line = error_line(err)
    assert code == 1 and line.startswith("lorakit: error: no Kaggle credentials found")
    assert line.index("KAGGLE_API_TOKEN") < line.index("access_token") < line.index("kaggle.json") < line.index(
        "KAGGLE_USERNAME") < line.index("credentials.json") < line.index("run `kaggle auth login`")
    assert not kit.state.requests and out == ""


@pytest.mark.parametrize("damage, expected", [("not json", "is not a valid JSON object"),
                                              ("directory", "cannot be read (Is a directory)"),
                                              ("no key", "lacks 'key'")])
def test_credentials_file_unreadable_or_invalid(kit, damage, expected):
    path = _kaggle_json(kit)
    path.unlink()
    if damage == "not json":
        path.write_text('{"username": "alice", "key": ')
    elif damage == "directory":
        path.mkdir()
    else:
        path.write_text('{"username": "alice"}')
    code, out, err = kit.run("scores")
    line = error_line(err)
    assert code == 1 and f"the Kaggle credentials file {path} {expected}" in line
    assert "no Kaggle credentials found" not in line and "kaggle auth login" in line
    assert not kit.state.requests


@pytest.mark.parametrize("fallback", ["none", "kaggle.json", "auth login"])
def test_credentials_rejected_by_kaggle(kit, monkeypatch, fallback):
    kit.state.tokens = {"oauth-token-0123": USERNAME}
    if fallback != "kaggle.json":
        _kaggle_json(kit).unlink()
    if fallback == "auth login":
        _credentials_json(kit, "oauth-token-0123")
    # Unknown to the stand-in, so introspection says inactive and the client falls back. After a fallback to
    # kaggle.json its HTTP layer still sends this token with every call: lorakit stops at once.
    monkeypatch.setenv("KAGGLE_API_TOKEN", TOKEN)
    code, out, err = kit.run("scores")
    assert len(kit.state.calls("IntrospectToken")) == 1 and TOKEN not in err
    if fallback == "auth login":  # the client sends kaggle auth login's token instead: it works
        assert code == 0 and "warning: Kaggle rejected the access token from KAGGLE_API_TOKEN; using" in err
        assert kit.state.calls("ListSubmissions")[-1][3] == f"bearer:{USERNAME}"
        return
    line = error_line(err)
    assert code == 1 and "Kaggle rejected the access token from KAGGLE_API_TOKEN" in line
    assert "no Kaggle credentials found" not in line and "kaggle auth login" in line
    assert not kit.state.calls("ListSubmissions")


def test_credentials_rejected_with_401(kit, monkeypatch):
    monkeypatch.setenv("KAGGLE_API_TOKEN", TOKEN)
    kit.state.fail("IntrospectToken", 401)
    code, out, err = kit.run("scores")
    assert code == 1 and "rejected the credentials (401) from KAGGLE_API_TOKEN" in error_line(err)
    assert TOKEN not in err


def test_http_401_gives_credential_advice_without_secrets(kit):
    kit.state.fail("SaveKernel", 401, times=None)
    code, out, err = kit.run("push", "-m", "x")
    assert code == 1
    assert "401" in err and "kaggle.json" in err and "KAGGLE_API_TOKEN" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    no_secret(out, err)
    assert len(kit.state.calls("SaveKernel")) == 1  # 401 is not retried
    assert kit.rows() == []  # recorded before sending, dropped once refused


def test_wrong_key_is_rejected_by_the_server(kit):
    kit.state.key = "another-key"
    code, out, err = kit.run("push", "-m", "x")
    assert code == 1 and "rejected the credentials (401)" in err
    no_secret(out, err)


def test_readable_kaggle_json_warns(kit):
    (kit.repo.parent / "kaggle-config" / "kaggle.json").chmod(0o644)
    push(kit)
    code, out, err = kit.run("status")
    assert code == 0 and "readable by group or others" in err and "chmod 600" in err


def test_a_token_file_that_does_not_exist_is_named(kit, monkeypatch, tmp_path):
    missing = tmp_path / "kaggle" / "access_token"
    monkeypatch.setenv("KAGGLE_API_TOKEN", str(missing))
    code, out, err = kit.run("quota")
    line = error_line(err)
    assert code == 1 and f"KAGGLE_API_TOKEN names the file {missing}, which does not exist" in line
    assert "inactive or expired" not in line and not kit.state.requests
