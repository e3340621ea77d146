"""Ray start-up below every layer that uses Ray (data_pipeline, orchestrator): quiet init, cluster resources,
shared-storage check."""

from .runtime import ClusterError, ClusterInfo, cluster_info, init_ray, quiet_ray_env, quiet_tune, shutdown_ray
from .storage_check import SHARED_CHECK_TIMEOUT_S, check_shared_storage, is_uri, local_path

__all__ = [
    "ClusterError",
    "ClusterInfo",
    "cluster_info",
    "init_ray",
    "quiet_ray_env",
    "quiet_tune",
    "shutdown_ray",
    "SHARED_CHECK_TIMEOUT_S",
    "check_shared_storage",
    "is_uri",
    "local_path",
]
