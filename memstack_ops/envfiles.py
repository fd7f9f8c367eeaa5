"""Env files: the committed template, the real 0600 file, validation and secret masking.

Template lines are ``KEY=value`` with optional trailing markers:
``# generate`` (env.init fills in a strong random secret) and ``# optional`` (may stay empty).
Every other key in the template is required and must be non-empty in the real file.
Reading uses python-dotenv; line syntax is checked here so a bad line is named by number.
"""

from __future__ import annotations

import io
import os
import re
import secrets
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import EnvFileError

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")
_MARKER = re.compile(r"(?:^|\s+)#\s*(generate|optional)(?:\s*,\s*(generate|optional))?\s*$")
SECRET_KEY = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|API_KEY|PRIVATE_KEY|_AUTH$|^AUTH", re.I)
# Passwords seen in the seeds' examples and the usual suspects: never acceptable in prod.
KNOWN_DEFAULTS = frozenset({
    "123456", "12345678", "123456789", "neo4j", "neo4j123", "neo4jpassword", "password",
    "password123", "postgres", "root", "admin", "admin123", "changeme", "change-me", "change_me",
    "secret", "qwerty", "redis", "grafana", "minioadmin", "memstack", "mysql", "test", "default",
})
MIN_SECRET_LEN = 12


def is_secret(key: str) -> bool:
    return bool(SECRET_KEY.search(key))


def mask(key: str, value: str) -> str:
    """The value as it may be shown: secrets become ``****`` (``<empty>`` when empty)."""
    if not value:
        return "<empty>"
    return "****" if is_secret(key) else value


def scrub(text: str, values: dict[str, str]) -> str:
    """Replace every secret value found in ``text`` (longest first) by ``****``."""
    for v in sorted({v for k, v in values.items() if is_secret(k) and len(v) >= 4}, key=len, reverse=True):
        text = text.replace(v, "****")
    return text


@dataclass(frozen=True)
class TemplateKey:
    key: str
    default: str
    generate: bool
    optional: bool


def check_syntax(path: Path) -> list[str]:
    """Return the lines of ``path``; raise EnvFileError naming the first line python-dotenv
    cannot parse (by number only: the line may hold a secret)."""
    from dotenv.parser import parse_stream

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise EnvFileError(f"{path} does not exist.") from None
    except (OSError, UnicodeDecodeError) as e:
        raise EnvFileError(f"Cannot read {path}: {type(e).__name__}. Check its permissions and encoding (UTF-8).") from None
    for b in parse_stream(io.StringIO(text)):
        if b.error or (b.key is not None and (b.value is None or not _KEY.fullmatch(b.key))):
            raise EnvFileError(f"{path}:{b.original.line}: not a KEY=VALUE line. Fix or comment out that line "
                               f"(keys are letters, digits and _; quote values that span lines).")
    return text.splitlines()


def read_env(path: Path) -> dict[str, str]:
    """Values of an env file as compose and the app see them (python-dotenv semantics)."""
    from dotenv import dotenv_values

    check_syntax(path)
    return {k: (v or "") for k, v in dotenv_values(path, interpolate=False).items()}


def read_template(path: Path) -> list[TemplateKey]:
    if not path.is_file():
        raise EnvFileError(f"The env template {path} is missing: it is committed with the project; "
                           f"restore it with `git checkout -- {path}`.")
    keys = []
    for line in check_syntax(path):
        m = _LINE.match(line)
        if not m or line.lstrip().startswith("#"):
            continue
        key, raw = m.groups()
        mk = _MARKER.search(raw)
        marks = {g for g in (mk.groups() if mk else ()) if g}
        value = _MARKER.sub("", raw).strip().strip("'\"")
        keys.append(TemplateKey(key, value, "generate" in marks, "optional" in marks))
    return keys


def generate_secret() -> str:
    """32 URL-safe characters: safe inside env files, URIs and shell words."""
    return secrets.token_urlsafe(24)


def render(template: Path, overrides: dict[str, str] | None = None) -> tuple[str, list[str]]:
    """The real env file's text from the template (comments kept, markers dropped) and the keys
    that got generated secrets."""
    overrides = overrides or {}
    out, generated = [], []
    for line in check_syntax(template):
        m = _LINE.match(line)
        if not m or line.lstrip().startswith("#"):
            out.append(line)
            continue
        key, raw = m.groups()
        mk = _MARKER.search(raw)
        value = _MARKER.sub("", raw).strip()
        if key in overrides:
            value = overrides[key]
        elif mk and "generate" in mk.groups():
            value = generate_secret()
            generated.append(key)
        out.append(f"{key}={value}")
    return "\n".join(out) + "\n", generated


def write_private(path: Path, text: str) -> None:
    """Create ``path`` with mode 0600 atomically; never replaces an existing file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)  # 0600, unique
    tmp = Path(name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, path)  # atomic, and fails if path exists: nothing is overwritten
    except FileExistsError:
        raise EnvFileError(f"{path} already exists and was left as it is. Use --force to replace it "
                           f"(the old file is kept as a timestamped backup).") from None
    finally:
        tmp.unlink(missing_ok=True)


def init_env(path: Path, template: Path, force: bool = False) -> tuple[list[str], Path | None]:
    """Write the real env file from the template with generated secrets.

    Returns the generated keys and, with ``force``, where the previous file was kept."""
    backup = None
    if not template.is_file():
        raise EnvFileError(f"The env template {template} is missing: it is committed with the project; restore it "
                           f"with `git checkout -- {template}` (or create it for a new stack).")
    text, generated = render(template)
    if path.exists():
        if not force:
            raise EnvFileError(f"{path} already exists and was left as it is: nothing to do. "
                               f"Use `env.init --force` to replace it (the old file is kept as a "
                               f"timestamped backup), or `env.check` to validate it.")
        stamp = time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())
        for n in range(1000):  # never overwrite an earlier backup, even within the same second
            backup = path.with_name(f"{path.name}.bak-{stamp}" + (f"-{n}" if n else ""))
            try:
                os.link(path, backup)
                break
            except FileExistsError:
                continue
        else:
            raise EnvFileError(f"Too many backups of {path} this second; nothing was changed.")
        os.chmod(backup, 0o600)
        path.unlink()
    write_private(path, text)
    return generated, backup


@dataclass(frozen=True)
class Finding:
    level: str  # "error" or "warn"
    key: str
    message: str


def check_env(path: Path, template: Path, stage: str) -> tuple[dict[str, str], list[Finding]]:
    """Validate the real env file against its template. Weak or default secrets are errors in
    stage prod, warnings otherwise."""
    if not path.is_file():
        raise EnvFileError(f"The env file {path} is missing: create it with `inv env.init` "
                           f"(from {template}, with strong generated secrets).")
    values = read_env(path)
    findings: list[Finding] = []
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        findings.append(Finding("warn", "-", f"{path} has mode {mode:o}: run `chmod 600 {path}` "
                                             f"(it holds secrets)."))
    for t in read_template(template):
        v = values.get(t.key)
        if v is None:
            if not t.optional:
                findings.append(Finding("error", t.key, f"missing: add {t.key}= to {path} (see {template})"))
            continue
        if not v and not t.optional:
            findings.append(Finding("error", t.key, f"empty: set {t.key} in {path}"))
        elif v and is_secret(t.key) and (v.lower() in KNOWN_DEFAULTS or len(v) < MIN_SECRET_LEN):
            why = "a known default password" if v.lower() in KNOWN_DEFAULTS else f"shorter than {MIN_SECRET_LEN} characters"
            level = "error" if stage == "prod" else "warn"
            findings.append(Finding(level, t.key, f"weak secret ({why}): set a long random value (a database "
                                                  f"already initialised keeps its old password until you change it there too)"))
    return values, findings
