"""Where a run's images are: the ``--data`` path given, or the LFW sample bundled with the repository."""

from __future__ import annotations

from pathlib import Path

__all__ = ["data_location", "bundled_sample_dir"]


def data_location(data: str | None) -> Path:
    """A preset's ``data``: the given path (which must exist), or the bundled sample when ``None``."""
    path = Path(data) if data else bundled_sample_dir()
    if not path.exists():
        raise FileNotFoundError(f"--data {path}: no such file or folder")
    return path


def bundled_sample_dir() -> Path:
    """The small real LFW sample shipped in the repository's ``data/lfw_sample``."""
    candidates = [
        Path(__file__).resolve().parents[2] / "data" / "lfw_sample",
        Path.cwd() / "data" / "lfw_sample",
    ]
    for c in candidates:
        if c.is_dir():
            return c
    raise FileNotFoundError(
        "the bundled LFW sample (data/lfw_sample) was not found; run from the repository "
        "checkout or pass --data /path/to/lfw.zip (or an LFW folder)"
    )
