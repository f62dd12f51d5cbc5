"""Hashing throughput of `mlspec.hashing.hash_file` on a page-cached 1 GiB file of random data.

Compared with `cat FILE > /dev/null` (whole process: the OS read floor), hashlib md5 and BLAKE3 (if the
`blake3` package is importable; optional) over the same 4 MiB `readinto` loop, a plain `readinto` loop
with no hashing (Python's read floor) and xxh3-128 over bytes already in memory (the hash's own ceiling).
The file is read once first so that every run reads it from the page cache. GB/s = 10^9 bytes/s, median
of --repeat runs after one warm-up. Target: hash_file >= 5 GB/s.

    python benchmarks/bench_hash.py [--quick] [--repeat N]      (--quick: a 256 MiB file)
"""

from __future__ import annotations

import hashlib
import os
import statistics
import sys
import time

import common as c

TARGET_GBPS = 5.0
CHUNK = 4 << 20


def make_file(path, size: int) -> None:
    if path.exists() and path.stat().st_size == size:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    c.say(f"[hash] writing {size >> 20} MiB of random data to {c.rel(path)}")
    with open(path, "wb") as fh:
        left = size
        while left:
            n = min(left, 64 << 20)
            fh.write(os.urandom(n))
            left -= n


def read_loop(path, update=None) -> int:
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    total = 0
    with open(path, "rb", buffering=0) as fh:
        while True:
            n = fh.readinto(buf)
            if not n:
                break
            if update:
                update(view[:n])
            total += n
    return total


def timed(fn, repeat: int) -> list[float]:
    fn()  # warm-up
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main() -> int:
    ap = c.parser(__doc__.split("\n\n")[0])
    args = ap.parse_args()
    size = (256 << 20) if args.quick else (1 << 30)
    path = c.WORK / "hash" / f"random-{size >> 20}MiB.bin"
    make_file(path, size)
    read_loop(path)  # into the page cache

    from mlspec.hashing import hash_file

    import xxhash

    rows, cmds = [], []

    def row(label, times, target=None, how=""):
        med = statistics.median(times)
        gbps = size / med / 1e9
        rows.append([label, f"{gbps:.2f} GB/s", c.fmt_ms(med, 0), f"{size / min(times) / 1e9:.2f}–{size / max(times) / 1e9:.2f}",
                     f">= {target:g} GB/s" if target else "—", c.verdict(gbps >= target) if target else "—"])
        if how:
            cmds.append(how)
        return gbps

    rel = c.rel(path)
    c.say("[hash] cat")
    cat_times = []
    for i in range(args.repeat + 1):
        t = c.run(["sh", "-c", f"cat '{path}' > /dev/null"])
        if i:
            cat_times.append(t.wall)
    row("cat FILE > /dev/null (whole process)", cat_times, how=f"cat {rel} > /dev/null")

    c.say("[hash] mlspec.hashing.hash_file")
    digest = hash_file(path)[0]
    row("mlspec.hashing.hash_file (xxh3-128)", timed(lambda: hash_file(path), args.repeat), TARGET_GBPS,
        how=f"{c.PYTHON} -c \"import time; from mlspec.hashing import hash_file; t=time.perf_counter(); "
            f"hash_file('{rel}'); print({size}/(time.perf_counter()-t)/1e9, 'GB/s')\"")

    c.say("[hash] plain readinto loop")
    row("readinto loop, 4 MiB, no hashing (Python read floor)", timed(lambda: read_loop(path), args.repeat))

    c.say("[hash] md5")
    row("hashlib.md5, same loop", timed(lambda: read_loop(path, hashlib.md5().update), args.repeat))

    try:
        import blake3  # type: ignore

        c.say("[hash] blake3")
        row("blake3, same loop", timed(lambda: read_loop(path, blake3.blake3().update), args.repeat))
    except ImportError:
        rows.append(["blake3", "not installed (optional)", "—", "—", "—", "—"])

    c.say("[hash] xxh3-128 in memory")
    data = path.read_bytes()
    row("xxh3-128 over bytes in memory (no I/O: hash ceiling)",
        timed(lambda: xxhash.xxh3_128_hexdigest(data), args.repeat))
    del data

    print(c.header("bench_hash: hashing throughput on a page-cached file", args))
    print(f"- file: {rel}, {size >> 20} MiB of random data; hash_file gave {digest}\n")
    print(c.table(["method", "throughput (median)", "time (median)", "range GB/s", "target", "result"], rows))
    print("\nReproduce (from the repository root, after `python benchmarks/bench_hash.py` created the file):\n")
    print("```console\n" + "\n".join(cmds) + "\n```")
    return 0


if __name__ == "__main__":
    sys.exit(main())
