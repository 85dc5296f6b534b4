import Foundation
import XCTest
@testable import EdgeClipCore

/// Latency statistics against edgeclip's export/profile/record.py summarize(), values pasted.
final class LatencyTests: XCTestCase {
    // (times (comma-separated, as Python's repr), "p50,p90,mean,min,max" from record.summarize)
    static let CASES: [(String, String)] = [
        ("12.66", "12.66,12.66,12.66,12.66,12.66"),
        ("27.667,19.128", "23.3975,26.813100000000002,23.3975,19.128,27.667"),
        ("30.592,31.66,4.211,1.645", "17.4015,31.3396,17.026999999999997,1.645,31.66"),
        ("42.036,13.708,12.482,49.787,24.043,41.987,24.341", "24.341,45.1364,29.76914285714286,12.482,49.787"),
        ("32.314,8.38,32.108,43.534,26.636,37.321,33.899,4.138,38.153,29.964", "32.211,38.6911,28.6447,4.138,43.534"),
        ("15.762,2.52,43.411,24.165,36.222,44.062,35.992,46.134,20.353,40.245,22.786,46.844,44.064,5.775,7.662,11.632,48.309,22.372,31.706,15.75,25.855,19.907,18.195,29.669,29.628,45.306,34.417,46.518,42.964,49.558,33.892,8.992,43.171", "31.706,46.4412,30.116303030303037,2.52,49.558"),
        ("1.0,2.0,3.0,4.0", "2.5,3.7,2.5,1.0,4.0"),
    ]

    func testMatchesRecordPy() throws {
        for (timesText, expectedText) in LatencyTests.CASES {
            let times = LatencyTests.parse(timesText)
            let expected = LatencyTests.parse(expectedText)
            let l = try Latency.of(times)
            // Exactly equal: same operations in the same order as Python 3.11.
            XCTAssertEqual(expected[0], l.p50, timesText + " p50")
            XCTAssertEqual(expected[1], l.p90, timesText + " p90")
            XCTAssertEqual(expected[2], l.mean, timesText + " mean")
            XCTAssertEqual(expected[3], l.min, timesText + " min")
            XCTAssertEqual(expected[4], l.max, timesText + " max")
        }
        XCTAssertEqual(2.5, try Latency.percentile([4, 1, 3, 2], 50))
        _ = Fixtures.thrown { _ = try Latency.of([]) }
        _ = Fixtures.thrown { _ = try Latency.percentile([1], 101) }
    }

    private static func parse(_ csv: String) -> [Double] {
        return csv.split(separator: ",").map { Double(String($0))! }
    }
}
