"""Shared test fixtures: where the shared data lies, and one small Ray instance for the whole session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # cli.py lives at the root

SHARED = Path(os.environ.get("GPTOSS_SHARED_DIR", REPO.parent / "shared"))
TINYSTORIES = SHARED / "data" / "tinystories"
TIKTOKEN_DIR = SHARED / "data" / "tiktoken"


# Tests that start Ray (or use data prepared through Ray Data) take seconds to minutes each: they are the slow tier.
_SLOW_FIXTURES = {"ray_session", "prepared_data", "two_nodes"}


def pytest_collection_modifyitems(config, items):
    """`pytest -m "not slow"` is the fast inner loop: every test that needs Ray or prepared data is marked slow here,
    besides those marked by hand (trainings of their own, subprocesses)."""
    for item in items:
        if _SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def tinystories_dir() -> Path:
    if not (TINYSTORIES / "train.txt").exists():
        pytest.skip(f"shared TinyStories text not found at {TINYSTORIES} (set GPTOSS_SHARED_DIR)")
    return TINYSTORIES


@pytest.fixture(scope="session")
def tiktoken_dir() -> Path:
    if not (TIKTOKEN_DIR / "o200k_base.tiktoken").exists():
        pytest.skip(f"shared tiktoken rank files not found at {TIKTOKEN_DIR} (set GPTOSS_SHARED_DIR)")
    return TIKTOKEN_DIR


@pytest.fixture(scope="session")
def ray_session():
    """One 2-CPU Ray instance shared by every Ray test: start-up costs seconds here."""
    from raysetup import init_ray, shutdown_ray

    info = init_ray(num_cpus=2)
    yield info
    shutdown_ray()


@pytest.fixture(scope="session")
def prepared_data(tmp_path_factory, tinystories_dir, tiktoken_dir, ray_session) -> Path:
    """A small prepared dataset (first 3000 train stories, real validation split), shared by the training tests."""
    from data_pipeline import PrepareConfig, prepare

    out = tmp_path_factory.mktemp("prepared") / "tinystories"
    prepare(PrepareConfig(out=str(out), source=str(tinystories_dir), tokenizer_dir=str(tiktoken_dir), limit=3000))
    return out
