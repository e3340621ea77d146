"""What a Ray cluster offers, as the `cluster` command shows it (describe_cluster)."""

from __future__ import annotations

from raysetup import ClusterInfo


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _count(x: float, what: str) -> str:
    return f"{_num(x)} {what}{'' if x == 1 else 's'}"


def describe_cluster(info: ClusterInfo, note: str = "") -> str:
    """A small table: the address, one row per alive node (short id, ip, CPUs, GPUs), and the totals."""
    lines = [f"Ray cluster at {info.address}{note}"]
    rows = [("node", "ip", "CPUs", "GPUs")]
    rows += [
        (n["node_id"][:8], str(n.get("ip", "?")), _num(n.get("cpus", 0)), _num(n.get("gpus", 0))) for n in info.nodes
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        lines.append(
            "  "
            + "  ".join(
                cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))
            ).rstrip()
        )
    lines.append(f"total: {_count(info.num_nodes, 'node')}, {_count(info.cpus, 'CPU')}, {_count(info.gpus, 'GPU')}")
    return "\n".join(lines)
