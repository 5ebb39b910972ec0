#!/usr/bin/env python3
"""Prints `make bench`'s comparison table (markdown) from the JSON lines of a run.

Usage: bench_table.py RESULTS.jsonl

Reads every line that is a JSON object (other lines, such as a table printed
earlier into the same file, are skipped). When a measurement was taken more
than once (a part of the run redone with BENCH_ONLY), the newest line wins.

The main table uses oha's figures for the HTTP systems (raftq, etcd) and
`raftq bench`'s for NATS (it has no HTTP), marked with `*`; a second table
gives `raftq bench`'s figures for all three. The maze rows are printed when
scripts/bench-maze.sh left its lines ("target": "maze" / "fmaze").
"""

import json
import sys


def load(path):
    """Newest line per (target, tool, workload, clients, nodes)."""
    rows = {}
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                d = json.loads(line)
            except json.JSONDecodeError:
                continue
            key = (d.get("target"), d.get("tool"), d.get("workload"), d.get("clients"), d.get("nodes"))
            rows[key] = d
    return rows


def num(v):
    if v is None:
        return "-"
    if isinstance(v, float) and not v.is_integer():
        return f"{v:,.2f}".replace(",", " ")
    return f"{int(v):,}".replace(",", " ")


def ratio(a, b):
    if a is None or b is None or not b:
        return None
    return a / b


def fmt_ratio(r):
    return "-" if r is None else f"{r:.2f}x"


def verdict(ok):
    return "" if ok is None else (" (met)" if ok else " (missed)")


class Table:
    def __init__(self, rows):
        self.rows = rows

    def get(self, target, tool, workload, clients=None, nodes=None):
        return self.rows.get((target, tool, workload, clients, nodes))

    def field(self, target, tool, workload, clients, name):
        d = self.get(target, tool, workload, clients)
        return None if d is None else d.get(name)

    def cores_per_1k(self, target, tool, clients):
        d = self.get(target, tool, "writes", clients)
        if not d or not d.get("writes_per_sec") or not d.get("wall_seconds"):
            return None
        cores = d["cpu_seconds"] / d["wall_seconds"]
        return round(cores / (d["writes_per_sec"] / 1000), 3)


def main_table(t, out):
    http_tool, nats_tool = "oha", "raftq-bench"

    def line(label, values, r, target):
        cells = [num(v) + mark for v, mark in values]
        out.append(f"| {label} | " + " | ".join(cells) + f" | {fmt_ratio(r)} | {target} |")

    out.append("| | raftq | etcd | NATS JetStream R3 (no per-message fsync) | ratio raftq/etcd | target |")
    out.append("|---|---|---|---|---|---|")
    goals = {1: (1.5, None), 16: (2.0, None), 64: (2.7, 20000)}
    for clients in (1, 16, 64):
        rq = t.field("raftq", http_tool, "writes", clients, "writes_per_sec")
        et = t.field("etcd", http_tool, "writes", clients, "writes_per_sec")
        na = t.field("nats", nats_tool, "writes", clients, "writes_per_sec")
        r = ratio(rq, et)
        x, floor = goals[clients]
        ok = None if r is None else (r >= x and (floor is None or rq >= floor))
        target = f">= {x}x etcd" + (f"; {num(floor)}" if floor else "") + verdict(ok)
        plural = "client" if clients == 1 else "clients"
        line(f"writes/s, {clients} {plural}", [(rq, ""), (et, ""), (na, "*" if na is not None else "")], r, target)
    p = [t.field(s, tool, "writes", 64, "p99_ms") for s, tool in (("raftq", http_tool), ("etcd", http_tool), ("nats", nats_tool))]
    ok = None if p[0] is None else p[0] <= 10
    line("p99 at 64 clients, ms", [(p[0], ""), (p[1], ""), (p[2], "*" if p[2] is not None else "")], ratio(p[0], p[1]), "<= 10 ms" + verdict(ok))
    pd = [t.field(s, tool, "put-delete", 16, "writes_per_sec") for s, tool in (("raftq", http_tool), ("etcd", http_tool), ("nats", nats_tool))]
    ok = None if pd[0] is None else pd[0] >= 6000
    line("put+delete, 8+8 clients, ops/s", [(pd[0], ""), (pd[1], ""), (pd[2], "*" if pd[2] is not None else "")], ratio(pd[0], pd[1]), ">= 6 000" + verdict(ok))
    fo = {s: t.get(s, "raftq-bench", "failover", 4) for s in ("raftq", "etcd", "nats")}
    cells = []
    for s in ("raftq", "etcd", "nats"):
        d = fo[s]
        if d is None or d.get("median_ms") is None:
            cells.append("-")
        else:
            cells.append(f"{d['median_ms'] / 1000:.2f} s (max {d['max_ms'] / 1000:.2f} s, {d['kills']} kills)")
    med = [fo[s]["median_ms"] if fo[s] else None for s in ("raftq", "etcd")]
    ok = None if med[0] is None else med[0] <= 500
    out.append(f"| failover median (kill -9 leader -> first acked write) | {' | '.join(cells)} | {fmt_ratio(ratio(*med))} | median <= 0.5 s{verdict(ok)} |")
    cpu = [t.cores_per_1k(s, tool, 64) for s, tool in (("raftq", http_tool), ("etcd", http_tool), ("nats", nats_tool))]
    cells = [("-" if v is None else f"{v:.3f}") + ("*" if s == 2 and v is not None else "") for s, v in enumerate(cpu)]
    out.append(f"| cluster CPU at 64 clients, cores per 1 000 writes/s | {' | '.join(cells)} | {fmt_ratio(ratio(cpu[0], cpu[1]))} | lower is better |")
    out.append("")
    out.append("`*` NATS is loaded by `raftq bench` (no HTTP); raftq and etcd by `oha`. Failover: `raftq bench --failover`, 4 clients writing through all members.")
    d1, d3 = t.get("disk", "fdatasync", "floor", 1), t.get("disk", "fdatasync", "floor", 3)
    if d1:
        line = (f"Disk floor in this run (`scripts/fsync_floor.py`): one 4 KiB append + fdatasync takes "
                f"{num(d1['p50_ms'])} ms at p50 ({num(d1['p99_ms'])} ms p99), {num(d1['writes_per_sec'])}/s for one writer")
        if d3:
            line += f"; with 3 writers at once (one per member, as in a replicated write) {num(d3['p50_ms'])} ms p50, {num(d3['p99_ms'])} ms p99"
        out.append("")
        out.append(line + ". A lone write needs such a sync on a quorum, so one client cannot exceed about 1 000 / p50 writes/s.")


def bench_table(t, out):
    tool = "raftq-bench"
    if not any(k[1] == tool and k[2] in ("writes", "put-delete") for k in t.rows):
        return
    out.append("")
    out.append("Same rows, every system loaded by `raftq bench`:")
    out.append("")
    out.append("| | raftq | etcd | NATS | ratio raftq/etcd |")
    out.append("|---|---|---|---|---|")
    for label, workload, clients, name in (
        ("writes/s, 1 client", "writes", 1, "writes_per_sec"),
        ("writes/s, 16 clients", "writes", 16, "writes_per_sec"),
        ("writes/s, 64 clients", "writes", 64, "writes_per_sec"),
        ("p99 at 64 clients, ms", "writes", 64, "p99_ms"),
        ("put+delete, 8+8 clients, ops/s", "put-delete", 16, "writes_per_sec"),
    ):
        v = [t.field(s, tool, workload, clients, name) for s in ("raftq", "etcd", "nats")]
        out.append(f"| {label} | {num(v[0])} | {num(v[1])} | {num(v[2])} | {fmt_ratio(ratio(v[0], v[1]))} |")


def maze_table(t, out):
    maze = {d.get("nodes"): d for k, d in t.rows.items() if k[0] == "maze"}
    fmaze = [d for k, d in t.rows.items() if k[0] == "fmaze"]
    if not maze and not fmaze:
        return
    ref = fmaze[-1].get("wall_seconds") if fmaze else None
    out.append("")
    out.append("| follower-maze, 10M events | raftq | fmaze (Go, no persistence) | ratio raftq/fmaze | target |")
    out.append("|---|---|---|---|---|")
    for nodes, goal in ((1, 1.0), (3, 1.2)):
        d = maze.get(nodes)
        wall = d.get("wall_seconds") if d and d.get("result") in (None, "ok", "pass") else None
        r = ratio(wall, ref)
        ok = None if r is None else r <= goal
        note = "" if not d or wall is not None else f" ({d.get('result')})"
        out.append(f"| {nodes} node{'s' if nodes > 1 else ''}, wall s | {num(wall)}{note} | {num(ref)} | {fmt_ratio(r)} | <= {goal}x fmaze{verdict(ok)} |")


def problems(t, out):
    notes = []
    for (target, tool, workload, clients, _), d in sorted(t.rows.items(), key=lambda kv: str(kv[0])):
        bad = {k: d.get(k) for k in ("not_ok", "errors", "empty") if d.get(k)}
        if bad and tool:
            notes.append(f"- {target} {tool} {workload} {clients} clients: " + ", ".join(f"{k} {v}" for k, v in bad.items()))
    if notes:
        out.append("")
        out.append("Not counted as done (non-2xx answers, transport errors, removals that found nothing):")
        out.extend(notes)


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: bench_table.py RESULTS.jsonl")
    t = Table(load(sys.argv[1]))
    out = []
    main_table(t, out)
    bench_table(t, out)
    maze_table(t, out)
    problems(t, out)
    print("\n".join(out))


if __name__ == "__main__":
    main()
