"""k8s.*: Kubernetes manifests of a stack (memstack_ops/k8s_render.py). Render only: no cluster
is contacted, nothing is applied."""

from __future__ import annotations

from invoke import Context

from ._common import ops_task, target


@ops_task(local_only=True, iterable=["replicas"], help={
    "out": "folder to write to (default k8s/<stack>/ in the project); its other files are left alone",
    "replicas": "SERVICE=N for a stateless service (repeatable, or api=3,worker=2); default 2: its "
                "autoscaler's minimum",
    "databases": "external (default: a Service without selector per database, pointed at the real one) or "
                 "statefulset (a StatefulSet with a claim per named volume)",
})
def render(c: Context, out: str | None = None, replicas: list[str] | None = None, databases: str = "external",
           stack: str | None = None, stage: str | None = None, overlay: str | None = None) -> None:
    """Write Kubernetes manifests of the stack (from its compose files, one YAML file per service)."""
    from pathlib import Path

    from .. import k8s_render
    from ..output import say, warn

    t = target(c, stack, stage, overlay)
    model = t.compose.model(c)  # compose's own interpolation, as swarm_render reads it
    wanted = k8s_render.parse_replicas(replicas or [], model.get("services") or {})
    rendered = k8s_render.render(model, t.stack.name, wanted, databases, probes_cfg=t.probes,
                                 root=str(t.stack.root))
    folder = Path(out) if out else Path(t.stack.root) / "k8s" / t.stack.name
    written = k8s_render.write(rendered, folder)
    for w in rendered.warnings:
        warn(f"warning: {w}")
    secret = any(m.file == k8s_render.SECRET_FILE for m in rendered.manifests)
    say(f"Wrote {len(written)} files ({len(rendered.manifests)} objects) to {folder}: "
        f"{', '.join(p.name for p in written)}. Nothing was applied: "
        + (f"create the Secret as {k8s_render.SECRET_FILE} says, then " if secret else "")
        + f"`kubectl apply -f {folder}`.")
