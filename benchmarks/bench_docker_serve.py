"""Deployments in containers: what a switch loses, and what deploy/update/replace cost, local and docker side by side.

Prints a Markdown report; never asserts.

1. The switch, on plain sockets (no Docker): a looping client (new connection per request) while the old
   listener stops accepting and closes, and a new one takes over, ``--switches`` times each way:
   - ``SO_REUSEPORT``: the new process binds its own socket on the same port; connections that the kernel
     queued on the old socket are reset when it closes (unless net.ipv4.tcp_migrate_req=1);
   - hand-over: the new process gets the old listening socket itself (what SCM_RIGHTS passes between the
     supervisors of the old and new containers): one queue, nothing lost.
2. Services through the backends' API (a real engine: DOCKER_HOST, else a private dockerd), the same model on
   both backends, a client looping requests during each change: deploy to ready; rolling update to another
   version (in the container for docker); on docker also a container replacement (other settings); remove.
   Times, requests answered and failed (target: 0 failed).

Run from the repository root in the activated venv: python benchmarks/bench_docker_serve.py [--switches N]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "backends" / "docker"))


# --- 1. the switch on plain sockets ---------------------------------------------------------------------
class Acceptor(threading.Thread):
    def __init__(self, sock: socket.socket):
        super().__init__(daemon=True)
        self.sock, self.halt = sock, threading.Event()
        sock.settimeout(0.01)

    def run(self):
        while not self.halt.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                try:
                    conn.recv(64)
                    conn.sendall(b"ok\n")
                except OSError:
                    pass


def loop_client(port: int, halt: threading.Event, counts: dict) -> None:
    while not halt.is_set():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as c:
                c.sendall(b"hi\n")
                ok = c.recv(8) == b"ok\n"
        except OSError:
            ok = False
        counts["ok" if ok else "failed"] += 1


def listener(port: int, reuseport: bool) -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuseport:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("127.0.0.1", port))
    s.listen(1024)
    return s


def switch_experiment(mode: str, switches: int, clients: int = 4) -> dict:
    reuse = mode == "SO_REUSEPORT"
    old = listener(0, reuse)
    port = old.getsockname()[1]
    acc = Acceptor(old)
    acc.start()
    counts = {"ok": 0, "failed": 0}
    halt = threading.Event()
    threads = [threading.Thread(target=loop_client, args=(port, halt, counts), daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    for _ in range(switches):
        time.sleep(0.1)
        new = listener(port, True) if reuse else socket.socket(fileno=os.dup(old.fileno()))
        nacc = Acceptor(new)
        nacc.start()
        time.sleep(0.05)  # both serve
        acc.halt.set()  # the old one drains: it stops accepting, then closes its socket
        acc.join()
        time.sleep(0.02)
        old.close()
        old, acc = new, nacc
    time.sleep(0.1)
    halt.set()
    for t in threads:
        t.join(5)
    acc.halt.set()
    acc.join()
    old.close()
    return counts


# --- 2. services through the backends' API ---------------------------------------------------------------
def infer(port: int) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", "/v2/models/conf-model/infer", body=json.dumps({"inputs": [
            {"name": "x1", "datatype": "FP64", "shape": [1], "data": [1.0]},
            {"name": "x2", "datatype": "FP64", "shape": [1], "data": [0.0]}]}),
            headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"{}")
    finally:
        conn.close()


def under_load(port: int, fn):
    counts = {"ok": 0, "failed": 0}
    halt = threading.Event()

    def loop():
        while not halt.is_set():
            try:
                ok = infer(port)[0] == 200
            except OSError:
                ok = False
            counts["ok" if ok else "failed"] += 1

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    out = fn()
    took = time.monotonic() - t0
    time.sleep(0.3)
    halt.set()
    t.join(30)
    return out, took, counts


def services(rows: list, engine: str) -> None:
    from mlspec.artifacts import ArtifactStore
    from mlspec.backends.api import Context
    from mlspec.backends.local import LocalBackend
    from mlspec.testing import free_port, make_model_artifact, make_service
    from mlspec_docker.backend import DockerBackend

    tmp = Path(tempfile.mkdtemp(prefix="bds"))
    (tmp / "project").mkdir()
    ctx = Context(project_dir=tmp / "project", artifacts_url=str(tmp / "artifacts"), code_paths=())
    store = ArtifactStore(ctx.artifacts_url)
    models = {v: make_model_artifact(store, v) for v in (1, 2)}
    made = {
        "local": lambda **kw: LocalBackend({"type": "local"}, ctx),
        "docker": lambda **kw: DockerBackend({"type": "docker", "host": engine, **kw}, ctx),
    }
    for name, make in made.items():
        b = make(env={"FLAVOUR": "one"})
        b.start()
        port = free_port()
        t0 = time.monotonic()
        rec = b.deploy_service(make_service(ctx, *models[1], 1, name=f"bench-{name}", port=port))
        rows.append((name, "deploy to ready", time.monotonic() - t0, "-", "-"))
        rec, took, c = under_load(port, lambda: b.update_service(
            rec, make_service(ctx, *models[2], 2, name=f"bench-{name}", port=port)))
        rows.append((name, "rolling update (new version)", took, c["ok"], c["failed"]))
        if name == "docker":
            b2 = make(env={"FLAVOUR": "two"})
            b2.start()
            rec, took, c = under_load(port, lambda: b2.update_service(
                rec, make_service(ctx, *models[1], 1, name=f"bench-{name}", port=port)))
            rows.append((name, "container replacement (other settings)", took, c["ok"], c["failed"]))
        t0 = time.monotonic()
        b.remove_service(rec)
        rows.append((name, "remove (drained)", time.monotonic() - t0, "-", "-"))
        b.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--switches", type=int, default=30)
    ap.add_argument("--no-docker", action="store_true", help="only the socket experiment")
    args = ap.parse_args()
    try:
        migrate = Path("/proc/sys/net/ipv4/tcp_migrate_req").read_text().strip()
    except OSError:
        migrate = "?"
    load = os.getloadavg()[0]
    print(f"# Deployments in containers\n\nload average {load:.1f} on {os.cpu_count()} CPUs; "
          f"net.ipv4.tcp_migrate_req={migrate}\n")
    print(f"## The switch ({args.switches} switches, 4 looping clients)\n")
    print("| mode | requests answered | failed |\n|---|---|---|")
    for mode in ("SO_REUSEPORT", "hand-over (one socket)"):
        c = switch_experiment(mode, args.switches)
        print(f"| {mode} | {c['ok']} | {c['failed']} |")
    if args.no_docker:
        return 0
    from mlspec_docker.daemon import LocalDockerd

    daemon = None
    engine = os.environ.get("DOCKER_HOST")
    if not engine:
        daemon = LocalDockerd().start()
        engine = daemon.url
    rows: list = []
    try:
        services(rows, engine)
    finally:
        if daemon is not None:
            daemon.stop()
    print("\n## Services (one client looping requests during each change; target 0 failed)\n")
    print("| backend | change | seconds | requests answered | failed |\n|---|---|---|---|---|")
    for backend, what, secs, ok, failed in rows:
        print(f"| {backend} | {what} | {secs:.2f} | {ok} | {failed} |")
    ratio = [r[2] for r in rows if r[1] == "deploy to ready"]
    if len(ratio) == 2:
        print(f"\ndeploy to ready, docker / local: {ratio[1] / ratio[0]:.2f} "
              f"(median of one; the machine's load moves both)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
