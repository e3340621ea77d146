"""raysetup: Ray start-up lives below data_pipeline and orchestrator, and its quiet environment silences the raylet's
warnings."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest
from conftest import REPO

LAYERS = {
    "gptoss": set(),
    "raysetup": set(),
    "data_pipeline": {"gptoss", "raysetup"},
    "orchestrator": {"gptoss", "raysetup", "data_pipeline"},
}


def _imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_no_package_imports_a_layer_above_it():
    ours = set(LAYERS) | {"cli"}
    for package, allowed in LAYERS.items():
        for path in sorted((REPO / package).glob("*.py")):
            upward = (_imported_packages(path) & ours) - allowed - {package}
            assert not upward, f"{path.relative_to(REPO)} imports {sorted(upward)} from a layer above it"


def test_quiet_env_raises_the_raylets_startup_warning_threshold_unless_verbose(monkeypatch):
    from raysetup import quiet_ray_env

    monkeypatch.delenv("RAY_worker_maximum_startup_concurrency", raising=False)
    quiet_ray_env(verbose=True)
    assert "RAY_worker_maximum_startup_concurrency" not in os.environ
    quiet_ray_env(verbose=False)
    # The raylet warns at 4x this many started workers; a sweep on 2 CPUs starts ~8-12.
    assert int(os.environ["RAY_worker_maximum_startup_concurrency"]) * 4 > 64


def test_a_ray_start_up_timeout_is_one_line(monkeypatch):
    import pytest
    import ray

    from raysetup import ClusterError, init_ray

    def timed_out(**kwargs):
        raise Exception(
            "The current node timed out during startup. This could happen because some of the raylet "
            "failed to startup or the GCS has become overloaded."
        )

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", timed_out)
    with pytest.raises(ClusterError, match="timed out during start-up, which happens when the machine is overloaded"):
        init_ray()


def test_the_private_ray_names_this_project_relies_on_still_exist():
    """raysetup/ray_private.py is the one place a private Ray API is used; this fails, naming the Ray version, the
    day an upgrade removes one of them."""
    from raysetup.ray_private import PRIVATE_NAMES, RayPrivateApiMissing, check_private_apis

    check_private_apis()
    PRIVATE_NAMES["ray._private.worker"] += ("no_such_name",)
    try:
        with pytest.raises(RayPrivateApiMissing, match=r"Ray \d+\.\d+.* lacks ray._private.worker.no_such_name"):
            check_private_apis()
    finally:
        PRIVATE_NAMES["ray._private.worker"] = PRIVATE_NAMES["ray._private.worker"][:-1]


def test_a_start_up_timeout_under_a_file_size_limit_names_the_limit(monkeypatch):
    import resource

    import ray

    from raysetup import ClusterError, init_ray

    def timed_out(**kwargs):
        raise Exception("The current node timed out during startup.")

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", timed_out)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (2**30, hard))
    try:
        with pytest.raises(ClusterError, match=r"limits files to 1024.0 MiB \(ulimit -f\).*ulimit -f unlimited"):
            init_ray()
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
