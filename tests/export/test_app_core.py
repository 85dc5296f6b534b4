"""The Android app's core library (``android_demo/core``, plain JVM) against the golden files of
a fresh tiny export: its Maven tests run here, in the suite, as CI runs them.

They check that the Java tokenizer gives open_clip's ids for every golden caption and 1,000
more, that its preprocessing gives the exporter's pixels, that its zero-shot ranking is
PyTorch's, and that manifests and model files are checked; the record its benchmark mode
writes is then read by the adb profiler here.
"""

from __future__ import annotations

import shutil
import subprocess
import xml.etree.ElementTree as ET

import pytest

from export.profile.adb_output import parse_app_record
from tests.app_fixtures import make_app_fixtures
from tests.helpers import ROOT

CORE = ROOT / "android_demo" / "core"
RECORD_FILE = "benchmark_record.json"  # written by the JVM tests (BenchmarkRecordTest)
MAVEN_TIMEOUT_S = 900


@pytest.mark.slow
def test_jvm_core_passes_its_tests_against_fresh_golden_files(tmp_path):
    mvn = shutil.which("mvn")
    if mvn is None or shutil.which("javac") is None:
        pytest.fail("the JVM core's tests need JDK 17 and Maven: apt-get install maven")
    fixtures = make_app_fixtures(tmp_path / "fixtures")
    reports = CORE / "target" / "surefire-reports"
    shutil.rmtree(reports, ignore_errors=True)
    done = subprocess.run(
        [
            mvn,
            "--batch-mode",
            "--no-transfer-progress",
            "--offline",  # everything it needs is in ~/.m2 (docs/artifacts-and-apps.md, 'Apps')
            "-f",
            str(CORE / "pom.xml"),
            "test",
            f"-Dedgeclip.fixtures={fixtures}",
        ],
        capture_output=True,
        text=True,
        timeout=MAVEN_TIMEOUT_S,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-6000:]

    suites = [ET.parse(p).getroot() for p in sorted(reports.glob("TEST-*.xml"))]
    counts = {k: sum(int(s.get(k)) for s in suites) for k in ("tests", "failures", "errors")}
    skipped = sum(int(s.get("skipped")) for s in suites)
    assert counts["failures"] == counts["errors"] == skipped == 0, counts
    assert counts["tests"] >= 20, counts  # every test class ran
    names = {s.get("name").rsplit(".", 1)[-1] for s in suites}
    assert {"ClipTokenizerTest", "ImagePreprocessorTest", "ZeroShotTest", "ManifestTest"} <= names

    # the benchmark mode's record is one the adb profiler reads
    record = (fixtures / RECORD_FILE).read_text()
    measured = parse_app_record(record, runs=5)
    assert measured.times_ms and measured.runtime
