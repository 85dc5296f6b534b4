import Foundation

/// A JSON object that keeps its keys in insertion order (the Java core's LinkedHashMap), so
/// records list their fields in record.py's order.
public struct OrderedMap {
    public private(set) var keys: [String] = []
    private var values: [String: Any?] = [:]

    public init() {}

    /// Sets `key` (a new key goes last; an existing one keeps its place), as Map.put.
    public mutating func put(_ key: String, _ value: Any?) {
        if values[key] == nil {
            keys.append(key)
        }
        values[key] = .some(value)
    }

    public subscript(key: String) -> Any? {
        return values[key] ?? nil
    }

    public var isEmpty: Bool { keys.isEmpty }
}

/// Writes OrderedMaps, dictionaries (keys sorted), arrays, strings, numbers, booleans and
/// nil/NSNull as strict JSON, indented by two spaces like Python's `json.dumps(obj, indent=2)`
/// (so records read alike whichever side wrote them). Non-ASCII characters are escaped as
/// \uXXXX, as Python does by default. NaN and infinities are refused: they are not JSON.
public enum JsonWriter {
    /// `value` as indented JSON text (no trailing newline).
    public static func write(_ value: Any?) throws -> String {
        var out = ""
        try write(&out, value, 0)
        return out
    }

    private static func write(_ out: inout String, _ value: Any?, _ indent: Int) throws {
        guard let value = value, !(value is NSNull) else {
            out += "null"
            return
        }
        switch value {
        case let s as String:
            writeString(&out, s)
        case let n as NSNumber: // Bool, Int, Int64, Float, Double ... all bridge to NSNumber
            if CFGetTypeID(n as CFTypeRef) == CFBooleanGetTypeID() {
                out += n.boolValue ? "true" : "false"
            } else if Json.isInteger(n) {
                out += String(n.int64Value)
            } else {
                try writeDouble(&out, n.doubleValue)
            }
        case let map as OrderedMap:
            try writeObject(&out, map.keys.map { ($0, map[$0]) }, indent)
        case let dict as [String: Any]:
            try writeObject(&out, dict.keys.sorted().map { ($0, dict[$0]) }, indent)
        case let list as [Any]:
            if list.isEmpty {
                out += "[]"
                return
            }
            out += "["
            for (i, item) in list.enumerated() {
                out += i == 0 ? "\n" : ",\n"
                indentLine(&out, indent + 1)
                try write(&out, item, indent + 1)
            }
            out += "\n"
            indentLine(&out, indent)
            out += "]"
        default:
            throw EdgeclipException("cannot write a \(type(of: value)) as JSON")
        }
    }

    private static func writeDouble(_ out: inout String, _ d: Double) throws {
        if d.isNaN || d.isInfinite {
            throw EdgeclipException("JSON cannot hold \(d)")
        }
        // Swift's description is the shortest text that reads back to the same double
        // (e.g. 1e-05), which is valid JSON.
        out += "\(d)"
    }

    private static func writeObject(_ out: inout String, _ entries: [(String, Any?)], _ indent: Int) throws {
        if entries.isEmpty {
            out += "{}"
            return
        }
        out += "{"
        var first = true
        for (key, value) in entries {
            out += first ? "\n" : ",\n"
            first = false
            indentLine(&out, indent + 1)
            writeString(&out, key)
            out += ": "
            try write(&out, value, indent + 1)
        }
        out += "\n"
        indentLine(&out, indent)
        out += "}"
    }

    private static func indentLine(_ out: inout String, _ level: Int) {
        for _ in 0..<level {
            out += "  "
        }
    }

    private static func writeString(_ out: inout String, _ s: String) {
        out += "\""
        for unit in s.utf16 { // UTF-16 units, so characters past U+FFFF become two \u escapes, as in Python
            switch unit {
            case 0x22: out += "\\\""
            case 0x5C: out += "\\\\"
            case 0x0A: out += "\\n"
            case 0x0D: out += "\\r"
            case 0x09: out += "\\t"
            case 0x08: out += "\\b"
            case 0x0C: out += "\\f"
            default:
                if unit < 0x20 || unit > 0x7E {
                    let hex = String(unit, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    out.unicodeScalars.append(Unicode.Scalar(UInt8(unit)))
                }
            }
        }
        out += "\""
    }
}
