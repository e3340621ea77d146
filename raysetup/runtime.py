"""Ray runtime set-up shared by data_pipeline and orchestrator: joining or starting a cluster quietly, and reading its
resources."""

from __future__ import annotations

import logging
import os
import socket
import warnings
from dataclasses import dataclass
from urllib.parse import urlparse

# Ray reads these at import and worker start-up; set them before the first `import ray`.
_QUIET_ENV = {
    "RAY_DEDUP_LOGS": "1",
    "RAY_DATA_DISABLE_PROGRESS_BARS": "1",
    "RAY_TRAIN_V2_ENABLED": "1",
    "RAY_AIR_NEW_OUTPUT": "0",
    "RAY_DISABLE_IMPORT_WARNING": "1",
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
    "PYTHONWARNINGS": "ignore::DeprecationWarning",
    # The raylet warns "(raylet) WARNING: N PYTHON worker processes have been started ... Nx the maximum expected
    # startup concurrency" once workers reach 4x this value, which defaults to the node's CPU count: on a 2-CPU
    # machine every sweep (trial + train controller + workers + queue actors) crosses it. The raylet reads this
    # RayConfig override from its environment; a higher cap also lets those short-lived workers start side by side.
    "RAY_worker_maximum_startup_concurrency": "32",
    # Tune logs every failed trial's full traceback; the sweep prints each failure's one-line reason itself.
    "TUNE_PRINT_ALL_TRIAL_ERRORS": "0",
}


class ClusterError(RuntimeError):
    """The Ray cluster cannot be reached or cannot give what was asked; the message is one line for the user."""


@dataclass(frozen=True)
class ClusterInfo:
    address: str
    nodes: list[dict]  # one per alive node: node_id, ip, cpus, gpus
    cpus: float
    gpus: float

    @property
    def num_nodes(self) -> int:
        return len(self.nodes)


def quiet_ray_env(verbose: bool = False) -> None:
    """Turn Ray's own console noise off (unless verbose), for this process and the workers it starts."""
    for key, value in _QUIET_ENV.items():
        if verbose and key in (
            "RAY_DATA_DISABLE_PROGRESS_BARS",
            "RAY_worker_maximum_startup_concurrency",
            "TUNE_PRINT_ALL_TRIAL_ERRORS",
        ):
            continue
        os.environ.setdefault(key, value)
    if not verbose:
        for name in ("ray", "ray.data", "ray.train", "ray.tune", "ray.serve"):
            logging.getLogger(name).setLevel(logging.ERROR)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)


def quiet_tune(verbose: bool = False) -> None:
    """Before a Tune experiment: Tune's own "Trials did not complete: [...]" line off (the sweep names each failure
    and its reason itself), and Ctrl-C left to us: Tune's handler would stop the trials "gracefully" and return as if
    the sweep had ended (exit 0, half the trials), where each trial's checkpoints are its resume state."""
    if not verbose:
        logging.getLogger("ray.tune").setLevel(logging.CRITICAL)
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"


def _check_reachable(address: str, timeout_s: float = 3.0) -> None:
    """Ray's own connect retries for minutes on a dead address; a plain TCP probe answers in seconds."""
    if address in ("auto", "local"):
        return
    target = address if "://" in address else f"tcp://{address}"
    parsed = urlparse(target)
    host, port = parsed.hostname, parsed.port
    if not host or not port:
        raise ClusterError(
            f"--address {address!r} is not HOST:PORT (or ray://HOST:PORT); "
            "pass the head node's GCS address, e.g. 10.0.0.5:6379"
        )
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as exc:
        raise ClusterError(
            f"cannot reach a Ray cluster at {address} ({exc.strerror or exc}); start one with `ray start --head` "
            f"or `ray up cluster.yaml`, or drop --address to run on this machine"
        ) from None
    if parsed.scheme == "tcp":  # a GCS address (ray:// goes to the Ray Client server, which is not a GCS)
        _check_gcs(f"{host}:{port}", address, timeout_s=4.0)


_GCS_PROBE = """
import sys
import ray._raylet
try:
    ray._raylet.GcsClient(address=sys.argv[1]).get_all_node_info(timeout=float(sys.argv[2]))
except Exception as exc:
    print(" ".join(str(exc).split()) or type(exc).__name__)
    sys.exit(1)
"""


def _check_gcs(gcs_address: str, shown: str, timeout_s: float) -> None:
    """An open port is not yet a Ray cluster: anything listening there (a web server, a proxy) makes ray.init
    retry for 20-40 s. Ask the GCS for its node table first, in a child process: Ray's C++ client logs its
    retries straight to stderr and can block past any timeout, and a child can be silenced and killed."""
    import subprocess
    import sys

    try:
        proc = subprocess.run(
            [sys.executable, "-c", _GCS_PROBE, gcs_address, str(timeout_s)],
            capture_output=True,
            text=True,
            timeout=timeout_s + 2,
        )  # +2: the child's own imports
    except subprocess.TimeoutExpired:
        why = f"no answer within {timeout_s:g} s"
    else:
        if proc.returncode == 0:
            return
        why = (proc.stdout.strip().splitlines() or [f"probe exit code {proc.returncode}"])[-1]
        if "Unauthenticated" in why or "AuthToken" in why:
            raise ClusterError(
                f"the Ray cluster at {shown} requires token authentication: set RAY_AUTH_MODE=token and "
                f"RAY_AUTH_TOKEN (or ~/.ray/auth_token) to the head node's token (`ray get-auth-token` there)"
            )
    raise ClusterError(
        f"{shown} answers but is not a Ray cluster's GCS ({why}); pass the head node's address "
        f"(port 6379 unless `ray start --head --port` said otherwise)"
    )


def init_ray(address: str | None = None, verbose: bool = False, num_cpus: int | None = None) -> ClusterInfo:
    """Join the cluster at `address` (or RAY_ADDRESS), else start a local instance with this machine's resources.

    Idempotent: if Ray is already initialised in this process (tests share one instance), it is reused.
    """
    quiet_ray_env(verbose)
    import ray

    if not verbose:
        from .ray_private import mute_raylet_messages

        mute_raylet_messages()

    address = address or os.environ.get("RAY_ADDRESS") or None
    if not ray.is_initialized():
        kwargs: dict = dict(
            log_to_driver=verbose,
            logging_level=logging.INFO if verbose else logging.ERROR,
            include_dashboard=False,
            configure_logging=True,
        )
        if address:
            _check_reachable(address)
            try:
                ray.init(address=address, **kwargs)
            except ConnectionError as exc:
                raise ClusterError(
                    f"cannot connect to the Ray cluster at {address}: {str(exc).splitlines()[0]}"
                ) from None
        else:
            # No --address and no RAY_ADDRESS: Ray joins a cluster already running on this machine (`ray start`
            # on a head node), else starts a local instance with this machine's resources.
            try:
                ray.init(num_cpus=num_cpus, **kwargs)
            except Exception as exc:
                # Seen on an overloaded 2-core machine: Ray's raylet/GCS miss their start-up deadline.
                if "timed out during startup" not in str(exc):
                    raise
                raise ClusterError(_startup_failure()) from None
    return cluster_info()


def _startup_failure() -> str:
    """Why Ray's node may have missed its start-up deadline: a file-size limit kills its processes as soon as a log
    or its object store outgrows it (SIGXFSZ); otherwise an overloaded machine."""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    if soft != resource.RLIM_INFINITY:
        return (
            f"Ray could not start on this machine: its node timed out during start-up, and this shell limits files to "
            f"{soft / 2**20:.1f} MiB (ulimit -f), which Ray's own files exceed; raise it (ulimit -f unlimited) and "
            "rerun"
        )
    return (
        "Ray could not start on this machine: its node timed out during start-up, which happens when the machine "
        "is overloaded; rerun when it is less busy"
    )


def cluster_info() -> ClusterInfo:
    import ray

    nodes = []
    for node in ray.nodes():
        if not node.get("Alive"):
            continue
        res = node.get("Resources", {})
        nodes.append(
            dict(
                node_id=node["NodeID"],
                ip=node.get("NodeManagerAddress", "?"),
                cpus=float(res.get("CPU", 0)),
                gpus=float(res.get("GPU", 0)),
            )
        )
    total = ray.cluster_resources()
    ctx = ray.get_runtime_context()
    address = getattr(ctx, "gcs_address", None) or "local"
    return ClusterInfo(address=address, nodes=nodes, cpus=float(total.get("CPU", 0)), gpus=float(total.get("GPU", 0)))


def shutdown_ray() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()
