"""Env files: the committed template, the real 0600 file, validation and secret masking.

Template lines are ``KEY=value`` with optional trailing markers:
``# generate`` (env.init fills in a strong random secret) and ``# optional`` (may stay empty).
Every other key in the template is required and must be non-empty in the real file.
Reading uses python-dotenv; line syntax is checked here so a bad line is named by number.
"""

from __future__ import annotations

import io
import json
import os
import re
import secrets
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import EnvFileError

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")
_MARKER = re.compile(r"(?:^|\s+)#\s*(generate|optional)(?:\s*,\s*(generate|optional))?\s*$")
KNOWN_DEFAULTS = frozenset({
    "123456", "12345678", "123456789", "neo4j", "neo4j123", "neo4jpassword", "password",
    "password123", "postgres", "root", "admin", "admin123", "changeme", "change-me", "change_me",
    "secret", "qwerty", "redis", "grafana", "minioadmin", "memstack", "mysql", "test", "default",
})
MIN_SECRET_LEN = 12


# --- what is a secret --------------------------------------------------------------------------
# A key names a secret when one of its words (split on `_`) says so. Words that can only mean a
# password make every non-empty value a secret (a numeric password is still a password); the other
# words (TOKEN, KEY, AUTH, ...) also name settings *about* secrets (ACCESS_TOKEN_EXPIRE_MINUTES=30,
# REQUIRE_API_KEY=false), so for them the value's shape decides: numbers, booleans, durations and
# URLs without credentials are not secrets. This is how gitleaks/detect-secrets pair a keyword with
# an entropy/shape test instead of trusting the name alone.
_PASSWORD_WORDS = frozenset({"PASS", "PASSWORD", "PASSWORDS", "PASSWD", "PASSPHRASE", "PWD", "PW"})
_SECRET_WORDS = frozenset({"SECRET", "SECRETS", "TOKEN", "TOKENS", "CREDENTIAL", "CREDENTIALS", "CREDS",
                           "DSN", "AUTH", "APIKEY", "PRIVATEKEY", "SALT", "PEPPER", "SIGNATURE"})
# Words glued into longer names (MYSQLPASSWORD, OAUTHTOKEN, REQUIREPASS).
_GLUED = re.compile(r"PASSWORD|PASSWD|PASSPHRASE|SECRET|TOKEN|CREDENTIAL", re.I)
# A last word that makes the key a setting about a secret, not the secret itself
# (POSTGRES_PASSWORD_FILE, POSTGRES_HOST_AUTH_METHOD, JWT_TOKEN_TTL, ...).
_META_WORDS = frozenset({"FILE", "PATH", "DIR", "EXPIRE", "EXPIRES", "EXPIRY", "EXPIRATION", "MINUTES",
                         "SECONDS", "HOURS", "DAYS", "TTL", "LIFETIME", "TIMEOUT", "LENGTH", "LEN", "ALGORITHM",
                         "ALG", "TYPE", "MODE", "METHOD", "ENABLED", "REQUIRED", "POLICY"})
# A first word that makes the key a switch (REQUIRE_API_KEY, ENABLE_AUTH, NO_AUTH).
_SWITCH_WORDS = frozenset({"REQUIRE", "ENABLE", "DISABLE", "USE", "ALLOW", "SKIP", "NO", "WITH", "WITHOUT"})
# S3/MinIO access key ids are the user half of the pair (MinIO's root user): shown, like a user name.
_ID_KEYS = re.compile(r"(?:^|_)ACCESS_KEY(?:_ID)?$", re.I)
_NUMBER = re.compile(r"[+-]?\d+(?:\.\d+)?(?:e[+-]?\d+)?", re.I)
_BOOL = frozenset({"true", "false", "yes", "no", "on", "off", "none", "null"})
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|sec|secs|m|min|mins|h|hr|hrs|d|w|y))+", re.I)
_VAR_REF = re.compile(r"\$(?:\{[A-Za-z_][A-Za-z0-9_]*(?:[:?-][^}]*)?\}|[A-Za-z_][A-Za-z0-9_]*)")
# scheme://[user[:password]@]host...: what `urllib.parse` calls the netloc's userinfo
_URL = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^\s:/?#@]*)(?::(?P<pw>[^\s/?#@]*))?@")
MIN_SCRUB_LEN = 4  # shorter values are not replaced in free text: they would mangle it


def _words(key: str) -> list[str]:
    return [w for w in re.split(r"[_\-.]+", key.upper()) if w]


def _secret_name(key: str) -> str:
    """'password', 'other' or '' (not a secret name)."""
    words = _words(key)
    if (not words or _ID_KEYS.search(key) and "SECRET" not in words or words[-1] in _META_WORDS
            or (len(words) > 1 and words[0] in _SWITCH_WORDS)):
        return ""
    if any(w in _PASSWORD_WORDS for w in words) or re.search(r"PASSWORD|PASSWD|PASSPHRASE", key, re.I):
        return "password"
    if any(w in _SECRET_WORDS for w in words) or _GLUED.search(key) or words[-1] == "KEY":
        return "other"
    return ""


def _plain(value: str) -> bool:
    """A value whose shape says it is not a secret: a number, boolean, duration or variable reference."""
    v = value.strip()
    return bool(_NUMBER.fullmatch(v) or v.lower() in _BOOL or _DURATION.fullmatch(v) or _VAR_REF.fullmatch(v))


def url_credentials(value: str) -> list[str]:
    """The passwords in the userinfo of URL-shaped parts of ``value`` (``scheme://user:pw@host``)."""
    return [m.group("pw") for m in _URL.finditer(value) if m.group("pw")]


def secret_parts(key: str, value: str) -> list[str]:
    """The parts of ``value`` that are secret: the whole value for a secret key (by name and shape),
    else the passwords of any URL in it."""
    if not value:
        return []
    if _URL.search(value) or re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", value):
        parts = url_credentials(value)
        if not parts and _secret_name(key):  # SENTRY_DSN=https://PUBLICKEY@host: the user is the secret
            parts = [m.group("user") for m in _URL.finditer(value) if m.group("user")]
        return parts
    kind = _secret_name(key)
    if kind == "password" or (kind and not _plain(value)):
        user, slash, pw = value.partition("/")  # NEO4J_AUTH=neo4j/PASSWORD: the password alone too
        return [value, pw] if kind == "other" and slash and user and pw and "/" not in pw else [value]
    return []


def is_secret(key: str, value: str | None = None) -> bool:
    """Does ``key`` name a secret? With a value, does this value hold one (name plus shape)?"""
    if value is None:
        return bool(_secret_name(key))
    return bool(secret_parts(key, value))


def env_secret(key: str, value: str) -> bool:
    """Does this env entry belong out of a plain environment (a Kubernetes Secret, a Swarm secret
    file)? Its value holds a secret (by name and shape, or a URL password), or its key names one
    (``OPENAI_API_KEY=123`` too: a numeric key is still the key)."""
    return bool(secret_parts(key, value)) or is_secret(key)


def mask_urls(text: str) -> str:
    """``scheme://user:****@host``: the password of every URL in ``text`` masked."""
    return _URL.sub(lambda m: f"{m.group('scheme')}{m.group('user')}:****@" if m.group("pw") is not None
                    else m.group(0), text)


def mask(key: str, value: str, others: Iterable[str] = ()) -> str:
    """The value as it may be shown: ``****`` for a secret, URL passwords masked, ``<empty>`` when
    empty; any of ``others`` (secrets found elsewhere: ``secret_values``) inside it is masked too."""
    if not value:
        return "<empty>"
    parts = secret_parts(key, value)
    if parts and parts == [value]:
        return "****"
    shown = mask_urls(value)
    for p in sorted(parts, key=len, reverse=True):
        shown = shown.replace(p, "****")
    return scrub(shown, extra=others)


def secret_values(values: Mapping[str, str]) -> set[str]:
    """Every secret string held by ``values`` (whole values and URL passwords)."""
    return {p for k, v in values.items() for p in secret_parts(k, v)}


def _forms(value: str) -> set[str]:
    """How a secret may appear in text we print: as is, as compose renders it (`$` doubled), and
    escaped inside JSON strings or single-quoted YAML scalars."""
    out = set()
    for v in {value, value.replace("$", "$$")}:
        out |= {v, json.dumps(v)[1:-1], v.replace("'", "''")}
    return out


def scrub(text: str, values: Mapping[str, str] | None = None, extra: Iterable[str] = ()) -> str:
    """Replace every secret found in ``text`` by ``****``: the secrets of ``values`` (env values, by
    key name and value shape, URL passwords) and ``extra`` (secrets found elsewhere, e.g. written in
    the compose file), in every form compose or JSON may print them (longest first, so no tail of a
    longer secret stays), then the password of any URL left in the text."""
    found = secret_values(values or {}) | {e for e in extra if e}
    forms = {f for s in found if len(s) >= MIN_SCRUB_LEN and s.strip("*") for f in _forms(s)}
    for f in sorted(forms, key=len, reverse=True):
        text = text.replace(f, "****")
    return mask_urls(text)


# --- secrets written in a compose file ---------------------------------------------------------
# Long options whose value is a secret (`--requirepass X`, `--password=X`, `--masterauth X`,
# `--api-key X`), unless the option is about the secret (`--auth-method md5`).
_SECRET_OPT = re.compile(r"pass|pwd|secret|token|auth|credential|api-?key|^key$", re.I)
_META_OPT = re.compile(r"(?:method|type|mode|file|path|dir|db|database|mechanism|source|plugin)$", re.I)
# Short options that take a password in the clients compose healthchecks use:
# `redis-cli -a PW`, `mysqladmin -pPW` / `-p PW`, `cypher-shell -p PW`, `curl -u user:PW`.
_SHORT_OPTS = {"a": ("redis",), "p": ("mysql", "mariadb", "cypher-shell", "neo4j"), "u": ("curl",)}
_SEPARATORS = frozenset({";", "&&", "||", "|", "&"})


def _unescape(value: str) -> str:
    """A compose model string as the container sees it (compose prints a literal `$` as `$$`)."""
    return value.replace("$$", "$")


def _literal(value: str) -> bool:
    return bool(value) and not _plain(value) and not value.startswith(("/", "-"))


def argv_secrets(argv: Iterable[str] | str) -> set[str]:
    """Secrets written into a command line (a list, or one shell string as in CMD-SHELL)."""
    import shlex

    if isinstance(argv, str):
        line = argv
        try:
            argv = shlex.split(line)
        except ValueError:
            argv = line.split()
    words = [_unescape(str(w)) for w in argv]
    out: set[str] = set()
    prog = ""
    for i, w in enumerate(words):
        nxt = words[i + 1] if i + 1 < len(words) else ""
        out.update(url_credentials(w))
        if i and words[i - 1] == "-c" and " " in w:  # sh -c "redis-cli -a PW ping"
            out |= argv_secrets(w)
        if w in _SEPARATORS or not prog:
            prog = "" if w in _SEPARATORS else w.rsplit("/", 1)[-1]
            if w in _SEPARATORS:
                continue
        if w.startswith("--") and len(w) > 2:
            name, eq, val = w[2:].partition("=")
            if _SECRET_OPT.search(name) and not _META_OPT.search(name):
                val = val if eq else nxt
                if _literal(val):
                    out.add(val)
        elif len(w) >= 2 and w[0] == "-" and w[1] in _SHORT_OPTS and any(p in prog for p in _SHORT_OPTS[w[1]]):
            val = w[2:] or nxt
            if w[1] == "u":
                val = val.partition(":")[2]
            if _literal(val):
                out.add(val)
    return out


def holds_secret(text: str, secrets: Iterable[str]) -> bool:
    """Does ``text`` hold one of ``secrets`` (long ones only: a short value such as 'memstack'
    would match names) or anything ``scrub`` masks? The renderers' last guard before writing."""
    long = {s for s in secrets if len(s) >= MIN_SECRET_LEN}
    return scrub(text, extra=long) != text


def model_secrets(model: Mapping[str, Any]) -> set[str]:
    """Secrets written directly in a rendered compose model (``docker compose config --format
    json``): environment entries that are secrets (by name and shape) or hold URL passwords, and
    passwords on the command line, entrypoint or healthcheck of a service."""
    out: set[str] = set()
    for svc in (model.get("services") or {}).values():
        if not isinstance(svc, Mapping):
            continue
        env = svc.get("environment") or {}
        if isinstance(env, list):  # never in compose's own output, but cheap to accept
            env = dict(str(e).partition("=")[::2] for e in env)
        for k, v in env.items():
            if v is not None:
                out.update(secret_parts(str(k), _unescape(str(v))))
        for field_ in ("command", "entrypoint"):
            if svc.get(field_):
                out |= argv_secrets(svc[field_])
        test = (svc.get("healthcheck") or {}).get("test")
        if isinstance(test, list) and test[:1] == ["CMD-SHELL"]:
            out |= argv_secrets(" ".join(test[1:]))
        elif isinstance(test, list):
            out |= argv_secrets(test[1:] if test[:1] == ["CMD"] else test)
        elif isinstance(test, str):
            out |= argv_secrets(test)
    return out


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
        raise EnvFileError(f"Cannot read {path}: {type(e).__name__}. "
                           f"Check its permissions and encoding (UTF-8).") from None
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


def check_env(path: Path | Iterable[Path], template: Path | None, stage: str) -> tuple[dict[str, str], list[Finding]]:
    """Validate the env files compose reads (``path``: the main file, or the main file then the
    ``.env.<stage>`` that compose reads last) against the template: required keys present and
    non-empty, file modes, and every secret in them (by name and value shape, not only the
    template's keys; passwords inside URLs too) neither a known default nor short. Weak secrets are
    errors in stage prod, warnings otherwise. Returns the merged values, as compose sees them.
    ``template`` None: a compose file anywhere, which has none: the files are checked as they are
    (a missing one is compose's business: its config check names it)."""
    paths = [path] if isinstance(path, Path) else list(path)
    if not paths:
        return {}, []
    main = paths[0]
    if template is None:
        paths = [p for p in paths if p.is_file()]
    elif not main.is_file():
        raise EnvFileError(f"The env file {main} is missing: create it with `inv env.init` "
                           f"(from {template}, with strong generated secrets).")
    values: dict[str, str] = {}
    origin: dict[str, Path] = {}
    findings: list[Finding] = []
    for p in paths:
        if not p.is_file():
            continue
        for k, val in read_env(p).items():
            values[k], origin[k] = val, p
        mode = p.stat().st_mode & 0o777
        if mode & 0o077:
            findings.append(Finding("warn", "-", f"{p} has mode {mode:o}: run `chmod 600 {p}` (it holds secrets)."))
    for t in read_template(template) if template is not None else []:
        v = values.get(t.key)
        if v is None:
            if not t.optional:
                findings.append(Finding("error", t.key, f"missing: add {t.key}= to {main} (see {template})"))
            continue
        if not v and not t.optional:
            findings.append(Finding("error", t.key, f"empty: set {t.key} in {origin[t.key]}"))
    level = "error" if stage == "prod" else "warn"
    for k, v in values.items():
        for part in secret_parts(k, v):
            if part.lower() in KNOWN_DEFAULTS:
                why = "a known default password"
            elif len(part) < MIN_SECRET_LEN:
                why = f"shorter than {MIN_SECRET_LEN} characters"
            else:
                continue
            where = f" in {origin[k].name}" if len(paths) > 1 else ""
            what = "weak secret" if part == v else "weak password inside the value"
            findings.append(Finding(level, k, f"{what}{where} ({why}): set a long random value (a database already "
                                              f"initialised keeps its old password until you change it there too)"))
            break
    return values, findings
