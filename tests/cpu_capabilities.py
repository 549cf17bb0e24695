"""What the processor offers that changes numeric results: printed in the test report's header,
so a failure on one machine and a pass on another can be told apart."""

from __future__ import annotations

import platform
from pathlib import Path

# SIMD families whose presence changes which kernels ONNX Runtime, BLAS and numpy run
FLAGS = (
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_int8",
    "amx_bf16",
)


def cpu_lines() -> list[str]:
    """Lines for the report header: model, the SIMD flags above, runtime versions."""
    model, flags = platform.processor() or platform.machine(), set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    have = [f for f in FLAGS if f in flags]
    lines = [f"cpu: {model}; simd: {' '.join(have) or 'unknown'}"]
    try:
        import onnxruntime

        lines.append(f"onnxruntime {onnxruntime.__version__} ({onnxruntime.get_device()})")
    except ImportError:
        lines.append("onnxruntime: not installed")
    return lines
