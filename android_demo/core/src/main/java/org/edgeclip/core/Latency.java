package org.edgeclip.core;

import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * Latency statistics of a benchmark's timed runs, computed exactly as edgeclip's
 * {@code export/profile/record.py} (summarize, percentile), so a phone's record and a host's
 * record mean the same thing.
 */
public final class Latency {
    public final double p50;
    public final double p90;
    public final double mean;
    public final double min;
    public final double max;

    private Latency(double p50, double p90, double mean, double min, double max) {
        this.p50 = p50;
        this.p90 = p90;
        this.mean = mean;
        this.min = min;
        this.max = max;
    }

    /** p50, p90, mean, min and max of per-run latencies (milliseconds). */
    public static Latency of(double[] timesMs) {
        if (timesMs.length == 0) {
            throw new EdgeclipException("no timed runs to summarize");
        }
        // Plain left-to-right sum, as Python 3.11's sum() (3.12+ compensates; the difference
        // is in the last bits).
        double sum = 0.0;
        double min = timesMs[0];
        double max = timesMs[0];
        for (double t : timesMs) {
            sum += t;
            min = Math.min(min, t);
            max = Math.max(max, t);
        }
        return new Latency(percentile(timesMs, 50), percentile(timesMs, 90), sum / timesMs.length, min, max);
    }

    /**
     * The q-th percentile (0..100) with linear interpolation between closest ranks (numpy's
     * default): rank = (n - 1) · q / 100, value = v[floor] + (v[ceil] - v[floor]) · (rank - floor).
     */
    public static double percentile(double[] values, double q) {
        if (values.length == 0) {
            throw new EdgeclipException("percentile of no values");
        }
        if (!(q >= 0 && q <= 100)) {
            throw new EdgeclipException("percentile q must be in [0, 100], got " + q);
        }
        double[] ordered = values.clone();
        Arrays.sort(ordered);
        double rank = (ordered.length - 1) * q / 100;
        int low = (int) Math.floor(rank);
        int high = (int) Math.ceil(rank);
        return ordered[low] + (ordered[high] - ordered[low]) * (rank - low);
    }

    /** {"p50", "p90", "mean", "min", "max"}, the record's latency_ms object. */
    public Map<String, Object> toMap() {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("p50", p50);
        m.put("p90", p90);
        m.put("mean", mean);
        m.put("min", min);
        m.put("max", max);
        return m;
    }
}
