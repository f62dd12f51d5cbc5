"""The deployment kind: a model version served as a long-running service on a backend (docs/deployments.md).

``deployments.NAME`` serves ``MODEL@ALIAS`` (follows the alias) or ``MODEL@VERSION`` on a port with N replicas.
Its state record ``resources["deployment.NAME"]`` holds what was started: the version served, its content
hash, the port, the backend, the settings, a keyed fingerprint of the token (never the token), the backend's
own record (pids, start times, run directory), what `mlspec refresh` last observed, a hold set by `mlspec
rollback`, and the history of every rollout.

Planning (``decide``, pure): the desired version is the alias's holder in the model's registry *after* the
model resource (its outputs tell which content it holds: known content resolves through the registry; new
content may take the alias, known after apply). Against the record that gives

* ``+`` create: nothing recorded, or refresh saw the service gone;
* ``~`` update (a rolling update, no request fails): another version, replicas, drain/log/limits settings, a
  rotated token, or refresh saw it degraded or serving another version;
* ``-/+`` replace: the port or the backend changed, refresh saw it unhealthy, or ``--replace``;
* ``-`` delete: removed from the spec (the service is stopped).

Applying (``start``) resolves the version again from the registry as the model resource left it, and calls
the backend's service API (mlspec.backends.api: deploy_service / update_service / remove_service).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Mapping

from mlspec.core.kind import Change, Done, Node, Outcome, ResourceKind, register
from mlspec.core.types import Action, Reason, ReasonCode, Status, Verdict

TOKEN_ENV = "MLSPEC_SERVE_TOKEN"
STORE_OPTIONS_ENV = "MLSPEC_SERVE_STORE_OPTIONS"
HISTORY_KEEP = 100


@dataclass(frozen=True)
class DeploymentItem:
    deployment: object  # mlspec.spec.Deployment
    model: object  # mlspec.spec.Model (None when the spec does not declare it: validation refuses that)
    backend: object  # mlspec.spec.BackendConfig the deployment is served on


class _BackendRef:
    """What Spec.backend_for reads of a step: its `backend:` name."""

    def __init__(self, backend: str):
        self.backend = backend


def backend_id(name, btype) -> str:
    """What a deployment is served on, for comparison: a named entry of `backends:`, or a backend type. The
    top-level backend ("default") and a bare type resolve to the type, so `backend: local` on a deployment
    stays the same backend when the top-level one switches (`apply backend=ray` trains on Ray, serves here)."""
    return btype or "local" if name in (None, "", "default", btype) else name


def backend_config(spec, dep):
    return spec.backend_for(_BackendRef(dep.backend))


def request_log_url(artifacts_url: str, workspace: str, deployment: str) -> str:
    """Where a deployment's request log lives: under the artifact store, per workspace and deployment."""
    return f"{artifacts_url.rstrip('/')}/requests/{workspace}/{deployment}"


def settings_of(dep) -> dict:
    """The deployment settings a rollout applies (changing one rolls the service out again)."""
    return {"replicas": dep.replicas, "drain": dep.drain, "log": dep.log, "limits": dict(dep.limits)}
    # ready_timeout is not a setting of the service: changing it rolls nothing out


def desired_version(dep, model, reg: Mapping, model_outputs: Mapping | None) -> tuple:
    """(version or None, why it is unknown): the version ``dep`` should serve, given the model's registry and
    the model resource's outputs in this plan/apply (None: not known yet). Pure."""
    from mlspec.kinds.model import by_hash, pin_moves

    ref = dep.model_ref
    if ref.isdigit():
        return int(ref), ""
    name = dep.model_name
    if model_outputs is not None and model is not None:
        h = model_outputs.get("model")
        if h is None or by_hash(reg, h) is None:
            return None, (f"{name}@{ref}: model.{name} may register a new version that takes {ref} "
                          "(known after apply)")
        for alias, _frm, to in pin_moves(model, reg)[0]:
            if alias == ref:
                return to, ""
    elif model_outputs is None:
        return None, f"{name}@{ref}: model.{name} is known after apply"
    return (reg.get("aliases") or {}).get(ref), ""


def held(record: Mapping | None, version) -> dict | None:
    """The hold `mlspec rollback` set, while the spec still asks for the version it rolled back from."""
    hold = (record or {}).get("hold")
    if hold and version is not None and hold.get("while") == version:
        return hold
    return None


class DeploymentKind(ResourceKind):
    name = "deployment"
    order = 40

    def nodes(self, spec) -> list[Node]:
        out = []
        for name, d in sorted(spec.deployments.items()):
            item = DeploymentItem(d, spec.models.get(d.model_name), backend_config(spec, d))
            out.append(Node(f"deployment.{name}", self.name, (f"model.{d.model_name}",), item))
        return out

    # --- planning -------------------------------------------------------------------------------
    def gather(self, spec, nodes, state, ctx, facts) -> None:
        """The model registries, the token's keyed fingerprint; and a deployment on a backend that cannot
        serve, or with a token written in the clear, stops the plan here (one line naming it)."""
        from mlspec.backends.registry import load_backend_class
        from mlspec.errors import MlspecError
        from mlspec.fingerprint import secret_fingerprint

        out = facts.models.setdefault("deployments", {})
        checked: dict = {}
        for node in nodes:
            item: DeploymentItem = node.item
            dep, cfg = item.deployment, item.backend
            if cfg.type not in checked:
                cls = load_backend_class(cfg.type)
                checked[cfg.type] = bool(getattr(cls, "supports_services", False))
            if not checked[cfg.type]:
                where = f"backend '{cfg.name}' ({cfg.type})" if cfg.name not in ("default", cfg.type) \
                    else f"backend '{cfg.type}'"
                raise MlspecError(f"deployment '{dep.name}': {where} cannot serve models yet",
                                  hint=f"serve it on the local backend: `backend: local` under "
                                       f"deployments.{dep.name} (steps may still run on {cfg.type})")
            token_fp = None
            if dep.token is not None:
                if ("deployments", dep.name, "token") not in spec.sensitive.paths:
                    raise MlspecError(f"deployments.{dep.name}.token is written in the clear: a token is a secret",
                                      hint="declare it under `secrets:` and write `token: ${secrets.NAME}` "
                                           "(docs/deployments.md#tokens)")
                token_fp = secret_fingerprint(str.__str__(dep.token), state.fingerprint_key)
            reg = state.resources.get(f"model.{dep.model_name}") or {}
            out[node.address] = {"registry": {"aliases": dict(reg.get("aliases") or {}),
                                              "versions": [{"version": v.get("version"), "hash": v.get("hash"),
                                                            "status": v.get("status")}
                                                           for v in reg.get("versions") or ()]},
                                 "token": token_fp}

    def decide(self, node: Node, record: Mapping | None, facts, known: Mapping, forced: bool) -> Change:
        item: DeploymentItem = node.item
        dep, cfg = item.deployment, item.backend
        g = (facts.models.get("deployments") or {}).get(node.address) or {"registry": {}, "token": None}
        rec = record if record and record.get("kind") == self.name else None
        version, unknown = desired_version(dep, item.model, g["registry"], known.get(f"model.{dep.model_name}"))
        reasons: list = []
        hold = held(rec, version)
        if hold:
            reasons.append(Reason(ReasonCode.SERVE_HELD,
                                  f"held on version {hold['version']} by `mlspec rollback` ({dep.model} is version "
                                  f"{version}); rolls out when {dep.model} moves"))
            version = hold["version"]
        desired = {"model": dep.model_name, "ref": dep.model_ref, "version": version, "port": dep.port,
                   "backend": cfg.name, "backend_type": cfg.type, "settings": settings_of(dep), "token": g["token"]}
        after = {"model": dep.model, "version": version, "port": dep.port, "replicas": dep.replicas,
                 "backend": cfg.name}
        if version is None and not unknown:
            unknown = (f"{dep.model}: no version holds alias {dep.model_ref} yet"
                       if not dep.model_ref.isdigit() else "")
        if rec is None or not rec.get("service"):
            why = [Reason(ReasonCode.NEW)] if rec is None else [
                Reason(ReasonCode.SERVICE_GONE, (rec.get("observed") or {}).get("detail") or "no service is recorded")]
            if unknown:
                why.append(Reason(ReasonCode.SERVE_UNKNOWN, unknown))
            return Change(node.address, self.name, Action.CREATE, Verdict.UNKNOWN if unknown else Verdict.NONE,
                          tuple(why + reasons), None, None, None if rec is None else self._before(rec), after,
                          forced, desired)
        before = self._before(rec)
        observed = rec.get("observed") or {}
        replace: list = []
        update: list = []
        if forced:
            replace.append(Reason(ReasonCode.FORCED))
        if observed.get("state") == "gone":
            return Change(node.address, self.name, Action.CREATE, Verdict.UNKNOWN if unknown else Verdict.NONE,
                          (Reason(ReasonCode.SERVICE_GONE, observed.get("detail") or "gone"),) + tuple(reasons),
                          None, None, before, after, forced, desired)
        if observed.get("state") == "unhealthy":
            replace.append(Reason(ReasonCode.SERVICE_UNHEALTHY, observed.get("detail") or "unhealthy"))
        if rec.get("port") != dep.port:
            replace.append(Reason(ReasonCode.CHANGED, "port", rec.get("port"), dep.port))
        if backend_id(rec.get("backend"), rec.get("backend_type")) != backend_id(cfg.name, cfg.type):
            replace.append(Reason(ReasonCode.CHANGED, "backend", backend_id(rec.get("backend"), rec.get("backend_type")),
                                  backend_id(cfg.name, cfg.type)))
        if unknown:
            update.append(Reason(ReasonCode.SERVE_UNKNOWN, unknown))
        elif version != rec.get("version"):
            update.append(Reason(ReasonCode.SERVE_VERSION, dep.model, rec.get("version"), version))
        for key, value in settings_of(dep).items():
            old = (rec.get("settings") or {}).get(key)
            if old != value:
                update.append(Reason(ReasonCode.CHANGED, key, old, value))
        if rec.get("token") != g["token"]:
            update.append(Reason(ReasonCode.SECRET_CHANGED, "token") if rec.get("token") and g["token"]
                          else Reason(ReasonCode.CHANGED, "token", "set" if rec.get("token") else "none",
                                      "set" if g["token"] else "none"))
        if observed.get("state") == "degraded":
            update.append(Reason(ReasonCode.SERVICE_DEGRADED, observed.get("detail") or "degraded"))
        elif observed.get("state") == "running" and observed.get("version") not in (None, rec.get("version")):
            update.append(Reason(ReasonCode.SERVICE_DRIFT, "", observed.get("version"), rec.get("version")))
        verdict = Verdict.UNKNOWN if unknown else Verdict.NONE
        if replace:
            return Change(node.address, self.name, Action.REPLACE, verdict, tuple(replace + update + reasons), None,
                          None, before, after, forced, desired)
        if update:
            return Change(node.address, self.name, Action.UPDATE, verdict, tuple(update + reasons), None, None,
                          before, after, forced, desired)
        return Change(node.address, self.name, Action.NOOP, Verdict.UP_TO_DATE, tuple(reasons), None, None, before,
                      after, forced, desired)

    @staticmethod
    def _before(rec: Mapping) -> dict:
        return {"version": rec.get("version"), "port": rec.get("port"), "replicas": (rec.get("settings") or {}).get(
            "replicas"), "backend": rec.get("backend"), "url": rec.get("url")}

    def removed(self, address: str, record: Mapping) -> Change | None:
        return Change(address, self.name, Action.DELETE, Verdict.NONE, (Reason(ReasonCode.REMOVED),), None, None,
                      self._before(record), None)

    # --- applying -------------------------------------------------------------------------------
    def begin(self, run, changes: list) -> None:
        """A deployment this apply creates on the local backend gets its supervisor now, with a worker that
        imports scikit-learn, skops and uvicorn (most of a cold start) while the apply plans, trains and
        registers the model on the other core; ``start`` then hands it the version (docs/serving.md, "Cold
        start"). Best effort: anything that fails here is done again by the deploy."""
        for ch in changes:
            if ch.action is not Action.CREATE:
                continue
            dep = run.spec.deployments.get(ch.address.split(".", 1)[1])
            if dep is None:
                continue
            cfg = backend_config(run.spec, dep)
            if cfg.type != "local" or (cfg.settings or {}).get("python"):
                continue
            try:
                from mlspec.backends import local_service

                local_service.prestart(run.spec.project_dir, run.spec.storage.workspace, dep.name)
            except Exception:  # noqa: BLE001 - an optimisation only: the deploy starts its supervisor itself
                pass

    def end(self, run) -> None:
        import sys

        local_service = sys.modules.get("mlspec.backends.local_service")
        if local_service is not None:
            local_service.cancel_prestarted()

    def start(self, node: Node, change: Change, run) -> Done:
        from mlspec.backends.api import BackendError
        from mlspec.errors import MlspecError
        from mlspec.kinds.model import version_of

        item: DeploymentItem = node.item
        dep, cfg = item.deployment, item.backend
        now = time.time()
        oc = Outcome(node.address, Status.RAN, "", started=now)
        resources = run.state.resources
        rec = resources.get(node.address)
        rec = copy.deepcopy(rec) if rec and rec.get("kind") == self.name else None
        reg = resources.get(f"model.{dep.model_name}") or {}
        # the registry as the model resource left it in this apply: the alias's holder now
        version = int(dep.model_ref) if dep.model_ref.isdigit() else (reg.get("aliases") or {}).get(dep.model_ref)
        hold = held(rec, version)
        if hold:
            version = hold["version"]
        if version is None:
            return self._fail(oc, f"{dep.model}: no version of model '{dep.model_name}' holds alias "
                                  f"'{dep.model_ref}' (every candidate was rejected, or none was registered)")
        v = version_of(reg, version)
        if v is None:
            return self._fail(oc, f"{dep.model}: model '{dep.model_name}' has no version {version} in this workspace")
        if v.get("status") == "rejected":
            return self._fail(oc, f"{dep.model}: version {version} of model '{dep.model_name}' was rejected by its "
                                  "gates and is never served")
        desired = dict(change.detail or {})
        desired["version"] = version
        gone = replace = False
        try:
            _name, backend = run.backend_for(_BackendRef(dep.backend))
            service = self.service(run.project, dep, v, desired)
            old = (rec or {}).get("service")
            observed = (rec or {}).get("observed") or {}
            gone = not old or observed.get("state") == "gone"
            replace = not gone and (change.forced or observed.get("state") == "unhealthy"
                                    or rec.get("port") != dep.port
                                    or backend_id(rec.get("backend"), rec.get("backend_type"))
                                    != backend_id(cfg.name, cfg.type))
            same = (not gone and not replace and rec.get("version") == version
                    and rec.get("settings") == desired["settings"] and rec.get("token") == desired["token"]
                    and observed.get("state") in (None, "running")
                    and observed.get("version") in (None, rec.get("version")))
            if same:
                oc.status, oc.verdict = Status.UP_TO_DATE, Verdict.UP_TO_DATE.value
                oc.reason = f"serving version {version} at {rec.get('url')}"
                oc.finished = time.time()
                return Done(oc, None)
            t0 = time.monotonic()
            if gone or replace:
                if old:  # a gone service may have left orphans, a replaced one is stopped: both removed first
                    self._backend_of(run, rec).remove_service(old)
                action = "replace" if replace else ("recreate" if rec else "create")
                new = backend.deploy_service(service)
            else:
                action = "update"
                new = backend.update_service(old, service)
            took = time.monotonic() - t0
        except (BackendError, MlspecError) as exc:
            if rec is not None and (gone or replace):  # the old service is stopped and no new one runs
                rec.update(service=None, observed={"state": "gone", "detail": f"the last apply failed: {exc.message}",
                                                   "when": round(time.time(), 3)})
                done = self._fail(oc, exc.message + (f" ({exc.hint})" if exc.hint else ""))
                return Done(done.outcome, rec)
            return self._fail(oc, exc.message + (f" ({exc.hint})" if exc.hint else ""))
        url = f"http://127.0.0.1:{new.get('port')}"
        history = list((rec or {}).get("history") or ())
        history.append(self.history_entry(action, (rec or {}).get("version"), version, run.run_id))
        new_rec = {"kind": self.name, "model": dep.model_name, "ref": dep.model_ref, "version": version,
                   "hash": v.get("hash"), "format": v.get("format"), "port": dep.port, "url": url,
                   "backend": cfg.name, "backend_type": cfg.type, "settings": desired["settings"],
                   "token": desired["token"], "service": new, "run_id": run.run_id, "deployed": round(time.time(), 3),
                   "request_log": (service.config.get("log") or {}).get("url"), "observed": None, "history": history[-HISTORY_KEEP:], "fingerprint": v.get("hash")}
        if hold:
            new_rec["hold"] = hold
        oc.finished = time.time()
        oc.duration = round(took, 3)
        oc.verdict = action
        oc.reason = (f"{action}: serving {dep.model_name} version {version} at {url} "
                     f"({len(new.get('replicas') or [])} replica(s), ready in {took:.1f}s)")
        return Done(oc, new_rec)

    @staticmethod
    def history_entry(action: str, frm, to, run_id: str, reason: str = "") -> dict:
        from mlspec.runs import who

        return {"action": action, "from": frm, "to": to, "when": round(time.time(), 3), "run_id": run_id,
                "reason": reason, **who()}

    @staticmethod
    def _fail(oc: Outcome, message: str) -> Done:
        oc.status, oc.error, oc.finished = Status.FAILED, message, time.time()
        oc.duration = round(oc.finished - (oc.started or oc.finished), 3)
        return Done(oc)

    @staticmethod
    def service(project, dep, v: Mapping, desired: Mapping):
        """The Service the backend runs: the worker's config (no secret) and the env carrying the secrets."""
        import json

        from mlspec.backends.api import Service

        spec = project.spec
        options = dict(spec.storage.options or {})
        env = {}
        if options:
            env[STORE_OPTIONS_ENV] = json.dumps(options)
        if dep.token is not None:
            env[TOKEN_ENV] = str.__str__(dep.token)
        store = {"url": project.artifacts.url, "options_env": STORE_OPTIONS_ENV if options else None}
        log = None
        if dep.log is not None:
            log = {"url": request_log_url(project.artifacts.url, spec.storage.workspace, dep.name),
                   "options_env": store["options_env"], **dep.log}
        config = {"deployment": dep.name, "model": dep.model_name, "version": v["version"],
                  "artifact": {"hash": v.get("hash"), "format": v.get("format")}, "store": store,
                  "signature": v.get("signature"), "log": log, "limits": dict(dep.limits),
                  "token_env": TOKEN_ENV if dep.token is not None else None, "drain_seconds": dep.drain}
        return Service(f"deployment.{dep.name}", dep.name, spec.storage.workspace, dep.model_name, v["version"],
                       config, dep.port, dep.replicas, dep.drain, dep.ready_timeout, env)

    @staticmethod
    def _backend_of(run, rec: Mapping):
        """The backend a recorded service runs on (the spec may have moved the deployment elsewhere)."""
        from mlspec.spec import BackendConfig

        name, btype = rec.get("backend") or "default", rec.get("backend_type") or "local"
        cfg = run.spec.backends.get(name) or (run.spec.backend if run.spec.backend.type == btype
                                              else BackendConfig(name, btype))
        if cfg.name not in run.backends:
            from mlspec.preflight import make_backend

            run.backends[cfg.name] = make_backend(run.project, cfg)
        return run.backends[cfg.name]

    def destroy(self, address: str, record: Mapping, run) -> Done:
        now = time.time()
        oc = Outcome(address, Status.DESTROYED, started=now)
        if record.get("service"):
            self._backend_of(run, record).remove_service(record["service"])
            oc.reason = f"stopped the service (was on port {record['service'].get('port')})"
        oc.finished = time.time()
        return Done(oc, None, remove=True)

    # --- views ----------------------------------------------------------------------------------
    def verdict_text(self, change: Mapping) -> str:
        action = change["actions"][0]
        after = change.get("after") or {}
        before = change.get("before") or {}
        version = after.get("version")
        what = f"version {version}" if version is not None else "(known after apply)"
        where = f"port {after.get('port')}" if after.get("port") else "a free port"
        if action == "delete":
            return "destroy (stop the service)"
        if action == "no-op":
            return f"serving version {before.get('version')} at {before.get('url')}"
        if action == "create":
            return f"serve {after.get('model')} {what} on {where}, {after.get('replicas')} replica(s)"
        if action == "replace":
            return f"replace: serve {after.get('model')} {what} on {where}"
        return f"roll out {after.get('model')} {what}"


KIND = register(DeploymentKind())
