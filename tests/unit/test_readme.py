"""README: every command line it shows parses against the real task collection (issue 12, Docs).

README showed `restore.* [BACKUP]` while the tasks take `--backup ID`; the positional form answers
`No idea what '<id>' is!`. This test reads every code span and code block line of README.md that
is a command: `inv ...` / `memstack-ops ...` lines as typed, and the task synopses of the tables
(`up [--service S]... [--timeout 300]`, `restore.postgres\\|mysql [--backup ID]`) with their
placeholders filled in. Each is parsed by invoke's own Program machinery with the `memstack-ops`
core flags (-H) and the real collection: the task must exist, every flag must be one of its
options, every value must land where the task takes one. Nothing is executed.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
from pathlib import Path

import pytest
from fakes import parse_cli
from invoke.exceptions import ParseError

from memstack_ops.remote.program import HostsProgram
from memstack_ops.tasks import ns

README = Path(__file__).resolve().parents[2] / "README.md"
BINARIES = ("inv", "memstack-ops")


def task_names() -> set[str]:
    names = set(ns.task_names)
    for aliases in ns.task_names.values():
        names.update(aliases)
    return names


def parse(argv: list[str]) -> HostsProgram:
    """Parse ``argv`` as the console script does (core flags, collection, tasks); never run it."""
    return parse_cli(argv, HostsProgram)  # type: ignore[no-any-return]


def code_texts(text: str) -> list[tuple[int, list[str]]]:
    """(line number, [code span, ...]): each inline span and each line of a fenced block alone,
    except the spans of a table's first cell, which stay together (a task, its alias, its options)."""
    out, fenced = [], False
    for n, line in enumerate(text.splitlines(), 1):
        if line.startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            out.append((n, [line.split("#", 1)[0].strip()]))
        elif line.startswith("|"):  # the first cell is the task column: its spans stay together
            first, *rest = re.split(r"(?<!\\)\|", line.strip("|"))
            out += [(n, spans) for spans in [re.findall(r"`([^`]+)`", first)] if spans]
            out += [(n, [s]) for cell in rest for s in re.findall(r"`([^`]+)`", cell)]
        else:
            out += [(n, [s]) for s in re.findall(r"`([^`]+)`", line)]
    return out


def expand(word: str, names: set[str]) -> list[str]:
    """The task names a synopsis word stands for: `restore.postgres|mysql` -> restore.postgres,
    restore.mysql; `backup.*` -> every backup task; [] when it is no task word."""
    alts = word.split("|")
    prefix = alts[0].rsplit(".", 1)[0] + "." if "." in alts[0] else ""
    full = [alts[0]] + [a if "." in a or not prefix else prefix + a for a in alts[1:]]
    if any("*" in f for f in full):
        return sorted(n for f in full for n in names if fnmatch.fnmatchcase(n, f))
    return full if all(f in names for f in full) else []


def synopsis_tokens(span: str) -> list[str]:
    """`[--service S]... [--tail N]` -> ['--service', '1', '--tail', '1']: brackets and `...` go,
    an option's placeholder (S, N, ID, SERVICE|KIND) becomes a value any option type accepts; a
    placeholder on its own (`db.shell SERVICE`) stays, as the positional value it stands for."""
    toks = re.sub(r"\[|\]|\.\.\.", "", span.replace("\\|", "|")).split()
    placeholder = re.compile(r"[A-Z][A-Z0-9_]*(?:[,|][A-Z][A-Z0-9_]*)*")
    return ["1" if i and toks[i - 1].startswith("-") and placeholder.fullmatch(t) else t for i, t in enumerate(toks)]


def commands(text: str) -> list[tuple[int, str, str, list[list[str]]]]:
    """(line, as written, "all"|"any", [argv, ...]): the concrete command lines to parse. A synopsis
    for several tasks (`restore.postgres|mysql ...`, a task and its alias) must parse for "all"
    of them; one with a wildcard (`-H HOST backup.* --fetch`) for "any". A bare task name only
    has to exist (prose names tasks that take positionals, e.g. `db.*`)."""
    names = task_names()
    found = []
    for n, spans in code_texts(text):
        group: list[tuple[str, list[str], list[str]]] = []  # bare task names of this cell, awaiting options
        for span in spans:
            if span.split(" ", 1)[0] in BINARIES:  # a command line as typed
                found.append((n, span, "all", [["memstack-ops", *shlex.split(span)[1:]]]))
                group = []
                continue
            toks = synopsis_tokens(span)
            core: list[str] = []
            while toks[:1] == ["-H"]:
                core, toks = core + toks[:2], toks[2:]
            tasks = expand(toks[0], names) if toks else []
            mode = "any" if toks and "*" in toks[0] else "all"
            if tasks:
                rest = toks[1:]
                if rest or core:
                    found.append((n, span, mode, [["memstack-ops", *core, t, *rest] for t in tasks]))
                    group = []
                else:  # `status` (alias `ps`), `db.migrate` (alias `db.schema`) `[--dry-run]`
                    group.append((span, core, tasks))
            elif toks and toks[0].startswith("-") and group and len(spans) > 1:  # options of the cell's task(s)
                found += [(n, f"{s} {span}", mode, [["memstack-ops", *c, t, *toks] for t in ts]) for s, c, ts in group]
                group = []
    return found


COMMANDS = commands(README.read_text(encoding="utf-8"))


def test_the_readme_shows_command_lines_and_task_synopses():
    written = {w for _, w, _, _ in COMMANDS}
    assert len(COMMANDS) >= 25
    assert any(w.startswith("inv -H") for w in written) and any(w.startswith("memstack-ops -H") for w in written)
    assert any(w.startswith("restore.postgres") for w in written) and any(w.startswith("up [") for w in written)
    assert "db.migrate [--dry-run]" in written and "db.schema [--dry-run]" in written  # a task and its alias


@pytest.mark.parametrize("line, written, mode, argvs", COMMANDS, ids=[f"L{n}:{w}" for n, w, _, _ in COMMANDS])
def test_every_readme_command_parses_against_the_real_collection(line, written, mode, argvs):
    errors = []
    for argv in argvs:
        try:
            parse(argv)
        except ParseError as e:
            errors.append(f"{shlex.join(argv[1:])}: {e}")
    if errors if mode == "all" else len(errors) == len(argvs):
        pytest.fail(f"README.md:{line} `{written}` does not parse: " + "; ".join(errors))


def test_the_checker_refuses_the_positional_backup_id_the_readme_used_to_show():
    # the defect this test exists for: `restore.* [BACKUP]` while the tasks take --backup
    ((_, _, mode, argvs),) = commands("| `restore.postgres\\|mysql [BACKUP]` | ... |")
    assert mode == "all" and argvs == [["memstack-ops", "restore.postgres", "BACKUP"],
                                       ["memstack-ops", "restore.mysql", "BACKUP"]]
    with pytest.raises(ParseError, match="No idea what 'BACKUP' is"):
        parse(argvs[0])
    with pytest.raises(ParseError):
        parse(["memstack-ops", "up", "--no-such-flag"])
    ((_, _, _, argvs),) = commands("| `-H HOST restore.* [--backup ID]` | ... |")
    for argv in argvs:
        parse(argv)
