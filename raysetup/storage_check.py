"""Whether a storage path works across a Ray cluster's nodes (check_shared_storage), and local-path helpers for it."""

from __future__ import annotations

import os
import sys
import uuid
from typing import Callable, Optional

from .runtime import ClusterError, ClusterInfo

SHARED_CHECK_TIMEOUT_S = 15.0  # a fresh worker process on a busy node can take a few seconds to start


def is_uri(storage: str) -> bool:
    """s3://, gs://, hdfs://... are reachable from every node by themselves; file:// and plain paths are not."""
    return "://" in storage and not storage.startswith("file://")


def local_path(storage: str) -> str:
    """A plain path or file:// URI as an absolute local path."""
    return os.path.abspath(os.path.expanduser(storage.removeprefix("file://")))


def check_shared_storage(
    storage_uri: str,
    info: ClusterInfo,
    timeout_s: float = SHARED_CHECK_TIMEOUT_S,
    warn: Optional[Callable[[str], None]] = None,
    flag: str = "--storage",
) -> None:
    """Refuse a local `--storage` path that some node of a multi-node cluster cannot see.

    Ray Train writes checkpoints from the workers and restores them on whichever node a restarted worker lands;
    a node-local directory breaks both. The driver writes a marker file under the path, and a zero-CPU task pinned
    to each alive node looks for it. A node that answers "not there" fails the check with a ClusterError; a node
    that does not answer within `timeout_s` (dead, or too slow to start a worker) only gets a warning.
    Needs Ray initialised (init_ray). URIs and single-node clusters pass without a check.
    """
    if is_uri(storage_uri) or info.num_nodes <= 1:
        return
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    warn = warn or (lambda text: print(f"warning: {text}", file=sys.stderr))
    path = local_path(storage_uri)
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"{flag} {storage_uri} cannot be created ({exc.strerror})") from None
    token = uuid.uuid4().hex
    marker = os.path.join(path, f".shared-storage-check-{token[:12]}")
    with open(marker, "w") as f:
        f.write(token)

    # Nested on purpose: cloudpickle ships it by value, so the nodes need not import this package.
    def marker_visible(marker_path: str, expected: str) -> bool:
        try:
            with open(marker_path) as fh:
                return fh.read() == expected
        except OSError:
            return False

    remote = ray.remote(num_cpus=0, max_retries=0)(marker_visible)
    try:
        refs = {
            remote.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node["node_id"], soft=False)).remote(
                marker, token
            ): node
            for node in info.nodes
        }
        ready, pending = ray.wait(list(refs), num_returns=len(refs), timeout=timeout_s)
        blind, unknown = [], [refs[r] for r in pending]
        for ref in ready:
            try:
                visible = ray.get(ref)
            except Exception:  # the node died between listing and running: cannot tell
                unknown.append(refs[ref])
                continue
            if not visible:
                blind.append(refs[ref])
        for ref in pending:
            try:
                ray.cancel(ref, force=True)
            except Exception:
                pass
    finally:
        try:
            os.remove(marker)
        except OSError:
            pass
    if blind:
        ids = ", ".join(f"{n['node_id'][:8]} ({n.get('ip', '?')})" for n in blind)
        raise ClusterError(
            f"{flag} {path} is local to this node but the cluster has {info.num_nodes} nodes "
            f"(not visible on {ids}); Ray cannot recover from node-local checkpoints: "
            f"use a shared mount (NFS) or a URI such as s3://bucket/runs"
        )
    if unknown:
        ids = ", ".join(n["node_id"][:8] for n in unknown)
        warn(
            f"could not confirm within {timeout_s:g} s that {flag} {path} is visible on node(s) {ids}; "
            f"if it is not a shared mount, checkpoints written there are lost with the node"
        )
