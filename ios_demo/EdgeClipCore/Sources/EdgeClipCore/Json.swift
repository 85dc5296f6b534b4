import Foundation

/// A strict JSON reader with the Java core's typed accessors, over Foundation's
/// JSONSerialization (the Java core has its own parser; Foundation's is the platform's).
///
/// Values map to: object → `[String: Any]`, array → `[Any]`, string → String, number →
/// NSNumber (an integer when written without fraction or exponent), true/false → Bool
/// (NSNumber), null → NSNull. NaN and Infinity are refused (JSONSerialization refuses them),
/// as is anything after the top-level value. Errors are an `EdgeclipException`.
public enum Json {
    /// Parses one JSON document.
    public static func parse(_ text: String) throws -> Any {
        return try parse(data: Data(text.utf8))
    }

    /// Parses a UTF-8 JSON file; errors name the file.
    public static func parse(_ file: URL) throws -> Any {
        let data: Data
        do {
            data = try Data(contentsOf: file)
        } catch {
            throw EdgeclipException("\(file.path): cannot read (\(error.localizedDescription))")
        }
        do {
            return try parse(data: data)
        } catch let e as EdgeclipException {
            throw EdgeclipException("\(file.path): \(e.message)")
        }
    }

    private static func parse(data: Data) throws -> Any {
        do {
            return try JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed])
        } catch {
            throw EdgeclipException("JSON error: \(error.localizedDescription)")
        }
    }

    // ---- typed access, for readers of manifests and golden files -------------------------

    /// `value` as an object, or an error naming location.
    public static func asObject(_ value: Any?, _ location: String) throws -> [String: Any] {
        guard let object = value as? [String: Any] else {
            throw EdgeclipException("\(location): expected a JSON object, got \(describe(value))")
        }
        return object
    }

    /// `value` as an array, or an error naming location.
    public static func asList(_ value: Any?, _ location: String) throws -> [Any] {
        guard let list = value as? [Any] else {
            throw EdgeclipException("\(location): expected a JSON array, got \(describe(value))")
        }
        return list
    }

    /// `value` as a string, or an error naming location.
    public static func asString(_ value: Any?, _ location: String) throws -> String {
        guard let string = value as? String else {
            throw EdgeclipException("\(location): expected a string, got \(describe(value))")
        }
        return string
    }

    /// `value` as a double (any JSON number), or an error naming location.
    public static func asDouble(_ value: Any?, _ location: String) throws -> Double {
        guard let number = value as? NSNumber, !isBool(number) else {
            throw EdgeclipException("\(location): expected a number, got \(describe(value))")
        }
        return number.doubleValue
    }

    /// `value` as an Int64 (a JSON integer), or an error naming location.
    public static func asLong(_ value: Any?, _ location: String) throws -> Int64 {
        guard let number = value as? NSNumber, isInteger(number) else {
            throw EdgeclipException("\(location): expected an integer, got \(describe(value))")
        }
        return number.int64Value
    }

    /// `value` as an Int (a JSON integer in Int32 range), or an error naming location.
    public static func asInt(_ value: Any?, _ location: String) throws -> Int {
        let v = try asLong(value, location)
        if v < Int64(Int32.min) || v > Int64(Int32.max) {
            throw EdgeclipException("\(location): integer \(v) out of range")
        }
        return Int(v)
    }

    /// A member of an object that must be there.
    public static func require(_ object: [String: Any], _ key: String, _ location: String) throws -> Any {
        guard let value = object[key] else {
            throw EdgeclipException("\(location): missing field \"\(key)\"")
        }
        return value
    }

    /// A JSON array of numbers as [Float] (e.g. an embedding).
    public static func asFloatArray(_ value: Any?, _ location: String) throws -> [Float] {
        let list = try asList(value, location)
        return try list.indices.map { Float(try asDouble(list[$0], "\(location)[\($0)]")) }
    }

    /// A JSON array of numbers as [Double].
    public static func asDoubleArray(_ value: Any?, _ location: String) throws -> [Double] {
        let list = try asList(value, location)
        return try list.indices.map { try asDouble(list[$0], "\(location)[\($0)]") }
    }

    /// A JSON array of integers as [Int64] (e.g. token ids, a shape).
    public static func asLongArray(_ value: Any?, _ location: String) throws -> [Int64] {
        let list = try asList(value, location)
        return try list.indices.map { try asLong(list[$0], "\(location)[\($0)]") }
    }

    /// True for JSON null (NSNull) and for a missing value.
    public static func isNull(_ value: Any?) -> Bool {
        return value == nil || value is NSNull
    }

    private static func isBool(_ number: NSNumber) -> Bool {
        return CFGetTypeID(number as CFTypeRef) == CFBooleanGetTypeID()
    }

    /// An integer as JSONSerialization gives one: not a Bool, not a floating-point number.
    static func isInteger(_ number: NSNumber) -> Bool {
        return !isBool(number) && !CFNumberIsFloatType(number as CFNumber) && !(number is NSDecimalNumber)
    }

    private static func describe(_ value: Any?) -> String {
        guard let value = value, !(value is NSNull) else {
            return "null"
        }
        if value is [String: Any] {
            return "an object"
        }
        if value is [Any] {
            return "an array"
        }
        if let string = value as? String {
            return "the string \"\(string)\""
        }
        if let number = value as? NSNumber {
            return isBool(number) ? "boolean \(number.boolValue)" : "number \(number)"
        }
        return "\(type(of: value)) \(value)"
    }
}
