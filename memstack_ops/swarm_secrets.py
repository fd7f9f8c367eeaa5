"""The secrets of a Swarm stack: env values that are secrets leave the stack file (issue 15).

On a swarm, a service's environment is part of its spec: ``docker service inspect`` and
``docker inspect`` of every task print it. So each env value that is a secret (the project's one
rule: ``envfiles.env_secret``) with a non-empty value becomes a Swarm secret, mounted as a file,
and the variable is replaced by the one the image reads the file from (``KEY_FILE``):

- named ``<stack>_<KEY>_<hash>``, the hash being the first 10 hex digits of
  ``sha256(stack NUL KEY NUL value)``: Swarm secrets cannot change in place (moby/moby#33808), so a
  changed value gets a new name and the service update that mounts it deploys it; an unchanged
  one keeps its name (a deploy changes nothing). The stack and key salt the hash: the same weak
  password in two stacks does not give the same name, and no table of common passwords' hashes
  reads it; still, 40 bits of a hash are a check for a guessed password, which is one more reason
  for the strong generated values of ``env.init``;
- declared ``external: true`` at the top of the stack file: the deploy creates each one missing
  with ``docker secret create --label memstack-ops.stack=<stack> NAME -``, its value on stdin
  (never in argv nor in a file), and removes the ones ``prune`` names after a converged deploy;
- mounted with ``target: KEY`` (the file ``/run/secrets/KEY``), mode 0400, owned by uid/gid 0
  (the official images read their ``*_FILE`` in the entrypoint, as root, before they drop to
  their own user), or by the service's numeric ``user:``, or by the user an image runs as
  (grafana: 472);
- only where the image reads the file: the official postgres, mysql/mariadb, minio and grafana
  images do (``READS_FILE``); for any other image the tool cannot know, so the service opts in
  with the label ``memstack-ops.secrets-as-files: "KEY1,KEY2"`` (or ``"*"``: all its secrets).
  A secret left in an environment is refused (``render`` raises ConfigError naming the services,
  keys and the fix) unless the render is told to allow it (``allow_env_secrets``), then noted.

The values travel in ``SecretPlan.values``, apart from the names: ``repr`` of the plan (and of
its values) never shows one, nor do the notes.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError

FILES_LABEL = "memstack-ops.secrets-as-files"  # service label: the env keys its image reads as KEY_FILE
STACK_LABEL = "memstack-ops.stack"  # on each secret the deploy creates: what prune's listing filters on
SECRETS_DIR = "/run/secrets"
HASH_LEN = 10
MAX_NAME = 64  # the engine's limit on a secret's name ([a-zA-Z0-9-_.], alphanumeric at both ends)
MODE = 0o400


@dataclass(frozen=True)
class ReadsFile:
    """How an image reads a secret from a file: ``KEY + suffix`` names the file, for ``keys`` (or
    any key starting with ``prefix``); its entrypoint reads the file as ``uid``."""

    keys: frozenset[str] = frozenset()
    prefix: str = ""
    suffix: str = "_FILE"
    uid: str = "0"

    def reads(self, key: str) -> bool:
        return key in self.keys or bool(self.prefix) and key.startswith(self.prefix)


# What the official images read through *_FILE (their entrypoints' file_env, grafana's run.sh,
# minio's readFromSecret), by kind (memstack_ops/kinds: image name or the memstack-ops.kind label).
# The local harness images read them too (postgres, mariadb, the minio stand-in). Neo4j 5.24+
# reads NEO4J_AUTH_FILE, but the tool's own neo4j prelude (db.*, backups) and the usual
# healthcheck read NEO4J_AUTH: opt in with the label once they read the file.
READS_FILE: dict[str, ReadsFile] = {
    "postgres": ReadsFile(frozenset({"POSTGRES_PASSWORD", "POSTGRES_USER", "POSTGRES_DB", "POSTGRES_INITDB_ARGS"})),
    "mysql": ReadsFile(frozenset({f"{p}_{k}" for p in ("MYSQL", "MARIADB")
                                  for k in ("ROOT_PASSWORD", "PASSWORD", "USER", "DATABASE", "ROOT_HOST")})),
    "minio": ReadsFile(frozenset({"MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD", "MINIO_ACCESS_KEY", "MINIO_SECRET_KEY"})),
    "grafana": ReadsFile(prefix="GF_", suffix="__FILE", uid="472"),
}
_NAME_PART = re.compile(r"[^A-Za-z0-9_]")


class SecretValues(dict[str, str]):
    """Secret name -> value. Printing it shows how many, never a value."""

    def __repr__(self) -> str:
        return f"<{len(self)} secret value{'s' if len(self) != 1 else ''}>"

    __str__ = __repr__


@dataclass(frozen=True)
class SwarmSecret:
    name: str
    key: str  # the env variable it holds
    services: tuple[str, ...]  # the services that mount it


@dataclass
class SecretPlan:
    """The Swarm secrets a rendered stack file references: what the deploy creates when missing
    (``missing``, ``create_argv`` with ``value(name)`` on stdin), then prunes (``prune``)."""

    stack: str = ""
    keys: dict[str, str] = field(default_factory=dict)  # name -> env key
    services: dict[str, list[str]] = field(default_factory=dict)  # name -> services mounting it
    values: SecretValues = field(default_factory=SecretValues, repr=False)

    def add(self, key: str, value: str, service: str) -> str:
        name = secret_name(self.stack, key, value)
        self.keys.setdefault(name, key)
        users = self.services.setdefault(name, [])
        if service not in users:
            users.append(service)
        self.values[name] = value
        return name

    @property
    def secrets(self) -> list[SwarmSecret]:
        return [SwarmSecret(n, self.keys[n], tuple(self.services[n])) for n in sorted(self.keys)]

    def wanted(self) -> set[str]:
        return set(self.keys)

    def value(self, name: str) -> str:
        return self.values[name]

    def missing(self, existing: Iterable[str]) -> list[SwarmSecret]:
        """The secrets to create: those of the plan the swarm does not have."""
        have = set(existing)
        return [s for s in self.secrets if s.name not in have]

    def create_argv(self, name: str) -> list[str]:
        """``docker secret create`` for one secret of the plan: the value goes on its stdin."""
        if name not in self.keys:
            raise KeyError(name)
        return ["docker", "secret", "create", "--label", f"{STACK_LABEL}={self.stack}", name, "-"]

    def prune(self, existing: Iterable[str]) -> list[str]:
        return prune(existing, self.wanted(), self.stack)


def secret_name(stack: str, key: str, value: str) -> str:
    """``<stack>_<KEY>_<hash>``: the hash (10 hex of sha256 of stack, key and value) changes with
    the value. A long KEY is cut to fit the engine's 64 characters (the hash still tells values
    apart: two keys cut to one name with one value share a secret of the same content)."""
    if not stack:
        raise ConfigError("The Swarm secrets of a stack are named after it: give the stack's name (the compose "
                          "model has none).")
    digest = hashlib.sha256(f"{stack}\0{key}\0{value}".encode()).hexdigest()[:HASH_LEN]
    room = MAX_NAME - len(stack) - HASH_LEN - 2
    if room < 1:
        raise ConfigError(f"Stack name {stack!r} is too long to name its Swarm secrets (at most "
                          f"{MAX_NAME - HASH_LEN - 3} characters): rename the stack.")
    return f"{stack}_{_NAME_PART.sub('_', key)[:room]}_{digest}"


def _pattern(stack: str) -> re.Pattern[str]:
    return re.compile(rf"{re.escape(stack)}_[A-Za-z0-9_]+_[0-9a-f]{{{HASH_LEN}}}")


def prune(existing: Iterable[str], wanted: Iterable[str], stack: str) -> list[str]:
    """The secrets of ``stack`` (named ``<stack>_<KEY>_<hash>``) among ``existing`` that ``wanted``
    no longer references: to remove after a converged deploy (the engine refuses to remove one a
    service still uses). List ``existing`` with ``docker secret ls --filter
    label=memstack-ops.stack=<stack>``: the name alone cannot tell stack ``a``'s secrets from those
    of a stack named ``a_b``."""
    keep, pattern = set(wanted), _pattern(stack)
    return sorted({n for n in existing if pattern.fullmatch(n) and n not in keep})


def opted_in(service: Mapping[str, Any]) -> set[str] | None:
    """The keys the service's ``memstack-ops.secrets-as-files`` label names; None for ``*``."""
    labels = service.get("labels") or {}
    if isinstance(labels, list):
        labels = dict(str(x).partition("=")[::2] for x in labels)
    spec = str(labels.get(FILES_LABEL) or "")
    keys = {k.strip() for k in spec.split(",") if k.strip()}
    return None if "*" in keys else keys


def _owner(service: Mapping[str, Any], reads: ReadsFile | None) -> tuple[str, str]:
    user = str(service.get("user") or "")
    uid, _, gid = user.partition(":")
    if uid.isdigit():
        return uid, gid if gid.isdigit() else uid
    return (reads.uid if reads else "0"), "0"


def to_files(plan: SecretPlan, name: str, service: dict[str, Any], kind: str, env: dict[str, Any]) -> list[str]:
    """Move the secrets of one service out of ``env`` (its rendered environment, ``$`` escaped as
    ``$$``) into Swarm secret files, where its image reads them (its kind's, or its label's);
    ``service`` gets the mounts. Returns the secret keys left in ``env``."""
    from .compose import unescape
    from .envfiles import env_secret

    reads = READS_FILE.get(kind)
    labelled = opted_in(service)
    left: list[str] = []
    mounts: list[dict[str, Any]] = []
    moved: dict[str, str] = {}  # key -> the variable naming its file
    uid, gid = _owner(service, reads)
    for key in sorted(env):
        raw = env[key]
        if raw is None or raw == "":
            continue
        value = unescape(str(raw))
        asked = labelled is not None and key in labelled
        if not (asked or env_secret(key, value)):
            continue
        if not (asked or labelled is None or reads and reads.reads(key)):
            left.append(key)
            continue
        secret = plan.add(key, value, name)
        suffix = reads.suffix if reads and reads.reads(key) else "_FILE"
        del env[key]
        env[f"{key}{suffix}"] = f"{SECRETS_DIR}/{key}"
        moved[key] = f"{key}{suffix}"
        mounts.append({"source": secret, "target": key, "uid": uid, "gid": gid, "mode": MODE})
    if mounts:
        _check_unread(name, service, moved)
        service["secrets"] = [*list(service.get("secrets") or []), *mounts]
    return left


def _check_unread(name: str, service: Mapping[str, Any], moved: Mapping[str, str]) -> None:
    """A variable moved to a file is gone from the container's environment: a command, entrypoint
    or healthcheck of the service that expands it would get "" (``redis-server --requirepass ""``
    runs a redis without a password). Refused, naming the fix."""
    import json

    for part in ("command", "entrypoint", "healthcheck"):
        text = json.dumps(service.get(part) or "")
        used = [k for k in moved if re.search(rf"\$\{{?{re.escape(k)}(?![A-Za-z0-9_])", text)]
        if used:
            k = used[0]
            raise ConfigError(f"Service {name}: its {part} reads ${k}, which is empty once {k} is read from the "
                              f"Swarm secret file: read the file there (\"$(cat \"${moved[k]}\")\", written $$ in "
                              f"the compose file), or take {k} out of its {FILES_LABEL} label.")


def refuse_or_note(left: Mapping[str, list[str]], allow: bool, notes: list[str]) -> None:
    """Secrets left in services' environments: refused, or (allowed) one note per service."""
    left = {s: keys for s, keys in left.items() if keys}
    if not left:
        return
    which = "; ".join(f"{s}: {', '.join(keys)}" for s, keys in sorted(left.items()))
    if not allow:
        raise ConfigError(
            f"These secrets would stay in the services' environment, which docker service inspect and docker "
            f"inspect of each task print: {which}. The tool moves a secret into a Swarm secret file only where the "
            f"image reads it from KEY_FILE (official postgres, mysql/mariadb, minio, grafana). If the image reads "
            f"KEY_FILE (make it do so: read the file named by KEY_FILE when it is set), add the label "
            f"{FILES_LABEL}: \"KEY1,KEY2\" (or \"*\") to the service; to deploy them in the environment anyway "
            f"(visible), pass --allow-env-secrets.")
    for s, keys in sorted(left.items()):
        notes.append(f"{s}: {', '.join(keys)} stay in its environment (visible in docker service inspect): its "
                     f"image may not read KEY_FILE; if it does, add the label {FILES_LABEL}: \"{','.join(keys)}\"")


def check_no_secret(stack: Mapping[str, Any], secrets: Iterable[str]) -> None:
    """The last guard: no secret of the model anywhere in the stack file (a password in a command,
    entrypoint or healthcheck is as visible as one in the environment). Long values only: a short
    one such as 'memstack' would match names."""
    import json

    from .envfiles import holds_secret

    secrets = list(secrets)
    for name, svc in dict(stack.get("services") or {}).items():
        if holds_secret(json.dumps(svc, ensure_ascii=False), secrets):
            raise ConfigError(f"Service {name}: the stack file would hold a secret of the compose model outside its "
                              f"environment (its command, entrypoint or healthcheck, or a URL with a password), "
                              f"which docker service inspect prints. Have the container read it from its "
                              f"environment or a file (or pass --allow-env-secrets).")
