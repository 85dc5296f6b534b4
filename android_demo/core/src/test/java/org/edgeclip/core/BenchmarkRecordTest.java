package org.edgeclip.core;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.File;
import java.util.ArrayList;
import java.util.Map;
import org.junit.jupiter.api.Test;

/**
 * The benchmark mode's record: record.py's fields in order, statistics from the raw times.
 * {@link #writesARecordForThePythonSide} leaves {@code benchmark_record.json} (5 runs) in the
 * fixtures folder, where edgeclip's tests/export/test_app_core.py reads it with the adb profiler's
 * parser, so both sides agree on the format.
 */
class BenchmarkRecordTest {
    static final String RECORD_FILE = "benchmark_record.json";

    @Test
    void recordHasRecordPyFields() {
        ExportFolder folder = ExportFolder.open(Fixtures.export());
        BenchmarkRecord record = new BenchmarkRecord(folder.image, "onnx-fp32", "onnxruntime 1.31.1", "cpu", 3,
                new double[] {5.0, 4.0, 6.5, 4.5});
        record.loadMs = 12.5;
        record.threads = 4;
        record.device.put("kind", "android");
        record.measuredAt = java.time.Instant.parse("2025-06-01T12:34:56.789Z");
        Map<String, Object> parsed = Json.asObject(Json.parse(record.toJson()), "record");
        String[] fields = {"record_version", "model", "tower", "artifact", "target", "precision", "runtime",
            "compute_unit", "device", "input", "sha256", "threads", "warmup", "runs", "load_ms", "first_inference_ms",
            "latency_ms", "times_ms", "peak_rss_mb", "flops", "achieved_gflops", "gemm_gflops", "gemm_fraction", "ops",
            "environment", "measured_at"};
        assertEquals(java.util.Arrays.asList(fields), new ArrayList<>(parsed.keySet()));
        assertEquals(1L, parsed.get("record_version"));
        assertEquals(4L, parsed.get("runs"));
        assertEquals("2025-06-01T12:34:56Z", parsed.get("measured_at"));
        Map<String, Object> latency = Json.asObject(parsed.get("latency_ms"), "latency_ms");
        assertEquals(4.75, latency.get("p50"));
        assertEquals(folder.image.sha256, parsed.get("sha256"));
        Map<String, Object> input = Json.asObject(parsed.get("input"), "input");
        assertEquals("image", input.get("name"));
        if (folder.image.flops != null) {
            assertEquals(folder.image.flops, parsed.get("flops"));
            assertEquals(folder.image.flops / (4.75 * 1e6), (Double) parsed.get("achieved_gflops"), 1e-12);
        }
        double p50 = (Double) latency.get("p50");
        assertTrue((Double) latency.get("min") <= p50 && p50 <= (Double) latency.get("p90")
                && (Double) latency.get("p90") <= (Double) latency.get("max"));
    }

    @Test
    void writesARecordForThePythonSide() {
        ExportFolder folder = ExportFolder.open(Fixtures.export());
        BenchmarkRecord record = new BenchmarkRecord(folder.text, "onnx-fp32", "edgeclip-core test (no runtime)",
                "cpu", 2, new double[] {3.25, 2.5, 2.75, 4.0, 3.0});
        record.loadMs = 8.0;
        record.firstInferenceMs = 5.5;
        record.threads = 1;
        record.peakRssMb = 64.0;
        record.device.put("kind", "jvm");
        record.device.put("name", System.getProperty("os.name"));
        record.environment.put("java", System.getProperty("java.version"));
        File out = new File(Fixtures.dir(), RECORD_FILE);
        record.write(out);
        Map<String, Object> parsed = Json.asObject(Json.parse(out), RECORD_FILE);
        assertEquals(5L, parsed.get("runs"));
        assertEquals(5, Json.asList(parsed.get("times_ms"), "times_ms").size());
        Map<String, Object> latency = Json.asObject(parsed.get("latency_ms"), "latency_ms");
        assertEquals(3.0, latency.get("p50"));
        assertEquals(3.7, (Double) latency.get("p90"), 1e-12); // 3.25 + (4.0 - 3.25) * 0.6
        assertEquals(3.1, (Double) latency.get("mean"), 1e-12);
    }
}
