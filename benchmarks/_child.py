"""Run one benchmark stage in a child process: its JSON result plus its own peak RSS (``wait4``)."""

import json
import os
import subprocess
import sys


def run_child(script: str, args: list[str], what: str) -> dict:
    """``python script *args``; the child prints a JSON object as its last line."""
    proc = subprocess.Popen([sys.executable, script, *args], stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"{what} failed (exit {code})")
    res = json.loads(out.strip().splitlines()[-1])
    res["peak_rss_gib"] = usage.ru_maxrss / 2**20  # ru_maxrss is in KiB on Linux
    return res


def print_markdown(rows: list[dict]) -> None:
    """The rows as a markdown table (floats to 3 decimals), columns in the first row's order."""
    cols = list(rows[0])
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c]) for c in cols) + " |")
