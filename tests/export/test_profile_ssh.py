"""Profiling over SSH (export.profile.ssh) against a real OpenSSH server on 127.0.0.1: a tiny
ONNX export timed end to end, the trtexec path with a stand-in trtexec, each connection failure
as a one-line error that writes nothing, and the exact ssh/scp command lines."""

from __future__ import annotations

import getpass
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from compress.errors import UserError
from compress.models import ModelRecord
from compress.tokenizer import Tokenizer
from export.driver import export_model
from export.profile.devices import Settings, Tower
from export.profile.profiler import profile
from export.profile.ssh import Board, SshDevice, command_line, parse_board

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"  # sshd re-executes itself: an absolute path
SETTINGS = Settings(runs=5, warmup=1, threads=1)
RUNTIME_DIR = "/run/sshd"  # Debian's sshd refuses to start without its privilege-separation dir


@dataclass(frozen=True)
class Server:
    """A running test sshd: its port and the files a client needs to reach it."""

    port: int
    key: Path  # a client key in its authorized_keys
    known_hosts: Path  # its host key, as "[127.0.0.1]:PORT"
    folder: Path

    @property
    def device(self) -> str:
        return f"ssh://{getpass.getuser()}@127.0.0.1:{self.port}"

    def options(self, **changes: object) -> dict[str, object]:
        """The ssh options of a board that works, with ``changes``."""
        base = {"key": str(self.key), "known_hosts": str(self.known_hosts)}
        return {**base, "python": sys.executable, **changes}


def keygen(path: Path) -> Path:
    """A fresh ed25519 key pair without passphrase at ``path`` (and ``path.pub``)."""
    command = ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "edgeclip-test", "-f", path]
    subprocess.run(command, check=True, capture_output=True)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, log: Path, seconds: float = 10) -> None:
    """Return once ``port`` accepts connections; fail with sshd's log if it exits or never does."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"sshd exited with {process.returncode}: {log.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"sshd did not listen on port {port} within {seconds} s: {log.read_text()}")


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory):
    """An OpenSSH server on 127.0.0.1 that lets this user in with a per-run key, only."""
    if not os.path.isfile(SSHD) or shutil.which("ssh") is None:
        pytest.skip("OpenSSH is not installed (apt-get install openssh-server openssh-client)")
    folder = tmp_path_factory.mktemp("sshd")
    host_key, client_key = keygen(folder / "host_key"), keygen(folder / "client_key")
    shutil.copy(folder / "client_key.pub", folder / "authorized_keys")
    port = free_port()
    (folder / "known_hosts").write_text(
        f"[127.0.0.1]:{port} {(folder / 'host_key.pub').read_text()}"
    )
    config = folder / "sshd_config"
    config.write_text(
        f"ListenAddress 127.0.0.1\nPort {port}\nHostKey {host_key}\n"
        f"AuthorizedKeysFile {folder / 'authorized_keys'}\nPidFile {folder / 'sshd.pid'}\n"
        "StrictModes no\nUsePAM no\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n"
        "Subsystem sftp internal-sftp\n"  # scp speaks SFTP since OpenSSH 9
    )
    if os.geteuid() == 0:
        os.makedirs(RUNTIME_DIR, exist_ok=True)
    log = folder / "sshd.log"
    with log.open("w") as out:
        process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=out, stderr=out)
    try:
        wait_for_port(port, process, log)
        yield Server(port, client_key, folder / "known_hosts", folder)
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model's ONNX fp32 export (both towers, batch 1): ``<dir>/onnx-fp32``."""
    torch.manual_seed(0)
    record = ModelRecord.named("tiny")
    images = torch.randn(2, 3, record.image_size, record.image_size)
    tokens = Tokenizer(record.context_length)(["a red circle", "two blue squares"])
    out = tmp_path_factory.mktemp("export")
    export_model(
        record.build(),
        record,
        out / "onnx-fp32",
        target="onnx",
        sample_images=images,
        sample_tokens=tokens,
    )
    return out


def board_python(folder: Path, env: str = "") -> str:
    """A script standing in for the board's Python: it logs the folder it runs in (so a test
    can see that the folder is gone afterwards), then runs this interpreter under ``env``."""
    script = folder / "board-python"
    log = folder / "board-python.log"
    script.write_text(f'#!/bin/sh\npwd >> {log}\nexec env {env} {sys.executable} "$@"\n')
    script.chmod(0o755)
    return str(script)


def folders_used(folder: Path) -> list[str]:
    """The folders the board's Python ran in, from its log."""
    return (folder / "board-python.log").read_text().split()


def lean_site(folder: Path) -> Path:
    """A site folder with NumPy only: a board whose Python has no onnxruntime and no torch."""
    site = folder / "site"
    site.mkdir()
    package = Path(np.__file__).parent
    for name in (package.name, package.name + ".libs"):  # .libs: the wheel's OpenBLAS
        if (package.parent / name).exists():
            (site / name).symlink_to(package.parent / name)
    return site


def read_records(out: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(out.rglob("*.json"))}


def test_profile_over_ssh(sshd: Server, export_dir: Path, tmp_path: Path):
    python = board_python(tmp_path)
    summary = profile(
        export_dir, sshd.device, tmp_path / "out", SETTINGS, sshd.options(python=python)
    )

    name = f"ssh-127.0.0.1-{sshd.port}"
    assert summary["device"] == name and summary["skipped"] == {}
    assert sorted(summary["records"]["onnx-fp32"]) == ["image", "text"]
    records = read_records(tmp_path / "out" / name / "onnx-fp32")
    assert sorted(records) == ["image", "text"]
    for tower, record in records.items():
        assert record["tower"] == tower
        assert (record["artifact"], record["target"]) == ("onnx-fp32", "onnx")
        assert record["runtime"].startswith("onnxruntime ")
        assert record["compute_unit"] == "CPUExecutionProvider"
        assert (record["runs"], record["warmup"], record["threads"]) == (5, 1, 1)
        assert 0 < record["latency_ms"]["min"] <= record["latency_ms"]["p50"]
        assert record["load_ms"] > 0 and record["first_inference_ms"] > 0
        assert record["ops"], "the --ops pass ran on the board"
        assert record["gemm_gflops"]["fp32"] > 0
        device = record["device"]
        assert (device["kind"], device["host"]) == ("ssh", "127.0.0.1")
        assert (device["cores"], device["arch"]) == (os.cpu_count(), platform.machine())
        assert "board" in device  # /proc/device-tree/model: a Jetson's name, None here
    # one folder per tower (the GEMM reference ran in the first), each removed afterwards
    used = folders_used(tmp_path)
    assert len(used) == 3 and len(set(used)) == 2
    for folder in used:
        assert Path(folder).name.startswith("edgeclip-profile.") and not os.path.exists(folder)


def test_trtexec_on_a_board_without_onnxruntime(sshd: Server, export_dir: Path, tmp_path: Path):
    """A stand-in trtexec writes ``--exportTimes`` as TensorRT's sampleReporting.cpp does: a
    JSON list with one object per iteration (startH2dMs … endD2hMs, h2dMs, computeMs, d2hMs,
    latencyMs), iteration i taking 0.1·(i+1) ms."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    trtexec = bin_dir / "trtexec"
    trtexec.write_text(
        f"#!{sys.executable}\n"
        "import json, sys\n"
        "args = dict(a[2:].partition('=')[::2] for a in sys.argv[1:])\n"
        f"open({str(tmp_path / 'trtexec.args')!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
        "rows = []\n"
        "for i in range(int(args['iterations'])):\n"
        "    start, ms = 10.0 * i, 0.1 * (i + 1)\n"
        "    rows.append({'startEnqMs': start, 'endEnqMs': start, 'startH2dMs': start,\n"
        "                 'endH2dMs': start, 'startComputeMs': start, 'endComputeMs': start + ms,\n"
        "                 'startD2hMs': start + ms, 'endD2hMs': start + ms, 'h2dMs': 0.0,\n"
        "                 'computeMs': ms, 'd2hMs': 0.0, 'latencyMs': ms})\n"
        "json.dump(rows, open(args['exportTimes'], 'w'))\n"
        "print('[I] TensorRT version: 10.3.0')\n"
    )
    trtexec.chmod(0o755)
    env = f"PATH={bin_dir}:$PATH PYTHONPATH={lean_site(tmp_path)}"
    python = board_python(tmp_path, env) + " -S"  # -S: no site-packages, so no onnxruntime
    profile(export_dir, sshd.device, tmp_path / "out", SETTINGS, sshd.options(python=python))

    records = read_records(tmp_path / "out")
    for record in records.values():
        assert record["runtime"] == "tensorrt 10.3.0 (trtexec)"
        assert record["runs"] == 5
        # iterations 2…6 of 6: the first, the warm-up, is dropped
        assert record["latency_ms"]["min"] == pytest.approx(0.2)
        assert record["latency_ms"]["max"] == pytest.approx(0.6)
        assert record["gemm_gflops"] is None  # a GPU's latency against no CPU GEMM rate
    calls = [json.loads(line) for line in (tmp_path / "trtexec.args").read_text().splitlines()]
    assert len(calls) == 2
    for call in calls:
        assert "--warmUp=0" in call and "--iterations=6" in call
        assert any(a.startswith("--loadInputs=") for a in call)  # the runner's own input
        assert call[0].startswith("--onnx=/") and "/edgeclip-profile." in call[0]


def test_missing_onnxruntime_on_the_board(sshd: Server, export_dir: Path, tmp_path: Path):
    python = board_python(tmp_path, f"PYTHONPATH={lean_site(tmp_path)}") + " -S"
    with pytest.raises(UserError) as caught:
        profile(export_dir, sshd.device, tmp_path / "out", SETTINGS, sshd.options(python=python))
    message = str(caught.value)
    assert "\n" not in message and message.startswith(sshd.device)
    assert "has no onnxruntime" in message and "pip install onnxruntime" in message
    assert not (tmp_path / "out").exists()
    assert not [f for f in folders_used(tmp_path) if os.path.exists(f)]


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("unknown host key", "host key is not in {known_hosts}; add it once"),
        ("changed host key", "host key differs from the one in {known_hosts}"),
        ("wrong client key", "the board refused the login of '{user}' with {key}"),
        ("nothing listening", "cannot reach the board"),
    ],
)
def test_connection_failures_are_one_line_errors(
    case: str, expected: str, sshd: Server, export_dir: Path, tmp_path: Path
):
    known_hosts, key, device = sshd.known_hosts, sshd.key, sshd.device
    if case == "unknown host key":
        known_hosts = tmp_path / "empty_known_hosts"
        known_hosts.write_text("")
    elif case == "changed host key":
        other = keygen(tmp_path / "other_host_key").with_suffix(".pub")
        known_hosts = tmp_path / "known_hosts"
        known_hosts.write_text(f"[127.0.0.1]:{sshd.port} {other.read_text()}")
    elif case == "wrong client key":
        key = keygen(tmp_path / "not_authorized")
    else:
        device = device.replace(str(sshd.port), str(free_port()))
    options = sshd.options(known_hosts=str(known_hosts), key=str(key))
    with pytest.raises(UserError) as caught:
        profile(export_dir, device, tmp_path / "out", SETTINGS, options)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(device + ": ")
    assert expected.format(known_hosts=known_hosts, key=key, user=getpass.getuser()) in message
    if "host key" in case:
        assert f"ssh-keyscan -p {sshd.port} 127.0.0.1 >> {known_hosts}" in message
    assert not (tmp_path / "out").exists()


def test_command_lines():
    plain = Board("pi", "raspberrypi.local")
    assert command_line(plain, "ssh", ["pi@raspberrypi.local", "true"]) == [
        "ssh",
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "ConnectTimeout=10",
        "pi@raspberrypi.local",
        "true",
    ]
    board = Board("nvidia", "jetson", 2222, key="/k/id_ed25519", known_hosts="/k/known_hosts")
    options = [
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "ConnectTimeout=10",
        "-o",
        "UserKnownHostsFile=/k/known_hosts",
        "-i",
        "/k/id_ed25519",
        "-o",
        "IdentitiesOnly=yes",
    ]
    assert command_line(board, "ssh", ["nvidia@jetson", "uname -a"]) == [
        "ssh",
        *options,
        "-p",
        "2222",
        "nvidia@jetson",
        "uname -a",
    ]
    assert command_line(board, "scp", ["model.onnx", board.remote("/tmp/x/")]) == [
        "scp",
        *options,
        "-P",
        "2222",
        "model.onnx",
        "nvidia@jetson:/tmp/x/",
    ]
    assert Board("u", "fe80::1", 22).remote("/t/") == "u@[fe80::1]:/t/"


def test_addresses_and_options(tmp_path: Path):
    key = tmp_path / "id"
    key.write_text("")
    recipe_defaults = {"key": None, "python": "python3", "known_hosts": None, "timeout": 600.0}
    board = parse_board("nvidia@jetson.local:2222", {**recipe_defaults, "engine": "auto"})
    assert (board.user, board.host, board.port, board.key) == ("nvidia", "jetson.local", 2222, None)
    board = parse_board("pi@[fe80::1]", {"key": str(key), "known_hosts": "~/kh"})
    assert (board.host, board.port, board.key) == ("fe80::1", None, str(key))
    assert board.known_hosts == os.path.expanduser("~/kh")
    assert SshDevice("pi@[fe80::1]:22").name == "ssh-fe80--1"
    assert SshDevice("nvidia@jetson:2222").name == "ssh-jetson-2222"
    bad = {
        "jetson.local": "expected ssh://user@host[:port]",
        "pi@board:99999": "expected ssh://user@host[:port]",
        "pi@-oProxyCommand=x": "expected ssh://user@host[:port]",
    }
    for address, words in bad.items():
        with pytest.raises(UserError, match=re.escape(words)):
            parse_board(address, {})
    wrong_options = {
        "port": "profile.ssh.port: unknown option; expected one of: key, python, known_hosts",
        "engine": "profile.ssh.engine: expected one of auto, onnxruntime, trtexec, got 'tvm'",
        "timeout": "profile.ssh.timeout: must be a number of seconds > 0, got 0",
        "key": f"profile.ssh.key: no private key file {tmp_path / 'absent'}",
    }
    values = {"port": 22, "engine": "tvm", "timeout": 0, "key": str(tmp_path / "absent")}
    for option, message in wrong_options.items():
        with pytest.raises(UserError, match="^" + re.escape(message)):
            parse_board("pi@board", {option: values[option]})


def test_skips_what_needs_another_runtime():
    board = SshDevice("pi@board")
    onnx = Tower(Path("."), {"target": "onnx"}, "onnx-fp32")
    assert board.skip_reason(onnx) is None
    for target, where in [("executorch", "adb"), ("coreml", "apple"), ("pytorch", "host")]:
        reason = board.skip_reason(Tower(Path("."), {"target": target}, f"{target}-fp32"))
        assert "ONNX towers only" in reason and where in reason
