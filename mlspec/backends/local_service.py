"""Services on the local backend: one small supervisor process per deployment owns the port.

Why a supervisor (docs/deployments.md, "How traffic switches"): a deployment has a fixed port and must be
updated without a failed request. The supervisor binds the port once and starts each replica (a prediction
worker, ``python -m mlspec.serve.worker --fd N``) on that listening socket, as gunicorn does: every worker
accepts from the one kernel accept queue. A rolling update starts the new workers on the same socket, waits
for each to say it is ready, and only then sends SIGTERM to the old ones, which stop accepting, finish what
they have in flight and exit; a connection waiting in the queue is accepted by whichever worker is alive, so
none is refused or dropped. `SO_REUSEPORT` would instead give each process its own queue, and connections
queued on a stopping process are lost (Linux does not migrate them): hence one socket, shared.

The supervisor is started detached (its own session, so it outlives the apply that started it: a deployment
is the deliberate exception to "no process outlives its apply"), restarts a worker that crashes, and its
workers die with it (``PR_SET_PDEATHSIG`` on Linux): killing the supervisor kills the service, and `mlspec
refresh` sees it gone. It imports the standard library only.

Control: each deployment has a run directory (``.mlspec/services/WORKSPACE/NAME`` in the project, mode 0700)
holding a FIFO ``ctl`` on which mlspec sends one JSON line per command (deploy, update, stop) and the
file ``status.json`` where the supervisor says what it runs and how the last command ended (written
atomically). Secrets (the bearer token, the store's options) travel only in the environment and in the FIFO
(kernel memory), never in a file. ``service.log`` collects the supervisor's and its workers' output.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time

STATUS = "status.json"
CONTROL = "ctl"
LOG = "service.log"
WORKER_MODULE = "mlspec.serve.worker"
RESTART_LIMIT = 5  # crashes of one replica within RESTART_WINDOW: stop restarting it (refresh sees degraded)
RESTART_WINDOW = 60.0
#: a unix socket path: the supervisor takes its listening socket over from the one offering it there
INHERIT_ENV = "MLSPEC_SERVE_INHERIT"
#: "1": the supervisor starts a standby worker (``--standby``) at once, which imports while the apply goes on
STANDBY_ENV = "MLSPEC_SERVE_STANDBY"


# --- shared helpers (both sides) -------------------------------------------------------------------
def proc_started(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (to tell a pid reused by another process), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
        return int(data[data.rfind(b")") + 2:].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def same_process(pid, started) -> bool:
    """Whether ``pid`` is alive and is the process recorded with ``started`` (not a reused pid)."""
    from mlspec.procs import process_alive

    if not isinstance(pid, int) or pid <= 0 or not process_alive(pid):
        return False
    now = proc_started(pid)
    return started is None or now is None or now == started


def _write_atomic(path: str, data: dict) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh)
    os.replace(tmp, path)


def _unix_call(fn, path: str):
    """``fn(path)`` for a unix socket path, from inside its directory: a path may be longer than the 107 bytes
    an address holds (deep project directories)."""
    here = os.getcwd()
    os.chdir(os.path.dirname(path) or ".")
    try:
        return fn(os.path.basename(path))
    finally:
        os.chdir(here)


def read_status(run_dir: str) -> dict | None:
    try:
        with open(os.path.join(run_dir, STATUS), encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


# --- the supervisor (python -m mlspec.backends.local_service RUN_DIR) -------------------------------
class _Worker:
    def __init__(self, proc: subprocess.Popen, status_fd: int, generation: int, version, index: int):
        self.proc, self.status_fd, self.generation, self.version, self.index = proc, status_fd, generation, version, index
        self.ready = False
        self.started = proc_started(proc.pid)
        self.buf = b""

    def to_dict(self) -> dict:
        return {"pid": self.proc.pid, "started": self.started, "generation": self.generation,
                "version": self.version, "ready": self.ready}


def _die_with_parent(parent: int):
    def hook():
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except Exception:  # noqa: BLE001 - not Linux: the workers outlive a killed supervisor (documented)
            pass
        if os.getppid() != parent:  # the supervisor died before the hook ran
            os._exit(1)
    return hook


class Supervisor:
    def __init__(self, run_dir: str):
        self.run_dir = run_dir
        self.sock = None
        self.port = None
        self.workers: list[_Worker] = []  # serving (the current generation)
        self.generation = 0
        self.version = None
        self.desired: dict = {}
        self.env = dict(os.environ)
        self.crashes: dict = {}  # replica index -> [times]
        self.restarts = 0
        self.last: dict = {}
        self.stopping = False
        self.started = time.time()
        self.standby = None  # (Popen, status fd, unix socket) of a worker importing ahead of the first deploy

    # -- status --
    def write_status(self, state: str = "running") -> None:
        _write_atomic(os.path.join(self.run_dir, STATUS), {
            "pid": os.getpid(), "started": proc_started(os.getpid()), "since": round(self.started, 3),
            "state": state, "port": self.port, "generation": self.generation, "version": self.version,
            "replicas": self.desired.get("replicas"), "drain_seconds": self.desired.get("drain_seconds"),
            "workers": [w.to_dict() for w in self.workers],
            "restarts": self.restarts, "last": self.last, "updated": round(time.time(), 3)})

    def log(self, text: str) -> None:
        print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} supervisor: {text}", flush=True)

    # -- workers --
    def spawn(self, msg: dict, cfg_path: str, index: int) -> _Worker:
        r, w = os.pipe()
        python = msg.get("python") or sys.executable
        cmd = [python, "-m", WORKER_MODULE, "--config", cfg_path, "--fd", str(self.sock.fileno()),
               "--status-fd", str(w)]
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=sys.stdout, stderr=sys.stderr,
                                pass_fds=(self.sock.fileno(), w), env=self.env, cwd=msg.get("cwd") or None,
                                preexec_fn=_die_with_parent(os.getpid()))
        os.close(w)
        return _Worker(proc, r, msg["generation"], msg.get("version"), index)

    def spawn_standby(self) -> None:
        """Start a worker that imports what serving needs now and takes its config, environment and socket
        later (``--standby``): the first deploy then waits only for the model to load."""
        import socket

        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        r, w = os.pipe()
        try:
            cmd = [sys.executable, "-m", WORKER_MODULE, "--standby", str(theirs.fileno()), "--status-fd", str(w)]
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=sys.stdout, stderr=sys.stderr,
                                    pass_fds=(theirs.fileno(), w), env=self.env,
                                    preexec_fn=_die_with_parent(os.getpid()))
        except OSError as exc:
            ours.close()
            os.close(r)
            self.log(f"no standby worker: {exc}")
            return
        finally:
            theirs.close()
            os.close(w)
        self.standby = (proc, r, ours)
        self.log(f"standby worker (pid {proc.pid}) importing")

    def take_standby(self, msg: dict, cfg_path: str, index: int):
        """The standby worker, handed the config, the environment and the listening socket; None when there
        is none or it does not fit this deploy (another interpreter or directory): a worker is spawned."""
        import socket

        sb, self.standby = self.standby, None
        if sb is None:
            return None
        proc, r, ours = sb
        fits = (proc.poll() is None and (msg.get("python") or sys.executable) == sys.executable
                and os.path.realpath(msg.get("cwd") or os.getcwd()) == os.path.realpath(os.getcwd()))
        if fits:
            try:
                socket.send_fds(ours, [json.dumps({"config": cfg_path, "env": msg.get("env") or {}}).encode()],
                                [self.sock.fileno()])
            except OSError as exc:
                self.log(f"standby worker (pid {proc.pid}) not reachable: {exc}")
                fits = False
        ours.close()
        if not fits:
            self.discard_standby((proc, r, None))
            return None
        return _Worker(proc, r, msg["generation"], msg.get("version"), index)

    def discard_standby(self, sb=None) -> None:
        sb = sb or self.standby
        if sb is None:
            return
        if sb is self.standby:
            self.standby = None
        proc, r, ours = sb
        if ours is not None:
            ours.close()  # the standby worker reads end-of-file and exits 0
        try:
            proc.wait(2.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        try:
            os.close(r)
        except OSError:
            pass

    def wait_ready(self, workers: list, timeout: float) -> str:
        """'' when every worker said ready; else what went wrong (the workers are left to the caller)."""
        deadline = time.monotonic() + timeout
        waiting = {w.status_fd: w for w in workers if not w.ready}
        while waiting:
            left = deadline - time.monotonic()
            if left <= 0:
                return f"a replica was not ready within {timeout:g}s"
            ready, _, _ = select.select(list(waiting), [], [], min(left, 0.5))
            for fd in ready:
                w = waiting[fd]
                chunk = os.read(fd, 65536)
                if not chunk:
                    code = w.proc.wait()
                    return f"a replica exited with code {code} before it was ready"
                w.buf += chunk
                while b"\n" in w.buf:
                    line, w.buf = w.buf.split(b"\n", 1)
                    try:
                        ev = json.loads(line)
                    except ValueError:
                        continue
                    if ev.get("event") == "ready":
                        w.ready = True
                        waiting.pop(fd, None)
                    elif ev.get("event") == "failed":
                        return f"a replica failed to load: {ev.get('error') or 'no reason given'}"
        for w in workers:
            try:
                os.close(w.status_fd)
            except OSError:
                pass
        return ""

    def stop_workers(self, workers: list, grace: float) -> None:
        """SIGTERM (drain), wait up to ``grace`` seconds, then SIGKILL."""
        for w in workers:
            if w.proc.poll() is None:
                try:
                    w.proc.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + grace
        for w in workers:
            try:
                w.proc.wait(max(deadline - time.monotonic(), 0.01))
            except subprocess.TimeoutExpired:
                w.proc.kill()
                w.proc.wait()
            try:
                os.close(w.status_fd)
            except OSError:
                pass

    # -- commands --
    def bind(self, port) -> str:
        import socket

        inherit = os.environ.get(INHERIT_ENV)
        if inherit:
            return self.inherit(inherit, port)
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", int(port or 0)))
        except OSError as exc:
            s.close()
            return f"cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}"
        s.listen(1024)
        s.set_inheritable(True)
        self.sock, self.port = s, s.getsockname()[1]
        return ""

    def inherit(self, path: str, port) -> str:
        """Take over the listening socket of another supervisor that offers it on the unix socket ``path``
        (its ``share`` command): both then accept from the one kernel queue, so the other can drain and stop
        without a refused connection. Used to replace a service's container (mlspec_docker.service)."""
        import socket

        u = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        deadline = time.monotonic() + 30.0
        try:
            while True:
                try:
                    _unix_call(u.connect, path)
                    break
                except (FileNotFoundError, ConnectionRefusedError):
                    if time.monotonic() > deadline:
                        return f"no supervisor offered its socket on {path} within 30s"
                    time.sleep(0.02)
            u.settimeout(30.0)
            _data, fds, _flags, _addr = socket.recv_fds(u, 16, 4)
        except OSError as exc:
            return f"cannot take over the listening socket from {path}: {exc}"
        finally:
            u.close()
        if not fds:
            return f"the supervisor on {path} sent no socket"
        for extra in fds[1:]:
            os.close(extra)
        s = socket.socket(fileno=fds[0])
        s.set_inheritable(True)
        self.sock, self.port = s, s.getsockname()[1]
        if port and int(port) != self.port:
            return f"the socket taken over listens on port {self.port}, not {port}"
        self.log(f"took over the listening socket on port {self.port} from {path}")
        return ""

    def share(self, msg: dict) -> str:
        """Offer the listening socket once on the unix socket ``msg["path"]`` (SCM_RIGHTS), acknowledged in
        status.json as soon as it listens; waits up to ``msg["timeout"]`` seconds for the taker."""
        import socket

        if self.sock is None:
            return "this supervisor has no listening socket to share"
        path = msg["path"]
        u = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            _unix_call(u.bind, path)
            os.chmod(path, 0o600)
            u.listen(1)
            self.last = {"generation": msg.get("generation"), "ok": True, "error": "", "when": round(time.time(), 3)}
            self.write_status()
            u.settimeout(float(msg.get("timeout") or 60))
            conn, _ = u.accept()
            with conn:
                socket.send_fds(conn, [b"s"], [self.sock.fileno()])
            self.log(f"shared the listening socket on port {self.port}")
            return ""
        except OSError as exc:
            return f"cannot share the listening socket on {path}: {exc}"
        finally:
            u.close()
            try:
                os.unlink(path)
            except OSError:
                pass

    def roll(self, msg: dict) -> str:
        """Start the generation ``msg`` describes, wait until it is ready, then drain and stop the old one."""
        cfg_path = os.path.join(self.run_dir, f"config-{msg['generation']}.json")
        _write_atomic(cfg_path, msg["config"])
        self.env = dict(os.environ, **(msg.get("env") or {}))
        new = []
        error = ""
        try:
            for i in range(int(msg.get("replicas") or 1)):
                new.append((i == 0 and self.take_standby(msg, cfg_path, i)) or self.spawn(msg, cfg_path, i))
            error = self.wait_ready(new, float(msg.get("ready_timeout") or 300))
        except OSError as exc:
            error = f"cannot start a replica: {exc}"
        if error:
            self.stop_workers(new, 2.0)
            return error
        old, self.workers = self.workers, new
        self.generation, self.version, self.desired = msg["generation"], msg.get("version"), msg
        self.crashes.clear()
        self.write_status()
        self.stop_workers(old, float(msg.get("drain_seconds") or 10) + 5)
        for name in os.listdir(self.run_dir):  # configs of older generations
            if name.startswith("config-") and name != os.path.basename(cfg_path):
                try:
                    os.remove(os.path.join(self.run_dir, name))
                except OSError:
                    pass
        return ""

    def handle(self, msg: dict) -> bool:
        """Carry out one command; False: stop the supervisor."""
        op = msg.get("op")
        if op == "stop":
            self.log("stop requested")
            return False
        if op == "share":
            error = self.share(msg)
            if error:
                self.log(error)
                self.last = {"generation": msg.get("generation"), "ok": False, "error": error,
                             "when": round(time.time(), 3)}
                self.write_status()
            return True
        if op in ("deploy", "update"):
            self.log(f"{op}: generation {msg.get('generation')}, version {msg.get('version')}, "
                     f"{msg.get('replicas')} replica(s)")
            error = self.roll(msg)
            self.last = {"generation": msg.get("generation"), "ok": not error, "error": error,
                         "when": round(time.time(), 3)}
            self.write_status()
            if error:
                self.log(f"{op} failed: {error}")
                if not self.workers:  # nothing serves: a failed first deploy ends the supervisor
                    return False
            return True
        self.log(f"unknown command {op!r} ignored")
        return True

    def reap(self) -> None:
        """Restart a worker of the serving generation that died (a crash), unless it keeps crashing."""
        for w in list(self.workers):
            code = w.proc.poll()
            if code is None:
                continue
            now = time.monotonic()
            times = [t for t in self.crashes.get(w.index, []) if now - t < RESTART_WINDOW] + [now]
            self.crashes[w.index] = times
            self.workers.remove(w)
            if len(times) > RESTART_LIMIT:
                self.log(f"replica {w.index} (pid {w.proc.pid}) exited with {code} {len(times)} times in "
                         f"{RESTART_WINDOW:g}s: not restarted")
                self.write_status("degraded")
                continue
            self.log(f"replica {w.index} (pid {w.proc.pid}) exited with {code}: restarting it")
            cfg_path = os.path.join(self.run_dir, f"config-{self.generation}.json")
            try:
                nw = self.spawn(self.desired, cfg_path, w.index)
            except OSError as exc:
                self.log(f"cannot restart replica {w.index}: {exc}")
                continue
            error = self.wait_ready([nw], float(self.desired.get("ready_timeout") or 300))
            if error:
                self.log(f"restart of replica {w.index} failed: {error}")
                self.stop_workers([nw], 2.0)
                continue
            self.workers.append(nw)
            self.restarts += 1
            self.write_status()

    def run(self) -> int:
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "stopping", True))
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        fifo = os.open(os.path.join(self.run_dir, CONTROL), os.O_RDWR | os.O_NONBLOCK)
        if os.environ.get(STANDBY_ENV) == "1":
            self.spawn_standby()
        buf = b""
        code = 0
        try:
            while not self.stopping:
                try:
                    ready, _, _ = select.select([fifo], [], [], 0.5)
                except InterruptedError:
                    continue
                if ready:
                    try:
                        buf += os.read(fifo, 1 << 20)
                    except BlockingIOError:
                        pass
                    while b"\n" in buf:
                        line, buf = buf.split(b"\n", 1)
                        try:
                            msg = json.loads(line)
                        except ValueError:
                            continue
                        if msg.get("op") in ("deploy", "update") and self.sock is None:
                            error = self.bind(msg.get("port"))
                            if error:
                                self.last = {"generation": msg.get("generation"), "ok": False, "error": error,
                                             "when": round(time.time(), 3)}
                                self.write_status("failed")
                                return 1
                        if not self.handle(msg):
                            self.stopping = True
                            code = 0 if self.workers or msg.get("op") == "stop" else 1
                            break
                self.reap()
        finally:
            self.discard_standby()
            self.stop_workers(self.workers, float(self.desired.get("drain_seconds") or 10) + 5)
            self.workers = []
            if self.sock is not None:
                self.sock.close()
            os.close(fifo)
            failed = self.generation == 0 and self.last and not self.last.get("ok")  # never served
            self.write_status("failed" if failed else "stopped")
            self.log("stopped")
        return code


def main(argv: list[str]) -> int:
    run_dir = argv[0]
    return Supervisor(run_dir).run()


# --- mlspec's side: the local backend's service calls -----------------------------------------------
def _errors():
    from mlspec.backends.api import BackendError, ServiceStatus

    return BackendError, ServiceStatus


def run_dir_of(project_dir, service) -> str:
    return os.path.join(str(project_dir), ".mlspec", "services", service.workspace, service.name)


def _send(run_dir: str, msg: dict, pid: int | None = None, timeout: float = 10.0) -> None:
    """One command on the supervisor's FIFO (it holds it open for reading once started)."""
    import errno

    from mlspec.procs import process_alive

    path = os.path.join(run_dir, CONTROL)
    deadline = time.monotonic() + timeout
    while True:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            break
        except OSError as exc:  # ENXIO: the supervisor has not opened it yet
            if exc.errno != errno.ENXIO or time.monotonic() > deadline or (pid and not process_alive(pid)):
                BackendError, _ = _errors()
                raise BackendError(f"cannot reach the service supervisor{f' (pid {pid})' if pid else ''}: "
                                   f"{exc.strerror}; {_log_tail(run_dir)}") from None
            time.sleep(0.005)
    try:
        data = (json.dumps(msg) + "\n").encode()
        view = memoryview(data)
        while view:
            try:
                n = os.write(fd, view)
            except BlockingIOError:
                time.sleep(0.005)
                continue
            view = view[n:]
    finally:
        os.close(fd)


def _wait(run_dir: str, pid: int, generation: int, timeout: float) -> dict:
    """The supervisor's status once it finished ``generation`` (or died)."""
    from mlspec.procs import process_alive

    BackendError, _ = _errors()
    deadline = time.monotonic() + timeout
    while True:
        st = read_status(run_dir) or {}
        last = st.get("last") or {}
        if last.get("generation") == generation:
            if not last.get("ok"):
                raise BackendError(last.get("error") or "the service did not start",
                                   hint=f"its log: {os.path.join(run_dir, LOG)}")
            return st
        if not process_alive(pid):
            raise BackendError(f"the service supervisor (pid {pid}) exited before it was ready: "
                               f"{_log_tail(run_dir)}", hint=f"its log: {os.path.join(run_dir, LOG)}")
        if time.monotonic() > deadline:
            raise BackendError(f"the service was not ready within {timeout:g}s",
                               hint=f"its log: {os.path.join(run_dir, LOG)}")
        time.sleep(0.01)


def _log_tail(run_dir: str, lines: int = 3) -> str:
    try:
        with open(os.path.join(run_dir, LOG), "rb") as fh:
            fh.seek(0, 2)
            fh.seek(max(fh.tell() - 4096, 0))
            text = fh.read().decode("utf-8", "replace").strip().splitlines()
        return " | ".join(text[-lines:]) or "(no output)"
    except OSError:
        return "(no log)"


def _record(run_dir: str, st: dict, service) -> dict:
    return {"backend": "local", "run_dir": run_dir, "supervisor": {"pid": st["pid"], "started": st.get("started")},
            "port": st["port"], "generation": st["generation"], "version": st.get("version"),
            "replicas": [{"pid": w["pid"], "started": w.get("started"), "version": w.get("version")}
                         for w in st.get("workers") or ()]}


def _message(op: str, service, generation: int, python: str, cwd: str) -> dict:
    return {"op": op, "generation": generation, "version": service.version, "config": dict(service.config),
            "replicas": service.replicas, "port": service.port, "drain_seconds": service.drain_seconds,
            "ready_timeout": service.ready_timeout, "python": python, "cwd": cwd, "env": dict(service.env)}


#: supervisors started ahead of their deploy by this process (``prestart``): run dir -> Popen
_PRESTARTED: dict = {}


def _start_supervisor(project_dir, run_dir: str, standby: bool) -> subprocess.Popen:
    import shutil

    shutil.rmtree(run_dir, ignore_errors=True)
    os.makedirs(run_dir, mode=0o700)
    os.mkfifo(os.path.join(run_dir, CONTROL), 0o600)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if standby:
        env[STANDBY_ENV] = "1"
    else:
        env.pop(STANDBY_ENV, None)
    with open(os.path.join(run_dir, LOG), "ab") as log:
        return subprocess.Popen([sys.executable, "-m", "mlspec.backends.local_service", run_dir],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, cwd=str(project_dir),
                                start_new_session=True)


def _alive_supervisor(run_dir: str) -> dict | None:
    old = read_status(run_dir)
    if old and same_process(old.get("pid"), old.get("started")) and old.get("state") not in ("stopped", "failed"):
        return old
    return None


def prestart(project_dir, workspace: str, name: str) -> bool:
    """Start the supervisor of a deployment this apply is about to create, with a standby worker importing
    what serving needs while the apply still plans, trains and registers: ``deploy`` then hands it the model
    version. False (nothing started) when a supervisor already runs there. ``cancel_prestarted`` stops what
    no deploy took (the apply's end)."""
    from types import SimpleNamespace

    run_dir = run_dir_of(project_dir, SimpleNamespace(workspace=workspace, name=name))
    if run_dir in _PRESTARTED or _alive_supervisor(run_dir):
        return False
    _PRESTARTED[run_dir] = _start_supervisor(project_dir, run_dir, standby=True)
    return True


def cancel_prestarted() -> None:
    """Stop the supervisors ``prestart`` started and no deploy took (their standby workers with them)."""
    import shutil

    while _PRESTARTED:
        run_dir, proc = _PRESTARTED.popitem()
        if proc.poll() is None:
            proc.terminate()  # the supervisor stops its standby worker and exits
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                _kill_group(proc.pid)
                proc.wait()
        shutil.rmtree(run_dir, ignore_errors=True)


def deploy(project_dir, service, python: str | None = None) -> dict:
    """Start a supervisor for ``service`` (or take the one ``prestart`` started) and wait until its replicas
    are ready; the record."""
    BackendError, _ = _errors()
    run_dir = run_dir_of(project_dir, service)
    proc = _PRESTARTED.pop(run_dir, None)
    if proc is not None and proc.poll() is not None:
        proc = None  # it died: start afresh
    if proc is None:
        old = _alive_supervisor(run_dir)
        if old:
            remove({"run_dir": run_dir, "supervisor": {"pid": old["pid"], "started": old.get("started")},
                    "replicas": old.get("workers") or []})
        proc = _start_supervisor(project_dir, run_dir, standby=False)
    python = python or sys.executable
    proc.returncode = 0  # detached on purpose: never waited for by this process (no ResourceWarning)
    try:
        _send(run_dir, _message("deploy", service, 1, python, str(project_dir)), proc.pid)
        st = _wait(run_dir, proc.pid, 1, service.ready_timeout + 5)
    except BaseException:
        _kill_group(proc.pid)
        raise
    if st.get("port") is None:
        raise BackendError(f"the service of {service.address} reported no port")
    return _record(run_dir, st, service)


def update(project_dir, record, service, python: str | None = None) -> dict:
    """Roll ``service`` out over the running supervisor (a new generation); a gone one is started anew."""
    sup = (record or {}).get("supervisor") or {}
    run_dir = (record or {}).get("run_dir") or run_dir_of(project_dir, service)
    if not same_process(sup.get("pid"), sup.get("started")):
        return deploy(project_dir, service, python)
    generation = int(record.get("generation") or 0) + 1
    st = read_status(run_dir) or {}
    generation = max(generation, int(st.get("generation") or 0) + 1, int((st.get("last") or {}).get("generation") or 0) + 1)
    _send(run_dir, _message("update", service, generation, python or sys.executable, str(project_dir)), sup["pid"])
    st = _wait(run_dir, sup["pid"], generation, service.ready_timeout + service.drain_seconds + 10)
    return _record(run_dir, st, service)


def status(record) -> "object":
    """What runs of a recorded service: processes, readiness on the port, the version served."""
    _, ServiceStatus = _errors()
    sup = (record or {}).get("supervisor") or {}
    port = (record or {}).get("port")
    if not same_process(sup.get("pid"), sup.get("started")):
        alive = [r["pid"] for r in (record or {}).get("replicas") or () if same_process(r.get("pid"), r.get("started"))]
        detail = f"the supervisor (pid {sup.get('pid')}) is gone"
        if alive:
            detail += f"; replica process(es) {', '.join(map(str, alive))} are still alive (orphans)"
        return ServiceStatus("gone", None, port, [], detail)
    st = read_status(record.get("run_dir") or "") or {}
    workers = [w for w in st.get("workers") or () if same_process(w.get("pid"), w.get("started"))]
    replicas = [{"pid": w["pid"], "version": w.get("version"), "started": w.get("started")} for w in workers]
    probe = _probe(port)
    versions = sorted({w.get("version") for w in workers if w.get("version") is not None})
    version = versions[0] if len(versions) == 1 else None
    if probe:
        return ServiceStatus("unhealthy", version, port, replicas,
                             f"the supervisor (pid {sup['pid']}) runs, but {probe}")
    wanted = int(st.get("replicas") or len(workers) or 1)
    if len(workers) < wanted:
        return ServiceStatus("degraded", version, port, replicas,
                             f"{len(workers)} of {wanted} replica(s) run (see {os.path.join(record['run_dir'], LOG)})")
    return ServiceStatus("running", version, port, replicas,
                         f"{len(workers)} replica(s) ready on port {port}, version {version}")


def _probe(port) -> str:
    """'' when GET /v2/health/ready on the port answers 200 within 2 s; else what happened."""
    import http.client

    if not port:
        return "no port is recorded"
    conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=2.0)
    try:
        conn.request("GET", "/v2/health/ready")
        resp = conn.getresponse()
        resp.read()
        if resp.status != 200:
            return f"GET /v2/health/ready on port {port} answered {resp.status}"
        return ""
    except (OSError, http.client.HTTPException) as exc:
        return f"port {port} does not answer ({exc.__class__.__name__}: {exc})"
    finally:
        conn.close()


def _kill_group(pid: int) -> None:
    for sig in (signal.SIGKILL,):
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def remove(record, timeout: float | None = None) -> None:
    """Stop a recorded service (drained); afterwards no process of it is alive and its port is closed."""
    import shutil

    from mlspec.procs import process_alive

    record = record or {}
    sup = record.get("supervisor") or {}
    run_dir = record.get("run_dir") or ""
    pid = sup.get("pid")
    if same_process(pid, sup.get("started")):
        st = read_status(run_dir) or {}
        drain = float(st.get("drain_seconds") or 10.0)
        try:
            _send(run_dir, {"op": "stop"}, pid, timeout=2.0)
        except Exception:  # noqa: BLE001 - no FIFO: a signal does the same
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + (timeout if timeout is not None else drain + 10)
        while process_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        if process_alive(pid):
            _kill_group(pid)
    for r in record.get("replicas") or ():  # orphans of a supervisor killed on a system without PDEATHSIG
        if same_process(r.get("pid"), r.get("started")):
            try:
                os.kill(r["pid"], signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    deadline = time.monotonic() + 5
    while any(same_process(r.get("pid"), r.get("started")) for r in record.get("replicas") or ()) \
            and time.monotonic() < deadline:
        time.sleep(0.02)
    if run_dir and os.path.basename(os.path.dirname(os.path.dirname(run_dir))) == "services" \
            and run_dir not in _PRESTARTED:  # a recreate's supervisor, started ahead, already lives there
        shutil.rmtree(run_dir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
