"""The adb and apple profile devices without a phone or a Mac: a fake ``adb`` on PATH that logs
its arguments and answers like a phone whose runner logs what ExecuTorch's executor_runner logs;
the parsers on that output; the one-line errors; Core ML's refusal off macOS."""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
from pathlib import Path

import pytest

from compress.errors import UserError
from export.profile import adb as adb_module
from export.profile.adb import AdbDevice, adb_command, runner_shell
from export.profile.adb_output import (
    RunnerLog,
    device_facts,
    parse_app_record,
    parse_getprop,
    parse_runner_log,
)
from export.profile.apple import AppleDevice
from export.profile.devices import Settings, Tower, devices, open_device

SERIAL = "R58M123ABC"
RUNNER = "/data/local/tmp/executor_runner"
OPS_RUNNER = "/data/local/tmp/executor_runner_etdump"
WORKDIR = "/data/local/tmp/edgeclip"
GETPROP = """\
[ro.build.version.release]: [14]
[ro.build.version.sdk]: [34]
[ro.product.cpu.abi]: [arm64-v8a]
[ro.product.manufacturer]: [samsung]
[ro.product.model]: [SM-S921B]
[ro.soc.manufacturer]: [Samsung]
[ro.soc.model]: [s5e9945]
[ro.board.platform]: [s5e9945]
"""
# The fake runner's per-run times: 1 first + 2 warm-up + 3 timed runs.
TIMES = [31.5, 12.25, 11.0, 10.5, 10.75, 10.25]


def logcat(times: list[float], load_ms: float = 84.123) -> str:
    """What ``adb logcat -d -s ExecuTorch:I`` prints after one runner process (Android PAL,
    threadtime format) that ran ``len(times)`` executions."""
    lines = [
        "--------- beginning of main",
        "11-25 10:00:00.100  4242  4242 I ExecuTorch: Resetting threadpool with num threads = 4",
        f"11-25 10:00:00.110  4242  4242 I ExecuTorch: Model file {WORKDIR}/m.pte is loaded.",
        "11-25 10:00:00.111  4242  4242 I ExecuTorch: Using method forward",
        f"11-25 10:00:00.190  4242  4242 I ExecuTorch: Model loaded in {load_ms:f} ms.",
    ]
    for i, ms in enumerate(times, 1):
        lines.append(
            f"11-25 10:00:00.{200 + i}  4242  4242 I ExecuTorch: "
            f"Iteration {i} of {len(times)}: {ms:f} ms"
        )
    lines.append(
        "11-25 10:00:00.300  4242  4242 I ExecuTorch: "
        f"Model executed successfully {len(times)} time(s) in {sum(times):f} ms."
    )
    return "\n".join(lines) + "\n"


FAKE_ADB = """\
#!{python}
# A phone for tests: log argv, answer with the first rule whose "when" is in the command line.
import json, os, shutil, sys

here = os.path.dirname(os.path.abspath(__file__))
args = sys.argv[1:]
with open(os.path.join(here, "calls.jsonl"), "a") as log:
    log.write(json.dumps(args) + "\\n")
with open(os.path.join(here, "rules.json")) as f:
    rules = json.load(f)
line = " ".join(args)
for rule in rules:
    if rule["when"] in line:
        if "pull_from" in rule:
            shutil.copyfile(rule["pull_from"], args[-1])
        sys.stdout.write(rule.get("out", ""))
        sys.stderr.write(rule.get("err", ""))
        sys.exit(rule.get("rc", 0))
"""


class FakeAdb:
    """A fake ``adb`` executable in its own folder, first on PATH."""

    def __init__(self, folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.folder = folder
        folder.mkdir()
        script = folder / "adb"
        script.write_text(FAKE_ADB.format(python=sys.executable))
        script.chmod(0o755)
        monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
        self.answer([])

    def answer(self, rules: list[dict]) -> None:
        """Rules for the commands of one test (``when``: a substring of the joined argv)."""
        phone = [
            {"when": "get-state", "out": "device\n"},
            {"when": "shell getprop", "out": GETPROP},
            {"when": f"test -x {RUNNER} ", "out": "present\n"},
            {"when": "logcat -d", "out": logcat(TIMES)},
        ]
        (self.folder / "rules.json").write_text(json.dumps(rules + phone))

    def calls(self) -> list[list[str]]:
        log = self.folder / "calls.jsonl"
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


@pytest.fixture
def fake_adb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeAdb:
    return FakeAdb(tmp_path / "bin", monkeypatch)


def tower(folder: Path, target: str = "executorch", name: str = "image") -> Tower:
    """A tower folder, with a stand-in model file where it has none: the fake phone never reads
    it."""
    folder.mkdir(parents=True, exist_ok=True)
    file = {"executorch": "model.pte", "onnx": "model.onnx", "coreml": "model.mlpackage"}[target]
    if not (folder / file).exists():
        (folder / file).write_bytes(b"PTE")
    manifest = {
        "model": "tiny",
        "tower": name,
        "target": target,
        "precision": "fp32",
        "file": file,
        "inputs": [{"name": "image", "shape": [1, 3, 32, 32], "dtype": "float32"}],
        "format": {"delegate": "xnnpack", "etrecord": "etrecord.bin"},
        "libraries": {"executorch": "1.5.1"},
    }
    return Tower(folder, manifest, f"{target}-fp32")


def test_adb_is_registered_and_named_by_serial():
    assert devices.get("adb") is AdbDevice and devices.get("apple") is AppleDevice
    assert open_device(f"adb:{SERIAL}").name == f"adb-{SERIAL}"
    assert open_device("adb").name == "adb"
    assert open_device("adb:192.168.1.5:5555").serial == "192.168.1.5:5555"
    assert open_device("adb:192.168.1.5:5555").name == "adb-192.168.1.5-5555"


def test_adb_measures_with_the_documented_command_sequence(fake_adb, tmp_path):
    image = tower(tmp_path / "executorch-fp32" / "image")
    phone = AdbDevice(SERIAL, {"runner": RUNNER})
    settings = Settings(runs=3, warmup=2, threads=4)

    measured = phone.measure(image, settings)

    remote = f"{WORKDIR}/executorch-fp32-image.pte"
    run = (
        f"cd {WORKDIR} && {RUNNER} --model_path={remote} --num_executions=6 "
        "--print_output=none --cpu_threads=4"
    )
    cleanup = f"rm -f {remote} {WORKDIR}/executorch-fp32-image.etdump {WORKDIR}/model.etdump"
    on_phone = ["-s", SERIAL]
    assert fake_adb.calls() == [
        [*on_phone, "get-state"],
        [*on_phone, "shell", "getprop"],
        [*on_phone, "shell", f"test -x {RUNNER} && echo present"],
        [*on_phone, "shell", f"mkdir -p {WORKDIR}"],
        [*on_phone, "push", str(image.model_file), remote],
        [*on_phone, "logcat", "-c"],
        [*on_phone, "shell", run],
        [*on_phone, "logcat", "-d", "-s", "ExecuTorch:I"],
        [*on_phone, "shell", cleanup],
    ]
    assert measured.first_inference_ms == 31.5
    assert measured.times_ms == [10.5, 10.75, 10.25]  # warm-up runs left out
    assert measured.load_ms == pytest.approx(84.123)
    assert (measured.threads, measured.environment["runner_threads"]) == (4, 4)
    assert (measured.compute_unit, measured.ops) == ("xnnpack", None)
    assert measured.device == {
        "kind": "adb",
        "serial": SERIAL,
        "model": "samsung SM-S921B",
        "soc": "Samsung s5e9945",
        "os": "Android 14 (API 34)",
        "abi": "arm64-v8a",
    }

    phone.measure(image, settings)  # the phone's facts are read once per device
    assert sum(call[2:] == ["shell", "getprop"] for call in fake_adb.calls()) == 1


def test_adb_without_serial_reaches_the_only_phone(fake_adb, tmp_path):
    AdbDevice("", {}).measure(tower(tmp_path / "t"), Settings(runs=3, warmup=2))
    calls = fake_adb.calls()
    assert calls[0] == ["get-state"] and all(call[0] != "-s" for call in calls)
    assert "--num_executions=6 --print_output=none" in calls[6][1]
    assert "--cpu_threads" not in calls[6][1]  # the runner's own choice of cores


def test_ops_pass_runs_the_event_tracer_build_and_reads_its_etdump(fake_adb, tmp_path, monkeypatch):
    etdump = tmp_path / "phone.etdump"
    etdump.write_bytes(b"ETDUMP")
    fake_adb.answer(
        [
            {"when": f"test -x {OPS_RUNNER} ", "out": "present\n"},
            {"when": "pull", "pull_from": str(etdump)},
        ]
    )
    read = {}

    def etdump_ops(path, etrecord):
        read.update(content=Path(path).read_bytes(), etrecord=etrecord)
        return {"Fully Connected (NC, F32) GEMM": 1.5}

    monkeypatch.setattr("export.profile.etdump.etdump_ops", etdump_ops)
    image = tower(tmp_path / "image")
    phone = AdbDevice(SERIAL, {"ops_runner": OPS_RUNNER})

    measured = phone.measure(image, Settings(runs=3, warmup=2))

    remote = f"{WORKDIR}/executorch-fp32-image"
    commands = [call[2:] for call in fake_adb.calls()]
    assert commands[2:4] == [
        ["shell", f"test -x {RUNNER} && echo present"],
        ["shell", f"test -x {OPS_RUNNER} && echo present"],
    ]
    assert commands[-5:-1] == [
        ["logcat", "-c"],
        [
            "shell",
            f"cd {WORKDIR} && {OPS_RUNNER} --model_path={remote}.pte --num_executions=6 "
            f"--print_output=none --etdump_path={remote}.etdump",
        ],
        ["logcat", "-d", "-s", "ExecuTorch:I"],
        ["pull", f"{remote}.etdump", commands[-2][2]],
    ]
    assert commands[-1] == [
        "shell",
        f"rm -f {remote}.pte {remote}.etdump {WORKDIR}/model.etdump",
    ]
    assert read == {"content": b"ETDUMP", "etrecord": image.folder / "etrecord.bin"}
    assert measured.ops == {"Fully Connected (NC, F32) GEMM": 1.5}
    assert measured.times_ms == [10.5, 10.75, 10.25]  # from the plain runner's pass
    assert measured.environment["ops_runner"] == OPS_RUNNER

    phone.measure(image, Settings(runs=3, warmup=2, ops=False))  # no ops: no second pass
    assert sum(OPS_RUNNER in " ".join(call) for call in fake_adb.calls()) == 2


def test_missing_runner_is_one_line_and_pushes_nothing(fake_adb, tmp_path):
    fake_adb.answer([{"when": "test -x", "out": ""}])
    with pytest.raises(UserError) as err:
        AdbDevice(SERIAL, {}).measure(tower(tmp_path / "t"), Settings(runs=3, warmup=2))
    message = str(err.value)
    assert "\n" not in message
    assert f"no executable {RUNNER} on the phone (profile.adb.runner)" in message
    assert "docs/profiling.md, 'Android phones over adb'" in message
    assert not [call for call in fake_adb.calls() if "push" in call]


def test_failing_runner_says_why_and_cleans_up(fake_adb, tmp_path):
    fake_adb.answer(
        [
            {"when": "--model_path", "rc": 134},
            {
                "when": "logcat -d",
                "out": "11-25 10:00:00.1  1  1 E ExecuTorch: Failed to parse model file x.pte\n",
            },
        ]
    )
    with pytest.raises(UserError, match=r"runner failed \(exit 134\): .*Failed to parse model"):
        AdbDevice(SERIAL, {}).measure(tower(tmp_path / "t"), Settings(runs=3, warmup=2))
    *_, last = fake_adb.calls()
    assert last[:3] == ["-s", SERIAL, "shell"]
    assert last[3].startswith(f"rm -f {WORKDIR}/executorch-fp32-image.pte ")


def test_phone_not_connected_is_one_line(fake_adb, tmp_path):
    fake_adb.answer(
        [{"when": "get-state", "rc": 1, "err": f"error: device '{SERIAL}' not found\n"}]
    )
    with pytest.raises(UserError) as err:
        AdbDevice(SERIAL, {}).measure(tower(tmp_path / "t"), Settings())
    assert (
        str(err.value) == f"adb-{SERIAL}: adb get-state failed: error: device '{SERIAL}' not found"
    )


def test_adb_not_on_path_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(UserError) as err:
        AdbDevice("", {}).measure(tower(tmp_path / "t"), Settings())
    assert str(err.value) == (
        "adb: adb executable 'adb' not found on PATH; install Android platform-tools or set "
        "profile.adb.adb"
    )


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"runnr": RUNNER}, "profile.adb.runnr: unknown option; expected one of: runner, dir"),
        ({"dir": "tmp/edgeclip"}, "profile.adb.dir: must be an absolute path, got 'tmp/edgeclip'"),
        ({"adb": ""}, "profile.adb.adb: must be a non-empty string, got ''"),
    ],
)
def test_adb_options_are_checked(options, error):
    with pytest.raises(UserError, match=error):
        AdbDevice("", options)
    unset = AdbDevice("", {"runner": None, "dir": None}).options  # a recipe's unset keys
    assert (unset.runner, unset.dir, unset.adb) == (RUNNER, WORKDIR, "adb")


def test_adb_skips_what_is_not_a_pte(tmp_path):
    phone = AdbDevice("", {})
    assert phone.skip_reason(tower(tmp_path / "a", "executorch")) is None
    assert phone.skip_reason(tower(tmp_path / "b", "onnx")) == "adb runs ExecuTorch .pte only"
    assert phone.skip_reason(tower(tmp_path / "c", "coreml")) == "adb runs ExecuTorch .pte only"


def test_commands_are_pure():
    assert adb_command("adb", "", "get-state") == ["adb", "get-state"]
    assert adb_command("adb", "X1", "push", "a", "b") == ["adb", "-s", "X1", "push", "a", "b"]
    line = runner_shell("/d/run ner", "/d/m.pte", "/d", 7, threads=2, etdump="/d/m.etdump")
    assert shlex.split(line) == [
        "cd",
        "/d",
        "&&",
        "/d/run ner",
        "--model_path=/d/m.pte",
        "--num_executions=7",
        "--print_output=none",
        "--cpu_threads=2",
        "--etdump_path=/d/m.etdump",
    ]


def test_getprop_facts_fall_back_to_the_board_platform():
    props = parse_getprop("[ro.board.platform]: [taro]\n[ro.serialno]: [ZY22]\nnoise\n")
    assert props == {"ro.board.platform": "taro", "ro.serialno": "ZY22"}
    facts = device_facts(props, "")
    assert (facts["soc"], facts["serial"], facts["model"], facts["os"]) == (
        "taro",
        "ZY22",
        None,
        None,
    )


def test_runner_log_from_stderr_under_the_posix_pal():
    """Built with -DEXECUTORCH_PAL_DEFAULT=posix, ET_LOG lines go to stderr with a glog prefix."""
    text = (
        "I 00:00:00.000100 executorch:executor_runner.cpp:338] Resetting threadpool with "
        "num threads = 6\n"
        "I 00:00:00.051000 executorch:executor_runner.cpp:624] Model loaded in 50.500000 ms.\n"
        "I 00:00:00.070000 executorch:executor_runner.cpp:779] Iteration 1 of 2: 19.000000 ms\n"
        "I 00:00:00.080000 executorch:executor_runner.cpp:779] Iteration 2 of 2: 9.500000 ms\n"
    )
    assert parse_runner_log(text, 2) == RunnerLog(50.5, [19.0, 9.5], 6)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("I ExecuTorch: Model loaded in 3.0 ms.\n", "logged no 'Iteration I of N: X ms' lines"),
        (logcat([1.0, 2.0]).replace("2: 2.000000 ms", "2: 2.00"), "cannot read the runner's line"),
        (logcat([1.0, 2.0]).replace("2.000000 ms", "nan ms"), "not a duration in ms"),
        (logcat([1.0, 2.0, 3.0]), "expected iterations 1 to 2 once each"),
        (logcat([1.0, 2.0]) + logcat([1.0, 2.0]), "expected iterations 1 to 2 once each"),
        (logcat([1.0, 2.0]).replace("Iteration 2 of 2: 2.000000 ms\n", ""), "logged 1 of 2"),
    ],
    ids=["no-lines", "cut-off", "nan", "wrong-total", "twice", "missing"],
)
def test_malformed_runner_log_is_one_line(text, error):
    with pytest.raises(UserError, match=error) as err:
        parse_runner_log(text, 2)
    assert "\n" not in str(err.value)


def test_apple_needs_macos_in_one_line(monkeypatch):
    monkeypatch.setattr(platform, "system", lambda: "Linux")
    with pytest.raises(UserError) as err:
        open_device("apple")
    assert str(err.value) == (
        "apple: Core ML prediction needs macOS (this is Linux); profile Core ML exports on a Mac"
    )


def test_apple_compute_units_and_options(monkeypatch, tmp_path):
    with pytest.raises(UserError, match="unknown compute unit; expected one of: cpu_only, "):
        open_device("apple:gpu")
    with pytest.raises(UserError, match="profile.apple.compute_units: unknown option"):
        open_device("apple", {"compute_units": ["all"]})
    monkeypatch.setattr(platform, "system", lambda: "Darwin")
    assert open_device("apple", {"compute_units": None}).name == "apple-all"
    mac = open_device("apple:cpu_and_gpu")
    assert (mac.name, mac.compute_unit) == ("apple-cpu_and_gpu", "cpu_and_gpu")
    assert mac.skip_reason(tower(tmp_path / "a", "coreml")) is None
    assert (
        mac.skip_reason(tower(tmp_path / "b", "executorch")) == "apple runs Core ML .mlpackage only"
    )


@pytest.fixture(scope="module")
def real_pte(tmp_path_factory: pytest.TempPathFactory) -> tuple[Tower, Path]:
    """A tiny program exported by the ExecuTorch target (``model.pte`` and ``etrecord.bin``)
    and the ETDump of 6 runs of it in ExecuTorch's Python runtime: what the phone's event-tracer
    runner would write."""
    import torch

    from export import exporters

    folder = tmp_path_factory.mktemp("pte") / "image"
    folder.mkdir()
    module = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.LayerNorm(4))
    example = torch.rand(1, 8)
    exporters.get("executorch")().export(module, example, folder / "model.pte", "image", "fp32")
    from executorch.runtime import Runtime

    program = Runtime.get().load_program(
        str(folder / "model.pte"), enable_etdump=True, debug_buffer_size=0
    )
    method = program.load_method("forward")
    for _ in range(6):
        method.execute([example])
    etdump = folder.parent / "phone.etdump"
    program.write_etdump_result_to_file(str(etdump), str(folder.parent / "phone.debug"))
    return tower(folder), etdump


@pytest.mark.slow
def test_ops_from_a_real_etdump_pulled_from_the_phone(real_pte, fake_adb):
    image, etdump = real_pte
    fake_adb.answer(
        [
            {"when": f"test -x {OPS_RUNNER} ", "out": "present\n"},
            {"when": "pull", "pull_from": str(etdump)},
        ]
    )
    measured = AdbDevice("", {"ops_runner": OPS_RUNNER}).measure(image, Settings(runs=3, warmup=2))
    # XNNPACK's kernel for the Linear layer; layer norm stays on a portable kernel
    assert set(measured.ops) == {"Fully Connected (NC, F32) GEMM", "native_layer_norm (portable)"}
    assert all(ms >= 0 for ms in measured.ops.values())


APP = "org.edgeclip.demo"
APP_ROOT = f"/sdcard/Android/data/{APP}/files/edgeclip"


def app_record(times: list[float], **overrides) -> dict:
    """A record as the demo app's BenchmarkRecord writes it (docs/design.md, plus the raw times)."""
    latency = {"p50": 10.5, "p90": 10.7, "mean": 10.5, "min": 10.25, "max": 10.75}
    record = {
        "record_version": 1,
        "model": "tiny",
        "tower": "image",
        "artifact": "executorch-fp32",
        "target": "executorch",
        "precision": "fp32",
        "runtime": "executorch-android 1.0.0 (Module)",
        "compute_unit": "xnnpack",
        "device": {"manufacturer": "samsung", "model": "SM-S921B", "app_version": "0.1.0"},
        "input": {"name": "image", "shape": [1, 3, 32, 32], "dtype": "float32"},
        "sha256": "0" * 64,
        "threads": None,
        "warmup": 2,
        "runs": len(times),
        "load_ms": 40.5,
        "first_inference_ms": 25.0,
        "latency_ms": latency,
        "times_ms": times,
        "peak_rss_mb": 180.5,
        "flops": None,
        "achieved_gflops": None,
        "gemm_gflops": None,
        "gemm_fraction": None,
        "ops": None,
        "environment": {"android_sdk": 34},
        "measured_at": "2026-12-04T10:00:00Z",
    }
    return {**record, **overrides}


def test_adb_app_mode_runs_the_benchmark_activity_and_pulls_its_record(fake_adb, tmp_path):
    record = tmp_path / "record.json"
    record.write_text(json.dumps(app_record([10.5, 10.75, 10.25])))
    remote = f"{APP_ROOT}/executorch-fp32-image"
    out = f"{remote}.json"
    fake_adb.answer(
        [
            {"when": f"pm path {APP}", "out": f"package:/data/app/{APP}/base.apk\n"},
            {"when": f"shell ls {out}", "out": f"{out}\n"},
            {"when": f"pull {out}", "pull_from": str(record)},
        ]
    )
    image = tower(tmp_path / "executorch-fp32" / "image")
    measured = AdbDevice(SERIAL, {"app": APP}).measure(image, Settings(runs=3, warmup=2))

    start = (
        f"am start -W -n {APP}/.BenchmarkActivity --es tower_dir {remote} --es out {out} "
        "--ei runs 3 --ei warmup 2"
    )
    cleanup = f"rm -rf {remote} {out} {out}.error"
    commands = [call[2:] for call in fake_adb.calls()]
    assert commands[3:8] == [
        ["shell", cleanup],
        ["shell", f"mkdir -p {APP_ROOT}"],
        ["push", str(image.folder), remote],
        ["shell", start],
        ["shell", f"ls {out} {out}.error"],
    ]
    assert commands[8][:2] == ["pull", out] and commands[-1] == ["shell", cleanup]
    assert not any(RUNNER in " ".join(c) for c in commands)  # no executor_runner in app mode
    assert measured.times_ms == [10.5, 10.75, 10.25] and measured.first_inference_ms == 25.0
    assert (measured.load_ms, measured.peak_rss_mb) == (40.5, 180.5)
    assert measured.runtime.startswith("executorch-android")
    assert measured.device["soc"] == "Samsung s5e9945"  # the phone's facts, as runner records
    assert measured.device["app_version"] == "0.1.0"  # and what the app adds
    assert measured.environment == {"android_sdk": 34, "app": APP}


def test_adb_app_mode_reports_the_apps_error_and_a_missing_app(fake_adb, tmp_path):
    out = f"{APP_ROOT}/executorch-fp32-image.json"
    fake_adb.answer(
        [
            {"when": f"pm path {APP}", "out": "package:/data/app/base.apk\n"},
            {"when": f"shell ls {out}", "out": f"{out}.error\n"},
            {"when": "shell cat", "out": "manifest.json: manifest_version 3; this app reads 2\n"},
        ]
    )
    image = tower(tmp_path / "executorch-fp32" / "image")
    with pytest.raises(UserError, match="the app failed: manifest.json: manifest_version 3"):
        AdbDevice(SERIAL, {"app": APP}).measure(image, Settings(runs=3, warmup=2))
    assert fake_adb.calls()[-1][2:] == ["shell", f"rm -rf {out[:-5]} {out} {out}.error"]

    fake_adb.answer([{"when": "pm path", "out": ""}])
    with pytest.raises(UserError, match=f"the app {APP} is not installed"):
        AdbDevice(SERIAL, {"app": APP}).measure(image, Settings(runs=3, warmup=2))


@pytest.mark.parametrize(
    ("record", "error"),
    [
        ("not json", "not a profile record"),
        (json.dumps(app_record([1.0, 2.0])), "times_ms: 3 durations"),
        (json.dumps(app_record([1.0, -2.0, 3.0])), "times_ms: 3 durations"),
        (json.dumps({**app_record([1.0, 2.0, 3.0]), "record_version": 9}), "record_version 9"),
    ],
)
def test_bad_app_record_is_one_line(record, error):
    with pytest.raises(UserError, match=error):
        parse_app_record(record, runs=3)


def test_app_option_is_a_package_name():
    with pytest.raises(UserError, match="profile.adb.app: must be an Android package name"):
        AdbDevice("", {"app": "/data/app"})
    assert adb_module.app_shell(APP, "/d/t", "/d/t.json", 5, 1, threads=2).endswith(
        "--ei runs 5 --ei warmup 1 --ei threads 2"
    )
