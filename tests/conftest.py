"""Shared fixtures: small real models and clusters built from real profile files."""

from __future__ import annotations

from pathlib import Path

import pytest

from support import require_ray

REPO = Path(__file__).resolve().parents[1]


def write_scenario(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.fixture(scope="session")
def ray_required() -> None:
    """For tests that need Ray: skipped without it, failed under HALP_REQUIRE_EMU=1. Session
    scoped, so that a module's Ray instance (a module-scoped fixture) can ask for it first."""
    require_ray()
