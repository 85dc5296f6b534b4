"""Profiling exported towers where they ship: the host, Linux boards over SSH, Android phones
over adb, Apple devices. :func:`export.profile.profiler.profile` is the entry point; each kind
of device is one module registered in :data:`export.profile.devices.devices`."""

from export.profile import adb as _adb  # noqa: F401  (registers "adb")
from export.profile import apple as _apple  # noqa: F401  (registers "apple")
from export.profile import host as _host  # noqa: F401  (registers "host")
from export.profile import ssh as _ssh  # noqa: F401  (registers "ssh")
