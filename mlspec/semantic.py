"""Semantic checks beyond the schema: references resolve, the graph is acyclic, names and expressions parse.

Written defensively: it runs even when the schema found problems, so the user sees every error at once.
"""

from __future__ import annotations

from typing import Any, Mapping

from mlspec.addresses import format_value, parse_address
from mlspec.compose import SourceMap
from mlspec.errors import Diagnostic, did_you_mean
from mlspec.gates import parse_gate

MAX_INSTANCES = 10_000
BUILTIN_BACKEND_TYPES = ("local", "ray", "docker")


def _metric_known(metric, declared) -> bool:
    """A declared metric name covers itself and, for a nested metric, the dotted names under it."""
    return isinstance(metric, str) and any(metric == d or metric.startswith(d + ".") for d in declared)


def _m(d: Any) -> Mapping:
    return d if isinstance(d, dict) else {}


# (field, lowest, highest, allowed values as shown); day of week 7 is also accepted as Sunday, as in cron
_CRON_FIELDS = (("minute", 0, 59, "0-59"), ("hour", 0, 23, "0-23"), ("day of month", 1, 31, "1-31"),
                ("month", 1, 12, "1-12 or JAN-DEC"), ("day of week", 0, 7, "0-6 or SUN-SAT"))


_CRON_MACROS = ("@hourly", "@daily", "@weekly", "@monthly", "@yearly")


def _cron_range_error(fields: list) -> str:
    """Name the first numeric value outside its field's range ('' if none): croniter does not say which."""
    for (label, lo, hi, shown), text in zip(_CRON_FIELDS, fields):
        for part in text.split(","):
            for value in part.partition("/")[0].split("-"):
                if value.isdigit() and not lo <= int(value) <= hi:
                    return f"{label} {int(value)} is out of range ({shown})"
    return ""


def cron_error(expr: Any) -> str:
    """'' when ``expr`` is a valid 5-field cron expression (or @daily etc.), else why not."""
    if not isinstance(expr, str) or not expr.strip():
        return "a schedule is a cron expression string, e.g. \"0 2 * * *\""
    from croniter import croniter

    text = expr.strip()
    if not text.startswith("@") and len(text.split()) != 5:
        return (f"cron expression {expr!r} has {len(text.split())} fields; expected 5 "
                "(minute hour day-of-month month day-of-week), e.g. \"0 2 * * *\"")
    if text.startswith("@") and text not in _CRON_MACROS:
        return f"unknown cron macro {expr!r}; use one of {', '.join(_CRON_MACROS)} or 5 fields, e.g. \"0 2 * * *\""
    if not text.startswith("@"):
        bad = _cron_range_error(text.split())
        if bad:
            return f"invalid cron expression {expr!r}: {bad}"
    try:
        croniter(text)
    except Exception as exc:  # croniter raises several error types for bad expressions
        return f"invalid cron expression {expr!r}: {exc}"
    return ""


def _all_keys_text(node: Any) -> bool:
    stack = [node]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for k in node:
                if not isinstance(k, str):
                    return False
            stack.extend(v for v in node.values() if isinstance(v, (dict, list)))
        elif isinstance(node, list):
            stack.extend(v for v in node if isinstance(v, (dict, list)))
    return True


def _topological_order(deps: Mapping) -> list | None:
    """The nodes of ``deps`` (node -> the nodes it needs, all keys of ``deps``) in a topological order, or
    None when they form a cycle. Kahn's algorithm: linear, where graphlib's prepare() and static_order()
    took 0.5 s at 50,000 steps."""
    users: dict = {n: [] for n in deps}
    waiting = {}
    for n, ups in deps.items():
        waiting[n] = len(ups)
        for u in ups:
            users[u].append(n)
    ready = [n for n, k in waiting.items() if k == 0]
    out = []
    while ready:
        n = ready.pop()
        out.append(n)
        for m in users[n]:
            waiting[m] -= 1
            if waiting[m] == 0:
                ready.append(m)
    return out if len(out) == len(deps) else None


class _Checker:
    def __init__(self, data: Mapping, smap: SourceMap, backend_types: tuple, format_names: tuple = ()):
        self.data, self.smap, self.backend_types = data, smap, backend_types
        self.format_names = format_names
        self.diags: list[Diagnostic] = []
        self.datasets = _m(data.get("datasets"))
        self.steps = _m(data.get("steps"))
        self.models = _m(data.get("models"))
        self.deployments = _m(data.get("deployments"))
        self.monitors = _m(data.get("monitors"))
        self.triggers = _m(data.get("triggers"))
        self.backends = _m(data.get("backends"))
        self._parsed: dict = {}

    def err(self, path, code, message, prefer_key=False):
        self.diags.append(self.smap.diag(path, code, message, prefer_key=prefer_key))

    # --- references ---------------------------------------------------------------------------
    def parse(self, ref: str):
        """parse_address, once per text (every step input is read by check_ref and again for the graph)."""
        a = self._parsed.get(ref)
        if a is None:
            try:
                a = parse_address(ref)
            except ValueError as exc:
                a = exc
            self._parsed[ref] = a
        if isinstance(a, ValueError):
            raise a
        return a

    def outputs_of(self, step: str) -> list[str]:
        memo = self.__dict__.setdefault("_outputs_memo", {})  # asked twice per reference: once per step
        if step not in memo:
            outs = _m(self.steps.get(step)).get("outputs")
            memo[step] = [o for o in outs if isinstance(o, str)] if isinstance(outs, (dict, list)) else []
        return memo[step]

    def matrix_of(self, step: str, _seen: frozenset = frozenset()) -> dict:
        """Every matrix key an instance of ``step`` is addressed by -> its values: its own matrix and the
        keys it inherits by fanning out with its inputs (not through gathers, not with ``fan_out: false``)."""
        memo = self.__dict__.setdefault("_matrix_memo", {})
        if step in memo:
            return memo[step]
        st = _m(self.steps.get(step))
        keys: dict = {}
        if st.get("fan_out", True) is not False:
            for a in self.input_refs(step):
                if a.kind == "step" and a.name in self.steps and not a.selector and not a.gather \
                        and a.name not in _seen | {step}:
                    keys.update(self.matrix_of(a.name, _seen | {step}))
        for k, vals in _m(st.get("matrix")).items():
            if isinstance(vals, list):
                keys[str(k)] = vals
        memo[step] = keys
        return keys

    def metrics_of(self, step: str) -> list[str]:
        ms = _m(self.steps.get(step)).get("metrics")
        return [o for o in ms if isinstance(o, str)] if isinstance(ms, list) else []

    def check_ref(self, path, ref, allowed: tuple, *, need_output: bool | None = None) -> tuple | None:
        """Check an address; returns (kind, name, output) when it resolves."""
        if not isinstance(ref, str):
            return None
        try:
            a = self.parse(ref)
        except ValueError as exc:
            self.err(path, "bad-reference", str(exc))
            return None
        if a.kind not in allowed:
            self.err(path, "bad-reference", f"'{ref}' must name a {' or '.join(allowed)}")
            return None
        table = {"dataset": self.datasets, "step": self.steps, "model": self.models,
                 "deployment": self.deployments, "monitor": self.monitors, "trigger": self.triggers}[a.kind]
        if a.name not in table:
            known = sorted(map(str, table))  # keys may be numbers too
            self.err(path, "dangling-reference", f"'{ref}' refers to {a.kind} '{a.name}', which is not declared"
                     + (did_you_mean(a.name, known) or (f" (declared: {', '.join(known)})" if known else "")))
            return None
        if a.kind == "step":
            matrix = self.matrix_of(a.name) if (a.selector or a.gather) else {}
            if a.gather and not matrix:
                self.err(path, "bad-selector", f"'{ref}': step '{a.name}' does not fan out (no matrix), so there is "
                         f"nothing to gather; use step.{a.name}" + (f".{a.output}" if a.output else ""))
                return None
            if a.selector:
                problems = []
                for k, v in a.selector:
                    vals = matrix.get(k)
                    if not isinstance(vals, list):
                        problems.append(f"step '{a.name}' has no matrix key '{k}'" + (
                            did_you_mean(k, list(map(str, matrix))) or
                            (f" (its keys: {', '.join(sorted(matrix))})" if matrix else " (it does not fan out)")))
                    elif v not in [format_value(x) for x in vals]:
                        problems.append(f"{k}={v} is not one of the matrix values "
                                        f"{', '.join(format_value(x) for x in vals)}")
                missing = sorted(set(matrix) - {k for k, _ in a.selector})
                if not problems and missing and a.output:  # data comes from one instance
                    problems.append(f"name every matrix key of step '{a.name}' (missing: {', '.join(missing)}), or "
                                    f"gather all instances with step.{a.name}[*]" + (f".{a.output}" if a.output else ""))
                if problems:  # one line per reference, however many keys are wrong
                    self.err(path, "bad-selector", f"'{ref}': " + "; ".join(problems))
                    return None
            if need_output is True and not a.output:
                self.err(path, "bad-reference", f"'{ref}' must name an output: step.{a.name}.OUTPUT")
                return None
            if need_output is False and a.output:
                self.err(path, "bad-reference", f"'{ref}' must name a step (step.{a.name}), not an output")
                return None
            if a.output and a.output not in self.outputs_of(a.name):
                outs = self.outputs_of(a.name)
                self.err(path, "dangling-reference", f"'{ref}': step '{a.name}' has no output '{a.output}'"
                         + (did_you_mean(a.output, outs) or (f" (outputs: {', '.join(outs)})" if outs
                                                               else " (it declares no outputs)")))
                return None
        elif a.output:
            self.err(path, "bad-reference", f"'{ref}': a {a.kind} has no outputs; use {a.kind}.{a.name}")
            return None
        return a.kind, a.name, a.output

    def check_backend_name(self, path, name):
        if not isinstance(name, str):
            return
        if name in self.backends or name in self.backend_types:
            return
        choices = sorted(set(map(str, self.backends)) | set(self.backend_types))
        self.err(path, "unknown-backend", f"unknown backend '{name}'{did_you_mean(name, choices)} "
                 f"(declare it under `backends:` or use an installed type: {', '.join(self.backend_types)})")

    # --- per section ----------------------------------------------------------------------------
    def check_keys(self, node: Any, path: tuple = ()) -> None:
        """Every mapping key is text: a number or boolean key (YAML `1:`, `true:`) cannot name a param,
        an option or a column, and would break the spec's digest and the state."""
        if not path and _all_keys_text(node):  # the usual case, found without building 450,000 key paths
            return
        if isinstance(node, dict):
            for k, v in node.items():
                shown = str(k).lower() if isinstance(k, bool) else str(k)
                if not isinstance(k, str):
                    kind = "a boolean" if isinstance(k, bool) else "a number" if isinstance(k, (int, float)) \
                        else f"a {type(k).__name__}"
                    self.err(path + (shown,), "bad-key", f"key {shown} is {kind}, not text; quote it "
                             f"('{shown}':) to use it as a name", prefer_key=True)
                self.check_keys(v, path + (shown,))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                self.check_keys(v, path + (i,))

    def run(self) -> list[Diagnostic]:
        self.check_keys(self.data)
        self.check_steps()
        self.check_output_paths()
        self.check_cycles()
        self.check_models()
        self.check_deployments()
        self.check_monitors()
        self.check_triggers()
        self.check_residency()
        self.check_formats()
        return self.diags

    def check_steps(self):
        for name, step in self.steps.items():
            step = _m(step)
            base = ("steps", name)
            for in_name, ref in _m(step.get("inputs")).items():
                where = base + ("inputs", in_name)
                if isinstance(ref, dict):
                    ref, where = ref.get("from"), where + ("from",)
                r = self.check_ref(where, ref, ("dataset", "step"))
                if r and r[0] == "step" and not r[2]:
                    self.err(where, "bad-reference",
                             f"'{ref}' must name an output: step.{r[1]}.OUTPUT"
                             + (f" (outputs: {', '.join(self.outputs_of(r[1]))})" if self.outputs_of(r[1]) else ""))
            self.check_plots(name, step, base)
            outs = step.get("outputs")
            if isinstance(outs, list):
                seen = set()
                for i, o in enumerate(outs):
                    if isinstance(o, str) and o in seen:  # items may be anything here (lists too)
                        self.err(base + ("outputs", i), "duplicate-output",
                                 f"output '{o}' is declared twice in step '{name}'")
                    seen.add(o) if isinstance(o, str) else None
            if isinstance(outs, (list, dict)):
                for i, mname in enumerate(self.metrics_of(name)):
                    if mname.split(".", 1)[0] in self.outputs_of(name):  # `model.loss` would be read from output `model`
                        self.err(base + ("metrics", i), "duplicate-output",
                                 f"'{mname}' is both an output and a metric of step '{name}'")
            matrix = step.get("matrix")
            if isinstance(matrix, dict):
                n = 1
                for k, vals in matrix.items():
                    if not isinstance(vals, list):
                        continue
                    n *= max(len(vals), 1)
                    seen_texts: set = set()
                    for i, v in enumerate(vals):
                        text = format_value(v) if isinstance(v, (str, int, float, bool)) else None
                        if text is not None and text in seen_texts:  # at the repeat, like the schema's check
                            self.err(base + ("matrix", k, i), "matrix-duplicate",
                                     f"matrix value {text} is listed twice for '{k}'")
                            break
                        seen_texts.add(text)
                    for i, v in enumerate(vals):
                        if isinstance(v, str) and any(c in v for c in ",=[]"):
                            self.err(base + ("matrix", k, i), "matrix-value",
                                     f"matrix value {v!r} may not contain ',', '=', '[' or ']' (it becomes part of "
                                     "the instance address)")
                if n > MAX_INSTANCES:
                    self.err(base + ("matrix",), "matrix-too-large",
                             f"the matrix expands to {n} instances; the limit is {MAX_INSTANCES}")
                params = _m(step.get("params"))
                for k in matrix:
                    if isinstance(params.get(k), dict):
                        self.err(base + ("matrix", k), "matrix-conflict",
                                 f"matrix key '{k}' would replace the mapping in params.{k}")
            if "backend" in step:
                self.check_backend_name(base + ("backend",), step.get("backend"))
            self.check_deps(name, step.get("deps"))
            cmd = step.get("cmd")
            if isinstance(cmd, str):
                import re

                for m in re.finditer(r"\$\{(inputs|outputs|params)\.([A-Za-z0-9_-]+)\}", cmd):
                    group, key = m.groups()
                    table = {"inputs": list(_m(step.get("inputs"))), "outputs": self.outputs_of(name),
                             "params": list(_m(step.get("params"))) + list(_m(step.get("matrix")))}[group]
                    if key not in table:
                        self.err(base + ("cmd",), "bad-placeholder",
                                 f"${{{group}.{key}}} in cmd: step '{name}' has no {group[:-1]} '{key}'"
                                 + did_you_mean(key, list(map(str, table))))

    def check_formats(self) -> None:
        """Every declared format is a built-in or an installed plugin's (mlspec.formats); save_args are for
        values a `run` function returns (a `cmd` writes its own files)."""
        from mlspec.formats import ALIASES, BUILTIN

        by_ext = {e.lstrip("."): f.name for f in BUILTIN.values() for e in f.extensions}  # xlsx -> excel

        def check(path, fmt, extra=()):
            if isinstance(fmt, str) and fmt not in self.format_names and fmt not in ALIASES and fmt not in extra:
                known = list(extra) + list(self.format_names)
                hint = f"; did you mean '{by_ext[fmt.lower()]}'?" if fmt.lower() in by_ext else did_you_mean(fmt, known)
                self.err(path, "unknown-format", f"unknown format '{fmt}'" + hint
                         + f" (known: {', '.join(known)}; more come from plugins of the mlspec.formats group)")

        for dname, ds in self.datasets.items():
            check(("datasets", dname, "format"), _m(ds).get("format"), ("auto",))
        for name, step in self.steps.items():
            step = _m(step)
            for in_name, decl in _m(step.get("inputs")).items():
                check(("steps", name, "inputs", in_name, "format"), _m(decl).get("format"))
            for out, decl in _m(step.get("outputs")).items():
                check(("steps", name, "outputs", out, "format"), _m(decl).get("format"))
                if step.get("cmd") and _m(decl).get("save_args"):
                    self.err(("steps", name, "outputs", out, "save_args"), "save-args-on-cmd",
                             f"save_args apply to values a `run` function returns; step '{name}' runs a `cmd`, "
                             f"which writes {out} itself: drop save_args (its `format` still names the file's format)")

    def check_output_paths(self) -> None:
        """Declared output paths: one owner each, not nested in another, not on a matrix step (its instances
        would overwrite each other), not a declared dataset's file."""
        owners: dict[str, tuple] = {}
        for name, step in self.steps.items():
            outs = _m(step).get("outputs")
            if not isinstance(outs, dict):
                continue
            for out, decl in outs.items():
                raw = decl if isinstance(decl, str) else _m(decl).get("path")
                if not isinstance(raw, str) or not raw.strip("/"):
                    continue
                where = ("steps", name, "outputs", out) + (() if isinstance(decl, str) else ("path",))
                path = raw.strip("/")
                if self.matrix_of(name):
                    self.err(where, "output-path", f"step '{name}' fans out ({', '.join(sorted(self.matrix_of(name)))}), "
                             f"so its instances would all write {raw}; give the path to a step that gathers or selects "
                             "one instance instead")
                    continue
                for other, owner in owners.items():
                    if other == path or other.startswith(path + "/") or path.startswith(other + "/"):
                        self.err(where, "output-path", f"output path {raw} overlaps {other}, the path of "
                                 f"step.{owner[0]}.{owner[1]}; give each output its own path")
                        break
                else:
                    owners[path] = (name, out)
        for dname, ds in self.datasets.items():
            uri = _m(ds).get("uri")
            if isinstance(uri, str) and uri.strip("/") in owners:
                owner = owners[uri.strip("/")]
                self.err(("datasets", dname, "uri"), "output-path",
                         f"{uri} is the path of step.{owner[0]}.{owner[1]}; read it as that step's output instead")

    def check_deps(self, name: str, deps: Any) -> None:
        """A file listed once; keys only of a YAML, JSON or TOML file (malformed entries: the schema's)."""
        seen: set = set()
        for i, dep in enumerate(deps if isinstance(deps, list) else ()):
            path = dep.get("path") if isinstance(dep, dict) else dep
            if not isinstance(path, str):
                continue
            where = ("steps", name, "deps", i)
            if path in seen:
                self.err(where, "duplicate-dep", f"'{path}' is listed twice in the deps of step '{name}'; "
                         "list it once (as a path, or with the keys the step reads)")
            seen.add(path)
            if isinstance(dep, dict) and not path.lower().endswith((".yaml", ".yml", ".json", ".toml")):
                self.err(where + ("path",), "deps-format", f"'{path}': keys can be named only in a .yaml, .yml, "
                         ".json or .toml file; list other files as a plain path")

    def input_refs(self, name: str) -> list:
        """The parsed addresses of a step's inputs (unparsable ones are reported by check_ref)."""
        if not hasattr(self, "_input_refs"):
            self._input_refs = {}
            for n, step in self.steps.items():
                refs = []
                for ref in _m(_m(step).get("inputs")).values():
                    if isinstance(ref, dict):
                        ref = ref.get("from")
                    try:
                        if isinstance(ref, str):
                            refs.append(self.parse(ref))
                    except ValueError:
                        pass
                self._input_refs[n] = refs
        return self._input_refs[name]

    def step_deps(self) -> dict:
        return {n: {a.name for a in self.input_refs(n) if a.kind == "step" and a.name in self.steps}
                for n in self.steps}

    def check_cycles(self):
        deps = self.step_deps()
        import graphlib

        order = _topological_order(deps)
        try:
            if order is None:  # graphlib names the cycle
                graphlib.TopologicalSorter(deps).prepare()
        except graphlib.CycleError as exc:
            cyc = list(exc.args[1])  # each step feeds the next: data-flow order
            # rotate so the cycle starts at its smallest name: stable output
            body = cyc[:-1]
            i = body.index(min(body))
            body = body[i:] + body[:i]
            text = " -> ".join(f"step.{n}" for n in body + [body[0]])
            self.err(("steps", body[0]), "cycle", f"the steps form a cycle (each reads an output of the one before): {text}", prefer_key=True)
            return
        if order is None:  # pragma: no cover - Kahn's algorithm stops short only on a cycle
            return
        # matrix keys may not repeat upstream fan-out keys
        coords: dict[str, set] = {}
        for name in order:
            step = _m(self.steps[name])
            inherited: set = set()
            for a in self.input_refs(name):
                if a.kind == "step" and a.name in coords and not a.selector and not a.gather \
                        and step.get("fan_out", True) is not False:
                    inherited |= coords[a.name]
            own = set(_m(step.get("matrix")))
            for k in sorted(own & inherited, key=str):
                self.err(("steps", name, "matrix", k), "matrix-conflict",
                         f"matrix key '{k}' is already fanned out by an upstream step; rename it")
            coords[name] = own | inherited

    def check_plots(self, name, step, base):
        """`plots:` keys name the step's declared outputs."""
        outs = self.outputs_of(name)
        for out in _m(step.get("plots")):
            if out not in outs:
                self.err(base + ("plots", out), "unknown-output",
                         f"plot of '{out}', which step '{name}' does not declare under `outputs:`"
                         + (did_you_mean(str(out), outs) or (f" (outputs: {', '.join(outs)})" if outs else "")),
                         prefer_key=True)

    def check_models(self):
        for name, model in self.models.items():
            model = _m(model)
            base = ("models", name)
            src = self.check_ref(base + ("from",), model.get("from"), ("step",), need_output=True) \
                if "from" in model else None
            metrics_step = None
            if "metrics" in model:
                r = self.check_ref(base + ("metrics",), model.get("metrics"), ("step",), need_output=False)
                if r:
                    metrics_step = r[1]
                    if not self.metrics_of(metrics_step):
                        self.err(base + ("metrics",), "no-metrics",
                                 f"step '{metrics_step}' declares no `metrics:`; list the metrics it returns")
            known_metrics = self.metrics_of(metrics_step) if metrics_step else (
                self.metrics_of(src[1]) if src else [])
            for metric, expr in _m(model.get("gates")).items():
                try:
                    parse_gate(expr)
                except ValueError as exc:
                    self.err(base + ("gates", metric), "bad-gate", str(exc))
                if known_metrics and not _metric_known(metric, known_metrics):
                    self.err(base + ("gates", metric), "unknown-metric",
                             f"gate on '{metric}', which the metrics step does not produce"
                             + (did_you_mean(str(metric), known_metrics) or f" (metrics: {', '.join(known_metrics)})"),
                             prefer_key=True)
                elif not known_metrics and "metrics" not in model:
                    self.err(base + ("gates", metric), "no-metrics",
                             "gates need `metrics: step.NAME` naming the step that computes them", prefer_key=True)
            for sub, key in (("promote", "if_better"), ("select", "metric")):
                metric = _m(model.get(sub)).get(key)
                if isinstance(metric, str) and known_metrics and not _metric_known(metric, known_metrics):
                    self.err(base + (sub, key), "unknown-metric",
                             f"'{metric}' is not a metric of the metrics step"
                             + (did_you_mean(metric, known_metrics) or f" (metrics: {', '.join(known_metrics)})"))

    def aliases_of(self, model: str) -> list[str]:
        alias = _m(_m(self.models.get(model)).get("promote")).get("alias")
        pins = [a for a in _m(_m(self.models.get(model)).get("pin")) if isinstance(a, str) and a != alias]
        return ([alias] if isinstance(alias, str) else []) + sorted(pins)

    def check_deployments(self):
        for name, dep in self.deployments.items():
            dep = _m(dep)
            base = ("deployments", name)
            ref = dep.get("model")
            if isinstance(ref, str) and "@" in ref:
                model, _, tag = ref.partition("@")
                if model not in self.models:
                    known = sorted(map(str, self.models))
                    self.err(base + ("model",), "dangling-reference",
                             f"'{ref}' refers to model '{model}', which is not declared"
                             + (did_you_mean(model, known) or (f" (declared: {', '.join(known)})" if known else "")))
                elif not tag.isdigit() and tag not in self.aliases_of(model):
                    aliases = self.aliases_of(model)
                    self.err(base + ("model",), "unknown-alias",
                             f"model '{model}' is never promoted to alias '{tag}'"
                             + (did_you_mean(tag, aliases) or (f" (it promotes to: {', '.join(aliases)})" if aliases
                                                               else "; add `promote: {alias: " + tag + "}` to it")))
            if "backend" in dep:
                self.check_backend_name(base + ("backend",), dep.get("backend"))
        ports: dict = {}
        for name, dep in self.deployments.items():
            port = _m(dep).get("port")
            if isinstance(port, int) and not isinstance(port, bool):
                if port in ports:
                    self.err(("deployments", name, "port"), "port-conflict",
                             f"port {port} is also used by deployment '{ports[port]}'")
                ports.setdefault(port, name)

    def check_monitors(self):
        for name, mon in self.monitors.items():
            mon = _m(mon)
            base = ("monitors", name)
            dep = mon.get("deployment")
            if isinstance(dep, str) and dep not in self.deployments:
                known = sorted(map(str, self.deployments))
                self.err(base + ("deployment",), "dangling-reference",
                         f"deployment '{dep}' is not declared"
                         + (did_you_mean(dep, known) or (f" (declared: {', '.join(known)})" if known else "")))
            if "reference" in mon:
                r = self.check_ref(base + ("reference",), mon.get("reference"), ("dataset", "step"))
                if r and r[0] == "step" and not r[2]:
                    self.err(base + ("reference",), "bad-reference",
                             f"'{mon.get('reference')}' must name a step output: step.{r[1]}.OUTPUT")
            labels = mon.get("labels")
            if isinstance(labels, dict) and "from" in labels:
                r = self.check_ref(base + ("labels", "from"), labels.get("from"), ("dataset", "step"))
                if r and r[0] == "step" and not r[2]:
                    self.err(base + ("labels", "from"), "bad-reference",
                             f"'{labels.get('from')}' must name a step output: step.{r[1]}.OUTPUT")
            if "schedule" in mon:
                msg = cron_error(mon.get("schedule"))
                if msg:
                    self.err(base + ("schedule",), "bad-cron", msg)

    def check_triggers(self):
        for name, trig in self.triggers.items():
            trig = _m(trig)
            base = ("triggers", name)
            if "schedule" in trig:
                msg = cron_error(trig.get("schedule"))
                if msg:
                    self.err(base + ("schedule",), "bad-cron", msg)
            if "dataset" in trig:
                self.check_ref(base + ("dataset",), trig.get("dataset"), ("dataset",))
            mon = trig.get("monitor")
            if isinstance(mon, str) and mon not in self.monitors:
                known = sorted(map(str, self.monitors))
                self.err(base + ("monitor",), "dangling-reference", f"monitor '{mon}' is not declared"
                         + (did_you_mean(mon, known) or (f" (declared: {', '.join(known)})" if known else "")))
            targets = trig.get("apply")
            if isinstance(targets, list):
                for i, ref in enumerate(targets):
                    self.check_ref(base + ("apply", i), ref, ("dataset", "step", "model", "deployment", "monitor"))

    def check_residency(self) -> None:
        """Policy data_residency (mlspec.policies), reported here too: it depends on the spec alone, so it is
        a located diagnostic of `mlspec validate` and stops every command before anything is planned."""
        if _m(self.data.get("policies")).get("data_residency", True) is False:
            return
        from mlspec.policies import residency_violations

        for v in residency_violations(self.data):
            self.err(v.path, "residency", v.message, prefer_key=True)


def semantic_diagnostics(data: Mapping, smap: SourceMap, backend_types: tuple = BUILTIN_BACKEND_TYPES,
                         format_names: tuple | None = None) -> list[Diagnostic]:
    if format_names is None:
        from mlspec.formats import BUILTIN

        format_names = tuple(BUILTIN)
    return _Checker(data, smap, backend_types, format_names).run()
