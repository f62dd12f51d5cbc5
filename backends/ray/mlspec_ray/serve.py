"""Deployments on Ray Serve: the Ray backend's service calls (Backend API 2).

One deployment is one Serve *application* (named ``mlspec-WORKSPACE-NAME``) holding one Serve deployment
(``model``) whose replicas each run the prediction service of :mod:`mlspec.serve` in-process:
:func:`mlspec.serve.app.make_app` loads the version's artifact from the artifact store exactly as the
local worker does, and Serve's ASGI ingress hands it every HTTP request (no FastAPI: the app is a plain
ASGI callable). So the HTTP API is the local service's: ``POST /predict``, the Open Inference Protocol v2
paths under ``/v2``, the same validation, errors, bearer token and request log.

Ports. Ray Serve has ONE HTTP proxy port per cluster (``http_options`` are cluster-wide and fixed while
Serve runs), not one per application. mlspec maps a deployment's ``port:`` onto it:

* Serve not running on the cluster: mlspec starts it with its proxy on ``serve.host`` (127.0.0.1 by
  default) and the deployment's port (a free one when the deployment gives none; local clusters only).
* Serve already running: the deployment's port must be the proxy's port; another port is an error naming
  the proxy's.
* Every application is mounted at route prefix ``/``, so that the paths are exactly the local service's.
  Hence one mlspec deployment per Serve instance (per Ray cluster): a second deployment whose
  application would also take ``/`` is refused with a message naming the first (serve it on another
  cluster or on the local backend).
* Removing the last application of the cluster shuts Serve down, which closes the port.

Rollouts. An update or rollback redeploys the application with the new worker config: Serve rolls the
replicas in place with ``max_surge_percent=100`` (new replicas start and become ready *before* old ones
stop, so capacity never drops below ``replicas``), and a stopping replica is taken out of routing first and
finishes its in-flight requests within ``graceful_shutdown_timeout_s`` (the deployment's ``drain``). No
request fails (tests/test_serve_ray.py checks it with a client looping through an update and a
rollback). Every rollout replaces the replicas this way, a change of ``replicas`` alone too.

Secrets. The worker config carries none; the bearer token and the store's options (``Service.env``) go to
the replicas as constructor arguments, which Serve keeps in the cluster's memory (the controller's state
in the GCS) like any deployment's arguments: never in a file mlspec writes, never in the runtime_env
(which `serve status` and the dashboard show).

``ray`` and ``ray.serve`` are imported inside functions only (the CLI's start-up path stays light).
"""

from __future__ import annotations

import http.client
import re
import socket
import time
from typing import Mapping

from mlspec_ray.errors import BackendError

DEPLOYMENT = "model"  # the Serve deployment inside each application
ROUTE_PREFIX = "/"
DEFAULT_HOST = "127.0.0.1"
SERVE_START_TIMEOUT = 120.0  # the first Serve start on a cluster: controller and proxy actors
POLL = 0.25
PORT_CLOSE_TIMEOUT = 20.0  # after serve.shutdown(): until the proxy actor is gone and its port closed
STALE_FAILURE = 30.0  # seconds a DEPLOY_FAILED of the previous rollout may still show after a new one


def app_name(workspace: str, name: str) -> str:
    """The Serve application of deployment ``name`` in ``workspace`` (Serve names: keep them plain)."""
    clean = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{workspace}-{name}")
    return f"mlspec-{clean}"


def replica_class():
    """The class of a replica, nested so that Ray ships it by value (the cluster needs ``mlspec`` with its
    ``serve`` extra, not this package)."""
    from ray import serve

    @serve.ingress()
    class MlspecModel:
        """One replica: the prediction service of one model version (mlspec.serve.app) as Serve's ASGI app."""

        def __init__(self, config: dict, env: dict, paths: list, rollout: str):
            import os
            import sys

            # secrets (the bearer token, the store's options) are read from the environment by mlspec.serve;
            # this process is the replica's own actor process
            os.environ.update({str(k): str(v) for k, v in (env or {}).items()})
            for p in reversed(paths or []):  # the project's code (a model pickled with project classes)
                if os.path.isdir(p) and p not in sys.path:
                    sys.path.insert(0, p)
            from mlspec.serve.app import make_app

            started = time.time()
            self._app = make_app(config)
            self._info = {"version": config.get("version"), "model": config.get("model"), "rollout": rollout,
                          "pid": os.getpid(),
                          "node": socket.gethostname(), "started": round(started, 3),
                          "load_seconds": round(time.time() - started, 3)}

        def __serve_build_asgi_app__(self):
            return self._app

        def check_health(self):
            if not getattr(self._app, "ready", True):
                raise RuntimeError("the model service is not ready")

        def mlspec_info(self) -> dict:
            return dict(self._info, requests=getattr(self._app, "requests", None))

    return MlspecModel


# --- helpers on mlspec's side -------------------------------------------------------------------------
def _serve_module(address: str):
    """``ray.serve``, when it is installed and can roll out with surge (Ray 2.60); else a one-line error."""
    import inspect

    try:
        from ray import serve
    except ImportError as exc:
        raise BackendError(f"{address}: Ray Serve is not installed here ({exc})",
                           hint="pip install 'mlspec-ray[serve]' (ray[serve] >= 2.60)") from None
    if "max_surge_percent" not in inspect.signature(serve.deployment).parameters:
        import ray

        raise BackendError(f"{address}: Ray {ray.__version__} cannot roll a deployment out without a failed request "
                           "(Serve's max_surge_percent came with Ray 2.60)",
                           hint="pip install 'mlspec-ray[serve]' (ray[serve] >= 2.60)")
    return serve


def _quiet_serve_logs() -> None:
    """Serve's client logs every call at INFO on stderr ("Connecting to existing Serve app ..."): mlspec prints
    its own one-line outcome, so only Serve's warnings and errors stay."""
    import logging

    logging.getLogger("ray.serve").setLevel(logging.WARNING)


def _serve_client():
    """The running Serve instance's client, or None when Serve does not run on the connected cluster."""
    from ray.serve.context import _get_global_client

    _quiet_serve_logs()
    return _get_global_client(raise_if_no_controller_running=False)


def _details(client) -> dict:
    try:
        return client.get_serve_details() or {}
    except Exception:  # noqa: BLE001 - the controller is restarting: act as if nothing is known
        return {}


def port_in_use(host: str, port: int) -> bool:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host if host not in ("0.0.0.0", "") else "127.0.0.1", int(port)))
        return False
    except OSError:
        return True
    finally:
        s.close()


def _accepts(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex((host if host not in ("0.0.0.0", "") else "127.0.0.1", port)) == 0


def probe(host: str, port: int, timeout: float = 2.0) -> str:
    """'' when GET /v2/health/ready answers 200 on host:port; else what happened."""
    conn = http.client.HTTPConnection(host if host not in ("0.0.0.0", "") else "127.0.0.1", int(port),
                                      timeout=timeout)
    try:
        conn.request("GET", "/v2/health/ready")
        resp = conn.getresponse()
        resp.read()
        return "" if resp.status == 200 else f"GET /v2/health/ready on port {port} answered {resp.status}"
    except OSError as exc:
        return f"port {port} does not answer ({type(exc).__name__}: {exc})"
    finally:
        conn.close()


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


class RayServeServices:
    """The four service calls of :class:`mlspec_ray.backend.RayBackend` (which mixes this class in)."""

    supports_services = True

    # settings ----------------------------------------------------------------------------------------
    def _serve_settings(self) -> dict:
        return dict(self.settings.get("serve") or {})

    def _service_target(self, service_address: str):
        target = self.target()
        if target.kind == "private":
            raise BackendError(f"{service_address}: a deployment on Ray Serve needs a Ray cluster that outlives "
                               "the apply, and this backend's `address` is \"\" (a private cluster for one apply)",
                               hint="start a cluster (`ray start --head`) and set the backend's `address` "
                                    "(\"auto\" or \"host:port\"); see backends/ray/README.md, \"Deployments on Ray "
                                    "Serve\"")
        return target

    # the calls ---------------------------------------------------------------------------------------
    def deploy_service(self, service) -> dict:
        return self._roll_out(service)

    def update_service(self, record: Mapping, service) -> dict:
        # the application's name comes from the workspace and the deployment, as the record's does: Serve
        # upgrades it in place (or creates it again when someone deleted it meanwhile)
        return self._roll_out(service)

    def _roll_out(self, service) -> dict:
        serve = _serve_module(service.address)
        target = self._service_target(service.address)
        self.start()  # connect (probe first: a dead address fails in seconds)
        name = app_name(service.workspace, service.name)
        settings = self._serve_settings()
        host, port = self._ensure_serve(service, target, settings)
        client = _serve_client()
        details = _details(client)
        for other, app in (details.get("applications") or {}).items():
            if other != name and app.get("route_prefix") == ROUTE_PREFIX:
                raise BackendError(f"{service.address}: the Serve instance of the Ray cluster at {target.label} "
                                   f"already serves application '{other}' at route prefix {ROUTE_PREFIX}, and a "
                                   "deployment on Ray Serve takes the whole port (Serve has one HTTP port per cluster)",
                                   hint="serve this deployment on another Ray cluster (a backend with another "
                                        "`address`) or on the local backend, or destroy the other one first")
        existing = name in (details.get("applications") or {})
        failed_before = existing and self._app_state(name)[0] == "DEPLOY_FAILED"
        dep = serve.deployment(
            replica_class(), name=DEPLOYMENT, num_replicas=int(service.replicas),
            max_surge_percent=100,  # start the new replicas before stopping old ones: capacity never drops
            graceful_shutdown_wait_loop_s=min(2.0, max(float(service.drain_seconds), 0.1)),
            graceful_shutdown_timeout_s=max(float(service.drain_seconds), 0.1),
            health_check_period_s=float(settings.get("health_check_period") or 2.0),
            health_check_timeout_s=float(settings.get("health_check_timeout") or 30.0),
            max_ongoing_requests=int(settings.get("max_ongoing_requests") or 100),
            max_constructor_retry_count=3,  # a model that does not load fails the apply in seconds, not minutes
            ray_actor_options=self._replica_actor_options(target, settings))
        paths = [str(self.context.project_dir)] + [str(p) for p in (self.context.code_paths or ())]
        # a new rollout id makes every rollout a new code version for Serve: all replicas are replaced (with
        # surge), and the wait below knows a replica of this rollout from an older one
        rollout = f"{time.time_ns():x}"
        bound = dep.bind(dict(service.config), dict(service.env), paths, rollout)
        try:
            serve.run_many([serve.RunTarget(bound, name=name, route_prefix=ROUTE_PREFIX,
                                            logging_config={"enable_access_log": False})],
                           wait_for_applications_running=False)
        except Exception as exc:  # noqa: BLE001 - Serve refused the application (its message says why)
            raise BackendError(f"{service.address}: Ray Serve refused the application {name}: {_first_line(exc)}")
        timeout = float(settings.get("ready_timeout") or service.ready_timeout) + float(service.drain_seconds)
        try:
            self._wait_rolled_out(name, service, rollout, timeout, host, port, failed_before)
        except BackendError:
            if not existing:  # a failed first deploy leaves nothing behind
                self._delete_app(name, host, port)
            raise
        return self._record(name, target, host, port, service)

    def _replica_actor_options(self, target, settings: dict) -> dict:
        opts: dict = {"num_cpus": float(settings.get("replica_cpus", 1))}
        if settings.get("replica_memory"):
            opts["memory"] = int(settings["replica_memory"])
        env = self.runtime_env(target)
        if env:
            opts["runtime_env"] = env
        return opts

    def _ensure_serve(self, service, target, settings: dict) -> tuple[str, int]:
        """Serve running on the cluster with its HTTP proxy on the deployment's port: (host, port)."""
        from ray import serve
        from mlspec_ray.addresses import on_this_machine

        client = _serve_client()
        if client is not None:
            http = client.http_config
            host, port = http.host or DEFAULT_HOST, int(http.port)
            if service.port and int(service.port) != port:
                raise BackendError(f"{service.address}: port {service.port} asked, but Ray Serve on the cluster at "
                                   f"{target.label} already listens on port {port} (Serve has one HTTP port per "
                                   "cluster)", hint=f"set `port: {port}` on the deployment, or serve it on another "
                                                    "cluster or on the local backend")
            return host, port
        host = settings.get("host") or DEFAULT_HOST
        port = service.port
        local = on_this_machine(target)
        if not port:
            if not local:
                raise BackendError(f"{service.address}: a deployment on a remote Ray cluster needs a `port:` (the "
                                   "port of the cluster's Serve proxy)", hint="set `port:` on the deployment")
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            s.close()
        if local and port_in_use(host, port):
            raise BackendError(f"{service.address}: cannot listen on {host}:{port}: the port is in use",
                               hint="free the port or choose another `port:` for the deployment")
        try:
            serve.start(http_options={"host": host, "port": int(port)}, proxy_location="HeadOnly")
        except Exception as exc:  # noqa: BLE001
            raise BackendError(f"{service.address}: cannot start Ray Serve on the cluster at {target.label}: "
                               f"{_first_line(exc)}")
        return host, int(port)

    def _app_state(self, name: str) -> tuple:
        """(application status or None, its message, {replica state: count}, deployment status)."""
        from ray import serve

        app = serve.status().applications.get(name)
        if app is None:
            return None, "", {}, ""
        dep = app.deployments.get(DEPLOYMENT)
        states = {str(getattr(k, "value", k)): int(v) for k, v in ((dep.replica_states if dep else {}) or {}).items()}
        dstatus = str(getattr(dep.status, "value", dep.status)) if dep else ""
        message = app.message or (dep.message if dep else "")
        return str(getattr(app.status, "value", app.status)), message, states, dstatus

    def _wait_rolled_out(self, name: str, service, rollout: str, timeout: float, host: str, port: int,
                         failed_before: bool = False) -> None:
        """Until the application runs ``replicas`` replicas of this rollout, the old ones stopped (drained), and
        the proxy answers on the port; BackendError on a failed deploy or at the deadline.

        ``failed_before``: the last rollout failed, so DEPLOY_FAILED is stale until Serve has taken this one up
        (a status other than DEPLOY_FAILED seen, or STALE_FAILURE seconds passed)."""
        start = time.monotonic()
        deadline = start + timeout + SERVE_START_TIMEOUT / 4
        seen = ""
        fresh = not failed_before
        while True:
            status, message, states, dstatus = self._app_state(name)
            seen = f"application {status}, deployment {dstatus}, replicas {states or '{}'}"
            failed = status == "DEPLOY_FAILED" or dstatus == "DEPLOY_FAILED"
            fresh = fresh or not failed or time.monotonic() - start > STALE_FAILURE
            if failed and fresh:
                raise BackendError(f"{service.address}: Ray Serve could not start the service: "
                                   f"{(message or 'no reason given').strip().splitlines()[-1][:500]}",
                                   hint=f"the replica's log is in the Ray session's logs (serve/replica_{name}_*)")
            if (status == "RUNNING" and states.get("RUNNING") == int(service.replicas)
                    and sum(states.values()) == int(service.replicas) and not probe(host, port)):
                infos = self._replica_infos(name, int(service.replicas))
                if infos and {i.get("rollout") for i in infos} == {rollout}:
                    return
                seen += f", versions answering {sorted({str(i.get('version')) for i in infos})}"
            if time.monotonic() > deadline:
                raise BackendError(f"{service.address}: the service was not rolled out on Ray Serve within "
                                   f"{timeout:g}s ({seen})", hint="see `serve status` on the cluster and the Serve "
                                                                  "logs of the Ray session")
            time.sleep(POLL)

    def _replica_infos(self, name: str, replicas: int) -> list[dict]:
        """What replicas of the application say about themselves (asked through a handle, a few calls)."""
        from ray import serve

        try:
            handle = serve.get_app_handle(name)
        except Exception:  # noqa: BLE001 - not there (yet)
            return []
        seen: dict = {}
        for _ in range(max(2 * replicas, 2)):
            try:
                info = handle.mlspec_info.remote().result(timeout_s=10)
            except Exception:  # noqa: BLE001 - a replica stopping meanwhile
                continue
            seen[(info.get("node"), info.get("pid"))] = info
        return list(seen.values())

    def _record(self, name: str, target, host: str, port: int, service) -> dict:
        client = _serve_client()
        app = (_details(client).get("applications") or {}).get(name) or {}
        replicas = []
        for r in ((app.get("deployments") or {}).get(DEPLOYMENT) or {}).get("replicas") or ():
            replicas.append({"replica": r.get("replica_id"), "pid": r.get("pid"), "node": r.get("node_ip"),
                             "state": str(r.get("state")), "started": r.get("start_time_s"),
                             "version": service.version})
        return {"backend": "ray", "cluster": target.label, "app": name, "deployment": DEPLOYMENT,
                "route_prefix": ROUTE_PREFIX, "host": host, "port": port, "version": service.version,
                "replicas": replicas, "deployed": round(time.time(), 3)}

    def service_status(self, record: Mapping):
        from mlspec.backends.api import ServiceStatus

        record = record or {}
        name, port = record.get("app") or "", record.get("port")
        host = record.get("host") or DEFAULT_HOST
        try:
            self._service_target(f"the service {name}")
            self.start()
        except BackendError as exc:
            return ServiceStatus("gone", None, port, [], f"the Ray cluster does not answer: {exc.message}")
        if _serve_client() is None:
            return ServiceStatus("gone", None, port, [], "Ray Serve does not run on the cluster")
        status, message, states, dstatus = self._app_state(name)
        if status is None:
            return ServiceStatus("gone", None, port, [], f"the cluster has no Serve application {name}")
        infos = {i.get("pid"): i for i in self._replica_infos(name, max(states.get("RUNNING", 1), 1))}
        app = (_details(_serve_client()).get("applications") or {}).get(name) or {}
        dep = (app.get("deployments") or {}).get(DEPLOYMENT) or {}
        replicas = [{"pid": r.get("pid"), "node": r.get("node_ip"), "replica": r.get("replica_id"),
                     "version": (infos.get(r.get("pid")) or {}).get("version"), "started": r.get("start_time_s")}
                    for r in dep.get("replicas") or () if str(r.get("state")).endswith("RUNNING")]
        versions = sorted({i.get("version") for i in infos.values() if i.get("version") is not None})
        version = versions[0] if len(versions) == 1 else None
        running = states.get("RUNNING", 0)
        wanted = int((dep.get("deployment_config") or {}).get("num_replicas") or running or 1)
        why = probe(host, port) if port else "no port is recorded"
        if why:
            return ServiceStatus("unhealthy", version, port, replicas, f"Serve application {name} ({status}): {why}")
        if status in ("DEPLOY_FAILED", "UNHEALTHY") or dstatus in ("UNHEALTHY", "DEPLOY_FAILED"):
            # still answering (a failed rollout keeps the old replicas): a rolling update repairs it, no downtime
            last = (message or "no reason given").strip().splitlines()[-1][:300]
            return ServiceStatus("degraded", version, port, replicas,
                                 f"Serve application {name} is {status}: {last}; {running} replica(s) of version "
                                 f"{version} still serve")
        if running < wanted or len(versions) > 1:
            more = f"; replicas serve versions {versions}" if len(versions) > 1 else ""
            return ServiceStatus("degraded", version, port, replicas,
                                 f"{running} of {wanted} replica(s) run in Serve application {name}{more}")
        return ServiceStatus("running", version, port, replicas,
                             f"{running} replica(s) ready on Ray Serve (application {name}, port {port}), "
                             f"version {version}")

    def remove_service(self, record: Mapping) -> None:
        record = record or {}
        name = record.get("app")
        if not name:
            return
        try:
            self._service_target(f"the service {name}")
            self.start()
        except BackendError:
            return  # the cluster is gone, and with it the service
        if _serve_client() is None:
            return
        self._delete_app(name, record.get("host") or DEFAULT_HOST, record.get("port"))

    def _delete_app(self, name: str, host: str, port) -> None:
        """Delete the application (Serve drains its replicas); Serve itself stops with its last application,
        and on this machine the call returns once the proxy's port is closed (the proxy actor dies a moment
        after serve.shutdown() returns)."""
        from ray import serve
        from mlspec_ray.addresses import on_this_machine

        try:
            serve.delete(name)
        except Exception as exc:  # noqa: BLE001
            raise BackendError(f"cannot delete the Serve application {name}: {_first_line(exc)}")
        try:
            if serve.status().applications:
                return
            serve.shutdown()
        except Exception:  # noqa: BLE001 - another client deployed meanwhile, or Serve went away
            return
        if port and on_this_machine(self.target()):
            deadline = time.monotonic() + PORT_CLOSE_TIMEOUT
            while _accepts(host, int(port)) and time.monotonic() < deadline:
                time.sleep(0.1)

