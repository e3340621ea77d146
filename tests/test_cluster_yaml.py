"""cluster.yaml passes the checks `ray up` makes before it talks to a cloud: Ray's own defaults merge
(prepare_config) and Ray's own schema and consistency checks (validate_config, ray-schema.json). Offline, no
credentials."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def ray_checks(config: dict) -> dict:
    """What `ray up` does to the file before its provider-specific bootstrap (which needs the cloud)."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


@pytest.fixture(scope="module")
def config() -> dict:
    with open(REPO / "cluster.yaml") as f:
        return yaml.safe_load(f)


def test_cluster_yaml_passes_rays_own_validation(config):
    prepared = ray_checks(config)
    # What the project relies on, beyond the schema.
    assert prepared["provider"]["type"] == "aws"
    types = prepared["available_node_types"]
    head = types[prepared["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    gpu_types = {name: t for name, t in types.items() if t["resources"].get("GPU", 0) > 0}
    assert gpu_types, "no GPU worker node type"
    for t in gpu_types.values():
        assert t.get("min_workers", 0) == 0 and t["max_workers"] >= 1  # autoscaling from zero
    assert prepared["docker"]["image"].startswith("rayproject/ray:")
    assert prepared["file_mounts"].get("~/nano-gpt-oss") == "."
    setup = " ".join(prepared["setup_commands"])
    assert "pip install" in setup and "torch==" in setup and "-e ." in setup


@pytest.mark.parametrize(
    "mutate, why",
    [
        (lambda c: c.update(setup_comands=c.pop("setup_commands")), "misspelled top-level key"),
        (lambda c: c["docker"].update(imag=c["docker"].pop("image")), "misspelled docker key"),
        (lambda c: c["available_node_types"]["gpu-8x"]["resources"].update(GPU="eight"), "GPU count not an integer"),
        (lambda c: c.update(head_node_type="no-such-type"), "head type not among node types"),
    ],
)
def test_broken_copies_fail_validation(config, mutate, why):
    broken = copy.deepcopy(config)
    mutate(broken)
    with pytest.raises(Exception) as info:
        ray_checks(broken)
    # jsonschema's ValidationError for the schema, ValueError/AssertionError for Ray's consistency checks.
    assert type(info.value).__name__ in ("ValidationError", "ValueError", "AssertionError"), why
