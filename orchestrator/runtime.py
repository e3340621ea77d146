"""Compatibility alias: Ray start-up moved to the `raysetup` package (below data_pipeline and orchestrator); import from there."""
from raysetup.runtime import ClusterError, ClusterInfo, cluster_info, init_ray, quiet_ray_env, shutdown_ray  # noqa: F401
