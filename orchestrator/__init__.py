"""Distributed orchestration: Ray runtime set-up, Ray Train training runs and Ray Tune sweeps."""
