"""Keep local details out of what gets published (model cards, dataset cards, uploaded configs).

Absolute paths become their basename, token-looking strings and `--token` options are dropped. Pure string
functions, shared by `hf_kd.model_card`, `hf_kd.hub` and dataset cards.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from typing import Any

__all__ = [
    "current_command",
    "find_leaks",
    "is_hub_id",
    "is_local_path",
    "local_basename",
    "sanitize_text",
    "sanitize_value",
]

_STOP = r"\s'\"`<>|,;()\[\]{}"
_LOCAL_PATH = re.compile(
    rf"(?<![\w.:/~<\\-])/+[^{_STOP}/]+(?:/[^{_STOP}/]*)*"  # /home/me/x (not a URL path, a/b or </tag>)
    rf"|(?<![\w/])~/[^{_STOP}]*"  # ~/x
    rf"|(?<![\w])[A-Za-z]:[\\/][^{_STOP}]*"  # C:\x or C:/x
    rf"|(?<![\w\\])\\\\[^{_STOP}]+"  # \\server\share
    rf"|file://[^{_STOP}]+"
)
# Hugging Face, OpenAI-style and GitHub tokens; no \b: a token glued to a word still counts
_TOKEN = re.compile(r"(?:hf_|api_org_|sk-|gh[pousr]_)[A-Za-z0-9]{20,}")
# the last word of an option or a key that holds a secret: token, password, secret, api key, ...
_SECRET_WORD = r"(?:token|password|passwd|secret|api[_-]?key|access[_-]?key|auth)"
# `--token X`, `--hub_token=X`, `--api-key X`, `--wandb-api-key=X`, `--password X` (not `--max_new_tokens`)
_SECRET_FLAG = re.compile(rf"\s*--(?:[\w-]*[_-])?{_SECRET_WORD}(?![\w-])(?:=\S*|\s+(?!-)\S+)?", re.IGNORECASE)
# `HF_TOKEN=X`, `WANDB_API_KEY=X`, `export DB_PASSWORD=X` style assignments
_SECRET_ENV = re.compile(r"\b[A-Z_]*(?:TOKEN|SECRET|PASSWORD|PASSWD|API_KEY|ACCESS_KEY)=\S*\s*")
# credentials in a URL: `https://user:pass@host` -> `https://host`
_URL_CREDENTIALS = re.compile(r"(?<=://)[^\s/@:'\"`<>]+(?::[^\s/@'\"`<>]*)?@")
# a dict key naming a secret: `hub_token`, `api_key`, `password` (not `eos_token` or `pad_token`)
_SECRET_KEY = re.compile(
    r"^(?:token|(?:[\w-]*[_-])?(?:(?:hub|hf|auth|access|api|bearer|wandb)[_-]?token|password|passwd|secret"
    r"|api[_-]?key|access[_-]?key|secret[_-]?key))$",
    re.IGNORECASE,
)


def local_basename(path: str) -> str:
    """The last component of a local path (``/home/me/run/`` -> ``run``), to show it without its location."""
    name = re.split(r"[\\/]", path.rstrip("\\/"))[-1]
    return name if name and name not in ("~", ".") and not name.endswith(":") else "a-local-path"


def sanitize_text(text: str) -> str:
    """Remove what must not leave the machine from `text`: secrets and local absolute paths.

    Options naming a secret (``--token``, ``--hub_token=``, ``--api_key``, ``--wandb-api-key``, ``--password``, ...)
    and ``*TOKEN*=`` / ``*PASSWORD*=`` / ``*API_KEY*=`` assignments are dropped with their value, credentials in
    URLs (``https://user:pass@host``) are dropped, token-looking strings (``hf_...``, ``api_org_...``, ``sk-...``,
    ``ghp_...``) become ``<redacted>``, and absolute paths (``/home/me/run``, ``~/x``, ``C:\\x``, ``\\\\srv\\x``,
    ``file://...``) become their basename (``run``). URLs and relative paths are kept. Idempotent.
    """
    text = _TOKEN.sub("<redacted>", text)  # first, so `--token<redacted>` and `X_TOKEN=<redacted>` are dropped whole
    text = _SECRET_FLAG.sub("", text)
    text = _SECRET_ENV.sub("", text)
    text = _URL_CREDENTIALS.sub("", text)
    return _LOCAL_PATH.sub(lambda m: local_basename(m.group(0)), text)


def find_leaks(text: str) -> list[str]:
    """The local absolute paths and token-looking strings left in `text` (empty when it is safe to publish)."""
    found = [m.group(0) for m in _TOKEN.finditer(text)]
    found += [
        m.group(0).strip() for m in _SECRET_FLAG.finditer(text) if "=" in m.group(0) or " " in m.group(0).strip()
    ]
    found += [m.group(0) for m in _URL_CREDENTIALS.finditer(text)]
    return found + [m.group(0) for m in _LOCAL_PATH.finditer(text)]


def sanitize_value(value: Any) -> Any:
    """[`sanitize_text`] applied to every string inside nested dicts, lists and tuples (keys included).

    The value of a key naming a secret (``hub_token``, ``api_key``, ``password``, ...) becomes ``"<redacted>"``
    unless it is empty (``None``, ``""``, ``False``).
    """
    if isinstance(value, str):
        return sanitize_text(value)
    if isinstance(value, dict):
        return {
            sanitize_value(k): "<redacted>" if isinstance(k, str) and _SECRET_KEY.match(k) and v else sanitize_value(v)
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return type(value)(sanitize_value(v) for v in value)
    return value


def is_local_path(name: str) -> bool:
    """Whether `name` is an absolute, home- or dot-relative path, or exists on this machine."""
    return bool(_LOCAL_PATH.fullmatch(name)) or name.startswith((".", "~")) or os.path.exists(name)


def is_hub_id(name: str | None) -> bool:
    """Whether `name` reads as a Hub repository id (``owner/name`` or ``name``) and is not a local path."""
    if not name or is_local_path(name):
        return False
    return bool(re.fullmatch(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?", name)) and not name.endswith((".", "-"))


def current_command() -> str:
    """The command line of this process (``python script.py args``), quoted, with secrets and local paths removed."""
    cwd = os.getcwd()
    # paths under the working directory are shown relative to it (recipes/x.py), others by their basename
    argv = [os.path.relpath(a, cwd) if os.path.isabs(a) and a.startswith(cwd + os.sep) else a for a in sys.argv]
    if not argv or argv[0].endswith(".py"):
        argv = ["python", *argv]
    return sanitize_text(shlex.join(argv))
