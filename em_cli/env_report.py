"""The environment facts a bug report needs (`em info`)."""

from __future__ import annotations

import os
import platform
import sys
from typing import Any

from em_cli import __version__
from em_cli.artifacts.manifest import package_versions
from em_cli.paths import cache_dir, hf_cache_dir, models_cache_dir


def environment_report() -> dict[str, Any]:
    import torch

    cuda = torch.cuda.is_available()
    devices = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else []
    return {
        "em": __version__,
        "python": platform.python_version(),
        "executable": sys.executable,
        "platform": platform.platform(),
        "packages": package_versions(),
        "accelerators": {
            "cuda_available": cuda,
            "cuda_version": torch.version.cuda,
            "cuda_devices": devices,
            "mps_available": bool(torch.backends.mps.is_available()),
            "cpu_threads": torch.get_num_threads(),
        },
        "paths": {
            "em_cache": str(cache_dir()),
            "em_models_cache": str(models_cache_dir()),
            "hf_hub_cache": str(hf_cache_dir()),
        },
        "env": {key: value for key, value in sorted(os.environ.items())
                if key.startswith("EM_") or key in ("HF_HOME", "HF_HUB_OFFLINE", "CUDA_VISIBLE_DEVICES")},
    }
