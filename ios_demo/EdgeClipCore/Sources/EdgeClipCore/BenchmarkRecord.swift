import Foundation

/// One tower's benchmark result as edgeclip's profile record (`export/profile/record.py`,
/// record_version 1): the same keys as its FIELDS, in that order, plus `times_ms` (the
/// raw timed runs, after latency_ms), so phone records sit beside host ones and the Python
/// tools (check_record, pareto) read them.
///
/// Fields a phone does not measure stay null: gemm_gflops, gemm_fraction and ops (the app
/// runs no GEMM probe nor operator profiler); achieved_gflops is flops / p50 when the manifest
/// counted flops.
public final class BenchmarkRecord {
    public static let RECORD_VERSION = 1

    /// Required: what was measured.
    public let manifest: Manifest
    public let artifact: String
    public let runtime: String
    public let computeUnit: String
    public let warmup: Int
    public let timesMs: [Double]
    public let latency: Latency

    /// Optional measurements; nil where not measured.
    public var loadMs: Double?
    public var firstInferenceMs: Double?
    public var threads: Int?
    public var peakRssMb: Double?
    /// What the device is (kind, name, soc, cores, os, ...).
    public var device = OrderedMap()
    /// Runtime library versions and anything else the app reports.
    public var environment = OrderedMap()
    /// When it was measured; now by default.
    public var measuredAt = Date()

    /// - Parameters:
    ///   - manifest: the measured tower's manifest (model, tower, target, precision, input, sha256, flops)
    ///   - artifact: the export's name, e.g. "coreml-fp16"
    ///   - runtime: the runtime and its version, e.g. "coreml (iOS 17.5)"
    ///   - computeUnit: where it ran, e.g. "cpuAndNeuralEngine"
    ///   - warmup: untimed runs before the timed ones
    ///   - timesMs: each timed run's latency in milliseconds
    public init(_ manifest: Manifest, _ artifact: String, _ runtime: String, _ computeUnit: String, _ warmup: Int,
                _ timesMs: [Double]) throws {
        self.manifest = manifest
        self.artifact = artifact
        self.runtime = runtime
        self.computeUnit = computeUnit
        self.warmup = warmup
        self.timesMs = timesMs
        self.latency = try Latency.of(timesMs)
    }

    /// The record as a JSON-ready map, keys in record.py's FIELDS order (times_ms after latency_ms).
    public func toMap() throws -> OrderedMap {
        if manifest.inputs.count != 1 {
            throw EdgeclipException("\(manifest.path.path): a profile record needs exactly one input, found "
                + "\(manifest.inputs.count)")
        }
        let input = manifest.inputs[0]
        var inputMap = OrderedMap()
        inputMap.put("name", input.name)
        inputMap.put("shape", input.shape.map { $0 as Any })
        inputMap.put("dtype", input.dtype)
        let times: [Any] = timesMs.map { $0 as Any }
        let flops = manifest.flops
        let achieved: Double? = flops != nil && flops != 0 && latency.p50 > 0 ? Double(flops!) / (latency.p50 * 1e6) : nil

        var r = OrderedMap()
        r.put("record_version", BenchmarkRecord.RECORD_VERSION)
        r.put("model", manifest.model)
        r.put("tower", manifest.tower)
        r.put("artifact", artifact)
        r.put("target", manifest.target)
        r.put("precision", manifest.precision)
        r.put("runtime", runtime)
        r.put("compute_unit", computeUnit)
        r.put("device", device)
        r.put("input", inputMap)
        r.put("sha256", manifest.sha256)
        r.put("threads", threads)
        r.put("warmup", warmup)
        r.put("runs", timesMs.count)
        r.put("load_ms", loadMs)
        r.put("first_inference_ms", firstInferenceMs)
        r.put("latency_ms", latency.toMap())
        r.put("times_ms", times)
        r.put("peak_rss_mb", peakRssMb)
        r.put("flops", flops)
        r.put("achieved_gflops", achieved)
        r.put("gemm_gflops", nil)
        r.put("gemm_fraction", nil)
        r.put("ops", nil)
        r.put("environment", environment)
        r.put("measured_at", BenchmarkRecord.formatInstant(measuredAt))
        return r
    }

    /// ISO-8601 in UTC to the second, e.g. "2025-06-01T12:34:56Z".
    static func formatInstant(_ instant: Date) -> String {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.calendar = Calendar(identifier: .gregorian)
        formatter.dateFormat = "yyyy-MM-dd'T'HH:mm:ss'Z'"
        return formatter.string(from: instant)
    }

    /// The record as indented JSON, newline-terminated like Python's write_json.
    public func toJson() throws -> String {
        return try JsonWriter.write(toMap()) + "\n"
    }

    /// Writes the record to `file` (through a temporary sibling, so readers never see half:
    /// Data's .atomic option writes aside and renames into place).
    public func write(_ file: URL) throws {
        do {
            try Data(toJson().utf8).write(to: file, options: .atomic)
        } catch let e as EdgeclipException {
            throw e
        } catch {
            throw EdgeclipException("\(file.path): cannot write the record (\(error.localizedDescription))")
        }
    }
}
