package org.edgeclip.core;

import java.io.File;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.time.Instant;
import java.time.ZoneOffset;
import java.time.format.DateTimeFormatter;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * One tower's benchmark result as edgeclip's profile record ({@code export/profile/record.py},
 * record_version 1): the same keys as its FIELDS, in that order, plus {@code times_ms} (the
 * raw timed runs, after latency_ms), so phone records sit beside host ones and the Python
 * tools (check_record, pareto) read them.
 *
 * <p>Fields a phone does not measure stay null: gemm_gflops, gemm_fraction and ops (the app
 * runs no GEMM probe nor operator profiler); achieved_gflops is flops / p50 when the manifest
 * counted flops.
 */
public final class BenchmarkRecord {
    public static final int RECORD_VERSION = 1;

    /** Required: what was measured. */
    public final Manifest manifest;
    public final String artifact;
    public final String runtime;
    public final String computeUnit;
    public final int warmup;
    public final double[] timesMs;
    public final Latency latency;

    /** Optional measurements; null where not measured. */
    public Double loadMs;
    public Double firstInferenceMs;
    public Integer threads;
    public Double peakRssMb;
    /** What the device is (kind, name, soc, cores, os, ...). */
    public Map<String, Object> device = new LinkedHashMap<>();
    /** Runtime library versions and anything else the app reports. */
    public Map<String, Object> environment = new LinkedHashMap<>();
    /** When it was measured; now by default. */
    public Instant measuredAt = Instant.now();

    /**
     * @param manifest the measured tower's manifest (model, tower, target, precision, input, sha256, flops)
     * @param artifact the export's name, e.g. "executorch-fp32"
     * @param runtime the runtime and its version, e.g. "executorch 1.5.1"
     * @param computeUnit where it ran, e.g. "xnnpack"
     * @param warmup untimed runs before the timed ones
     * @param timesMs each timed run's latency in milliseconds
     */
    public BenchmarkRecord(Manifest manifest, String artifact, String runtime, String computeUnit, int warmup,
            double[] timesMs) {
        this.manifest = manifest;
        this.artifact = artifact;
        this.runtime = runtime;
        this.computeUnit = computeUnit;
        this.warmup = warmup;
        this.timesMs = timesMs.clone();
        this.latency = Latency.of(timesMs);
    }

    /** The record as a JSON-ready map, keys in record.py's FIELDS order (times_ms after latency_ms). */
    public Map<String, Object> toMap() {
        if (manifest.inputs.size() != 1) {
            throw new EdgeclipException(manifest.path + ": a profile record needs exactly one input, found "
                    + manifest.inputs.size());
        }
        Manifest.TensorSpec input = manifest.inputs.get(0);
        Map<String, Object> inputMap = new LinkedHashMap<>();
        inputMap.put("name", input.name);
        List<Object> shape = new ArrayList<>();
        for (long d : input.shape) {
            shape.add(d);
        }
        inputMap.put("shape", shape);
        inputMap.put("dtype", input.dtype);
        List<Object> times = new ArrayList<>();
        for (double t : timesMs) {
            times.add(t);
        }
        Long flops = manifest.flops;
        Double achieved = flops != null && flops != 0 && latency.p50 > 0 ? flops / (latency.p50 * 1e6) : null;

        Map<String, Object> r = new LinkedHashMap<>();
        r.put("record_version", RECORD_VERSION);
        r.put("model", manifest.model);
        r.put("tower", manifest.tower);
        r.put("artifact", artifact);
        r.put("target", manifest.target);
        r.put("precision", manifest.precision);
        r.put("runtime", runtime);
        r.put("compute_unit", computeUnit);
        r.put("device", device);
        r.put("input", inputMap);
        r.put("sha256", manifest.sha256);
        r.put("threads", threads);
        r.put("warmup", warmup);
        r.put("runs", timesMs.length);
        r.put("load_ms", loadMs);
        r.put("first_inference_ms", firstInferenceMs);
        r.put("latency_ms", latency.toMap());
        r.put("times_ms", times);
        r.put("peak_rss_mb", peakRssMb);
        r.put("flops", flops);
        r.put("achieved_gflops", achieved);
        r.put("gemm_gflops", null);
        r.put("gemm_fraction", null);
        r.put("ops", null);
        r.put("environment", environment);
        r.put("measured_at", formatInstant(measuredAt));
        return r;
    }

    /** ISO-8601 in UTC to the second, e.g. "2025-06-01T12:34:56Z". */
    static String formatInstant(Instant instant) {
        return DateTimeFormatter.ofPattern("yyyy-MM-dd'T'HH:mm:ss'Z'").withZone(ZoneOffset.UTC).format(instant);
    }

    /** The record as indented JSON, newline-terminated like Python's write_json. */
    public String toJson() {
        return JsonWriter.write(toMap()) + "\n";
    }

    /** Writes the record to {@code file} (through a temporary sibling, so readers never see half). */
    public void write(File file) {
        File tmp = new File(file.getPath() + ".tmp");
        try {
            Files.write(tmp.toPath(), toJson().getBytes(StandardCharsets.UTF_8));
            Files.move(tmp.toPath(), file.toPath(), java.nio.file.StandardCopyOption.REPLACE_EXISTING,
                    java.nio.file.StandardCopyOption.ATOMIC_MOVE);
        } catch (IOException e) {
            throw new EdgeclipException(file + ": cannot write the record (" + e.getMessage() + ")", e);
        }
    }
}
