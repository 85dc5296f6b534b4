import Foundation
import XCTest
@testable import EdgeClipCore

/// The benchmark mode's record: record.py's fields in order, statistics from the raw times.
/// `testWritesARecordForThePythonSide` leaves `benchmark_record_swift.json` (5 runs) in the
/// fixtures folder, beside the Java tests' benchmark_record.json.
final class BenchmarkRecordTests: XCTestCase {
    static let RECORD_FILE = "benchmark_record_swift.json"

    func testRecordHasRecordPyFields() throws {
        let folder = try ExportFolder.open(Fixtures.export())
        let record = try BenchmarkRecord(folder.image, "coreml-fp16", "coreml (test)", "cpuOnly", 3,
                                         [5.0, 4.0, 6.5, 4.5])
        record.loadMs = 12.5
        record.threads = 4
        record.device.put("kind", "ios")
        record.measuredAt = ISO8601DateFormatter().date(from: "2025-06-01T12:34:56Z")!.addingTimeInterval(0.789)
        let text = try record.toJson()
        let parsed = try Json.asObject(Json.parse(text), "record")
        let fields = ["record_version", "model", "tower", "artifact", "target", "precision", "runtime",
                      "compute_unit", "device", "input", "sha256", "threads", "warmup", "runs", "load_ms", "first_inference_ms",
                      "latency_ms", "times_ms", "peak_rss_mb", "flops", "achieved_gflops", "gemm_gflops", "gemm_fraction", "ops",
                      "environment", "measured_at"]
        // JSONSerialization keeps no key order: check it in the text (top-level keys are indented by two spaces).
        let order = text.components(separatedBy: "\n").filter { $0.hasPrefix("  \"") }
            .map { String($0.dropFirst(3).prefix(while: { $0 != "\"" })) }
        XCTAssertEqual(fields, order)
        XCTAssertEqual(Set(fields), Set(parsed.keys))
        XCTAssertEqual(1, try Json.asLong(parsed["record_version"], "record_version"))
        XCTAssertEqual(4, try Json.asLong(parsed["runs"], "runs"))
        XCTAssertEqual("2025-06-01T12:34:56Z", parsed["measured_at"] as? String)
        let latency = try Json.asObject(parsed["latency_ms"], "latency_ms")
        XCTAssertEqual(4.75, try Json.asDouble(latency["p50"], "p50"))
        XCTAssertEqual(folder.image.sha256, parsed["sha256"] as? String)
        let input = try Json.asObject(parsed["input"], "input")
        XCTAssertEqual("image", input["name"] as? String)
        if let flops = folder.image.flops {
            XCTAssertEqual(flops, try Json.asLong(parsed["flops"], "flops"))
            XCTAssertEqual(Double(flops) / (4.75 * 1e6), try Json.asDouble(parsed["achieved_gflops"], "achieved_gflops"), accuracy: 1e-12)
        }
        let p50 = try Json.asDouble(latency["p50"], "p50")
        let p90 = try Json.asDouble(latency["p90"], "p90")
        let lo = try Json.asDouble(latency["min"], "min")
        let hi = try Json.asDouble(latency["max"], "max")
        XCTAssertTrue(lo <= p50 && p50 <= p90 && p90 <= hi)
    }

    func testWritesARecordForThePythonSide() throws {
        let folder = try ExportFolder.open(Fixtures.export())
        let record = try BenchmarkRecord(folder.text, "coreml-fp16", "edgeclip-core test (no runtime)",
                                         "cpuOnly", 2, [3.25, 2.5, 2.75, 4.0, 3.0])
        record.loadMs = 8.0
        record.firstInferenceMs = 5.5
        record.threads = 1
        record.peakRssMb = 64.0
        record.device.put("kind", "swift")
        record.device.put("name", ProcessInfo.processInfo.operatingSystemVersionString)
        record.environment.put("swift_test", true)
        let out = try Fixtures.dir().appendingPathComponent(BenchmarkRecordTests.RECORD_FILE)
        try record.write(out)
        let parsed = try Json.asObject(Json.parse(out), BenchmarkRecordTests.RECORD_FILE)
        XCTAssertEqual(5, try Json.asLong(parsed["runs"], "runs"))
        XCTAssertEqual(5, try Json.asList(parsed["times_ms"], "times_ms").count)
        let latency = try Json.asObject(parsed["latency_ms"], "latency_ms")
        XCTAssertEqual(3.0, try Json.asDouble(latency["p50"], "p50"))
        XCTAssertEqual(3.7, try Json.asDouble(latency["p90"], "p90"), accuracy: 1e-12) // 3.25 + (4.0 - 3.25) * 0.6
        XCTAssertEqual(3.1, try Json.asDouble(latency["mean"], "mean"), accuracy: 1e-12)
    }
}
