"""The report: a matrix of medians like the issue's table, then per workload every server's
median, min-max and the ratio flask_sente / that peer with the target it is held to."""
from __future__ import annotations

import statistics
import typing as t

from .workloads import COLUMNS, SERVERS, Sizes, Workload, describe

Results = dict[str, dict[str, list[dict[str, t.Any]]]]


def metrics(runs: list[dict[str, t.Any]]) -> list[float]:
    return [r["metric"] for r in runs if "metric" in r]


def median(runs: list[dict[str, t.Any]]) -> float | None:
    values = metrics(runs)
    return statistics.median(values) if values else None


def fmt(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def ratio_of(results: dict[str, list[dict[str, t.Any]]], peer: str) -> float | None:
    ours, theirs = median(results.get("sente", [])), median(results.get(peer, []))
    if ours is None or not theirs:
        return None
    return ours / theirs


def matrix(workloads: t.Sequence[Workload], results: Results, sizes: Sizes) -> list[str]:
    head = ["workload"] + [SERVERS[c][2] for c in COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * len(COLUMNS)]
    for w in workloads:
        res = results.get(w.key)
        if res is None:
            continue
        cells = [describe(w, sizes)]
        for c in COLUMNS:
            cell = fmt(median(res[c]), w.digits) if c in res else "n/a"
            if c == "fsio" and "fsio_nd" in res:
                cell += f" ({fmt(median(res['fsio_nd']), w.digits)} with TCP_NODELAY)"
            cells.append(cell)
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def details(workloads: t.Sequence[Workload], results: Results, sizes: Sizes) -> list[str]:
    lines = ["| workload | server | median | min-max | runs | flask_sente / it | target |",
             "|---|---|---:|---:|---:|---:|---|"]
    for w in workloads:
        res = results.get(w.key)
        if res is None:
            continue
        targets = {tg.peer: tg for tg in w.targets}
        label = describe(w, sizes)
        for server, runs in res.items():
            values = metrics(runs)
            failed = len(runs) - len(values)
            span = f"{fmt(min(values), w.digits)}-{fmt(max(values), w.digits)}" \
                if values else "-"
            count = f"{len(values)}" + (f" ({failed} failed)" if failed else "")
            ratio = "" if server == "sente" else _ratio_cell(ratio_of(res, server))
            target = ""
            if server in targets:
                r = ratio_of(res, server)
                verdict = "?" if r is None else ("met" if targets[server].met(r) else "MISSED")
                target = f"{targets[server]} {verdict}"
            lines.append(f"| {label} | {SERVERS[server][2]} | {fmt(median(runs), w.digits)} "
                         f"| {span} | {count} | {ratio} | {target} |")
            label = ""
    return lines


def _ratio_cell(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.2f}x"


def limits(workloads: t.Sequence[Workload], results: Results) -> list[str]:
    """Median busy fraction of the server's core and the client's, per server (W1, W2, W4,
    W5), and the server's CPU time per unit of work (per round trip, delivery or handshake).

    The CPU time per unit is the number to compare on a machine shared with other work: a
    busy neighbour lowers every server's rate, much less what each unit costs."""
    lines = []
    for w in workloads:
        res = results.get(w.key, {})
        parts, costs = [], []
        for server, runs in res.items():
            cpus = [(r["server_cpu"], r["client_cpu"]) for r in runs
                    if r.get("server_cpu") is not None]
            if cpus:
                s = statistics.median(c[0] for c in cpus)
                c = statistics.median(c[1] for c in cpus)
                parts.append(f"{label_of(server)} {s:.0%}/{c:.0%}")
            per_unit = [r["server_cpu"] / r["rate"] * 1e6 for r in runs
                        if r.get("server_cpu") is not None and r.get("rate")]
            if per_unit:
                cost = statistics.median(per_unit)
                costs.append(f"{label_of(server)} "
                             + (f"{cost:,.0f}" if cost >= 10 else f"{cost:.2f}"))
        if parts:
            lines.append(f"- {w.key} CPU server/client: " + ", ".join(parts))
        if costs:
            lines.append(f"- {w.key} server CPU µs per unit: " + ", ".join(costs))
        p50s = [f"{label_of(server)} {statistics.median(v):,.1f}" for server, v in
                ((server, [r["p50"] for r in runs if r.get("p50") is not None])
                 for server, runs in res.items()) if v]
        if p50s:
            lines.append(f"- {w.key} p50 ms: " + ", ".join(p50s))
        idle = [(server, [r["idle_cpu"] for r in runs if r.get("idle_cpu") is not None])
                for server, runs in res.items()]
        idle_parts = [f"{label_of(server)} {statistics.median(v):.1%}" for server, v in idle
                      if v]
        if idle_parts:
            lines.append(f"- {w.key} server CPU while the connections sit idle: "
                         + ", ".join(idle_parts))
    return lines


def label_of(server: str) -> str:
    return SERVERS[server][2] if server in SERVERS else f"flask_sente ({server})"
