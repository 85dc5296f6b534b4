"""Apple Macs: Core ML ``.mlpackage`` towers timed with coremltools' prediction API, one
compute-unit setting per device (``--device apple``, ``apple:cpu_only``, ``apple:cpu_and_gpu``,
``apple:cpu_and_ne``, ``apple:all``).

Why the compute unit is part of the address and not an option listing several: a device gives
one measurement per tower, and each setting is a different deployment (an app chooses one when
it loads the model). So each setting is a device of its own, with its own records folder
(``apple-cpu_only``, ``apple-all``), and the three are compared like any two devices. To profile
all of them, name three devices. ``apple`` alone is ``apple:all``, Core ML's default, which is
what an app gets when it does not choose.

How it times: the ``.mlpackage`` is compiled once to ``.mlmodelc`` (an app ships it compiled;
the compile time is kept in the environment), then loading the compiled model with the compute
unit is the load time, and ``predict`` on a fixed input gives the first and the timed runs.
Core ML takes no thread count and reports no measured per-operator times, so ``threads`` and
``ops`` stay None. Peak memory is left out because prediction runs in this process, which also
holds PyTorch. Only macOS runs Core ML: elsewhere the device refuses in one line.
"""

from __future__ import annotations

import platform
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from compress.errors import UserError
from export.profile.devices import Settings, Tower, devices
from export.profile.record import Measurement
from export.profile.runner import make_input, time_runs

# address → coremltools.ComputeUnit member
COMPUTE_UNITS = {
    "cpu_only": "CPU_ONLY",
    "cpu_and_gpu": "CPU_AND_GPU",
    "cpu_and_ne": "CPU_AND_NE",
    "all": "ALL",
}


def compute_unit(address: str) -> str:
    """The compute unit an ``apple[:UNIT]`` address names (``all`` when it names none)."""
    unit = address or "all"
    if unit not in COMPUTE_UNITS:
        raise UserError(
            f"device 'apple:{address}': unknown compute unit; expected one of: "
            + ", ".join(COMPUTE_UNITS)
        )
    return unit


def mac_facts() -> dict[str, Any]:
    """What the Mac is: chip, cores, macOS version, architecture."""

    def sysctl(key: str) -> str | None:
        done = subprocess.run(["sysctl", "-n", key], capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else None

    return {
        "kind": "apple",
        "cpu": sysctl("machdep.cpu.brand_string"),
        "cores": int(sysctl("hw.ncpu") or 0) or None,
        "os": f"macOS {platform.mac_ver()[0]}",
        "arch": platform.machine(),
    }


@devices.register("apple")
class AppleDevice:
    """This Mac's Core ML at one compute-unit setting; it times ``.mlpackage`` towers."""

    def __init__(self, address: str, options: dict[str, Any]) -> None:
        self.compute_unit = compute_unit(address)
        given = [key for key, value in options.items() if value is not None]
        if given:
            raise UserError(
                f"profile.apple.{given[0]}: unknown option; apple takes none "
                "(the compute unit is in the device: apple:cpu_only, apple:cpu_and_gpu, apple:all)"
            )
        if platform.system() != "Darwin":
            raise UserError(
                f"apple: Core ML prediction needs macOS (this is {platform.system()}); "
                "profile Core ML exports on a Mac"
            )
        self.name = f"apple-{self.compute_unit}"

    def skip_reason(self, tower: Tower) -> str | None:
        if tower.manifest.get("target") != "coreml":
            return "apple runs Core ML .mlpackage only"
        return None

    def measure(self, tower: Tower, settings: Settings) -> Measurement:
        """Compile, load at this compute unit, predict ``1 + warmup + runs`` times."""
        import coremltools as ct

        units = getattr(ct.ComputeUnit, COMPUTE_UNITS[self.compute_unit])
        eot = tower.manifest.get("tokenizer", {}).get("eot_id")
        feed = {
            spec["name"]: make_input(tuple(spec["shape"]), spec["dtype"], eot)
            for spec in tower.manifest["inputs"]
        }
        with tempfile.TemporaryDirectory() as tmp:
            begin = time.perf_counter()
            compiled = ct.utils.compile_model(
                str(tower.model_file), str(Path(tmp) / "model.mlmodelc")
            )
            compile_ms = 1e3 * (time.perf_counter() - begin)
            begin = time.perf_counter()
            model = ct.models.CompiledMLModel(compiled, compute_units=units)
            load_ms = 1e3 * (time.perf_counter() - begin)
            first, times = time_runs(lambda: model.predict(feed), settings.warmup, settings.runs)
        return Measurement(
            runtime=f"coremltools {ct.__version__}, Core ML (macOS {platform.mac_ver()[0]})",
            compute_unit=self.compute_unit,
            times_ms=times,
            load_ms=load_ms,
            first_inference_ms=first,
            device=mac_facts(),
            environment={"compile_ms": compile_ms},
        )
