"""Cold against cached: the README's main job (``fastscape landscape``) with an empty Numba cache,
then at once with the cache it filled, several pairs back to back.

    python bench/cold_start.py [--pairs 3] [-- extra CLI options]

Each pair runs in a fresh cache directory (``FASTSCAPE_CACHE_DIR``; ``NUMBA_CACHE_DIR`` unset).
Per run: wall seconds, the seconds until the first line on stderr, and the CPU seconds (user +
sys) of the job and every process it started (its background compiles included; load-independent,
unlike the wall time). Prints one row per run and the medians of the cold/cached ratios.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time


def run_once(cache: str, out: str, extra: list[str]) -> dict:
    env = {**os.environ, "FASTSCAPE_CACHE_DIR": cache}
    env.pop("NUMBA_CACHE_DIR", None)
    cmd = [sys.executable, "-m", "fastscape", "landscape", "--out", out, "--overwrite", *extra]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    first = proc.stderr.readline()
    t_first = time.perf_counter() - t0
    proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{cmd} failed with {proc.returncode}")
    # wait4's rusage counts the job and its waited-for descendants (the background compiles)
    return {
        "wall": wall,
        "first": t_first,
        "cpu": usage.ru_utime + usage.ru_stime,
        "first_line": first.decode().strip(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("extra", nargs="*", help="options passed to fastscape landscape")
    args = parser.parse_args()
    ratios_wall, ratios_cpu, rows = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.pairs):
            cache = os.path.join(tmp, f"cache{i}")
            out = os.path.join(tmp, "out")
            cold = run_once(cache, out, args.extra)
            cached = run_once(cache, out, args.extra)
            ratios_wall.append(cold["wall"] / cached["wall"])
            ratios_cpu.append(cold["cpu"] / cached["cpu"])
            rows.append((cold, cached))
            print(
                f"pair {i}: cold wall {cold['wall']:6.2f} s cpu {cold['cpu']:6.2f} s "
                f"first line {cold['first']:.2f} s | cached wall {cached['wall']:6.2f} s "
                f"cpu {cached['cpu']:6.2f} s first line {cached['first']:.2f} s | "
                f"ratio wall {ratios_wall[-1]:.2f} cpu {ratios_cpu[-1]:.2f}",
                flush=True,
            )
    med = statistics.median
    print(
        f"median: cold wall {med(c['wall'] for c, _ in rows):.2f} s, cached wall "
        f"{med(k['wall'] for _, k in rows):.2f} s, ratio wall {med(ratios_wall):.2f}; cold cpu "
        f"{med(c['cpu'] for c, _ in rows):.2f} s, cached cpu {med(k['cpu'] for _, k in rows):.2f} "
        f"s, ratio cpu {med(ratios_cpu):.2f}; load {os.getloadavg()[0]:.1f}"
    )


if __name__ == "__main__":
    main()
