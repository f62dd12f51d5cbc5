"""`mlspec diff`: what a branch changed in the *composed* spec, resource by resource, and what that affects.

Both sides are composed exactly as `plan` composes them (config groups, interpolations, overrides), so a
change made in a config group file or in the defaults list shows as the values it changes. A git revision
is composed from a temporary export of that revision's spec files (`git archive`); the working tree is
composed in place. No state is read: the diff needs only the repository.

    base  --base REV   default: the merge-base of HEAD with the default branch (origin/HEAD, main, master)
    head  --head REV   default: the working tree
"""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from mlspec.console import Console
from mlspec.errors import MlspecError

from mlspec.sensitive import MASK as MASKED  # what a sensitive value shows as


# --- git -----------------------------------------------------------------------------------------------
def git(cwd: Path, *args: str, binary: bool = False) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=not binary, timeout=120)
    except FileNotFoundError:
        raise MlspecError("`mlspec diff` needs git, and git is not installed",
                          hint="install git (it reads the spec files of each revision)") from None


def repo_root(project_dir: Path) -> tuple[Path, str]:
    """The repository's top directory, and the project directory's path inside it ('' at the top)."""
    r = git(project_dir, "rev-parse", "--show-toplevel", "--show-prefix")
    if r.returncode != 0:
        raise MlspecError(f"{project_dir} is not in a git repository",
                          hint="`mlspec diff` compares git revisions: run it inside the project's repository")
    top, prefix = (r.stdout.splitlines() + ["", ""])[:2]
    return Path(top), prefix.strip()


def default_branch(root: Path) -> str:
    """The branch pull requests merge into: origin/HEAD when it is set, else main, else master."""
    r = git(root, "symbolic-ref", "--quiet", "--short", "refs/remotes/origin/HEAD")
    if r.returncode == 0 and r.stdout.strip():
        return r.stdout.strip()
    for name in ("main", "master", "origin/main", "origin/master"):
        if git(root, "rev-parse", "--verify", "--quiet", f"{name}^{{commit}}").returncode == 0:
            return name
    raise MlspecError("cannot tell the default branch (no origin/HEAD, main or master)",
                      hint="name the base revision: mlspec diff --base REV")


def resolve_commit(root: Path, rev: str, flag: str) -> str:
    r = git(root, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    if r.returncode != 0:
        raise MlspecError(f"{flag} {rev}: git does not know this revision in {root}",
                          hint="name a branch, tag or commit (in CI, fetch enough history: fetch-depth: 0)")
    return r.stdout.strip()


def default_base(root: Path) -> tuple[str, str]:
    """(what to show, commit): the merge-base of HEAD with the default branch."""
    branch = default_branch(root)
    r = git(root, "merge-base", branch, "HEAD")
    if r.returncode != 0 or not r.stdout.strip():
        raise MlspecError(f"HEAD and {branch} have no common ancestor",
                          hint="name the base revision: mlspec diff --base REV (in CI, fetch with fetch-depth: 0)")
    return f"merge-base with {branch}", r.stdout.strip()


SPEC_SUFFIXES = (".yaml", ".yml")


def export_revision(root: Path, prefix: str, commit: str, dest: Path) -> Path:
    """Write the spec files (YAML) of ``commit`` under the project directory into ``dest``; returns the
    project directory inside ``dest``. Only YAML is exported: composing reads nothing else."""
    r = git(root, "ls-tree", "-r", "-z", "--name-only", commit, "--", prefix or ".")
    if r.returncode != 0:
        raise MlspecError(f"cannot list the files of {commit[:10]}: {r.stderr.strip()}")
    names = [n for n in r.stdout.split("\0") if n.endswith(SPEC_SUFFIXES)]
    out = dest / prefix if prefix else dest
    out.mkdir(parents=True, exist_ok=True)
    if not names:
        return out
    r = git(root, "archive", "--format=tar", commit, "--", *names, binary=True)
    if r.returncode != 0:
        raise MlspecError(f"cannot export {commit[:10]}: {r.stderr.decode(errors='replace').strip()}")
    with tarfile.open(fileobj=io.BytesIO(r.stdout)) as tar:
        tar.extractall(dest, filter="data")
    return out


# --- one side: the composed spec -------------------------------------------------------------------------
@dataclass
class Side:
    label: str  # what the user sees: "working tree", "main (1a2b3c4d5e)"
    commit: str | None
    data: dict
    masked: dict
    sensitive_paths: frozenset
    choices: dict
    locate: object  # path -> "file:line"
    nodes: list = field(default_factory=list)  # [(address, upstream tuple)]

    def to_dict(self) -> dict:
        return {"label": self.label, "commit": self.commit}


def compose_side(project_dir: Path, spec_file: str | None, overrides, label: str, commit: str | None) -> Side:
    from mlspec.compose import compose
    from mlspec.core.kind import all_nodes
    from mlspec.errors import SpecError
    from mlspec.load import validate_composed
    from mlspec.sensitive import mask
    from mlspec.spec import build_spec

    try:
        c = compose(project_dir, spec_file, overrides)
        diags = validate_composed(c)
        if diags:
            raise SpecError(diags)
    except MlspecError as exc:
        raise MlspecError(f"the spec of {label} does not compose:\n{exc.render()}",
                          hint="fix it there (or compare other revisions with --base/--head)") from None
    spec = build_spec(c.data, project_dir=c.sources.project_dir, spec_file=c.spec_file, sensitive=c.sensitive,
                      choices=c.choices)
    nodes = [(n.address, tuple(n.upstream)) for n in all_nodes(spec)]
    masked = mask(c.data, c.sensitive) if (c.sensitive.paths or c.sensitive.values) else c.data

    def locate(path: tuple) -> str:
        f, line, _ = c.sources.locate(path)
        return f"{f}:{line}" if f and line else f

    return Side(label, commit, c.data, masked, frozenset(c.sensitive.paths), dict(c.choices or {}), locate, nodes)


# --- the diff ----------------------------------------------------------------------------------------------
SECTIONS = {"datasets": "dataset", "steps": "step", "models": "model", "deployments": "deployment",
            "monitors": "monitor", "triggers": "trigger"}
_MISSING = object()


def _leaf_changes(a, b, path: tuple, out: list) -> None:
    """Attribute-level changes between two values: mappings key by key, anything else as a whole."""
    if a == b and type(a) is type(b):
        return
    if isinstance(a, dict) and isinstance(b, dict):
        for k in list(a) + [k for k in b if k not in a]:
            _leaf_changes(a.get(k, _MISSING), b.get(k, _MISSING), path + (k,), out)
        return
    out.append((path, a, b))


def _get(data, path: tuple):
    for p in path:
        if isinstance(data, dict) and p in data:
            data = data[p]
        elif isinstance(data, list) and isinstance(p, int) and p < len(data):
            data = data[p]
        else:
            return None
    return data


def _show(path: tuple) -> str:
    return ".".join(str(p) for p in path)


def _is_sensitive(side: Side, path: tuple) -> bool:
    return any(path[:len(p)] == p for p in side.sensitive_paths)


AFFECTS_LIMIT = 100  # addresses listed per change; `affects_more` counts the rest


class Downstream:
    """What lies downstream of each node of one side's graph, as bitsets over resources (bit k: the k-th
    resource, instances of a matrix step counted once, in graph order), built in one pass from the end of
    the topological order: a change's downstream set is then one OR and its size one popcount, so a chain of
    2,000 changed steps stays fast."""

    def __init__(self, nodes: list):
        bases = [a.split("[", 1)[0] for a, _ in nodes]
        self.ids: dict[str, int] = {}
        for b in bases:
            self.ids.setdefault(b, len(self.ids))
        self.names = list(self.ids)
        index = {a: i for i, (a, _) in enumerate(nodes)}
        dependents: list[list[int]] = [[] for _ in nodes]
        for i, (_, ups) in enumerate(nodes):
            for u in ups:
                j = index.get(u)
                if j is not None:
                    dependents[j].append(i)
        node_base = [self.ids[b] for b in bases]
        down = [0] * len(nodes)
        for i in range(len(nodes) - 1, -1, -1):
            acc = 0
            for d in dependents[i]:
                acc |= (1 << node_base[d]) | down[d]
            down[i] = acc
        self.down: dict[int, int] = {}
        for i, k in enumerate(node_base):
            self.down[k] = self.down.get(k, 0) | down[i]

    @property
    def bases(self) -> list[str]:
        return self.names

    def _set(self, address: str) -> int:
        k = self.ids.get(address)
        return 0 if k is None else self.down[k] & ~(1 << k)

    def union(self, addresses) -> set:
        """Every resource downstream of any of ``addresses`` (complete, not cut)."""
        bits = 0
        for a in addresses:
            bits |= self._set(a)
        return {self.names[k] for k in _bits(bits)}

    def of(self, address: str) -> tuple[list[str], int]:
        """(the first AFFECTS_LIMIT resources downstream of ``address``, in graph order; how many more)."""
        bits = self._set(address)
        total = bin(bits).count("1")
        out = []
        while bits and len(out) < AFFECTS_LIMIT:
            low = bits & -bits
            out.append(self.names[low.bit_length() - 1])
            bits ^= low
        return out, total - len(out)


def _bits(x: int):
    while x:
        low = x & -x
        yield low.bit_length() - 1
        x ^= low


def diff_sides(base: Side, head: Side) -> dict:
    """The semantic diff as plain data (the JSON format)."""
    changes = []
    head_down, base_down = Downstream(head.nodes), Downstream(base.nodes)
    head_order: dict[str, int] = {}
    base_order: dict[str, int] = {}
    for order_of, side in ((head_order, head), (base_order, base)):
        for i, (addr, _) in enumerate(side.nodes):
            order_of.setdefault(addr.split("[", 1)[0], i)

    def attrs(path: tuple, a, b) -> list:
        found: list = []
        _leaf_changes(a, b, (), found)
        out = []
        for rel, x, y in found:
            full = path + rel
            change = "added" if x is _MISSING else "removed" if y is _MISSING else "changed"
            row = {"path": _show(rel) or _show(path), "change": change}
            if x is not _MISSING:
                row["before"] = MASKED if _is_sensitive(base, full) else _get(base.masked, full)
            if y is not _MISSING:
                row["after"] = MASKED if _is_sensitive(head, full) else _get(head.masked, full)
            if x is not _MISSING and y is not _MISSING and row.get("before") == row.get("after") == MASKED:
                row["sensitive"] = True
            where = head.locate(full) if y is not _MISSING else base.locate(full)
            if where:
                row["source"] = where
            out.append(row)
        return out

    for section, kind in SECTIONS.items():
        a = base.data.get(section) or {}
        b = head.data.get(section) or {}
        if not isinstance(a, dict) or not isinstance(b, dict):
            continue
        for name in list(a) + [n for n in b if n not in a]:
            x, y = a.get(name, _MISSING), b.get(name, _MISSING)
            if x == y:
                continue
            address = f"{kind}.{name}"
            action = "added" if x is _MISSING else "removed" if y is _MISSING else "changed"
            affects, more = (base_down if action == "removed" else head_down).of(address)
            row = {"address": address, "kind": kind, "action": action, "affects": affects}
            if more:
                row["affects_more"] = more
            if action == "changed":
                row["attributes"] = attrs((section, name), x, y)
            else:
                side = head if action == "added" else base
                where = side.locate((section, name))
                if where:
                    row["source"] = where
            changes.append(row)
    # anything else at the top level: project settings (storage, backend, policies, secrets, ...)
    skip = set(SECTIONS) | {"defaults"}
    settings = []
    for key in list(base.data) + [k for k in head.data if k not in base.data]:
        if key in skip:
            continue
        x, y = base.data.get(key, _MISSING), head.data.get(key, _MISSING)
        if x == y:
            continue
        row = {"address": key, "kind": "setting", "action": "changed" if x is not _MISSING and y is not _MISSING
               else "added" if x is _MISSING else "removed", "attributes": attrs((key,), x, y)}
        if key in ("backend", "backends"):  # where steps run: every step's next run goes there
            steps = [a for a in dict.fromkeys(head_down.bases) if a.startswith("step.")]
            row["affects"] = steps[:AFFECTS_LIMIT]
            if len(steps) > AFFECTS_LIMIT:
                row["affects_more"] = len(steps) - AFFECTS_LIMIT
        else:
            row["affects"] = []
        settings.append(row)

    def order(row) -> tuple:  # the graph's order (upstream first); a removed resource where it was
        a = row["address"]
        return (head_order.get(a, base_order.get(a, 0)), a)

    changes.sort(key=order)
    groups = []
    for g in sorted(set(base.choices) | set(head.choices)):
        if str(g).startswith("hydra"):
            continue
        x, y = base.choices.get(g), head.choices.get(g)
        if x != y:
            groups.append({"group": g, "before": x, "after": y})
    summary = {k: sum(1 for c in changes if c["action"] == k) for k in ("added", "removed", "changed")}
    summary["settings"] = len(settings)
    touched = {c["address"] for c in changes}
    affected = head_down.union(c["address"] for c in changes if c["action"] != "removed")
    affected |= base_down.union(c["address"] for c in changes if c["action"] == "removed")
    for c in settings:
        affected.update(c["affects"])
    affected = sorted(affected - touched)
    return {"base": base.to_dict(), "head": head.to_dict(), "has_changes": bool(changes or settings or groups),
            "summary": summary, "groups": groups, "changes": changes, "settings": settings,
            "affected": affected}


def spec_diff(project_dir, spec_file: str | None, overrides, base_rev: str | None, head_rev: str | None) -> dict:
    """Compose both sides and diff them; the entry point `review` uses too."""
    project_dir = Path(project_dir).resolve()
    root, prefix = repo_root(project_dir)
    if base_rev:
        base_label, base_commit = base_rev, resolve_commit(root, base_rev, "--base")
    else:
        base_label, base_commit = default_base(root)
    from mlspec.compose.groups import DEFAULT_SPEC

    with tempfile.TemporaryDirectory(prefix="mlspec-diff-") as tmp:
        where = export_revision(root, prefix, base_commit, Path(tmp) / "base")
        label = f"{base_label} ({base_commit[:10]})"
        if (where / (spec_file or DEFAULT_SPEC)).is_file():
            base = compose_side(where, spec_file, overrides, label, base_commit)
        else:  # the branch adds the spec: everything in it is new
            base = Side(label, base_commit, {}, {}, frozenset(), {}, lambda path: "", [])
        if head_rev:
            head_commit = resolve_commit(root, head_rev, "--head")
            where = export_revision(root, prefix, head_commit, Path(tmp) / "head")
            head = compose_side(where, spec_file, overrides, f"{head_rev} ({head_commit[:10]})", head_commit)
        else:
            head = compose_side(project_dir, spec_file, overrides, "the working tree", None)
    return diff_sides(base, head)


# --- views ------------------------------------------------------------------------------------------------
_SYMBOL = {"added": "+", "removed": "-", "changed": "~"}


def _v(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, str):
        return json.dumps(value) if (value == "" or value.strip() != value or value in ("null", "true", "false")
                                     or "\n" in value) else value
    return json.dumps(value, sort_keys=True, separators=(", ", ": "))


def _attr_text(a: dict) -> str:
    if a["change"] == "added":
        return f"{a['path']}: + {_v(a['after'])}"
    if a["change"] == "removed":
        return f"{a['path']}: - {_v(a['before'])} (removed)"
    if a.get("sensitive"):
        return f"{a['path']}: changed (sensitive, not shown)"
    return f"{a['path']}: {_v(a['before'])} -> {_v(a['after'])}"


def _affects_text(c: dict, limit: int = 8) -> str:
    affects = c["affects"]
    if not affects:
        return ""
    more = len(affects) - limit if len(affects) > limit else 0
    more += c.get("affects_more", 0)
    return ", ".join(affects[:limit]) + (f", ... {more} more" if more else "")


def summary_line(d: dict) -> str:
    s = d["summary"]
    if not d["has_changes"]:
        return "No changes to the spec."
    parts = [f"{s['added']} added", f"{s['changed']} changed", f"{s['removed']} removed"]
    tail = f"; {s['settings']} setting{'s' if s['settings'] != 1 else ''} changed" if s["settings"] else ""
    affected = f"; {len(d['affected'])} more downstream" if d["affected"] else ""
    return f"Spec diff: {', '.join(parts)}{tail}{affected}."


def render_text(d: dict) -> str:
    lines = [f"Comparing the spec of {d['base']['label']} with {d['head']['label']}.", ""]
    for g in d["groups"]:
        lines.append(f"  config group {g['group']}: {g['before']} -> {g['after']}")
    if d["groups"]:
        lines.append("")
    for c in d["changes"] + d["settings"]:
        head = f"  {_SYMBOL[c['action']]} {c['address']}"
        if c["action"] != "changed" and c.get("source"):
            head += f"  ({c['source']})"
        lines.append(head)
        for a in c.get("attributes", []) if c["action"] == "changed" or c["kind"] == "setting" else []:
            src = f"  ({a['source']})" if a.get("source") else ""
            lines.append(f"      {_attr_text(a)}{src}")
        if c["affects"]:
            lines.append(f"      affects: {_affects_text(c)}")
    if d["changes"] or d["settings"]:
        lines.append("")
    lines.append(summary_line(d))
    return "\n".join(lines) + "\n"


def _md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(d: dict, *, heading: str = "### mlspec diff", limit: int = 30_000) -> str:
    """A Markdown table of the changes; cut (with a note) to stay under ``limit`` characters."""
    out = [f"{heading}: {d['base']['label']} → {d['head']['label']}", "", f"**{summary_line(d)}**", ""]
    if d["groups"]:
        out += ["| config group | before | after |", "|---|---|---|"]
        out += [f"| `{g['group']}` | `{g['before']}` | `{g['after']}` |" for g in d["groups"]]
        out.append("")
    rows = d["changes"] + d["settings"]
    if not rows:
        return "\n".join(out) + "\n"
    table = ["| | resource | what changed | affects downstream |", "|---|---|---|---|"]
    used = len("\n".join(out)) + 200
    shown = 0
    for c in rows:
        if c.get("attributes") and (c["action"] == "changed" or c["kind"] == "setting"):
            what = "<br>".join(f"`{_md(_attr_text(a))}`" for a in c["attributes"][:12])
            if len(c["attributes"]) > 12:
                what += f"<br>… {len(c['attributes']) - 12} more"
        else:
            what = c["action"] + (f" (`{_md(c['source'])}`)" if c.get("source") else "")
        affects = ", ".join(f"`{a}`" for a in c["affects"][:10])
        more = max(len(c["affects"]) - 10, 0) + c.get("affects_more", 0)
        if more:
            affects += f", … {more} more"
        row = f"| `{_SYMBOL[c['action']]}` | `{c['address']}` | {what} | {affects or '-'} |"
        if used + len(row) > limit:
            break
        table.append(row)
        used += len(row) + 1
        shown += 1
    if shown < len(rows):
        table += ["", f"_…and {len(rows) - shown} more changes; run `mlspec diff` for all of them._"]
    return "\n".join(out + table) + "\n"


def run(args, console: Console) -> int:
    d = spec_diff(args.project_dir, args.file, args.overrides, args.base, args.head)
    if args.format == "json":
        console.print(json.dumps(d, indent=2, sort_keys=True), end="\n")
    elif args.format == "markdown":
        console.print(render_markdown(d), end="")
    else:
        console.print(render_text(d), end="")
    if getattr(args, "exit_code", False) and d["has_changes"]:
        from mlspec.errors import EXIT_CHANGES

        return EXIT_CHANGES
    return 0
