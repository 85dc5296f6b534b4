"""Linux boards over SSH (Jetson, Raspberry Pi …): ONNX towers timed by the runner script in the
board's own Python and runtime (``--device ssh://user@board[:port]``).

For each tower: a fresh folder on the board (``mktemp -d``), the runner script and the model
file copied into it with ``scp``, one run of ``python runner.py`` there (onnxruntime with the
board's best provider, or TensorRT's ``trtexec``), its JSON line read back with the host's
:func:`~export.profile.host.read_result`, and the folder removed, also when something failed.
The board's GEMM rate is measured once per device, in the first tower's folder.

ssh never prompts (``BatchMode``) and always checks the board's host key
(``StrictHostKeyChecking=yes``): a board must be in ``known_hosts`` before it is profiled, and
a key that changed stops the profile instead of being accepted. The command lines are built by
one pure function, :func:`command_line`; failures become one-line errors that say what to fix
(:func:`ssh_error` for the connection, :func:`runner_error` for what ran on the board).

Options (``profile.ssh`` in a recipe): ``key`` (private key file, ``ssh -i``), ``python`` (the
board's Python command, default ``python3``), ``known_hosts`` (the file holding the board's host
key, default ssh's own), ``timeout`` (seconds per tower, default 600) and ``engine`` (``auto``,
``onnxruntime`` or ``trtexec``).
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, Literal, get_args

from compress.errors import UserError
from export.profile.devices import Settings, Tower, devices, last_line
from export.profile.host import RUNNER, measurement, read_result, runner_args
from export.profile.record import Measurement

# how a board's towers run: onnxruntime where the board has it, else TensorRT's trtexec
Engine = Literal["auto", "onnxruntime", "trtexec"]
ENGINES = get_args(Engine)
CONNECT_TIMEOUT_S = 10  # a board that is off or unreachable fails in seconds, not minutes
CLEANUP_TIMEOUT_S = 60  # removing the tower's folder, after its own time ran out too
# mktemp's template: the board's $TMPDIR (else /tmp); GNU, busybox and BSD mktemp all take it
REMOTE_DIR = "edgeclip-profile."
MKTEMP = f'mktemp -d "${{TMPDIR:-/tmp}}/{REMOTE_DIR}XXXXXX"'
# JetPack installs trtexec here, off the PATH of a non-interactive shell
TRTEXEC_DIR = "/usr/src/tensorrt/bin"
# where the other targets run: the skip reason names the device that times them
RUNS_ON = {
    "executorch": "an Android phone (adb[:serial]) or this machine (host)",
    "coreml": "a Mac (apple)",
    "pytorch": "this machine (host)",
}
ADDRESS = re.compile(
    r"(?P<user>[A-Za-z0-9_][A-Za-z0-9._-]*)@"
    r"(?:\[(?P<ipv6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9_][A-Za-z0-9._-]*))"
    r"(?::(?P<port>[0-9]{1,5}))?"
)


@dataclass(frozen=True)
class SshOptions:
    """How to reach a Linux board over SSH (``ssh://user@board[:port]``)."""

    key: str | None = None  # private key file (ssh -i); None: ssh's own keys and agent
    python: str = "python3"  # the board's Python, with numpy and onnxruntime
    known_hosts: str | None = (
        None  # the board's host key is checked here (None: ~/.ssh/known_hosts)
    )
    timeout: float = 600.0  # seconds for one tower
    engine: Engine = "auto"  # auto: onnxruntime, else trtexec


OPTIONS = tuple(f.name for f in fields(SshOptions))


@dataclass(frozen=True)
class Board:
    """A board and how to reach it: the address (``user@host[:port]``) and the options (their
    defaults are :class:`SshOptions`')."""

    user: str
    host: str
    port: int | None = None
    key: str | None = SshOptions.key
    known_hosts: str | None = SshOptions.known_hosts
    python: str = SshOptions.python  # a command for the board's shell: "/opt/venv/bin/python"
    timeout: float = SshOptions.timeout
    engine: str = SshOptions.engine

    @property
    def url(self) -> str:
        """The address as the user typed it, for messages: ``ssh://pi@board:2222``."""
        return f"ssh://{self.user}@{self._host}" + (f":{self.port}" if self.port else "")

    @property
    def destination(self) -> str:
        """``user@host``: the destination ssh takes (the port goes in ``-p``)."""
        return f"{self.user}@{self.host}"

    def remote(self, path: str) -> str:
        """``user@host:path`` (``user@[v6]:path``) for scp."""
        return f"{self.user}@{self._host}:{path}"

    @property
    def _host(self) -> str:
        """The host where a port or path may follow it: an IPv6 address in brackets."""
        return f"[{self.host}]" if ":" in self.host else self.host


def parse_board(address: str, options: dict[str, Any]) -> Board:
    """The board at ``user@host[:port]`` with the ``profile.ssh`` options (None: the default).

    Raises:
        UserError: a malformed address, an unknown option or a bad value, in the user's words.
    """
    match = ADDRESS.fullmatch(address)
    port = int(match["port"]) if match and match["port"] else None
    if match is None or (port is not None and not 1 <= port <= 65535):
        raise UserError(
            f"device 'ssh://{address}': expected ssh://user@host[:port], "
            "e.g. ssh://nvidia@jetson.local or ssh://pi@192.168.1.20:2222"
        )
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise UserError(
            f"profile.ssh.{unknown[0]}: unknown option; expected one of: {', '.join(OPTIONS)}"
        )
    given = {k: v for k, v in options.items() if v is not None}
    for name in ("key", "known_hosts"):
        if name in given:
            given[name] = os.path.abspath(os.path.expanduser(str(given[name])))
    if "key" in given and not os.path.isfile(given["key"]):
        raise UserError(f"profile.ssh.key: no private key file {given['key']}")
    if given.get("engine", Board.engine) not in ENGINES:
        raise UserError(
            f"profile.ssh.engine: expected one of {', '.join(ENGINES)}, got {given['engine']!r}"
        )
    timeout = given.get("timeout", Board.timeout)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise UserError(f"profile.ssh.timeout: must be a number of seconds > 0, got {timeout!r}")
    python = given.get("python", Board.python)
    if not isinstance(python, str) or not python.strip():
        raise UserError(f"profile.ssh.python: must be the board's Python command, got {python!r}")
    return Board(match["user"], match["ipv6"] or match["host"], port, **given)


def command_line(board: Board, program: str, operands: Sequence[str]) -> list[str]:
    """The argv of ``ssh`` or ``scp`` to ``board``, followed by ``operands``.

    Both never prompt (a password or passphrase question would hang an unattended profile) and
    refuse a board whose host key is not already known, or has changed, rather than trusting it.

    Example:
        >>> command_line(Board("pi", "board", 2222), "ssh", ["pi@board", "true"])[-4:]
        ['-p', '2222', 'pi@board', 'true']
    """
    if program not in ("ssh", "scp"):
        raise ValueError(f"program must be ssh or scp, got {program!r}")
    argv = [program, "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"]
    argv += ["-o", f"ConnectTimeout={CONNECT_TIMEOUT_S}"]
    if board.known_hosts:
        argv += ["-o", f"UserKnownHostsFile={board.known_hosts}"]
    if board.key:  # this key only: an agent's other keys could lock us out (MaxAuthTries)
        argv += ["-i", board.key, "-o", "IdentitiesOnly=yes"]
    if board.port:
        argv += ["-p" if program == "ssh" else "-P", str(board.port)]
    return argv + list(operands)


def ssh_error(board: Board, what: str, stderr: str) -> UserError:
    """The one-line error for an ssh (or scp) that failed on its own account, not the remote
    command's: an unknown or changed host key, a refused key, an unreachable board (each with
    its fix), else ssh's last line."""
    known_hosts = board.known_hosts or "~/.ssh/known_hosts"
    port = ["-p", str(board.port)] if board.port else []
    keyscan = shlex.join(["ssh-keyscan", *port, board.host])
    if "has changed" in stderr or "HOST IDENTIFICATION HAS CHANGED" in stderr:
        entry = f"[{board.host}]:{board.port}" if board.port else board.host
        return UserError(
            f"{board.url}: the board's host key differs from the one in {known_hosts} "
            "(a reinstalled board, or someone in between); check its fingerprint on the board, "
            f"then replace it: ssh-keygen -f {known_hosts} -R '{entry}' && {keyscan} >> "
            f"{known_hosts}"
        )
    if "Host key verification failed" in stderr or "host key is known" in stderr:
        return UserError(
            f"{board.url}: the board's host key is not in {known_hosts}; add it once, after "
            f"checking its fingerprint: {keyscan} >> {known_hosts} (or log in once by hand: "
            f"{shlex.join(['ssh', *port, board.destination])})"
        )
    if "Permission denied" in stderr:
        key = board.key or "ssh's default keys and agent"
        return UserError(
            f"{board.url}: the board refused the login of {board.user!r} with {key}; put the "
            f"public key in the board's ~/.ssh/authorized_keys (ssh-copy-id) or set "
            "profile.ssh.key"
        )
    unreachable = (
        "Connection refused",
        "Connection timed out",
        "timed out during banner exchange",
        "Could not resolve hostname",
        "No route to host",
        "Network is unreachable",
    )
    if any(reason in stderr for reason in unreachable):
        return UserError(
            f"{board.url}: cannot reach the board ({last_line(stderr)}) while {what}; check "
            "that it is on, the address and port, and that its SSH server runs"
        )
    return UserError(f"{board.url}: {what} failed: {last_line(stderr)}")


def runner_error(board: Board, what: str, done: subprocess.CompletedProcess[str]) -> UserError:
    """The one-line error for a runner that failed on the board, with the fix where known."""
    stderr, last = done.stderr, last_line(done.stderr)
    if "neither onnxruntime nor trtexec" in stderr or "No module named 'onnxruntime'" in stderr:
        return UserError(
            f"{board.url}: the board has no onnxruntime for {board.python!r} (nor trtexec); "
            "install it there (pip install onnxruntime; on a Jetson, NVIDIA's onnxruntime-gpu "
            "wheel for its JetPack), or set profile.ssh.engine: trtexec where TensorRT is"
        )
    if "No module named 'numpy'" in stderr:
        return UserError(
            f"{board.url}: the board's {board.python!r} has no NumPy; install it there "
            "(pip install numpy) or set profile.ssh.python to a Python that has it"
        )
    if "No such file or directory: 'trtexec'" in last:  # engine: trtexec, and there is none
        return UserError(
            f"{board.url}: the board has no trtexec on its PATH or in {TRTEXEC_DIR}; install "
            "TensorRT there, or set profile.ssh.engine: onnxruntime"
        )
    if done.returncode == 127:  # the shell's "command not found": cd and export are built in
        return UserError(
            f"{board.url}: the board has no {board.python!r}; install Python 3 with NumPy "
            "and onnxruntime there, or set profile.ssh.python to its path"
        )
    return UserError(f"{board.url}: profiling {what} failed on the board: {last}")


@devices.register("ssh")
class SshDevice:
    """A Linux board reached over SSH; it times ONNX towers in the board's own runtime.

    Example:
        >>> board = SshDevice("nvidia@jetson.local", {"key": None, "engine": "trtexec"})
        >>> board.name
        'ssh-jetson.local'
    """

    def __init__(self, address: str, options: dict[str, Any] | None = None) -> None:
        self.board = parse_board(address, options or {})
        port = f"-{self.board.port}" if self.board.port not in (None, 22) else ""
        # the records' folder: IPv6 hosts hold ':'
        self.name = "ssh-" + re.sub(r"[^\w.-]", "-", self.board.host) + port
        self._gemm: dict[str, Any] | None = None

    def skip_reason(self, tower: Tower) -> str | None:
        target = tower.manifest["target"]
        if target == "onnx":
            return None
        where = RUNS_ON.get(target, "its own runtime's device")
        return f"ssh boards run ONNX towers only; {target} runs on {where}"

    def measure(self, tower: Tower, settings: Settings) -> Measurement:
        """Copy the runner and the tower's model to a fresh folder on the board, time it there,
        and remove the folder (also when anything failed)."""
        deadline = time.monotonic() + self.board.timeout
        what = f"{tower.artifact}/{tower.manifest['tower']}"
        folder = self._make_folder(what, deadline)
        try:
            self._copy([RUNNER, tower.model_file], folder, what, deadline)
            if self._gemm is None:  # once per board, at the first profile's threads
                threads = [f"--threads={settings.threads}"] if settings.threads else []
                self._gemm = self._runner(folder, ["--gemm", *threads], "GEMM reference", deadline)
            model = f"{folder}/{tower.manifest['file']}"
            args = runner_args(tower, settings, model)
            if self.board.engine != "auto":
                args.append(f"--engine={self.board.engine}")
            result = self._runner(folder, args, what, deadline)
        finally:
            self._remove(folder)
        result["device"] = {"kind": "ssh", "host": self.board.host, **result["device"]}
        return measurement(result, self._gemm, None)

    def _ssh(self, command: str, what: str, deadline: float) -> subprocess.CompletedProcess[str]:
        """Run ``command`` in the board's shell; connection failures are one-line errors."""
        argv = command_line(self.board, "ssh", [self.board.destination, command])
        return self._call(argv, what, deadline)

    def _call(
        self, argv: list[str], what: str, deadline: float
    ) -> subprocess.CompletedProcess[str]:
        """Run ssh or scp until ``deadline``; raise the connection's error if it has one."""
        left = deadline - time.monotonic()
        try:
            if left <= 0:
                raise subprocess.TimeoutExpired(argv, 0)
            done = subprocess.run(
                argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=left
            )
        except subprocess.TimeoutExpired:
            raise UserError(
                f"{self.board.url}: {what} took over {self.board.timeout:g} s (the time for one "
                "tower); raise profile.ssh.timeout"
            ) from None
        except FileNotFoundError:
            raise UserError(
                f"{self.board.url}: no {argv[0]} on this machine; install the OpenSSH client"
            ) from None
        # 255: ssh's own failure (the remote command's status otherwise); scp: any failure
        if done.returncode == 255 or (argv[0] == "scp" and done.returncode != 0):
            raise ssh_error(self.board, what, done.stderr)
        return done

    def _make_folder(self, what: str, deadline: float) -> str:
        """A new, empty folder on the board for one tower."""
        done = self._ssh(MKTEMP, f"making a folder for {what}", deadline)
        folder = last_line(done.stdout)
        if done.returncode != 0 or not folder.startswith("/") or REMOTE_DIR not in folder:
            raise UserError(
                f"{self.board.url}: mktemp -d failed on the board: {last_line(done.stderr)}"
            )
        return folder

    def _copy(self, files: list[os.PathLike], folder: str, what: str, deadline: float) -> None:
        """Copy local ``files`` into the board's ``folder``."""
        argv = command_line(self.board, "scp", [*map(str, files), self.board.remote(folder + "/")])
        self._call(argv, f"copying {what}", deadline)

    def _runner(self, folder: str, args: list[str], what: str, deadline: float) -> dict[str, Any]:
        """Run the runner script in ``folder`` with the board's Python; its JSON result.

        trtexec is looked for on the PATH and where JetPack puts it."""
        runner = shlex.join([f"{folder}/{RUNNER.name}", *args])
        command = (
            f'cd {shlex.quote(folder)} && export PATH="$PATH:{TRTEXEC_DIR}" && '
            f"{self.board.python} {runner}"  # the python option is a command: not quoted
        )
        done = self._ssh(command, f"profiling {what}", deadline)
        if done.returncode != 0:
            raise runner_error(self.board, what, done)
        return read_result(done.stdout, f"{self.board.url}: {what}")

    def _remove(self, folder: str) -> None:
        """Remove the tower's folder from the board. Best effort: a failure here must not hide
        the error that may be on its way out, and a stale folder in the board's temp dir is
        harmless."""
        argv = command_line(
            self.board, "ssh", [self.board.destination, f"rm -rf {shlex.quote(folder)}"]
        )
        with contextlib.suppress(subprocess.TimeoutExpired, OSError):
            subprocess.run(
                argv, capture_output=True, stdin=subprocess.DEVNULL, timeout=CLEANUP_TIMEOUT_S
            )
