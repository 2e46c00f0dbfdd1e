"""Where the course keeps what it makes once and reuses: converted models, the kernel paths measured on this machine."""
from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """Where converted models live: $SPECDEC_CACHE_DIR, else $XDG_CACHE_HOME/specdec-course, else ~/.cache/specdec-course."""
    env = os.environ.get("SPECDEC_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "specdec-course"
