"""env.*: the stack's env file: create it with strong secrets, validate it, show it masked."""

from __future__ import annotations

from invoke import Context

from ._common import ops_task, settings


@ops_task(local_only=True, help={"force": "replace an existing env file (the old one is kept as .env.bak-<time>)"})
def init(c: Context, force: bool = False, stack: str | None = None, stage: str | None = None,
         overlay: str | None = None) -> None:
    """Write env/<stack>/.env from its template (mode 0600) with strong generated secrets."""
    from ..envfiles import init_env
    from ..output import say, warn

    st = settings(stack, stage, overlay).stack()
    if not st.env_template:
        from ..errors import EnvFileError

        raise EnvFileError(f"Stack {st.name} is a compose file ({', '.join(st.compose_files)} in {st.root}) with no "
                           f"env template, so env.init has nothing to fill in: write its .env beside the file yourself "
                           f"(compose reads it from there), then `env.check` checks it.")
    path, tpl = st.root / st.env_file, st.root / st.env_template
    generated, backup = init_env(path, tpl, force=force)
    say(f"Wrote {st.env_file} (mode 0600) from {st.env_template}; generated secrets: "
        f"{', '.join(generated) or 'none'} (values not shown).")
    if backup:
        warn(f"The previous file is kept as {backup.relative_to(st.root)}. Databases initialised with the "
             f"old passwords keep them until you change them there too.")


@ops_task(local_only=True)
def check(c: Context, stack: str | None = None, stage: str | None = None, overlay: str | None = None) -> None:
    """Validate the env file: required keys, weak or default passwords (errors in prod), mode."""
    from ..doctor import env_paths
    from ..envfiles import check_env
    from ..errors import EnvFileError
    from ..output import say, table

    st = settings(stack, stage, overlay).stack()
    paths, template = env_paths(st)  # compose reads them all (.env.<stage> last, it wins): check them all
    files = " + ".join(st.env_files) if template else " + ".join(str(p) for p in paths if p.is_file()) or "no env file"
    _, findings = check_env(paths, template, st.stage)
    if findings:
        table(f"{files} (stage {st.stage})", ["level", "key", "problem"],
              [[f.level, f.key, f.message] for f in findings])
    errors = [f for f in findings if f.level == "error"]
    if errors:
        raise EnvFileError(f"{len(errors)} problem(s) in {files}: {', '.join(f.key for f in errors)}. "
                           f"Fix them as the table says, then run env.check again.")
    say(f"{files} {'is' if len(paths) <= 1 else 'are'} valid for stage {st.stage}"
        + (f" ({len(findings)} warning(s))" if findings else "") + ".")


@ops_task(local_only=True)
def show(c: Context, stack: str | None = None, stage: str | None = None, overlay: str | None = None) -> None:
    """Show the resolved settings (with their source) and the env values, secrets masked."""
    from ..envfiles import mask, read_env, secret_values
    from ..output import table

    s = settings(stack, stage, overlay)
    st = s.stack()
    table("settings", ["setting", "value", "from"],
          [[k, s[k], s.sources[k]] for k in sorted(s.values) if k != "stacks"])
    files = {f: read_env(st.root / f) for f in st.env_files if (st.root / f).is_file()}
    found = set().union(*map(secret_values, files.values()))  # a secret anywhere is masked everywhere
    table("env", ["key", "value", "from"],
          [[k, mask(k, v, found), f] for f, vals in files.items() for k, v in vals.items()])
