import Foundation
import XCTest
@testable import EdgeClipCore

/// The Java core has its own JSON parser (JsonTest.java checks its error positions); the Swift
/// core reads with Foundation's JSONSerialization, so this checks the typed access and the
/// writer, and that invalid JSON is refused as an EdgeclipException.
final class JsonTests: XCTestCase {

    func testParsesValues() throws {
        let m = try Json.asObject(Json.parse(
            " {\"a\": 1, \"b\": -2.5e-3, \"c\": [true, false, null], \"d\": \"x\\n\\u00e9\\ud83d\\ude00\\\"\\\\\\/\","
                + " \"e\": {}, \"f\": [], \"g\": 0.1} "), "test")
        XCTAssertEqual(Set(["a", "b", "c", "d", "e", "f", "g"]), Set(m.keys))
        XCTAssertEqual(1, try Json.asLong(m["a"], "a"))
        XCTAssertEqual(-2.5e-3, try Json.asDouble(m["b"], "b"))
        _ = Fixtures.thrown { _ = try Json.asLong(m["b"], "b") } // a fraction is not an integer
        let c = try Json.asList(m["c"], "c")
        XCTAssertEqual(true, c[0] as? Bool)
        XCTAssertEqual(false, c[1] as? Bool)
        XCTAssertTrue(Json.isNull(c[2]))
        _ = Fixtures.thrown { _ = try Json.asLong(c[0], "c[0]") } // a boolean is not a number
        XCTAssertEqual(Array("x\n\u{00e9}\u{1F600}\"\\/".unicodeScalars), Array(try Json.asString(m["d"], "d").unicodeScalars))
        XCTAssertTrue(try Json.asObject(m["e"], "e").isEmpty)
        XCTAssertTrue(try Json.asList(m["f"], "f").isEmpty)
        XCTAssertEqual(0.1, try Json.asDouble(m["g"], "g"))
        XCTAssertTrue(Json.isNull(try Json.parse("null")))
        XCTAssertEqual(14.285714149475098, try Json.asDouble(Json.parse("14.285714149475098"), "x"))
        XCTAssertEqual(0, try Json.asLong(Json.parse("0"), "x"))
        XCTAssertEqual(1e300, try Json.asDouble(Json.parse("1E+300"), "x"))
    }

    func testRejectsInvalidJson() {
        // (Trailing commas, which the Java parser also refuses, are left out: whether
        // JSONSerialization refuses them has varied between Foundation releases.)
        let bad = ["", "{", "NaN", "Infinity", "[1 2]", "{\"a\" 1}", "{a:1}", "'x'",
                   "\"\\x\"", "tru", "[1] x", "// c\n1", "-"]
        for text in bad {
            let e = Fixtures.thrown { _ = try Json.parse(text) }
            XCTAssertTrue(e.message.hasPrefix("JSON error"), text + ": " + e.message)
        }
    }

    func testTypedAccessNamesTheField() throws {
        let m = try Json.asObject(Json.parse("{\"n\": \"x\"}"), "m")
        var e = Fixtures.thrown { _ = try Json.asLong(m["n"], "file.json n") }
        XCTAssertTrue(e.message.contains("file.json n"), e.message)
        e = Fixtures.thrown { _ = try Json.require(m, "missing", "file.json") }
        XCTAssertTrue(e.message.contains("missing field \"missing\""), e.message)
    }

    func testWriterRoundTrips() throws {
        let value = try Json.parse("{\"a\": [1, 2.5, \"\u{00e9}\\n\"], \"b\": {\"c\": null, \"d\": true}, \"e\": [], \"f\": {}}")
        let text = try JsonWriter.write(value)
        XCTAssertEqual(value as? NSDictionary, try Json.parse(text) as? NSDictionary)
        XCTAssertTrue(text.contains("\\u00e9"), text)
        XCTAssertEqual("{\n  \"x\": [\n    1\n  ]\n}", try JsonWriter.write(Json.parse("{\"x\":[1]}")))
        var ordered = OrderedMap()
        ordered.put("z", 1)
        ordered.put("a", 2.5)
        ordered.put("m", nil)
        XCTAssertEqual("{\n  \"z\": 1,\n  \"a\": 2.5,\n  \"m\": null\n}", try JsonWriter.write(ordered))
        _ = Fixtures.thrown { _ = try JsonWriter.write(Double.nan) }
    }
}
