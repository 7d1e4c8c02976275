"""What every gatfast benchmark shares: where and when it ran (provenance: date, device,
versions, threads, build) and how its result is saved (OUT/STEM-<cpu|gpu>.json and .md)."""

from __future__ import annotations

import datetime
import json
import platform
from pathlib import Path

import torch

from gatfast._version import __version__
from gatfast.ops import backends


def provenance(device) -> dict:
    """What a benchmark result must say about where and when it was measured."""
    return {"date": datetime.date.today().isoformat(), "device": device_name(device), "torch": torch.__version__,
            "gatfast": __version__, "python": platform.python_version(), "threads": torch.get_num_threads(),
            "build": backends.build_info()}


def save(result: dict, markdown: list[str], out_dir: Path, stem: str, device) -> None:
    """OUT_DIR/STEM-<cpu|gpu>.json (the result) and .md (the table)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tag = "gpu" if device.type == "cuda" else "cpu"
    (out_dir / f"{stem}-{tag}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out_dir / f"{stem}-{tag}.md").write_text("\n".join(markdown) + "\n")


def device_name(device) -> str:
    """The GPU's name, or the CPU's model and the threads torch uses."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({cpu_model()}, {torch.get_num_threads()} threads)"


def cpu_model() -> str:
    """The CPU's model name (Linux), else the architecture: CPU timings differ by model
    (e.g. bf16 is fast only where the CPU has bf16 instructions)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
