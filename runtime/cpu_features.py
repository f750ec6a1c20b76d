"""What the CPU can compute fast: the instruction-set extensions that decide BF16 and INT8 speed.

Read from /proc/cpuinfo (Linux), so `msdeploy info` and the OpenVINO backend's default precision
need no extra package. Elsewhere every flag reads False, and the backend falls back to FP32.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache


@dataclass(frozen=True)
class CpuFeatures:
    avx512_bf16: bool = False  # BF16 dot products in AVX-512 (Cooper Lake, Zen 4 and later)
    amx_bf16: bool = False  # Advanced Matrix Extensions tiles for BF16 (Sapphire Rapids and later)
    amx_int8: bool = False  # AMX tiles for INT8
    avx512_vnni: bool = False  # INT8 dot products in AVX-512 (Cascade Lake, Zen 4 and later)
    avx_vnni: bool = False  # the same in AVX2 width (Alder Lake and later)

    @property
    def bf16(self) -> bool:
        """Native BF16 arithmetic: OpenVINO's CPU plugin then runs floats in BF16 at speed."""
        return self.avx512_bf16 or self.amx_bf16

    @property
    def int8(self) -> bool:
        """Native INT8 dot products (VNNI or AMX): what makes an INT8 model faster than FP32."""
        return self.amx_int8 or self.avx512_vnni or self.avx_vnni

    def describe(self) -> str:
        found = [name for name, present in vars(self).items() if present]
        return ", ".join(found) if found else "none of avx512_bf16, amx_bf16, amx_int8, avx512_vnni, avx_vnni"


def parse_flags(cpuinfo: str) -> CpuFeatures:
    """The features named on the first `flags` line of a /proc/cpuinfo text."""
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            return CpuFeatures(**{name: name in flags for name in CpuFeatures.__dataclass_fields__})
    return CpuFeatures()


@lru_cache(maxsize=1)
def cpu_features() -> CpuFeatures:
    try:
        with open("/proc/cpuinfo") as fh:
            return parse_flags(fh.read())
    except OSError:
        return CpuFeatures()
