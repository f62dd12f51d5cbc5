"""The `mlspec` command line: parse, dispatch, map errors to exit codes. Commands live in mlspec.commands.

Exit codes: 0 success, 1 user error, 2 changes present (plan --detailed-exitcode), 3 bug, 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback

from mlspec import __version__
from mlspec.errors import EXIT_BUG, EXIT_ERROR, EXIT_INTERRUPTED, MlspecError

from mlspec.views.formats import add_format_option  # noqa: E402  (tiny, no heavy imports)


class UsageError(Exception):
    """The command line does not parse: exit 1 (a user error), never argparse's 2 (which `plan
    --detailed-exitcode` uses for "changes": a CI job would read a typo as a plan with changes)."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one `Error:` line with a hint, and exit code 1 (see UsageError)."""

    def error(self, message: str):
        head = "the following arguments are required: "
        if message.startswith(head):  # argparse lists the optional KEY=VALUE words too
            message = head + ", ".join(a for a in message[len(head):].split(", ") if a != "KEY=VALUE")
        self.print_usage(sys.stderr)
        print(f"Error: {message}\n  Run `{self.prog} --help` for the options and arguments.", file=sys.stderr)
        raise UsageError(message)


def _overrides(p: argparse.ArgumentParser) -> None:
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="Hydra overrides: group=option, key=value, +key=value (add), ~key (delete)")


def _spec_opts(p: argparse.ArgumentParser) -> None:
    _overrides(p)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="mlspec", description="Declare the ML lifecycle in versioned YAML; plan it, apply it anywhere.",
        epilog="Run `mlspec COMMAND --help` for a command's options. Docs: README.md and docs/.")
    parser.add_argument("--version", action="version", version=f"mlspec {__version__}")
    parser.add_argument("-C", dest="project_dir", default=".", metavar="DIR",
                        help="run as if started in DIR (the project directory)")
    parser.add_argument("-f", "--file", default=None, metavar="FILE",
                        help="root spec file, relative to the project directory (default: mlspec.yaml)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    parser.add_argument("--no-color", action="store_true", help="never colour the output")
    parser.add_argument("-w", "--workspace", default=os.environ.get("MLSPEC_WORKSPACE") or None, metavar="NAME",
                        help="state workspace (default: storage.workspace, or $MLSPEC_WORKSPACE)")
    # the same global options are accepted after the command too (`mlspec validate -f other.yaml`)
    common = _Parser(add_help=False)
    common.add_argument("-C", dest="project_dir", default=argparse.SUPPRESS, metavar="DIR", help=argparse.SUPPRESS)
    common.add_argument("-f", "--file", default=argparse.SUPPRESS, metavar="FILE", help=argparse.SUPPRESS)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    common.add_argument("--no-color", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    common.add_argument("-w", "--workspace", default=argparse.SUPPRESS, metavar="NAME", help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("init", parents=[common], help="create a runnable project")
    p.add_argument("dir", nargs="?", default=None, help="directory to create (default: the project directory)")
    p.add_argument("--template", default="minimal",
                   help="a directory of the package's examples: minimal, churn, dvc-get-started, ... (default: minimal)")
    p.add_argument("--force", action="store_true", help="write into a non-empty directory")

    p = sub.add_parser("validate", parents=[common], help="check the spec: schema, references, graph, expressions")
    add_format_option(p, "validate")
    p.add_argument("--check-imports", action="store_true", help="also import every `run:` target")
    _spec_opts(p)

    p = sub.add_parser("graph", parents=[common], help="print the resource graph")
    add_format_option(p, "graph")
    _spec_opts(p)

    p = sub.add_parser("plan", parents=[common], help="show what an apply would run, change or destroy, and why")
    _plan_opts(p)
    p.add_argument("-o", "--out", default=None, metavar="FILE", help="save the plan for `mlspec apply FILE`")
    p.add_argument("--detailed-exitcode", action="store_true", help="exit 0 no changes, 1 error, 2 changes")

    p = sub.add_parser("apply", parents=[common], help="run the plan: execute steps, record state, artifacts and runs")
    _plan_opts(p, formats=False)
    p.add_argument("--auto-approve", action="store_true", help="do not ask for confirmation")
    p.add_argument("--parallelism", type=int, default=None, metavar="N",
                   help="run at most N steps at once (default: the backend's capacity)")
    p.add_argument("--fail-fast", action="store_true", help="stop everything at the first failed step")
    add_format_option(p, "apply", "json: one JSON object per line (the plan, each event, a summary), for CI systems")

    p = sub.add_parser("show", parents=[common], help="render a saved plan file")
    p.add_argument("planfile")
    add_format_option(p, "show")
    p.add_argument("--verbose", action="store_true")

    p = sub.add_parser("state", parents=[common], help="inspect and repair the recorded state")
    ss = p.add_subparsers(dest="state_command", metavar="SUBCOMMAND")
    q = ss.add_parser("list", parents=[common], help="list recorded resources")
    add_format_option(q, "state list")
    _overrides(q)
    q = ss.add_parser("show", parents=[common], help="show one resource's record")
    q.add_argument("address")
    add_format_option(q, "state show")
    _overrides(q)
    q = ss.add_parser("rm", parents=[common], help="forget a resource (its artifacts stay in the store)")
    q.add_argument("address", nargs="+")
    _overrides(q)
    q = ss.add_parser("pull", parents=[common], help="print the state document (JSON) to stdout")
    _overrides(q)
    q = ss.add_parser("push", parents=[common], help="replace the state with a JSON document (same lineage, serial must move)")
    q.add_argument("path", help="state file to push, or - for stdin")
    q.add_argument("--force", action="store_true", help="accept another lineage or an older serial")
    _overrides(q)
    q = ss.add_parser("restore", parents=[common], help="restore a previous serial of the state")
    q.add_argument("serial", type=int)
    _overrides(q)
    q = ss.add_parser("unlock", parents=[common], help="break a stale lock")
    q.add_argument("lock_id")
    q.add_argument("--force", action="store_true", help="do not ask for confirmation")
    _overrides(q)
    q = ss.add_parser("history", parents=[common], help="list the kept serials")
    add_format_option(q, "state history")
    _overrides(q)

    p = sub.add_parser("models", parents=[common], help="the model registry: versions, gates, aliases and their history")
    mo = p.add_subparsers(dest="models_command", metavar="SUBCOMMAND")
    q = mo.add_parser("list", parents=[common], help="list models, their versions and aliases")
    add_format_option(q, "models list")
    _overrides(q)
    q = mo.add_parser("show", parents=[common], help="a version's model card: lineage, metrics, gates, signature")
    q.add_argument("name", metavar="NAME[@VERSION|@ALIAS]", help="a model; the latest version unless @VERSION or @ALIAS")
    add_format_option(q, "models show")
    _overrides(q)
    q = mo.add_parser("history", parents=[common], help="a model's versions and every alias move")
    q.add_argument("name", metavar="NAME")
    add_format_option(q, "models history")
    _overrides(q)
    q = mo.add_parser("promote", parents=[common], help="move an alias to a version by hand (recorded)")
    q.add_argument("name", metavar="NAME")
    q.add_argument("version", type=int, metavar="VERSION")
    q.add_argument("--alias", required=True, metavar="ALIAS", help="the alias to move, e.g. production")
    q.add_argument("--reason", default="", metavar="TEXT", help="why (recorded in the history)")
    q.add_argument("--force-with-reason", default=None, metavar="TEXT",
                   help="move a protected alias (or to a rejected version), saying why")
    _overrides(q)
    q = mo.add_parser("rollback", parents=[common], help="move an alias back to its previous holder (recorded)")
    q.add_argument("name", metavar="NAME")
    q.add_argument("--alias", required=True, metavar="ALIAS", help="the alias to move back, e.g. production")
    q.add_argument("--to", type=int, default=None, metavar="VERSION", help="this version (default: the previous holder)")
    q.add_argument("--reason", default="", metavar="TEXT", help="why (recorded in the history)")
    q.add_argument("--force-with-reason", default=None, metavar="TEXT",
                   help="move a protected alias to a version that never held it (or to a rejected one), saying why")
    _overrides(q)

    p = sub.add_parser("refresh", parents=[common],
                       help="observe the recorded deployments (running, gone, unhealthy) and record what was seen")
    p.add_argument("address", nargs="*", metavar="ADDR", help="deployment.NAME or NAME (default: every deployment)")
    add_format_option(p, "refresh")
    _overrides(p)
    p = sub.add_parser("rollback", parents=[common],
                       help="roll a deployment back to the version it served before (a rolling update, recorded)")
    p.add_argument("deployment", metavar="DEPLOYMENT", help="deployment.NAME or NAME")
    p.add_argument("--to", type=int, default=None, metavar="VERSION",
                   help="this model version (default: the version served before the current one)")
    p.add_argument("--reason", default="", metavar="TEXT", help="why (recorded in the deployment's history)")
    _overrides(p)
    p = sub.add_parser("destroy", parents=[common],
                       help="stop deployments: show the deletions, ask, leave no process and no open port")
    p.add_argument("address", nargs="*", metavar="ADDR", help="deployment.NAME or NAME (default: every deployment)")
    p.add_argument("--auto-approve", action="store_true", help="do not ask for confirmation")
    _overrides(p)
    p = sub.add_parser("deployments", parents=[common], help="the deployments: what is recorded and what runs")
    ds = p.add_subparsers(dest="deployments_command", metavar="SUBCOMMAND")
    q = ds.add_parser("list", parents=[common], help="list deployments: model, version, URL and live state")
    add_format_option(q, "deployments list")
    _overrides(q)

    p = sub.add_parser("logs", parents=[common], help="print a step's log from its last run")
    p.add_argument("address")
    _overrides(p)

    p = sub.add_parser("runs", parents=[common], help="list and show run records")
    rs = p.add_subparsers(dest="runs_command", metavar="SUBCOMMAND")
    q = rs.add_parser("list", parents=[common])
    add_format_option(q, "runs list")
    q.add_argument("-n", "--limit", type=int, default=20)
    _overrides(q)
    q = rs.add_parser("show", parents=[common])
    q.add_argument("run_id")
    add_format_option(q, "runs show")
    _overrides(q)

    p = sub.add_parser("lineage", parents=[common], help="walk back from a resource or output to data, code and params")
    p.add_argument("address")
    add_format_option(p, "lineage")
    _overrides(p)

    p = sub.add_parser("metrics", parents=[common], help="show and compare metrics")
    ms = p.add_subparsers(dest="metrics_command", metavar="SUBCOMMAND")
    q = ms.add_parser("show", parents=[common])
    add_format_option(q, "metrics show")
    _overrides(q)
    q = ms.add_parser("diff", parents=[common])
    q.add_argument("--base", default=None, metavar="BASE",
                   help="the state to compare with: a serial (N), workspace:NAME, run:ID or a git revision "
                        "(default: the previous state serial)")
    add_format_option(q, "metrics diff")
    _overrides(q)

    p = sub.add_parser("plots", parents=[common], help="draw the outputs steps declare under `plots:` (HTML page)")
    ps = p.add_subparsers(dest="plots_command", metavar="SUBCOMMAND")
    for name, help_ in (("show", "plot the recorded outputs"), ("diff", "overlay a base's outputs on the current ones")):
        q = ps.add_parser(name, parents=[common], help=help_)
        q.add_argument("address", nargs="*", metavar="ADDR",
                       help="only these plots: step.NAME, step.NAME[k=v] or step.NAME.OUTPUT (default: all)")
        if name == "diff":
            q.add_argument("--base", default=None, metavar="BASE",
                           help="the state to compare with, as for `metrics diff` (default: the previous serial)")
        q.add_argument("-o", "--out", default=None, metavar="FILE",
                       help="write the HTML page to FILE (text format: default plots.html)")
        add_format_option(q, f"plots {name}")
        _overrides(q)

    p = sub.add_parser("artifacts", parents=[common], help="fetch and verify artifacts")
    as_ = p.add_subparsers(dest="artifacts_command", metavar="SUBCOMMAND")
    q = as_.add_parser("get", parents=[common], help="copy a step output to DEST (its content checked)")
    q.add_argument("address", help="step.NAME.OUTPUT")
    q.add_argument("dest")
    _overrides(q)
    q = as_.add_parser("verify", parents=[common],
                       help="check every object the state references, and the run-cache (like git fsck)")
    q.add_argument("--repair", action="store_true",
                   help="quarantine corrupt objects and drop run-cache entries that point at them")
    add_format_option(q, "artifacts verify")
    _overrides(q)

    p = sub.add_parser("checkout", parents=[common],
                       help="put the recorded content of outputs with a `path:` back in the project")
    p.add_argument("targets", nargs="*", metavar="ADDR", help="steps or outputs (default: all)")
    add_format_option(p, "checkout")
    _overrides(p)

    p = sub.add_parser("data", parents=[common], help="data contracts: check data against them, draft one from data")
    ds_ = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    q = ds_.add_parser("check", parents=[common], help="check datasets and step outputs against their contracts")
    q.add_argument("addresses", nargs="*", metavar="ADDR",
                   help="dataset.NAME or step.NAME.OUTPUT (default: everything that declares a contract)")
    q.add_argument("--no-cache", action="store_true", help="check again even if this data passed before")
    add_format_option(q, "data check")
    _overrides(q)
    q = ds_.add_parser("infer", parents=[common], help="draft a contract from the data, for review")
    q.add_argument("address", metavar="ADDR", help="dataset.NAME or step.NAME.OUTPUT")
    q.add_argument("-o", "--out", default=None, metavar="FILE", help="write the draft to FILE (default: stdout)")
    _overrides(q)

    p = sub.add_parser("monitor", parents=[common],
                       help="compare a deployment's recent inputs with reference data: drift report (text, JSON, HTML)")
    p.add_argument("names", nargs="*", metavar="NAME", help="monitors to evaluate (default: all)")
    p.add_argument("--current", default=None, metavar="PATH",
                   help="compare this file (csv/parquet) instead of the deployment's request log")
    p.add_argument("--reports", default=None, metavar="DIR", help="where to write NAME.json and NAME.html "
                   "(default: .mlspec/reports/monitors)")
    add_format_option(p, "monitor")
    _overrides(p)

    p = sub.add_parser("diff", parents=[common], help="what changed in the composed spec between two git revisions")
    p.add_argument("--base", default=None, metavar="REV",
                   help="the revision to compare with (default: the merge-base of HEAD with the default branch)")
    p.add_argument("--head", default=None, metavar="REV", help="the revision to compare (default: the working tree)")
    p.add_argument("--format", choices=("text", "json", "markdown"), default="text",
                   help="output format: text, json, markdown (default text)")
    p.add_argument("--exit-code", action="store_true", help="exit 2 when the spec changed, 0 when not")
    _spec_opts(p)

    p = sub.add_parser("review", parents=[common],
                       help="one pull-request comment: spec diff, plan, gates and metrics against the base")
    p.add_argument("--base", default=None, metavar="REV",
                   help="the base revision of the spec diff (default: the merge-base with the default branch)")
    p.add_argument("--base-workspace", default=None, metavar="NAME",
                   help="the workspace whose state the metrics are compared with (default: the one this "
                        "workspace was made from, else the spec's storage.workspace)")
    p.add_argument("--format", choices=("markdown", "text", "json"), default="markdown",
                   help="output format: markdown (the comment), text, json (default markdown)")
    p.add_argument("--plan", default=None, metavar="FILE",
                   help="show this saved plan (`plan -o FILE`, e.g. the one an apply just ran) instead of planning now")
    p.add_argument("-o", "--out", default=None, metavar="FILE", help="also write the comment to FILE")
    p.add_argument("--no-preflight", action="store_true", help="skip backend preflight checks")
    _spec_opts(p)

    p = sub.add_parser("workspace", parents=[common], help="list, create and delete state workspaces")
    ws = p.add_subparsers(dest="workspace_command", metavar="SUBCOMMAND")
    q = ws.add_parser("list", parents=[common], help="list the workspaces of the state store")
    q.add_argument("--format", choices=("text", "json"), default="text", help="output format (default text)")
    _overrides(q)
    q = ws.add_parser("new", parents=[common], help="create a workspace, optionally from another one's state")
    q.add_argument("name", metavar="NAME")
    q.add_argument("--from", dest="from_ws", default=None, metavar="WS",
                   help="start from this workspace's current state (its results are re-used, nothing re-runs)")
    q.add_argument("--exist-ok", action="store_true", help="do nothing (exit 0) if NAME exists already")
    _overrides(q)
    q = ws.add_parser("delete", parents=[common], help="delete a workspace's state (its artifacts stay)")
    q.add_argument("name", metavar="NAME")
    q.add_argument("--missing-ok", action="store_true", help="exit 0 if NAME does not exist")
    _overrides(q)

    p = sub.add_parser("fmt", parents=[common], help="rewrite spec files in the canonical key order and style")
    p.add_argument("paths", nargs="*", metavar="FILE",
                   help="spec files or directories (default: the root spec and its config group files)")
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 listing the files fmt would change")
    p.add_argument("--diff", action="store_true", help="print what would change as a unified diff")

    p = sub.add_parser("backends", parents=[common], help="list installed backends and check the configured one")
    add_format_option(p, "backends")
    _overrides(p)

    p = sub.add_parser("triggers", parents=[common], help="which retraining triggers fire now, and why")
    ts = p.add_subparsers(dest="triggers_command", metavar="SUBCOMMAND")
    q = ts.add_parser("check", parents=[common], help="evaluate every trigger (or NAME...) at the clock; writes nothing")
    q.add_argument("names", nargs="*", metavar="NAME", help="only these triggers")
    q.add_argument("--now", default=None, metavar="TIME",
                   help="evaluate at TIME (epoch seconds or ISO 8601, UTC unless it says) instead of the clock")
    q.add_argument("--detailed-exitcode", action="store_true", help="exit 0 none fires, 1 error, 2 some fire")
    add_format_option(q, "triggers check")
    _spec_opts(q)

    p = sub.add_parser("reconcile", parents=[common],
                       help="refresh deployments, evaluate triggers, apply what fired (for a CI cron)")
    p.add_argument("--now", default=None, metavar="TIME",
                   help="evaluate the triggers at TIME (epoch seconds or ISO 8601) instead of the clock")
    p.add_argument("--dry-run", action="store_true", help="print the decisions and the plan; apply nothing")
    p.add_argument("--lock-timeout", default="0s", metavar="DURATION",
                   help="wait this long for the state lock; default: exit 4 at once if it is held")
    p.add_argument("--parallelism", type=int, default=None, metavar="N", help="run at most N steps at once")
    p.add_argument("--no-preflight", action="store_true", help="skip backend preflight checks")
    _spec_opts(p)
    return parser


def _plan_opts(p: argparse.ArgumentParser, *, formats: bool = True) -> None:
    if formats:
        add_format_option(p, "plan")
    p.add_argument("--target", action="append", default=[], metavar="ADDR",
                   help="plan only ADDR and what it needs upstream (repeatable)")
    p.add_argument("--replace", action="append", default=[], metavar="ADDR",
                   help="force ADDR to run even if up to date (repeatable)")
    p.add_argument("--verbose", action="store_true", help="also list unchanged resources")
    p.add_argument("--lock-timeout", default="0s", metavar="DURATION",
                   help="wait this long for the state lock (e.g. 30s); default: fail at once")
    p.add_argument("--no-preflight", action="store_true", help="skip backend preflight checks")
    _spec_opts(p)


def _subparser(parser: argparse.ArgumentParser, args) -> argparse.ArgumentParser:
    """The parser of the (sub)command the arguments chose: its name is the one to ask for --help."""
    # "command", then the chosen command's own "<name>_command" (argparse sets only the chosen ones)
    for attr in ["command"] + sorted(a for a in vars(args) if a.endswith("_command") and a != "command"):
        name = getattr(args, attr, None)
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not name or not subs or name not in subs[0].choices:
            continue
        parser = subs[0].choices[name]
    return parser


COMMANDS = {
    "init": "mlspec.commands.init",
    "validate": "mlspec.commands.validate",
    "graph": "mlspec.commands.graph",
    "plan": "mlspec.commands.plan",
    "apply": "mlspec.commands.apply",
    "show": "mlspec.commands.plan:run_show",
    "state": "mlspec.commands.state",
    "models": "mlspec.commands.models",
    "refresh": "mlspec.commands.deployments:run_refresh",
    "rollback": "mlspec.commands.deployments:run_rollback",
    "destroy": "mlspec.commands.deployments:run_destroy",
    "deployments": "mlspec.commands.deployments:run_deployments",
    "logs": "mlspec.commands.records:run_logs",
    "runs": "mlspec.commands.records:run_runs",
    "lineage": "mlspec.commands.records:run_lineage",
    "metrics": "mlspec.commands.records:run_metrics",
    "plots": "mlspec.commands.plots:run",
    "artifacts": "mlspec.commands.artifacts:run",
    "backends": "mlspec.commands.backends",
    "checkout": "mlspec.commands.checkout",
    "triggers": "mlspec.commands.triggers",
    "reconcile": "mlspec.commands.reconcile",
    "data": "mlspec.commands.data",
    "monitor": "mlspec.commands.monitor",
    "diff": "mlspec.commands.diff",
    "review": "mlspec.commands.review",
    "workspace": "mlspec.commands.workspace",
    "fmt": "mlspec.commands.fmt",
}


def main(argv: list[str] | None = None) -> int:
    """Run one command with stdout and stderr behind the sensitive-value redactor (mlspec.sensitive): no
    output path (a message, a warning, a --debug traceback) can print a secret the spec declared."""
    from mlspec.sensitive import RedactingStream

    import gc

    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = RedactingStream(sys.stdout), RedactingStream(sys.stderr)
    # A command builds one large, long-lived object graph (a 50,000-step spec is ~1M objects); with the default
    # thresholds the cyclic collector rescans it again and again (4 of 9 s of such a plan). Collect young
    # objects less often; load_spec freezes the spec once built. Restored after, for callers in-process.
    thresholds = gc.get_threshold()
    gc.set_threshold(100_000, 50, 100)
    if argv is None:  # the console script: the process ends with the command (mlspec.gcpause.outlive)
        from mlspec.gcpause import keep_until_exit

        keep_until_exit()
    try:
        return _main(argv)
    finally:
        gc.set_threshold(*thresholds)
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        sys.stdout, sys.stderr = saved


def _main(argv: list[str] | None = None) -> int:
    from mlspec.console import Console

    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:
            # argparse stops at the first positional: leftover KEY=VALUE words are overrides too
            bad = [e for e in extra if e.startswith("-")]
            if bad:
                _subparser(parser, args).error(f"unrecognized arguments: {' '.join(bad)}")
            args.overrides = list(getattr(args, "overrides", []) or []) + extra
    except UsageError:
        return EXIT_ERROR
    if not args.command:
        parser.print_help()
        return EXIT_ERROR
    for cmd, attr, choices in (("state", "state_command", "list, show, rm, pull, push, restore, unlock, history"),
                               ("models", "models_command", "list, show, history, promote, rollback"),
                               ("deployments", "deployments_command", "list"),
                               ("runs", "runs_command", "list, show"), ("metrics", "metrics_command", "show, diff"),
                               ("plots", "plots_command", "show, diff"),
                               ("artifacts", "artifacts_command", "get, verify"),
                               ("triggers", "triggers_command", "check"),
                               ("data", "data_command", "check, infer"),
                               ("workspace", "workspace_command", "list, new, delete")):
        if args.command == cmd and not getattr(args, attr, None):
            print(f"Error: `mlspec {cmd}` needs a subcommand: {choices} (see mlspec {cmd} --help)", file=sys.stderr)
            return EXIT_ERROR
    if args.workspace and hasattr(args, "overrides"):
        args.overrides = list(args.overrides or []) + [f"++storage.workspace={args.workspace}"]
    if isinstance(getattr(args, "address", None), list):
        # `state rm ADDR... key=value`: words that are not addresses are overrides
        words = args.address
        args.address = [w for w in words if "=" not in w.split("[", 1)[0]]
        args.overrides = list(getattr(args, "overrides", []) or []) + [w for w in words if w not in args.address]
    if isinstance(getattr(args, "names", None), list):  # `triggers check NAME... key=value`: likewise
        words = args.names
        args.names = [w for w in words if "=" not in w and not w.startswith(("~", "+"))]
        args.overrides = list(getattr(args, "overrides", []) or []) + [w for w in words if w not in args.names]
    console = Console(color=False if args.no_color else None)
    if args.project_dir not in (".", ""):
        # like `git -C`: every relative path (spec, -o FILE, plan files) is relative to DIR
        try:
            os.chdir(args.project_dir)
        except OSError as exc:
            console.error(f"Error: cannot use -C {args.project_dir}: {exc.strerror}")
            return EXIT_ERROR
        args.resume_dir = args.project_dir
        args.project_dir = "."
    target = COMMANDS[args.command]
    mod_name, _, func = target.partition(":")
    try:
        module = importlib.import_module(mod_name)
        return getattr(module, func or "run")(args, console)
    except MlspecError as exc:
        console.error(exc.render())
        if args.debug:
            traceback.print_exc()
        return exc.exit_code
    except KeyboardInterrupt:
        console.error("Interrupted.")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_ERROR
    except Exception:  # an unexpected error is a bug: say so, keep the traceback for the report
        if args.debug:
            traceback.print_exc()
        else:
            import tempfile

            from mlspec.sensitive import RedactingStream

            fd, path = tempfile.mkstemp(prefix="mlspec-crash-", suffix=".log")
            with os.fdopen(fd, "w") as fh:
                traceback.print_exc(file=RedactingStream(fh))
            console.error(f"mlspec hit an internal error (a bug): {sys.exc_info()[1]!r}\n"
                          f"  The traceback is in {path}; please attach it to a bug report, or rerun with --debug.")
        return EXIT_BUG


if __name__ == "__main__":
    raise SystemExit(main())
