"""What an Android phone prints, parsed: ``getprop``, the ExecuTorch runner's log lines and the
demo app's profile record (pure functions; :mod:`export.profile.adb` runs the commands)."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from compress.errors import UserError
from export.profile.record import Measurement, check_record

README = "docs/profiling.md, 'Android phones over adb'"
LOG_TAG = "ExecuTorch"  # the tag of every ET_LOG line under the Android PAL
ITERATION = re.compile(r"Iteration (\d+) of (\d+): (\S+) ms\s*$")
LOADED = re.compile(r"Model loaded in (\S+) ms\.")
THREADPOOL = re.compile(r"Resetting threadpool with num threads = (-?\d+)")


@dataclass(frozen=True)
class RunnerLog:
    """What the runner logged: its load time, each execution's time (ms, in order) and the
    thread count it reset its pool to (None where it has no pool or did not say)."""

    load_ms: float | None
    iterations: list[float]
    threads: int | None


def parse_app_record(text: str, runs: int) -> Measurement:
    """The demo app's profile record (the JVM core's ``BenchmarkRecord``) as a measurement.

    Raises:
        UserError: not a profile record, or its ``times_ms`` are not ``runs`` durations.
    """
    try:
        record = json.loads(text)
        check_record(record)
    except ValueError as error:
        raise UserError(f"adb: the app's record is not a profile record: {error}") from None
    times = record.get("times_ms")
    if (
        not isinstance(times, list)
        or len(times) != runs
        or not all(isinstance(t, (int, float)) and math.isfinite(t) and t >= 0 for t in times)
    ):
        raise UserError(f"adb: the app's record needs times_ms: {runs} durations in ms")
    return Measurement.from_result(record, times_ms=[float(t) for t in times], ops=None)


def parse_getprop(text: str) -> dict[str, str]:
    """``adb shell getprop`` output (``[ro.product.model]: [Pixel 8]`` lines) as a dict."""
    props = {}
    for line in text.splitlines():
        match = re.fullmatch(r"\[([^\]]+)\]: \[(.*)\]", line.strip())
        if match:
            props[match[1]] = match[2]
    return props


def device_facts(props: dict[str, str], serial: str) -> dict[str, Any]:
    """What the phone is, from its properties: maker and model, SoC, Android version, ABI."""

    def joined(*keys: str) -> str | None:
        return " ".join(props[k] for k in keys if props.get(k)) or None

    # ro.soc.* since Android 12; the board platform ("taro", "gs201") before
    if props.get("ro.soc.model"):
        soc = joined("ro.soc.manufacturer", "ro.soc.model")
    else:
        soc = joined("ro.board.platform")
    release = props.get("ro.build.version.release")
    return {
        "kind": "adb",
        "serial": serial or props.get("ro.serialno") or None,
        "model": joined("ro.product.manufacturer", "ro.product.model"),
        "soc": soc,
        "os": f"Android {release} (API {props.get('ro.build.version.sdk')})" if release else None,
        "abi": props.get("ro.product.cpu.abi") or None,
    }


def parse_runner_log(text: str, executions: int) -> RunnerLog:
    """The runner's load time, per-execution times and thread count from its log ``text``
    (stdout, stderr and logcat together; any line prefix is allowed).

    Raises:
        UserError: no iteration lines, a malformed one, or not exactly iterations 1…executions.
    """
    iterations: dict[int, float] = {}
    load_ms = threads = None
    for line in text.splitlines():
        if (loaded := LOADED.search(line)) is not None:
            load_ms = _milliseconds(loaded[1], line)
        if (pool := THREADPOOL.search(line)) is not None:
            threads = int(pool[1])
        if re.search(r"\bIteration \d", line) is None:
            continue
        match = ITERATION.search(line)
        if match is None:
            raise UserError(
                f"adb: cannot read the runner's line {line.strip()!r}; "
                "expected 'Iteration I of N: X ms'"
            )
        index, total = int(match[1]), int(match[2])
        if total != executions or index in iterations or not 1 <= index <= total:
            raise UserError(
                f"adb: the runner logged {line.strip()!r}, expected iterations 1 to {executions} "
                "once each (is another ExecuTorch process logging?)"
            )
        iterations[index] = _milliseconds(match[3], line)
    if not iterations:
        raise UserError(
            "adb: the runner logged no 'Iteration I of N: X ms' lines (in its output or logcat "
            f"tag {LOG_TAG}); build it with -DEXECUTORCH_ENABLE_LOGGING=ON ({README})"
        )
    if len(iterations) != executions:
        raise UserError(f"adb: the runner logged {len(iterations)} of {executions} iterations")
    return RunnerLog(load_ms, [iterations[i] for i in range(1, executions + 1)], threads)


def _milliseconds(value: str, line: str) -> float:
    """A logged duration, which must be a finite number >= 0."""
    try:
        ms = float(value)
    except ValueError:
        ms = float("nan")
    if not 0 <= ms < float("inf"):
        raise UserError(f"adb: the runner logged {line.strip()!r}, not a duration in ms")
    return ms
