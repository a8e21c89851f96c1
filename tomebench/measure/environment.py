"""Where a row was measured: the device's name is the measuring process's; the library versions and the
tomebench commit are read here, once per sweep."""

from __future__ import annotations

import datetime as _dt
import subprocess
from pathlib import Path

from tomebench.results.row import Environment


def capture_environment(device_name: str) -> Environment:
    import timm
    import torch

    from tomebench import __version__

    return Environment(
        device_name=device_name,
        torch=torch.__version__,
        timm=timm.__version__,
        tomebench=__version__,
        git_sha=_git_sha(),
        timestamp=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    )


def _git_sha() -> str:
    """The commit of the tomebench checkout (with "-dirty" for uncommitted changes), or "" outside a checkout."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=12"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""
