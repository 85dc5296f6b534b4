"""Devices a profile runs on: one registry, the protocol each kind implements, and the
``--device`` address that picks one (``host``, ``ssh://user@board[:port]``, ``adb[:serial]``,
``apple``).

A device only measures: it puts a tower's model file where it runs, times it in the runtime
apps use there and returns a :class:`~export.profile.record.Measurement`. Records, statistics,
files and progress are the same for every device and live in :mod:`export.profile.profiler`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from compress.errors import UserError
from compress.registry import Registry
from export.profile.record import Measurement

devices = Registry("device")


@dataclass(frozen=True)
class Settings:
    """How to time a tower: warm-up runs, timed runs, threads (None: the runtime's default),
    and whether to profile operators (one more, separately timed pass where the runtime can)."""

    runs: int = 50
    warmup: int = 5
    threads: int | None = None
    ops: bool = True

    def __post_init__(self) -> None:
        if self.runs < 1:
            raise UserError(f"runs must be >= 1, got {self.runs}")
        if self.warmup < 0:
            raise UserError(f"warmup must be >= 0, got {self.warmup}")
        if self.threads is not None and self.threads < 1:
            raise UserError(f"threads must be >= 1, got {self.threads}")


@dataclass(frozen=True)
class Tower:
    """One tower of an export folder, as a device receives it."""

    folder: Path  # the tower folder: model file, manifest, side files (etrecord.bin …)
    manifest: dict[str, Any]
    artifact: str  # the export folder's name, e.g. "onnx-int8"

    @property
    def model_file(self) -> Path:
        return self.folder / self.manifest["file"]


class Device(Protocol):
    """What :func:`export.profile.profiler.profile_export` needs of a kind of device.

    A device class is built from its address (the part after ``kind:`` or ``kind://``, "" when
    there is none) and its options (the recipe's ``profile.<kind>`` mapping, or CLI flags)."""

    name: str  # the records' folder for this device, e.g. "host", "ssh-jetson", "adb-R58M"

    def skip_reason(self, tower: Tower) -> str | None:
        """None where this device can time ``tower``, else why not (e.g. "adb runs .pte only")."""

    def measure(self, tower: Tower, settings: Settings) -> Measurement:
        """Time ``tower`` on the device.

        Raises:
            UserError: the device cannot be reached or refuses the model, in one line.
        """


@dataclass(frozen=True)
class Address:
    """A parsed ``--device``: its registry kind and the rest (``user@board:22``, a serial, "")."""

    kind: str
    rest: str = ""


def last_line(*texts: str) -> str:
    """The last non-empty line of the last text that has one: where a tool says why it failed."""
    for text in reversed(texts):
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if lines:
            return lines[-1]
    return "no output"


def parse_address(spec: str) -> Address:
    """``host`` → (host, ""); ``ssh://pi@board:2222`` → (ssh, "pi@board:2222");
    ``adb:R58M`` → (adb, "R58M"); ``apple`` → (apple, "").

    Raises:
        UserError: an unknown kind, naming the ones there are.
    """
    kind, sep, rest = spec.partition("://")
    if not sep:
        kind, _, rest = spec.partition(":")
    if kind not in devices:
        raise UserError(
            f"device {spec!r}: unknown kind {kind!r}; expected one of: host, "
            "ssh://user@host[:port], adb[:serial], apple"
        )
    return Address(kind, rest)


def open_device(spec: str, options: dict[str, Any] | None = None) -> Device:
    """The device ``spec`` names, built with its kind's ``options``."""
    address = parse_address(spec)
    return devices.get(address.kind)(address.rest, options or {})
