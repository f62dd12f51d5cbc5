"""The prediction service under load, side by side with MLServer and `mlflow models serve`.

One worker each, on loopback, the same LogisticRegression (3 columns, generated data) served by:

- mlspec: `python -m mlspec.serve.worker` with request logging off and on (POST /predict, `instances`
  records), and its v2 endpoint (POST /v2/models/NAME/infer, one tensor per column);
- MLServer + mlserver-sklearn (`parallel_workers: 0`, the v2 endpoint with one [rows, 3] FP64 tensor, its
  fastest path);
- `mlflow models serve --env-manager local` (POST /invocations, `dataframe_split`).

Load: `wrk` (2 threads, 8 connections, keep-alive) for --duration seconds per run after a warm-up, 1-row
and 100-row requests; servers run one at a time and the rounds alternate them, the median round is
reported. Cold start: process start to the ready line (median of --repeat starts). Request logging, in-process:
the ASGI app with the log off and on in adjacent batches of about a segment each (the order alternating, a new
body per request as a server reads it; process time, the log's thread included), the median of the pairs'
ratios; and the log's own CPU per request measured alone (RequestLog.add_raw, then the segment's write).

The peers live in their own venv, benchmarks/.work/serve-peers (created on first use: pip install mlserver
mlserver-sklearn uvloop==0.21.0 mlflow); when it cannot be created they are skipped with a note. The peer
models are trained in that venv on the same generated data (pickles do not cross scikit-learn versions).

    python benchmarks/bench_serve.py [--quick] [--duration S] [--rounds N] [--repeat N] [--no-peers]

Prints a Markdown report (stdout) and compares with the targets: >= 1,500 req/s at 1 row with p99 < 12 ms,
>= 1,000 req/s at 100 rows, cold start < 2 s, request logging costing < 5 % of throughput.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
WORK = BENCH_DIR / ".work" / "serve"
PEERS = BENCH_DIR / ".work" / "serve-peers"
sys.path.insert(0, str(REPO))

COLUMNS = ["age", "income", "tenure"]
TRAIN = textwrap.dedent("""
    import numpy as np, pandas as pd
    def training_frame(n=2000, seed=0):
        rng = np.random.default_rng(seed)
        df = pd.DataFrame({"age": rng.integers(18, 80, n).astype("int64"), "income": rng.normal(50.0, 12.0, n),
                           "tenure": rng.integers(0, 12, n).astype("int64")})
        df["churned"] = ((df.age < 35) & (df.tenure < 4) | (df.income < 35)).astype("int64")
        return df
    def fit(frame_columns=True):
        from sklearn.linear_model import LogisticRegression
        df = training_frame()
        X = df[["age", "income", "tenure"]]
        return LogisticRegression(max_iter=500).fit(X if frame_columns else X.to_numpy(dtype="float64"),
                                                    df["churned"])
""")


# Servers run without PYTHONPYCACHEPREFIX: with it set, bytecode of site-packages may not be cached at all
# (measured here: importing scikit-learn then costs 6 s of CPU instead of 1.7 s), which is not how a service runs.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONPYCACHEPREFIX"}
INPROCESS_PAIRS = 16  # adjacent off/on batches per row count (the order alternating): the median ratio is reported


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def rows(n: int) -> list:
    import numpy as np

    rng = np.random.default_rng(n)
    return [{"age": int(rng.integers(18, 80)), "income": round(float(rng.normal(50, 12)), 3),
             "tenure": int(rng.integers(0, 12))} for _ in range(n)]


# --- request bodies per server --------------------------------------------------------------------------
def body_predict(rs):
    return "/predict", json.dumps({"instances": rs})


def body_v2_columns(rs):
    types = {"age": "INT64", "income": "FP64", "tenure": "INT64"}
    return "/v2/models/churn-clf/infer", json.dumps({"inputs": [
        {"name": c, "shape": [len(rs)], "datatype": types[c], "data": [r[c] for r in rs]} for c in COLUMNS]})


def body_mlserver(rs):
    flat = [float(r[c]) for r in rs for c in COLUMNS]
    return "/v2/models/churn-clf/infer", json.dumps({"inputs": [
        {"name": "input-0", "shape": [len(rs), 3], "datatype": "FP64", "data": flat}]})


def body_mlflow(rs):
    return "/invocations", json.dumps({"dataframe_split": {"columns": COLUMNS,
                                                           "data": [[r[c] for c in COLUMNS] for r in rs]}})


# --- load ------------------------------------------------------------------------------------------------
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s|m)$", text.strip())
    return float(m.group(1)) * _UNITS[m.group(2)] if m else float("nan")


def wrk(port: int, path: str, body: str, seconds: float, connections: int = 8, threads: int = 2) -> dict:
    script = WORK / f"wrk-{os.getpid()}.lua"
    script.write_text('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                      f"wrk.body = [==[{body}]==]\n")
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", "-s", str(script),
                          f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True, timeout=seconds + 60)
    text = out.stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    lat = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", text, re.M))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    return {"rps": float(rps.group(1)) if rps else 0.0, "p50": _ms(lat.get("50", "nan")),
            "p99": _ms(lat.get("99", "nan")), "non2xx": int(non2xx.group(1)) if non2xx else 0,
            "errors": sum(int(x) for x in errors.groups()) if errors else 0, "raw": text}


def check(port: int, path: str, body: str) -> str:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body.encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return resp.read().decode()[:200]


def wait_http(port: int, path: str, proc: subprocess.Popen, timeout: float = 240) -> float:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
                if r.status == 200:
                    return time.perf_counter() - t0
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"not ready within {timeout} s")


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the server (to its process group when it leads one: the peers start helpers)."""
    if proc.poll() is not None:
        return
    try:
        group = os.getpgid(proc.pid) == proc.pid
        (os.killpg if group else os.kill)(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        (os.killpg if group else os.kill)(proc.pid, signal.SIGKILL)
        proc.wait()


# --- the servers -------------------------------------------------------------------------------------------
class Server:
    def __init__(self, name, start, body, note=""):
        self.name, self._start, self.body, self.note = name, start, body, note
        self.proc, self.port, self.ready_s = None, None, None

    def start(self):
        self.proc, self.port, self.ready_s = self._start()

    def stop(self):
        if self.proc is not None:
            stop(self.proc)
            self.proc = None


def setup_mlspec(log_on: bool):
    from mlspec import formats
    from mlspec.artifacts import ArtifactStore

    ns: dict = {}
    exec(TRAIN, ns)
    model = ns["fit"](True)
    WORK.mkdir(parents=True, exist_ok=True)
    path, _ = formats.save(model, WORK / "model", "skops")
    store = str(WORK / "store")
    digest, _ = ArtifactStore(store).put_file(path)
    log_dir = WORK / "reqlog"
    if log_on and log_dir.exists():
        shutil.rmtree(log_dir)
    cfg = {"deployment": "bench", "model": "churn-clf", "version": 1, "artifact": {"hash": digest, "format": "skops"},
           "store": {"url": store, "options_env": None},
           "signature": {"inputs": [{"name": "age", "dtype": "int64"}, {"name": "income", "dtype": "float64"},
                                    {"name": "tenure", "dtype": "int64"}], "output": {"name": "churned",
                                                                                      "dtype": "int64"}},
           "log": ({"url": str(log_dir), "max_bytes": 64 << 20, "flush_rows": 1000, "flush_seconds": 2.0}
                   if log_on else None),
           "limits": {"max_body_bytes": 1 << 20}, "token_env": None, "drain_seconds": 10}
    p = WORK / ("worker-log.json" if log_on else "worker.json")
    p.write_text(json.dumps(cfg))
    return p


def mlspec_starter(cfg: Path):
    def start():
        from mlspec.serve.local import start_worker

        w = start_worker(str(cfg), stderr=open(WORK / f"{cfg.stem}.err", "ab"), env=ENV)
        # own process group, so that stop() signals it like the peers
        return w.proc, w.port, w.ready["_wall"]

    return start


def cpu_seconds(pid: int) -> float:
    """user + system CPU time of a running process so far (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def cold_start(cfg: Path, repeat: int) -> list:
    """(wall s, CPU s) from process start to the ready line, per start."""
    from mlspec.serve.local import start_worker

    out = []
    for _ in range(repeat):
        w = start_worker(str(cfg), stderr=subprocess.DEVNULL, env=ENV)
        out.append((w.ready["_wall"], cpu_seconds(w.proc.pid)))
        w.stop()
    return out


def ensure_peers() -> tuple[str | None, str]:
    py = PEERS / "bin" / "python"
    marker = PEERS / ".ready"
    if marker.exists():
        return str(py), marker.read_text().strip()
    log("creating the peer venv (mlserver, mlserver-sklearn, uvloop==0.21.0, mlflow): a few minutes, once")
    try:
        if not py.exists():
            subprocess.run([sys.executable, "-m", "venv", str(PEERS)], check=True, capture_output=True, timeout=300)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "mlserver", "mlserver-sklearn", "uvloop==0.21.0",
                        "mlflow"], check=True, capture_output=True, timeout=1800)
        ver = subprocess.run([str(py), "-c", "import importlib.metadata as m; print(' '.join(f'{p} '"
                              "+ m.version(p) for p in ('mlserver', 'mlserver-sklearn', 'mlflow', 'scikit-learn')))"],
                             check=True, capture_output=True, text=True).stdout.strip()
    except (subprocess.SubprocessError, OSError) as exc:
        err = getattr(exc, "stderr", b"") or b""
        return None, f"peers skipped: their venv could not be created ({type(exc).__name__}: " \
                     f"{err.decode(errors='replace')[-300:] if isinstance(err, bytes) else err})"
    marker.write_text(ver)
    return str(py), ver


def setup_mlserver(py: str):
    d = WORK / "mlserver"
    d.mkdir(parents=True, exist_ok=True)
    subprocess.run([py, "-c", TRAIN + "\nimport joblib\njoblib.dump(fit(False), %r)" % str(d / "model.joblib")],
                   check=True, timeout=600)
    (d / "model-settings.json").write_text(json.dumps({"name": "churn-clf",
                                                        "implementation": "mlserver_sklearn.SKLearnModel",
                                                        "parameters": {"uri": "./model.joblib"}}))

    def start():
        port = free_port()
        (d / "settings.json").write_text(json.dumps({"http_port": port, "grpc_port": free_port(),
                                                      "metrics_port": free_port(), "parallel_workers": 0,
                                                      "host": "127.0.0.1", "debug": False}))
        t0 = time.perf_counter()
        proc = subprocess.Popen([str(Path(py).parent / "mlserver"), "start", str(d)], cwd=d,
                                stdout=open(WORK / "mlserver.out", "ab"), stderr=subprocess.STDOUT, env=ENV,
                                start_new_session=True)
        wait_http(port, "/v2/models/churn-clf/ready", proc)
        return proc, port, time.perf_counter() - t0

    return start


def setup_mlflow(py: str):
    d = WORK / "mlflow"
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    # `mlflow models serve` runs `uvicorn` from PATH: the peer venv's, not the one running this script
    env = {**ENV, "MLFLOW_TRACKING_URI": f"file://{d / 'mlruns'}", "VIRTUAL_ENV": str(PEERS),
           "PATH": f"{Path(py).parent}{os.pathsep}{ENV.get('PATH', '')}"}
    subprocess.run([py, "-c", TRAIN + "\nimport mlflow.sklearn\nmlflow.sklearn.save_model(fit(True), %r)"
                    % str(d / "model")], check=True, timeout=600, env=env, capture_output=True)

    def start():
        port = free_port()
        t0 = time.perf_counter()
        proc = subprocess.Popen([str(Path(py).parent / "mlflow"), "models", "serve", "-m", str(d / "model"),
                                 "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"],
                                cwd=d, env=env, stdout=open(WORK / "mlflow.out", "ab"), stderr=subprocess.STDOUT,
                                start_new_session=True)
        wait_http(port, "/ping", proc)
        return proc, port, time.perf_counter() - t0

    return start


# --- in-process: CPU per request through the ASGI app, no network (robust to the machine's load) -----------
def inprocess(cfg_off: Path, cfg_on: Path, n1: int, n100: int) -> dict:
    """CPU microseconds per request (process time: the log's flush thread included) for the app with the
    request log off and on, 1-row and 100-row /predict bodies, alternating off/on three times."""
    import asyncio

    from mlspec.serve import config as cfgmod
    from mlspec.serve.app import make_app
    from mlspec.serve.model import load_model

    off = cfgmod.read(str(cfg_off))
    model = load_model(off.artifact, off.store_url)
    headers = [(b"content-type", b"application/json")]

    async def drive(app, body: bytes, count: int):
        scope = {"type": "http", "method": "POST", "path": "/predict", "headers": headers, "query_string": b""}
        status = []

        async def receive():  # a new body per request, as a server reads it (the log keeps it until written)
            return {"type": "http.request", "body": bytes(bytearray(body)), "more_body": False}

        async def send(m):
            if m["type"] == "http.response.start":
                status.append(m["status"])

        for _ in range(count):
            await app(scope, receive, send)
        assert set(status) == {200}, set(status)

    out: dict = {}
    ratios: dict = {}
    apps = {label: make_app(cfgmod.read(str(cfg)), model=model) for label, cfg in (("off", cfg_off), ("on", cfg_on))}
    apps["on"].reqlog.start()
    for n, count in ((1, n1), (100, n100)):
        body = json.dumps({"instances": rows(n)}).encode()
        for app in apps.values():
            asyncio.run(drive(app, body, 50))  # warm-up
        for pair in range(INPROCESS_PAIRS):
            got = {}
            for label in ("off", "on") if pair % 2 == 0 else ("on", "off"):  # adjacent, the order alternating
                app = apps[label]
                t0 = time.process_time()
                asyncio.run(drive(app, body, count))
                if app.reqlog is not None:
                    app.reqlog.flush()  # the writing of what these requests logged is part of their cost
                got[label] = (time.process_time() - t0) / count * 1e6
                out.setdefault((label, n), []).append(got[label])
            ratios.setdefault(n, []).append(got["on"] / got["off"])
    apps["on"].reqlog.close()
    res = {k: statistics.median(v) for k, v in out.items()}
    res.update({("ratio", n): statistics.median(v) for n, v in ratios.items()})
    return res


def log_alone(n1: int, n100: int) -> dict:
    """CPU microseconds per request of the request log alone: the record a request appends, and its share of
    building, checksumming and writing the segment (RequestLog.add_raw, then flush), median of 7."""
    import tempfile

    from mlspec.serve.reqlog import RequestLog

    out = {}
    for n, count in ((1, n1), (100, n100)):
        body = json.dumps({"instances": rows(n)}).encode()
        answer = json.dumps({"predictions": [0] * n}).encode()
        log = RequestLog(tempfile.mkdtemp(dir=WORK), version=1, dtypes={c: "float64" for c in COLUMNS},
                         flush_rows=10 ** 9, max_bytes=1 << 30)
        runs = []
        for _ in range(7):
            t0 = time.process_time()
            for _ in range(count):
                log.add_raw(body, answer, n, time.time())
            log.flush()
            runs.append((time.process_time() - t0) / count * 1e6)
        out[n] = statistics.median(runs)
        shutil.rmtree(log.url, ignore_errors=True)
    return out


# --- the run ---------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="3 s runs, one round, 3 cold starts")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds of load per run (default 10)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds over all servers; the median is reported")
    ap.add_argument("--repeat", type=int, default=5, help="cold starts measured (median)")
    ap.add_argument("--no-peers", action="store_true", help="skip MLServer and MLflow")
    args = ap.parse_args(argv)
    if args.quick:
        args.duration, args.rounds, args.repeat = 3.0, 1, 3
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed (apt-get install -y wrk)")
    WORK.mkdir(parents=True, exist_ok=True)
    cfg_off, cfg_on = setup_mlspec(False), setup_mlspec(True)

    log(f"cold start x{args.repeat}")
    cold = cold_start(cfg_off, args.repeat)
    log("in-process CPU per request")
    cpu = inprocess(cfg_off, cfg_on, 300 if args.quick else 1_000, 100 if args.quick else 500)
    alone = log_alone(2_000, 500)

    servers = [Server("mlspec /predict, log off", mlspec_starter(cfg_off), body_predict),
               Server("mlspec /predict, log on", mlspec_starter(cfg_on), body_predict),
               Server("mlspec v2 infer, log off", mlspec_starter(cfg_off), body_v2_columns)]
    peer_note = "peers skipped (--no-peers)"
    if not args.no_peers:
        py, peer_note = ensure_peers()
        if py:
            try:
                servers.append(Server("MLServer v2 infer", setup_mlserver(py), body_mlserver))
            except (subprocess.SubprocessError, OSError) as exc:
                peer_note += f"; MLServer skipped: {exc}"
            try:
                servers.append(Server("mlflow models serve", setup_mlflow(py), body_mlflow))
            except (subprocess.SubprocessError, OSError) as exc:
                peer_note += f"; MLflow skipped: {exc}"

    results: dict = {}
    bodies = {n: rows(n) for n in (1, 100)}
    for rnd in range(args.rounds):
        for s in servers:
            log(f"round {rnd + 1}/{args.rounds}: {s.name}")
            try:
                s.start()
            except Exception as exc:
                log(f"  {s.name} did not start: {exc}")
                results.setdefault((s.name, "start"), []).append(str(exc))
                continue
            try:
                results.setdefault((s.name, "ready"), []).append(s.ready_s)
                for n in (1, 100):
                    path, body = s.body(bodies[n])
                    check(s.port, path, body)
                    wrk(s.port, path, body, 2)  # warm-up
                    r = wrk(s.port, path, body, args.duration)
                    results.setdefault((s.name, n), []).append(r)
                    log(f"  {n:>3} rows: {r['rps']:.0f} req/s p50 {r['p50']:.2f} ms p99 {r['p99']:.2f} ms"
                        f" non-2xx {r['non2xx']} errors {r['errors']}")
            finally:
                s.stop()

    def med(name, n, key):
        rs = results.get((name, n)) or []
        return statistics.median(r[key] for r in rs) if rs else float("nan")

    print("## Prediction service (benchmarks/bench_serve.py)\n")
    print(f"One worker per server on 127.0.0.1; wrk -t2 -c8 -d{args.duration:g}s, keep-alive, after a warm-up; "
          f"median of {args.rounds} round(s), servers alternating. Load average at the end: "
          f"{', '.join(f'{x:.1f}' for x in os.getloadavg())} ({os.cpu_count()} CPUs, shared with wrk). {peer_note}.\n")
    print("| server | rows/request | req/s | p50 ms | p99 ms | rows/s | non-2xx + socket errors | start to ready s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for s in servers:
        ready = results.get((s.name, "ready")) or []
        for n in (1, 100):
            rs = results.get((s.name, n)) or []
            if not rs:
                print(f"| {s.name} | {n} | (did not run) | | | | | |")
                continue
            bad = sum(r["non2xx"] + r["errors"] for r in rs)
            print(f"| {s.name} | {n} | {med(s.name, n, 'rps'):,.0f} | {med(s.name, n, 'p50'):.2f} | "
                  f"{med(s.name, n, 'p99'):.2f} | {med(s.name, n, 'rps') * n:,.0f} | {bad} | "
                  f"{statistics.median(ready):.2f} |")
    walls = [c[0] for c in cold]
    cpus = [c[1] for c in cold]
    print(f"\nCold start of the mlspec worker (process start to ready line, median of {len(cold)}): "
          f"{statistics.median(walls):.2f} s wall (min {min(walls):.2f}), {statistics.median(cpus):.2f} s of CPU "
          "(user + system: what the start costs, whatever else the machine runs).\n")

    print("CPU per request through the ASGI app in-process (no network, no server; process time including the "
          f"request log's thread and the writing of its segments), {INPROCESS_PAIRS} adjacent off/on batches, medians "
          "and the median of the pairs' ratios; "
          "and the request log's own CPU per request measured alone (the record appended on the request's path, "
          "and its share of checksumming and writing the segment):\n")
    print("| rows/request | log off, us CPU | log on, us CPU | logging cost (A/B) | the log alone, us CPU | "
          "its share of the request |")
    print("|---:|---:|---:|---:|---:|---:|")
    for n in (1, 100):
        print(f"| {n} | {cpu[('off', n)]:.0f} | {cpu[('on', n)]:.0f} | "
              f"{(cpu[('ratio', n)] - 1) * 100:+.1f} % | {alone[n]:.1f} | "
              f"{alone[n] / cpu[('off', n)] * 100:.1f} % |")
    print()
    main_name, log_name = servers[0].name, servers[1].name
    r1, p99_1, r100 = med(main_name, 1, "rps"), med(main_name, 1, "p99"), med(main_name, 100, "rps")
    cost1 = 1 - med(log_name, 1, "rps") / r1 if r1 else float("nan")
    cost100 = 1 - med(log_name, 100, "rps") / r100 if r100 else float("nan")
    print("| target | measured | verdict |")
    print("|---|---|---|")
    print(f"| >= 1,500 req/s at 1 row | {r1:,.0f} | {'met' if r1 >= 1500 else 'NOT met'} |")
    print(f"| p99 < 12 ms at 1 row | {p99_1:.2f} ms | {'met' if p99_1 < 12 else 'NOT met'} |")
    print(f"| >= 1,000 req/s at 100 rows | {r100:,.0f} | {'met' if r100 >= 1000 else 'NOT met'} |")
    print(f"| cold start < 2 s | {statistics.median(walls):.2f} s wall, {statistics.median(cpus):.2f} s CPU | "
          f"{'met' if statistics.median(walls) < 2 else 'NOT met'} |")
    cpu_cost = max(cpu[("ratio", n)] - 1 for n in (1, 100))
    own = max(alone[n] / cpu[("off", n)] for n in (1, 100))
    print(f"| request logging < 5 % of throughput | wrk: {cost1 * 100:+.1f} % at 1 row, {cost100 * 100:+.1f} % at "
          f"100 rows; CPU in-process A/B: {cpu_cost * 100:+.1f} % at worst; the log's own CPU: {own * 100:.1f} % "
          f"at worst | {'met' if max(cpu_cost, own) < 0.05 else 'NOT met'} (judged on CPU, A/B and alone: wrk "
          "rounds on a loaded machine vary more than 5 %) |")
    for s in servers[3:]:
        for n in (1, 100):
            peer = med(s.name, n, "rps")
            if peer == peer and peer:
                print(f"\nmlspec / {s.name} at {n} row(s): {med(main_name, n, 'rps') / peer:.2f}x throughput")
    print(f"\nReproduce: `python benchmarks/bench_serve.py --duration {args.duration:g} --rounds {args.rounds} "
          f"--repeat {args.repeat}` from the repository root in the activated venv.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
