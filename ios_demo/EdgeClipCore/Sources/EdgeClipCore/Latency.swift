import Foundation

/// Latency statistics of a benchmark's timed runs, computed exactly as edgeclip's
/// `export/profile/record.py` (summarize, percentile), so a phone's record and a host's
/// record mean the same thing.
public struct Latency {
    public let p50: Double
    public let p90: Double
    public let mean: Double
    public let min: Double
    public let max: Double

    /// p50, p90, mean, min and max of per-run latencies (milliseconds).
    public static func of(_ timesMs: [Double]) throws -> Latency {
        if timesMs.isEmpty {
            throw EdgeclipException("no timed runs to summarize")
        }
        // Plain left-to-right sum, as Python 3.11's sum() (3.12+ compensates; the difference
        // is in the last bits).
        var sum = 0.0
        var lo = timesMs[0]
        var hi = timesMs[0]
        for t in timesMs {
            sum += t
            lo = Swift.min(lo, t)
            hi = Swift.max(hi, t)
        }
        return Latency(p50: try percentile(timesMs, 50), p90: try percentile(timesMs, 90),
                       mean: sum / Double(timesMs.count), min: lo, max: hi)
    }

    /// The q-th percentile (0..100) with linear interpolation between closest ranks (numpy's
    /// default): rank = (n - 1) · q / 100, value = v[floor] + (v[ceil] - v[floor]) · (rank - floor).
    public static func percentile(_ values: [Double], _ q: Double) throws -> Double {
        if values.isEmpty {
            throw EdgeclipException("percentile of no values")
        }
        if !(q >= 0 && q <= 100) {
            throw EdgeclipException("percentile q must be in [0, 100], got \(q)")
        }
        let ordered = values.sorted()
        let rank = Double(ordered.count - 1) * q / 100
        let low = Int(rank.rounded(.down))
        let high = Int(rank.rounded(.up))
        return ordered[low] + (ordered[high] - ordered[low]) * (rank - Double(low))
    }

    /// {"p50", "p90", "mean", "min", "max"}, the record's latency_ms object.
    public func toMap() -> OrderedMap {
        var m = OrderedMap()
        m.put("p50", p50)
        m.put("p90", p90)
        m.put("mean", mean)
        m.put("min", min)
        m.put("max", max)
        return m
    }
}
