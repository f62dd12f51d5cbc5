"""One prediction worker: ``python -m mlspec.serve.worker --config CONFIG.json (--fd N | --host H --port P)
[--status-fd M]``.

1. Reads the config and loads the model (from the artifact store, content checked against its hash)
   BEFORE touching the socket: a worker started on a shared socket never answers while still loading.
2. Serves on uvicorn (uvloop event loop, httptools parser): on an inherited listening socket (``--fd``,
   shared with sibling workers: one accept queue) or on one it binds (``--port``, 0 for any free port).
3. Writes ``{"event": "ready", "pid", "port", "version"}`` as one JSON line to fd M (when given) and to
   stderr once it accepts connections; on a load failure ``{"event": "failed", "error"}`` and exit 1.
   ``--standby FD`` instead of ``--fd``/``--port``: the worker first imports what serving needs (numpy,
   scikit-learn, skops, uvicorn: most of its start), then waits on the unix socket FD for one message from
   its supervisor (the config's path, the environment holding the secrets, and the listening socket as
   SCM_RIGHTS) and goes on as with ``--config``/``--fd``. A supervisor started early in an apply keeps one
   such worker ready to take the first deployment (mlspec.backends.local_service, docs/serving.md).
4. On SIGTERM (or SIGINT) drains: stops accepting, answers in-flight requests and any request arriving
   on an open keep-alive connection during a short grace with ``Connection: close``, closes idle
   connections, flushes the request log and exits 0, all within ``drain_seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import time

IDLE_GRACE = 1.0  # seconds an open keep-alive connection gets, once draining, to send a last request


def _emit(line: dict, status=None) -> None:
    text = json.dumps(line) + "\n"
    for out in (status, sys.stderr):
        if out is None:
            continue
        try:
            out.write(text)
            out.flush()
        except (OSError, ValueError):
            pass


def _parse(argv):
    p = argparse.ArgumentParser(prog="python -m mlspec.serve.worker",
                                description="Serve one model version (see docs/serving.md).")
    p.add_argument("--config", help="the worker's JSON config (written by the deployer)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--fd", type=int, help="an inherited, listening TCP socket to serve on")
    where.add_argument("--standby", type=int, metavar="FD",
                       help="import first, then take the config, environment and socket from this unix socket")
    where.add_argument("--port", type=int, help="bind this port (0: any free port, reported when ready)")
    p.add_argument("--host", default="127.0.0.1", help="the address to bind with --port (default 127.0.0.1)")
    p.add_argument("--status-fd", type=int, help="also write the ready/failed JSON line to this fd")
    p.add_argument("--backlog", type=int, default=2048)
    args = p.parse_args(argv)
    if args.config is None and args.standby is None:
        p.error("--config is required (except with --standby)")
    return args


def preload() -> None:
    """Import what serving a scikit-learn model needs, before any config is known (``--standby``)."""
    import numpy  # noqa: F401
    import orjson  # noqa: F401
    import uvicorn  # noqa: F401
    import uvicorn.lifespan.on  # noqa: F401  (uvicorn imports these when its config loads)
    import uvicorn.loops.uvloop  # noqa: F401
    import uvicorn.protocols.http.httptools_impl  # noqa: F401

    from mlspec.serve import app, config, model, reqlog  # noqa: F401

    model.import_skops_lean()  # scikit-learn (and pandas, scipy) with it


def _take_over(fd: int) -> tuple[str | None, int | None]:
    """Wait for the supervisor's one message on the unix socket ``fd``: (config path, listening socket fd);
    (None, None) when the supervisor closed it (it no longer needs this worker)."""
    sp = socket.socket(fileno=fd)
    try:
        data, fds, _flags, _addr = socket.recv_fds(sp, 1 << 20, 1)
    finally:
        sp.close()
    if not data or not fds:
        for extra in fds:
            os.close(extra)
        return None, None
    msg = json.loads(data)
    os.environ.update({str(k): str(v) for k, v in (msg.get("env") or {}).items()})  # secrets: memory only
    return msg["config"], fds[0]


def _listening_socket(args) -> socket.socket:
    if args.fd is not None:
        sock = socket.socket(fileno=args.fd)  # family and type read from the descriptor
        if sock.type != socket.SOCK_STREAM:
            raise OSError(f"--fd {args.fd} is not a stream socket")
        return sock
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(args.backlog)
    return sock


def _server_class():
    import uvicorn

    class DrainingServer(uvicorn.Server):
        """uvicorn's Server with the ready line and a drain that loses no request of a looping client."""

        def __init__(self, config, app, drain_seconds: float, on_ready):
            super().__init__(config)
            self.app, self.drain_seconds, self.on_ready = app, drain_seconds, on_ready

        @contextlib.contextmanager
        def capture_signals(self):
            # uvicorn re-raises the captured signal after shutdown (the process would die of SIGTERM);
            # a drained worker exits 0
            old = {s: signal.signal(s, self.handle_exit) for s in (signal.SIGTERM, signal.SIGINT)}
            try:
                yield
            finally:
                for s, h in old.items():
                    signal.signal(s, h)

        async def startup(self, sockets=None):
            await super().startup(sockets=sockets)
            if self.started:
                self.on_ready()

        async def shutdown(self, sockets=None):
            loop = asyncio.get_running_loop()
            start = loop.time()
            deadline = start + self.drain_seconds
            self.app.draining = True  # every answer from now on carries Connection: close
            for server in self.servers:
                server.close()  # stop accepting: sibling workers on the shared socket take new connections
            for sock in sockets or []:
                sock.close()
            _emit({"event": "draining", "pid": os.getpid(), "connections": len(self.server_state.connections)})
            state = self.server_state
            grace = start + min(IDLE_GRACE, self.drain_seconds / 2)
            while state.connections and loop.time() < grace and not self.force_exit:
                await asyncio.sleep(0.02)
            for conn in list(state.connections):
                conn.shutdown()  # idle: closed now; busy: closed after its response
            while (state.connections or state.tasks) and loop.time() < deadline and not self.force_exit:
                await asyncio.sleep(0.02)
            left = len(state.connections)
            for task in list(state.tasks):
                task.cancel()
            for conn in list(state.connections):
                transport = getattr(conn, "transport", None)
                if transport is not None:
                    transport.close()
            await self.lifespan.shutdown()  # flushes the request log
            log = getattr(self.app, "reqlog", None)
            _emit({"event": "drained", "pid": os.getpid(), "seconds": round(loop.time() - start, 3),
                   "unfinished_connections": left, "requests": self.app.requests,
                   "logged_rows": getattr(log, "written_rows", None), "dropped_rows": getattr(log, "dropped_rows",
                                                                                          None)})

    return DrainingServer


def _stop_while_loading(signum, _frame):
    # nothing to drain yet: a worker told to stop while it loads simply leaves, with success
    _emit({"event": "stopped", "pid": os.getpid(), "while": "loading"})
    os._exit(0)


def main(argv=None) -> int:
    t0 = time.perf_counter()
    args = _parse(argv)
    signal.signal(signal.SIGTERM, _stop_while_loading)  # uvicorn installs the draining handler once serving
    status = None
    if args.status_fd is not None:
        try:
            status = os.fdopen(args.status_fd, "w", buffering=1)
        except OSError as exc:
            _emit({"event": "failed", "error": f"--status-fd {args.status_fd}: {exc}"})
            return 1
    waited = 0.0
    if args.standby is not None:
        try:
            preload()
        except Exception as exc:  # noqa: BLE001 - reported once a config arrives (the load fails the same way)
            _emit({"event": "preload_failed", "error": f"{type(exc).__name__}: {exc}"[:500]})
        w0 = time.perf_counter()
        try:
            args.config, args.fd = _take_over(args.standby)
        except (OSError, ValueError, KeyError) as exc:
            _emit({"event": "failed", "error": f"standby: no config from the supervisor ({exc})"}, status)
            return 1
        if args.config is None:
            return 0  # not needed after all
        waited = time.perf_counter() - w0
    try:
        from mlspec.serve import config as cfgmod
        from mlspec.serve.app import make_app

        cfg = cfgmod.read(args.config)
        app = make_app(cfg)
        sock = _listening_socket(args)
    except Exception as exc:  # anything that stops the worker from serving: one line, exit 1
        msg = str(exc) or type(exc).__name__
        _emit({"event": "failed", "error": msg if len(msg) < 2000 else msg[:2000] + "..."}, status)
        return 1
    import gc

    import uvicorn

    # what start-up created (the model, scikit-learn, scipy, pandas: ~140k objects) lives as long as the worker:
    # frozen out of the collector, a full collection no longer walks them (measured 34-40 ms, the event loop
    # stopped, per full collection before; ~0 after)
    gc.freeze()
    port = sock.getsockname()[1]
    uv = uvicorn.Config(app, loop="uvloop", http="httptools", lifespan="on", access_log=False,
                        log_level="warning", server_header=False, date_header=False,
                        timeout_keep_alive=30, backlog=args.backlog)

    def ready():
        line = {"event": "ready", "pid": os.getpid(), "port": port, "version": cfg.version,
                "mode": app.served.mode, "seconds": round(time.perf_counter() - t0 - waited, 3)}
        if args.standby is not None:
            line["standby_waited"] = round(waited, 3)
        _emit(line, status)

    server = _server_class()(uv, app, cfg.drain_seconds, ready)
    server.run(sockets=[sock])
    if status is not None:
        with contextlib.suppress(OSError):
            status.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
