"""The worker's config file (written by the deployer; never holds a secret) and the secrets it names.

``*_env`` keys name environment variables: store options as JSON (which may carry credentials) and the
bearer token. Their values are read here and kept in memory; they are never logged or written.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

DEFAULT_MAX_BODY = 1_048_576
DEFAULT_LOG = {"max_bytes": 64 * 1024 * 1024, "flush_rows": 1000, "flush_seconds": 2.0}


class ConfigError(Exception):
    """A config the worker cannot serve from; its text names the key."""


@dataclass
class ServeConfig:
    deployment: str
    model: str
    version: object
    artifact: dict
    store_url: str
    store_options: dict
    signature: dict | None
    log: dict | None  # {"url", "options", "max_bytes", "flush_rows", "flush_seconds"} or None
    max_body_bytes: int = DEFAULT_MAX_BODY
    token: str | None = field(default=None, repr=False)
    drain_seconds: float = 10.0


def _env_json(name: str | None, key: str) -> dict:
    if not name:
        return {}
    text = os.environ.get(name)
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        raise ConfigError(f"{key}: the environment variable {name} is not JSON") from None  # value not shown
    if not isinstance(value, dict):
        raise ConfigError(f"{key}: the environment variable {name} must hold a JSON object")
    return value


def parse(raw) -> ServeConfig:
    """A ServeConfig from the config's JSON object; ConfigError naming the key."""
    if not isinstance(raw, dict):
        raise ConfigError("the config must be a JSON object")
    for key in ("model", "artifact", "store"):
        if key not in raw:
            raise ConfigError(f"the config has no '{key}'")
    store = raw["store"] if isinstance(raw["store"], dict) else {}
    if not store.get("url"):
        raise ConfigError("store.url is missing")
    artifact = raw["artifact"] if isinstance(raw["artifact"], dict) else {}
    if not artifact.get("hash"):
        raise ConfigError("artifact.hash is missing")
    log = raw.get("log")
    if log is not None:
        if not isinstance(log, dict) or not log.get("url"):
            raise ConfigError("log must be null or an object with a 'url'")
        log = {**DEFAULT_LOG, **{k: v for k, v in log.items() if k != "options_env"},
               "options": _env_json(log.get("options_env"), "log.options_env")}
    limits = raw.get("limits") or {}
    max_body = limits.get("max_body_bytes", DEFAULT_MAX_BODY)
    if not isinstance(max_body, int) or isinstance(max_body, bool) or max_body < 1:
        raise ConfigError("limits.max_body_bytes must be a positive integer")
    token = None
    if raw.get("token_env"):
        token = os.environ.get(raw["token_env"]) or None
        if token is None:
            raise ConfigError(f"token_env: the environment variable {raw['token_env']} is not set (the service "
                              "would accept requests without a token)")
    sig = raw.get("signature")
    if sig is not None and not isinstance(sig, dict):
        raise ConfigError("signature must be null or an object with 'inputs' and 'output'")
    drain = raw.get("drain_seconds", 10)
    if not isinstance(drain, (int, float)) or isinstance(drain, bool) or drain < 0:
        raise ConfigError("drain_seconds must be a non-negative number")
    return ServeConfig(
        deployment=str(raw.get("deployment") or raw["model"]), model=str(raw["model"]), version=raw.get("version"),
        artifact=artifact, store_url=store["url"], store_options=_env_json(store.get("options_env"),
                                                                           "store.options_env"),
        signature=sig, log=log, max_body_bytes=max_body, token=token, drain_seconds=float(drain))


def read(path: str) -> ServeConfig:
    try:
        with open(path, encoding="utf-8") as fh:
            raw = json.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except ValueError as exc:
        raise ConfigError(f"{path}: not JSON ({exc})") from None
    return parse(raw)
