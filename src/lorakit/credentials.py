"""Kaggle credentials: where the kaggle client finds them, in its order, and why it found none usable.

The kaggle client (2.x) looks for an access token (KAGGLE_API_TOKEN, a value or a file; ~/.kaggle/access_token),
then kaggle.json or KAGGLE_USERNAME + KAGGLE_KEY, then `kaggle auth login`'s cache; it ignores a broken file
silently and sends a rejected token with every call. This module turns each of those into one line of advice,
and names the secrets a reply must never echo. lorakit.transport calls it around the client's authenticate.
"""

from __future__ import annotations

import json
import os
import re
import stat
import sys
from pathlib import Path
from typing import Optional, TextIO

from lorakit.errors import RemoteError

# What the kaggle client's own help recommends, in its order.
CREDENTIALS_FIX = (
    "run `kaggle auth login` (recommended), or save an API token from https://www.kaggle.com/settings/api "
    "in ~/.kaggle/access_token or KAGGLE_API_TOKEN"
)
ACCESS_TOKEN_SOURCES = {  # kagglesdk's names for where it found an access token
    "KAGGLE_API_TOKEN": "KAGGLE_API_TOKEN",
    "access_token": "~/.kaggle/access_token",
    "KAGGLE_API_V1_TOKEN": "KAGGLE_API_V1_TOKEN",
}
OAUTH_SOURCE = "kaggle auth login's ~/.kaggle/credentials.json"


def default_config_dir() -> str:
    """Where the kaggle client looks for kaggle.json, following its own rules."""
    configured = os.environ.get("KAGGLE_CONFIG_DIR")
    if configured:
        return configured
    legacy = os.path.join(os.path.expanduser("~"), ".kaggle")
    if sys.platform.startswith("linux") and not os.path.exists(legacy):
        base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
        return os.path.join(base, "kaggle")
    return legacy


def credentials_permission_warning(config_dir: str) -> Optional[str]:
    path = os.path.join(config_dir, "kaggle.json")
    if os.name == "nt" or not os.path.isfile(path):
        return None
    mode = os.stat(path).st_mode
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        return f"{path} is readable by group or others; run: chmod 600 {path}"
    return None


def credentials_file_problem(path: str) -> Optional[str]:
    """What is wrong with kaggle.json, which the kaggle client silently ignores; None when absent or usable."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"cannot be read ({exc.strerror or type(exc).__name__})"
    except UnicodeDecodeError:
        return "is not UTF-8 text"
    data = _json_object(text)
    if data is None:
        return "is not a valid JSON object"
    missing = [k for k in ("username", "key") if not data.get(k) and not os.environ.get(f"KAGGLE_{k.upper()}")]
    if missing:
        return "lacks " + " and ".join(repr(k) for k in missing)
    return None


def token_rejected_message(token_source: str) -> str:
    where = ACCESS_TOKEN_SOURCES.get(token_source, token_source)
    return (
        f"Kaggle rejected the access token from {where} (inactive or expired); the kaggle client tries it first "
        f"and sends it with every call, so replace or remove it: {CREDENTIALS_FIX}"
    )


def token_file_missing(value: Optional[str]) -> Optional[str]:
    """The file KAGGLE_API_TOKEN names when it looks like a path that does not exist (the kaggle client
    would send the path itself as the token); None otherwise."""
    if not value or Path(value).exists():
        return None
    path_like = value.startswith(("/", "~", ".")) or re.match(r"[A-Za-z]:[\\/]", value) or value.endswith(
        (".txt", ".json", "access_token"))
    return value if path_like else None


def token_file_check() -> None:
    """Refuse a KAGGLE_API_TOKEN that names a missing file, which the client would send as the token itself."""
    missing = token_file_missing(os.environ.get("KAGGLE_API_TOKEN"))
    if missing:
        raise RemoteError(
            f"KAGGLE_API_TOKEN names the file {missing}, which does not exist"
            f"{' (~ is not expanded)' if missing.startswith('~') else ''}; fix the path or unset it, or "
            f"{CREDENTIALS_FIX}", status=401
        )


def secrets_before_authentication(kaggle_json: str) -> list:
    """The secrets known before any reply comes: KAGGLE_KEY, KAGGLE_API_TOKEN (unless it names a file) and
    kaggle.json's key (the access token the client finds is added once it is read)."""
    found = [os.environ[name] for name in ("KAGGLE_KEY", "KAGGLE_API_TOKEN")
             if os.environ.get(name) and not Path(os.environ[name]).exists()]  # a token file's name is no secret
    stored = _json_object(_text_or_empty(kaggle_json)) or {}
    if stored.get("key"):
        found.append(str(stored["key"]))
    return found


def credentials_missing_message(kaggle_json: str, token_source: Optional[str]) -> str:
    """Why the kaggle client found no usable credentials, following its order of lookup."""
    if token_source:
        return token_rejected_message(token_source)
    problem = credentials_file_problem(kaggle_json)
    if problem:
        return f"the Kaggle credentials file {kaggle_json} {problem}; fix or remove it, or {CREDENTIALS_FIX}"
    return (
        f"no Kaggle credentials found (looked for KAGGLE_API_TOKEN, ~/.kaggle/access_token, {kaggle_json} "
        f"or KAGGLE_USERNAME and KAGGLE_KEY, then {OAUTH_SOURCE}); {CREDENTIALS_FIX}"
    )


def credentials_source_of(api, token: str, token_source: str, log: TextIO) -> str:
    """Where the authenticated client's credentials came from, for messages; RemoteError when the client
    fell back from a rejected access token to kaggle.json (its HTTP layer still sends the token)."""
    method = str(api.config_values.get("auth_method") or "")
    source = ACCESS_TOKEN_SOURCES.get(token_source, token_source) if token else "your credentials"
    if method == "LEGACY_API_KEY":
        source = "KAGGLE_USERNAME and KAGGLE_KEY" if os.environ.get("KAGGLE_KEY") else api.config
    elif method == "OAUTH":
        source = OAUTH_SOURCE
    if token and method == "LEGACY_API_KEY":
        raise RemoteError(token_rejected_message(token_source), status=401)
    if token and method == "OAUTH":  # kaggle auth login's token is sent instead: this works
        where = ACCESS_TOKEN_SOURCES.get(token_source, token_source)
        print(f"lorakit: warning: Kaggle rejected the access token from {where}; using {OAUTH_SOURCE}", file=log)
    return source


def _json_object(text: str) -> Optional[dict]:
    """``text`` as a JSON object; None when it is not one."""
    try:
        data = json.loads(text)
    except (TypeError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _text_or_empty(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return ""

