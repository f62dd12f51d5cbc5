"""Deployments in containers: the Docker backend's service calls (Backend API 2).

One container per deployment runs the same supervisor as the local backend (``python -m
mlspec.backends.local_service RUN_DIR``, mlspec's standard-library-only module): it binds the deployment's
port on 127.0.0.1 in the host's network (``network_mode: host``: the private engine of the tests has no
bridge, and a fixed port on loopback is what a deployment promises), starts the prediction workers on that one
listening socket, restarts a crashed one, and rolls a new model version out inside the container with no
failed request (new workers ready, then the old ones drained). The container gets the same mounts as a step
container (this machine's ``/usr``, Python and mlspec read-only in the host environment; the project; a local
artifact store) plus the deployment's run directory (``.mlspec/containers/WORKSPACE/NAME/ID``), where the
supervisor's control FIFO and ``status.json`` live.

Secrets: the bearer token and the store's options reach the supervisor over that FIFO (kernel memory), as on
the local backend, never as the container's environment (``docker inspect`` shows the environment to anyone
who can reach the engine), nor labels, nor files.

A change of the container itself (another image, other backend settings: env, mounts, python) is rolled out
container by container: the running supervisor offers its listening socket on a unix socket in its run
directory (SCM_RIGHTS), a new container's supervisor takes it over (``MLSPEC_SERVE_INHERIT``) and starts its
workers on it; once they are ready the old supervisor drains and stops, and its container is removed. Both
containers accept from the one kernel queue throughout, so no connection is refused or reset (unlike two
sockets with SO_REUSEPORT, where connections queued on the closing one are lost unless the host enables
``net.ipv4.tcp_migrate_req``).

Every container carries the labels ``mlspec.deployment`` (the address), ``mlspec.workspace``, ``mlspec.project``
(the project directory) and ``mlspec.service`` (the run directory): `mlspec refresh` reads its real state
(running, exited with a code, OOM-killed, removed, the engine's health check) and `mlspec destroy` removes it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from typing import Mapping

from mlspec.backends.api import BackendError, Service, ServiceStatus

SUPERVISOR = "mlspec.backends.local_service"
LABEL_DEPLOYMENT = "mlspec.deployment"
LABEL_WORKSPACE = "mlspec.workspace"
LABEL_PROJECT = "mlspec.project"
LABEL_SERVICE = "mlspec.service"
HANDOFF = "handoff.sock"
HEALTH_INTERVAL = 10.0

#: the engine's health check, run in the container: the supervisor's port from status.json, then
#: GET /v2/health/ready (the prediction worker's readiness)
HEALTH = ("import json,sys,urllib.request as u;"
          "p=json.load(open(sys.argv[1]))['port'];"
          "u.urlopen('http://127.0.0.1:%d/v2/health/ready' % p, timeout=3).read()")


def _first_line(exc: BaseException) -> str:
    text = getattr(exc, "explanation", None) or str(exc)
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return (str(text).strip().splitlines() or [""])[0]


class DockerServices:
    """The service calls of one DockerBackend (its engine client, image, mounts and environment)."""

    def __init__(self, backend):
        self.b = backend

    # --- where and what ---------------------------------------------------------------------------
    def root(self, service: Service) -> str:
        return os.path.join(str(self.b.context.project_dir), ".mlspec", "containers", service.workspace, service.name)

    def labels(self, service: Service, run_dir: str) -> dict:
        return {LABEL_DEPLOYMENT: service.address, LABEL_WORKSPACE: service.workspace,
                LABEL_PROJECT: str(self.b.context.project_dir), LABEL_SERVICE: run_dir}

    def _engine(self):
        if not self.b.engine_local:
            raise BackendError(f"the Docker engine at {self.b.engine_url} is on another machine: deployments on the "
                               "docker backend need an engine on this machine (the service listens on its "
                               "127.0.0.1 and is controlled through a mounted directory)",
                               hint="serve the deployment on `backend: local`, or point DOCKER_HOST at this "
                                    "machine's engine")
        return self.b.client().api

    def container_spec(self, service: Service, root: str) -> dict:
        """Everything the container is made of (not the secrets): image, command's python, mounts, environment,
        user, working directory; and ``fingerprint``, a hash of it with the image's id: when it changes, an
        update replaces the container."""
        api = self._engine()
        image = self.b.image()
        store = str((service.config.get("store") or {}).get("url") or self.b.context.artifacts_url)
        payload = {"project_dir": str(self.b.context.project_dir), "artifacts": {"url": store}}
        binds = self.b.binds(payload)
        os.makedirs(root, mode=0o700, exist_ok=True)
        binds[os.path.realpath(root)] = {"bind": os.path.realpath(root), "mode": "rw"}
        env = self.b.environment("")
        env.pop("MLSPEC_RESULT_MARKER", None)
        workdir = self.b.settings.get("workdir") or str(self.b.context.project_dir)
        spec = {"image": image, "image_id": api.inspect_image(image)["Id"], "python": self.b.python, "binds": binds,
                "env": env, "user": self.b.settings.get("user") or f"{os.getuid()}:{os.getgid()}",
                "workdir": workdir}
        spec["fingerprint"] = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
        return spec

    # --- the calls --------------------------------------------------------------------------------
    def deploy(self, service: Service) -> dict:
        """A new container for ``service`` (leftover containers of the deployment are removed first)."""
        api = self._engine()
        root = self.root(service)
        for c in self._labelled(service):
            self._remove_container(api, c["Id"])
        shutil.rmtree(root, ignore_errors=True)
        return self._start(service, self.container_spec(service, root), root)

    def update(self, record: Mapping, service: Service) -> dict:
        """A new model version or settings: rolled out by the running supervisor (generation + 1); a changed
        container (image, settings): a new container takes the port over and the old one drains; a gone
        service: deployed anew."""
        api = self._engine()
        record = dict(record or {})
        state = self._inspect(api, record.get("container") or "")
        if state is None or not state["State"].get("Running"):
            return self.deploy(service)
        root = self.root(service)
        spec = self.container_spec(service, root)
        run_dir = record["run_dir"]
        st = _read_status(run_dir)
        generation = max(int(record.get("generation") or 0), int(st.get("generation") or 0),
                         int((st.get("last") or {}).get("generation") or 0)) + 1
        if spec["fingerprint"] == record.get("spec"):
            self._send(api, record["container"], run_dir, self._message("update", service, generation, spec))
            st = self._wait(api, record["container"], run_dir, generation,
                            service.ready_timeout + service.drain_seconds + 10)
            return self._record(record["container"], record["name"], run_dir, st, spec)
        # the container changes: hand the listening socket to a new one, then drain and remove the old one
        handoff = os.path.join(run_dir, HANDOFF)
        self._send(api, record["container"], run_dir, {"op": "share", "generation": generation, "path": handoff,
                                                         "timeout": service.ready_timeout + 30})
        self._wait(api, record["container"], run_dir, generation, 30)
        new = self._start(service, spec, root, inherit=handoff)
        self.remove(record)
        return new

    def status(self, record: Mapping) -> ServiceStatus:
        record = record or {}
        port = record.get("port")
        name = record.get("name") or (record.get("container") or "")[:12]
        try:
            api = self._engine()
        except BackendError as exc:
            return ServiceStatus("unhealthy", None, port, [], exc.message)
        state = self._inspect(api, record.get("container") or "")
        if state is None:
            return ServiceStatus("gone", None, port, [], f"the container {name} was removed")
        s = state["State"]
        if not s.get("Running"):
            how = "was killed at its memory limit (OOM)" if s.get("OOMKilled") else \
                f"exited with code {s.get('ExitCode')}" + (" (killed)" if s.get("ExitCode") == 137 else "")
            return ServiceStatus("gone", None, port, [], f"the container {name} {how} ({s.get('Status')})")
        st = _read_status(record.get("run_dir") or "")
        workers = [w for w in st.get("workers") or ()]
        replicas = [{"pid": w["pid"], "version": w.get("version"), "started": w.get("started")} for w in workers]
        versions = sorted({w.get("version") for w in workers if w.get("version") is not None})
        version = versions[0] if len(versions) == 1 else None
        from mlspec.backends.local_service import _probe

        probe = _probe(port)
        if probe:
            return ServiceStatus("unhealthy", version, port, replicas, f"the container {name} runs, but {probe}")
        health = (s.get("Health") or {}).get("Status")
        if health == "unhealthy":
            log = ((s.get("Health") or {}).get("Log") or [{}])[-1].get("Output", "").strip().splitlines()
            return ServiceStatus("unhealthy", version, port, replicas,
                                 f"the engine's health check of {name} fails: {log[-1] if log else 'no output'}")
        wanted = int(st.get("replicas") or len(workers) or 1)
        if len(workers) < wanted:
            return ServiceStatus("degraded", version, port, replicas,
                                 f"{len(workers)} of {wanted} replica(s) run in the container {name} "
                                 f"(see `docker logs {name}`)")
        return ServiceStatus("running", version, port, replicas,
                             f"{len(workers)} replica(s) ready on port {port} in the container {name}, version {version}")

    def remove(self, record: Mapping) -> None:
        """Drain and stop the supervisor, remove the container and its run directory. A gone one is no error."""
        record = record or {}
        cid = record.get("container") or ""
        run_dir = record.get("run_dir") or ""
        api = self._engine()
        state = self._inspect(api, cid) if cid else None
        if state is not None:
            if state["State"].get("Running"):
                drain = float(_read_status(run_dir).get("drain_seconds") or 10.0)
                try:
                    self._send(api, cid, run_dir, {"op": "stop"}, timeout=2.0)
                except BackendError:
                    pass
                try:
                    api.wait(cid, timeout=drain + 10)
                except Exception:  # noqa: BLE001 - did not stop in time: killed by the removal below
                    pass
            self._remove_container(api, cid)
        if run_dir and os.path.basename(os.path.dirname(os.path.dirname(os.path.dirname(run_dir)))) == "containers":
            shutil.rmtree(run_dir, ignore_errors=True)

    # --- helpers ----------------------------------------------------------------------------------
    def _labelled(self, service: Service) -> list:
        try:
            return self.b.client().api.containers(all=True, filters={"label": [
                f"{LABEL_DEPLOYMENT}={service.address}", f"{LABEL_WORKSPACE}={service.workspace}",
                f"{LABEL_PROJECT}={self.b.context.project_dir}"]})
        except Exception:  # noqa: BLE001
            return []

    @staticmethod
    def _inspect(api, cid: str) -> dict | None:
        import docker.errors

        if not cid:
            return None
        try:
            return api.inspect_container(cid)
        except docker.errors.NotFound:
            return None

    @staticmethod
    def _remove_container(api, cid: str) -> None:
        try:
            api.remove_container(cid, force=True, v=True)
        except Exception:  # noqa: BLE001 - already gone
            pass

    def _message(self, op: str, service: Service, generation: int, spec: Mapping) -> dict:
        return {"op": op, "generation": generation, "version": service.version, "config": dict(service.config),
                "replicas": service.replicas, "port": service.port, "drain_seconds": service.drain_seconds,
                "ready_timeout": service.ready_timeout, "python": spec["python"], "cwd": spec["workdir"],
                "env": dict(service.env)}

    def _start(self, service: Service, spec: Mapping, root: str, inherit: str = "") -> dict:
        """Create and start one container running the supervisor, deploy ``service`` in it (generation 1) and
        wait until its replicas are ready; removed again when anything fails."""
        import docker.errors

        api = self._engine()
        cid_short = os.urandom(4).hex()
        run_dir = os.path.join(root, cid_short)
        os.makedirs(run_dir, mode=0o700)
        os.mkfifo(os.path.join(run_dir, "ctl"), 0o600)
        name = f"mlspec-{service.workspace}-{service.name}-{cid_short}"
        env = dict(spec["env"])
        if inherit:
            env["MLSPEC_SERVE_INHERIT"] = inherit
        interval = int(HEALTH_INTERVAL * 1e9)
        cid = ""
        try:
            host_config = api.create_host_config(binds=dict(spec["binds"]), network_mode="host")
            cid = api.create_container(
                spec["image"], command=[spec["python"], "-m", SUPERVISOR, run_dir], name=name, environment=env,
                labels=self.labels(service, run_dir), user=spec["user"], working_dir=spec["workdir"],
                host_config=host_config, detach=True,
                healthcheck={"Test": ["CMD", spec["python"], "-c", HEALTH, os.path.join(run_dir, "status.json")],
                             "Interval": interval, "Timeout": int(5e9), "Retries": 3,
                             "StartPeriod": int(service.ready_timeout * 1e9)})["Id"]
            api.start(cid)
            self._send(api, cid, run_dir, self._message("deploy", service, 1, spec), timeout=30.0)
            st = self._wait(api, cid, run_dir, 1, service.ready_timeout + 10)
        except docker.errors.DockerException as exc:
            if cid:
                self._remove_container(api, cid)
            shutil.rmtree(run_dir, ignore_errors=True)
            raise BackendError(f"the Docker engine refused the container of {service.address}: {_first_line(exc)}")
        except BackendError as exc:  # the container's last lines go into the hint: it is removed now
            tail = self._tail(api, cid, 5) if cid else ""
            if cid:
                self._remove_container(api, cid)
            shutil.rmtree(run_dir, ignore_errors=True)
            raise BackendError(exc.message, hint=f"the container's last lines: {tail}" if tail else exc.hint) from None
        except BaseException:
            if cid:
                self._remove_container(api, cid)
            shutil.rmtree(run_dir, ignore_errors=True)
            raise
        return self._record(cid, name, run_dir, st, spec)

    def _record(self, cid: str, name: str, run_dir: str, st: Mapping, spec: Mapping) -> dict:
        return {"backend": "docker", "engine": self.b.engine_url, "container": cid, "name": name, "run_dir": run_dir,
                "image": spec["image"], "spec": spec["fingerprint"], "port": st.get("port"),
                "generation": st.get("generation"), "version": st.get("version"),
                "replicas": [{"pid": w["pid"], "started": w.get("started"), "version": w.get("version")}
                             for w in st.get("workers") or ()]}

    def _send(self, api, cid: str, run_dir: str, msg: dict, timeout: float = 10.0) -> None:
        """One command on the supervisor's FIFO, retried while its container runs and has not opened it."""
        from mlspec.backends import local_service

        deadline = time.monotonic() + timeout
        while True:
            try:
                local_service._send(run_dir, msg, None, timeout=0.5)
                return
            except BackendError:
                state = self._inspect(api, cid)
                if state is None or not state["State"].get("Running") or time.monotonic() > deadline:
                    raise BackendError(f"cannot reach the service supervisor in the container {cid[:12]}: "
                                       f"{self._why(api, cid, state)}", hint=f"see `docker logs {cid[:12]}`") from None

    def _wait(self, api, cid: str, run_dir: str, generation: int, timeout: float) -> dict:
        """The supervisor's status once it finished ``generation``; BackendError when it failed or its
        container ended."""
        deadline = time.monotonic() + timeout
        checked = 0.0
        while True:
            st = _read_status(run_dir)
            last = st.get("last") or {}
            if last.get("generation") == generation:
                if not last.get("ok"):
                    raise BackendError(last.get("error") or f"the service did not start: {self._tail(api, cid)}",
                                       hint=f"see `docker logs {cid[:12]}`")
                return st
            now = time.monotonic()
            if now - checked > 0.25:
                checked = now
                state = self._inspect(api, cid)
                if state is None or not state["State"].get("Running"):
                    raise BackendError(f"the service's container {cid[:12]} ended before it was ready: "
                                       f"{self._why(api, cid, state)}", hint=f"see `docker logs {cid[:12]}`")
            if now > deadline:
                raise BackendError(f"the service in the container {cid[:12]} was not ready within {timeout:g}s",
                                   hint=f"see `docker logs {cid[:12]}`")
            time.sleep(0.01)

    def _why(self, api, cid: str, state) -> str:
        if state is None:
            return "the container is gone"
        s = state["State"]
        if s.get("Running"):
            return f"it runs; {self._tail(api, cid)}"
        return f"it exited with code {s.get('ExitCode')}{' (OOM-killed)' if s.get('OOMKilled') else ''}; " \
               f"{self._tail(api, cid)}"

    @staticmethod
    def _tail(api, cid: str, lines: int = 3) -> str:
        try:
            text = api.logs(cid, stdout=True, stderr=True, tail=lines).decode("utf-8", "replace").strip()
        except Exception:  # noqa: BLE001
            return "(no log)"
        return " | ".join(text.splitlines()[-lines:]) or "(no output)"


def _read_status(run_dir: str) -> dict:
    from mlspec.backends.local_service import read_status

    return (read_status(run_dir) if run_dir else None) or {}
