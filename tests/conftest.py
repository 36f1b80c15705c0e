"""Shared fixtures for the data-layer tests: the real-data folder and one synthetic sample."""

from pathlib import Path

import pytest

from affectkit.data.sample import write_sample

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the repository (real FER2013 / CK+ / Aff-Wild2 files)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (see shared/data/README.md)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def sample(tmp_path_factory) -> dict[str, Path]:
    """The synthetic ABAW sample, written once per session (read-only for tests)."""
    root = tmp_path_factory.mktemp("sample")
    paths = write_sample(root, frames_per_video=12, seed=0)
    paths["root"] = root
    return paths
