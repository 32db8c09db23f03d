"""Shared fixtures: small real models and clusters built from real profile files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from support import require_ray

REPO = Path(__file__).resolve().parents[1]


def write_scenario(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.fixture(scope="session", autouse=True)
def session_cache(tmp_path_factory) -> Iterator[Path]:
    """The cache directory (`halp.verdicts`) of fixtures wider than a test, set before any of
    them runs: nothing the suite does writes into the real home's cache."""
    folder = tmp_path_factory.mktemp("halp-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HALP_CACHE_DIR", str(folder))
        yield folder


@pytest.fixture(autouse=True)
def halp_cache(tmp_path, monkeypatch) -> Path:
    """Every test's own cache directory: none finds a verdict an earlier test left."""
    folder = tmp_path / "halp-cache"
    monkeypatch.setenv("HALP_CACHE_DIR", str(folder))
    return folder


@pytest.fixture(scope="session")
def ray_required() -> None:
    """For tests that need Ray: skipped without it, failed under HALP_REQUIRE_EMU=1. Session
    scoped, so that a module's Ray instance (a module-scoped fixture) can ask for it first."""
    require_ray()
