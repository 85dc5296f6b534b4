"""Android phones over adb: ExecuTorch ``.pte`` towers timed by ExecuTorch's own
``executor_runner`` on the phone (``--device adb`` or ``adb:SERIAL``).

What runs and what is read back, from pytorch/executorch's sources at tag v1.4.1 and at main
(cff6f4dd, 2026-08-22); the lines below are the same in both, so in the 1.5 releases between:

* The binary is ``examples/portable/executor_runner/executor_runner.cpp``, cross-compiled with
  the ``android-arm64-v8a`` CMake preset and pushed to the phone once by the user
  (docs/profiling.md, "Android phones over adb"); option ``runner`` says where it is.
* One process runs ``1 + warmup + runs`` times (``--num_executions``), so the warm-up warms what
  the timed runs use, with ``--print_output=none`` and ``--cpu_threads=N`` only where
  ``Settings.threads`` is set (otherwise the runner picks the performant cores). Inputs are the
  runner's: every element 1, set before each run outside the timed part.
* Per-run times are the runner's own ``ET_LOG`` lines, ``Model loaded in %f ms.``
  (``Program::load`` through ``load_method``) and ``Iteration %u of %u: %f ms`` (one
  ``Method::execute``). With the preset's Android PAL (``runtime/platform/default/android.cpp``)
  they go to logcat under the tag ``ExecuTorch``; built with ``-DEXECUTORCH_PAL_DEFAULT=posix``
  they go to stderr as ``I 00:00:00.012345 executorch:executor_runner.cpp:781] …``. We clear
  logcat, run, and read the runner's output plus ``logcat -d -s ExecuTorch:I``, which are the
  lines ExecuTorch's ``devtools/scripts/benchmark_android.sh`` reads too. Iteration 1 is the
  first inference and the last ``runs`` iterations are the timed runs. The summary line
  ``Model executed successfully N time(s) in T ms.`` is not used because it gives only a total.
* Per-operator times, only where option ``ops_runner`` names a second build of the same runner
  with ``-DEXECUTORCH_ENABLE_EVENT_TRACER=ON`` (which adds ``--etdump_path``): a separate pass
  writes an ETDump that is pulled back and read with the Inspector and the tower's
  ``etrecord.bin`` (:func:`export.profile.etdump.etdump_ops`). The latencies of that pass are
  not used, because they include the tracer's own cost.

With option ``app`` (the demo app's package, ``org.edgeclip.demo``), the tower is timed inside
the demo app instead (``android_demo/``): its folder is pushed to the app's external files
folder, ``am start`` opens the app's ``BenchmarkActivity`` on it, and the profile record the app
writes there (atomically, with the raw ``times_ms``; docs/design.md, "Exports and profiles") is
pulled back. That measures what an app pays: ExecuTorch's Android runtime (the ``Module`` API
over XNNPACK) in an app process, not a separate binary.

The commands (:func:`adb_command`, :func:`runner_shell`, :func:`app_shell`) and the parsing
(:func:`parse_getprop`, :func:`parse_runner_log`, :func:`parse_app_record`) are pure functions;
:class:`AdbDevice` only runs them in order.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compress.errors import UserError
from export.profile.adb_output import (
    LOG_TAG,
    README,
    device_facts,
    parse_app_record,
    parse_getprop,
    parse_runner_log,
)
from export.profile.devices import Settings, Tower, devices, last_line
from export.profile.record import Measurement

DEFAULT_RUNNER = "/data/local/tmp/executor_runner"
DEFAULT_DIR = "/data/local/tmp/edgeclip"
COMMAND_TIMEOUT_S = 120  # state, getprop, mkdir, rm, logcat
TRANSFER_TIMEOUT_S = 900  # push of a large .pte, pull of an ETDump
RUN_TIMEOUT_S = 1800  # one runner process, warm-up and timed runs together
APP_ACTIVITY = ".BenchmarkActivity"  # the demo app's benchmark mode (android_demo/README.md)
APP_README = "android_demo/README.md, 'Benchmark mode'"
POLL_S = 1.0  # how often to look for the app's record
PACKAGE = re.compile(r"[A-Za-z][\w]*(\.[A-Za-z][\w]*)+")


@dataclass(frozen=True)
class AdbOptions:
    """The ``profile.adb`` options, with their defaults."""

    runner: str = DEFAULT_RUNNER  # executor_runner on the phone
    dir: str = DEFAULT_DIR  # where models are pushed on the phone, emptied of them afterwards
    adb: str = "adb"  # the adb executable on this machine, found on PATH
    ops_runner: str | None = None  # an event-tracer build of the runner, for per-operator times
    app: str | None = None  # the demo app's package: time towers in the app, not the runner

    @classmethod
    def from_mapping(cls, options: dict[str, Any]) -> AdbOptions:
        """Check the options by the names the user typed: known keys, non-empty strings, and
        absolute paths for the places on the phone. A None value is an option not given."""
        known = ("runner", "dir", "adb", "ops_runner", "app")
        given = {key: value for key, value in options.items() if value is not None}
        for key, value in given.items():
            if key not in known:
                raise UserError(
                    f"profile.adb.{key}: unknown option; expected one of: {', '.join(known)}"
                )
            if not isinstance(value, str) or not value.strip():
                raise UserError(f"profile.adb.{key}: must be a non-empty string, got {value!r}")
            if key == "app" and not PACKAGE.fullmatch(value):
                raise UserError(
                    f"profile.adb.app: must be an Android package name such as "
                    f"org.edgeclip.demo, got {value!r}"
                )
            if key not in ("adb", "app") and not value.startswith("/"):
                raise UserError(f"profile.adb.{key}: must be an absolute path, got {value!r}")
        return cls(**given)


def adb_command(adb: str, serial: str, *args: str) -> list[str]:
    """``adb [-s SERIAL] ARGS…``: with a serial every command goes to that phone only."""
    return [adb, *(["-s", serial] if serial else []), *args]


def runner_shell(
    runner: str,
    model: str,
    workdir: str,
    executions: int,
    threads: int | None = None,
    etdump: str | None = None,
) -> str:
    """The phone's shell line that runs ``model`` ``executions`` times in one process.

    It runs from ``workdir``: a runner built with the event tracer writes ``model.etdump`` into
    its working directory even when no ``--etdump_path`` is given, and the shell adb starts is
    in ``/``, where that write fails and the runner aborts.
    """
    flags = [f"--model_path={model}", f"--num_executions={executions}", "--print_output=none"]
    if threads is not None:
        flags.append(f"--cpu_threads={threads}")
    if etdump is not None:
        flags.append(f"--etdump_path={etdump}")
    return f"cd {shlex.quote(workdir)} && " + shlex.join([runner, *flags])


def app_files(app: str) -> str:
    """The app's external files folder: adb and the app both reach it without permissions."""
    return f"/sdcard/Android/data/{app}/files"


def app_shell(
    app: str, tower_dir: str, out: str, runs: int, warmup: int, threads: int | None = None
) -> str:
    """The phone's shell line that opens the app's benchmark mode on one tower folder.

    The app times loading, the first inference, ``warmup`` and then ``runs`` inferences, and
    writes its record to ``out`` (or the reason it could not to ``out + ".error"``).
    """
    extras = ["--es", "tower_dir", tower_dir, "--es", "out", out]
    extras += ["--ei", "runs", str(runs), "--ei", "warmup", str(warmup)]
    if threads is not None:
        extras += ["--ei", "threads", str(threads)]
    return shlex.join(["am", "start", "-W", "-n", f"{app}/{APP_ACTIVITY}", *extras])


@devices.register("adb")
class AdbDevice:
    """An Android phone reached with adb; it times ExecuTorch ``.pte`` towers.

    Example:
        >>> phone = AdbDevice("R58M123", {"runner": "/data/local/tmp/executor_runner"})
        >>> phone.name
        'adb-R58M123'
    """

    def __init__(self, address: str, options: dict[str, Any]) -> None:
        if any(c.isspace() for c in address):
            raise UserError(f"device 'adb:{address}': a serial has no spaces (see adb devices)")
        self.serial = address
        self.options = AdbOptions.from_mapping(options)
        # the records' folder: serials may hold ':' (adb over Wi-Fi, "192.168.1.5:5555")
        self.name = ("adb-" + re.sub(r"[^\w.-]", "-", address)) if address else "adb"
        self._facts: dict[str, Any] | None = None

    def skip_reason(self, tower: Tower) -> str | None:
        if tower.manifest.get("target") != "executorch":
            return "adb runs ExecuTorch .pte only"
        return None

    def measure(self, tower: Tower, settings: Settings) -> Measurement:
        """Push the tower's ``.pte``, run it on the phone, read the times back, remove it."""
        if self.options.app is not None:
            return self._measure_in_app(tower, settings)
        profile_ops = settings.ops and self.options.ops_runner is not None
        self._check_ready()
        self._require_runner("runner", self.options.runner)
        if profile_ops:
            self._require_runner("ops_runner", self.options.ops_runner)
        workdir = self.options.dir
        remote = f"{workdir}/{tower.artifact}-{tower.manifest['tower']}.pte"
        etdump = remote.removesuffix(".pte") + ".etdump"
        executions = 1 + settings.warmup + settings.runs
        self._adb("shell", f"mkdir -p {shlex.quote(workdir)}")
        self._adb("push", str(tower.model_file), remote, timeout=TRANSFER_TIMEOUT_S)
        try:
            line = runner_shell(self.options.runner, remote, workdir, executions, settings.threads)
            log = parse_runner_log(self._run_runner(line), executions)
            ops = None
            if profile_ops:
                line = runner_shell(
                    self.options.ops_runner, remote, workdir, executions, settings.threads, etdump
                )
                self._run_runner(line)
                ops = self._pull_ops(etdump, tower)
        finally:  # leave the phone as we found it, whatever failed
            stale = [remote, etdump, f"{workdir}/model.etdump"]
            self._adb("shell", shlex.join(["rm", "-f", *stale]), check=False)
        return Measurement(
            runtime="executorch executor_runner (Android)",
            compute_unit=tower.manifest.get("format", {}).get("delegate") or "portable",
            times_ms=log.iterations[-settings.runs :],
            load_ms=log.load_ms,
            first_inference_ms=log.iterations[0],
            threads=settings.threads,
            device=self._facts or {},
            environment={
                "runner": self.options.runner,
                "runner_threads": log.threads,
                "ops_runner": self.options.ops_runner if ops is not None else None,
                "exported_with": tower.manifest.get("libraries", {}).get("executorch"),
            },
            ops=ops,
        )

    def _measure_in_app(self, tower: Tower, settings: Settings) -> Measurement:
        """Push the tower folder into the app's files, run its benchmark mode, pull its record."""
        app = self.options.app
        self._check_ready()
        if "package:" not in self._adb("shell", f"pm path {app}", check=False).stdout:
            raise UserError(
                f"{self.name}: the app {app} is not installed; build and install it ({APP_README})"
            )
        name = f"{tower.artifact}-{tower.manifest['tower']}"
        root = f"{app_files(app)}/edgeclip"
        remote, out = f"{root}/{name}", f"{root}/{name}.json"
        cleanup = shlex.join(["rm", "-rf", remote, out, out + ".error"])
        self._adb("shell", cleanup)  # what an earlier, killed run left
        self._adb("shell", f"mkdir -p {shlex.quote(root)}")
        self._adb("push", str(tower.folder), remote, timeout=TRANSFER_TIMEOUT_S)
        try:
            line = app_shell(app, remote, out, settings.runs, settings.warmup, settings.threads)
            self._adb("shell", line)
            with tempfile.TemporaryDirectory() as tmp:
                local = Path(tmp) / "record.json"
                self._adb("pull", self._await_record(out), str(local))
                measurement = parse_app_record(local.read_text(), settings.runs)
        finally:
            self._adb("shell", cleanup, check=False)
        measurement.environment = {**measurement.environment, "app": app}
        # the phone's facts as every adb record has them; what the app adds, beside them
        measurement.device = {**measurement.device, **(self._facts or {})}
        return measurement

    def _await_record(self, out: str) -> str:
        """Wait for the app's record (or its error) to appear; the path of the record."""
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while time.monotonic() < deadline:
            found = self._adb(
                "shell", f"ls {shlex.quote(out)} {shlex.quote(out + '.error')}", check=False
            ).stdout
            if out + ".error" in found:
                reason = self._adb("shell", f"cat {shlex.quote(out + '.error')}").stdout
                raise UserError(f"{self.name}: the app failed: {last_line(reason)}")
            if out in found.split():
                return out
            time.sleep(POLL_S)
        raise UserError(f"{self.name}: the app wrote no record in {RUN_TIMEOUT_S} s ({out})")

    def _adb(
        self, *args: str, timeout: float = COMMAND_TIMEOUT_S, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run one adb command on this phone; a failure (with ``check``) is a one-line error."""
        executable = shutil.which(self.options.adb)
        if executable is None:
            raise UserError(
                f"{self.name}: adb executable {self.options.adb!r} not found on PATH; install "
                "Android platform-tools or set profile.adb.adb"
            )
        try:
            done = subprocess.run(
                adb_command(executable, self.serial, *args),
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            raise UserError(f"{self.name}: adb {args[0]} took over {timeout:.0f} s") from None
        if check and done.returncode != 0:
            reason = last_line(done.stdout, done.stderr)
            raise UserError(f"{self.name}: adb {args[0]} failed: {reason}")
        return done

    def _check_ready(self) -> None:
        """The phone is connected and authorised; its facts are read once."""
        state = self._adb("get-state").stdout.strip()
        if state != "device":
            raise UserError(
                f"{self.name}: the phone is {state!r}, not 'device'; unlock it and allow USB "
                "debugging"
            )
        if self._facts is None:
            self._facts = device_facts(
                parse_getprop(self._adb("shell", "getprop").stdout), self.serial
            )

    def _require_runner(self, key: str, path: str) -> None:
        """Fail before pushing anything when the runner binary is not on the phone."""
        found = self._adb("shell", f"test -x {shlex.quote(path)} && echo present", check=False)
        if "present" not in found.stdout:
            raise UserError(
                f"{self.name}: no executable {path} on the phone (profile.adb.{key}); build "
                f"ExecuTorch's executor_runner for Android and adb push it there ({README})"
            )

    def _run_runner(self, line: str) -> str:
        """Run one runner process on the phone; its output and its logcat lines, as one text."""
        self._adb("logcat", "-c")
        done = self._adb("shell", line, timeout=RUN_TIMEOUT_S, check=False)
        logcat = self._adb("logcat", "-d", "-s", f"{LOG_TAG}:I").stdout
        if done.returncode != 0:
            reason = last_line(logcat, done.stdout, done.stderr)
            raise UserError(f"{self.name}: the runner failed (exit {done.returncode}): {reason}")
        return "\n".join([done.stdout, done.stderr, logcat])

    def _pull_ops(self, etdump: str, tower: Tower) -> dict[str, float]:
        """Per-operator milliseconds from the ETDump the ops pass wrote on the phone."""
        from export.profile.etdump import etdump_ops  # the Inspector: heavy, and only here

        etrecord = tower.manifest.get("format", {}).get("etrecord")
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / "model.etdump"
            self._adb("pull", etdump, str(local), timeout=TRANSFER_TIMEOUT_S)
            return etdump_ops(local, tower.folder / etrecord if etrecord else None)
