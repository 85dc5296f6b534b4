"""The host: this machine, timing each tower in a fresh process of the runner script.

A fresh process per tower makes load time, first inference and peak memory the model's own
(not those of the libraries this process already holds). The same runner script, copied over,
is what an SSH board runs (:mod:`export.profile.ssh`): both build its arguments and read its one
JSON line here.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from compress.errors import UserError
from export.manifest import library_versions
from export.profile import runner
from export.profile.devices import Settings, Tower, devices, last_line
from export.profile.etdump import etdump_ops
from export.profile.record import Measurement
from export.targets import exporters

RUNNER = Path(runner.__file__)
CPU_UNITS = ("CPUExecutionProvider", "xnnpack", "cpu")  # what the runner's GEMM rates describe


def runner_args(tower: Tower, settings: Settings, model_file: str) -> list[str]:
    """The runner's arguments for one tower (``model_file`` as the device sees it)."""
    manifest = tower.manifest
    (spec,) = manifest["inputs"]
    shape = ",".join(str(d) for d in spec["shape"])
    args = [model_file, f"--input={spec['name']}:{spec['dtype']}:{shape}"]
    args += [f"--runs={settings.runs}", f"--warmup={settings.warmup}"]
    if settings.threads:
        args.append(f"--threads={settings.threads}")
    if settings.ops:
        args.append("--ops")
    if manifest["tower"] == "text":
        args.append(f"--eot={manifest['tokenizer']['eot_id']}")
    if manifest["target"] == "pytorch":
        args += ["--engine=torch", f"--tower={manifest['tower']}"]
    return args


def read_result(stdout: str, where: str) -> dict[str, Any]:
    """The runner's JSON line (its last line of output).

    Raises:
        UserError: there is none, naming ``where`` it ran.
    """
    lines = stdout.strip().splitlines()
    try:
        return json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        raise UserError(f"{where}: the profile runner printed no result") from None


def measurement(result: dict[str, Any], gemm: dict[str, Any], ops: dict | None) -> Measurement:
    """A runner result (and the device's GEMM rates) as a :class:`Measurement`. The GEMM rates
    are the CPU's: a tower that ran on a GPU (TensorRT, CUDA) is not compared with them."""
    if result["compute_unit"] not in CPU_UNITS:
        gemm = {}
    environment = {**result.get("environment", {}), "gemm_engine": gemm.get("gemm_engine")}
    return Measurement.from_result(
        result,
        ops=ops if ops is not None else result.get("ops"),
        gemm_gflops=gemm.get("gemm_gflops", {}),
        environment=environment,
    )


@devices.register("host")
class HostDevice:
    """This machine: onnxruntime, the ExecuTorch runtime and torch eager, as installed here."""

    name = "host"

    def __init__(self, rest: str = "", options: dict[str, Any] | None = None) -> None:
        if rest:
            raise UserError(f"device 'host:{rest}': host takes no address")
        self._gemm: dict[str, Any] | None = None

    def skip_reason(self, tower: Tower) -> str | None:
        if tower.manifest["target"] == "pytorch":
            return None
        return exporters.get(tower.manifest["target"])().runs_here()

    def measure(self, tower: Tower, settings: Settings) -> Measurement:
        args = runner_args(tower, settings, str(tower.model_file))
        with tempfile.TemporaryDirectory() as tmp:
            etdump = Path(tmp) / "etdump.bin"
            if settings.ops and tower.manifest["target"] == "executorch":
                args.append(f"--etdump={etdump}")
            result = self._run(args, f"{tower.artifact}/{tower.manifest['tower']}")
            ops = None
            if result.get("etdump"):  # the ETRecord names the ops; older exports have none
                etrecord = tower.folder / tower.manifest.get("format", {}).get("etrecord", "-")
                ops = etdump_ops(etdump, etrecord if etrecord.is_file() else None)
        result["environment"]["libraries"] = library_versions()
        return measurement(result, self.gemm(settings), ops)

    def gemm(self, settings: Settings) -> dict[str, Any]:
        """This machine's GEMM rates, measured once per device object at the profile's threads."""
        if self._gemm is None:
            threads = [f"--threads={settings.threads}"] if settings.threads else []
            self._gemm = self._run(["--gemm", *threads], "GEMM reference")
        return self._gemm

    def _run(self, args: list[str], what: str) -> dict[str, Any]:
        done = subprocess.run(
            [sys.executable, str(RUNNER), *args], capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise UserError(f"host: profiling {what} failed: {last_line(done.stderr)}")
        return read_result(done.stdout, f"host: {what}")
