import Foundation
import XCTest
@testable import EdgeClipCore

/// The Python-made fixtures every golden test reads: the folder named by the environment
/// variable EDGECLIP_FIXTURES (the Java tests' -Dedgeclip.fixtures), holding `export/` (an
/// export folder with golden.json, golden.png, golden_input.png) and `captions.json`. Without
/// it the tests fail (never skip), saying how to make it.
enum Fixtures {
    static let HOW_TO = "set EDGECLIP_FIXTURES=DIR, a folder made from the repository root with: "
        + ".venv/bin/python -c \"from tests.app_fixtures import make_app_fixtures; make_app_fixtures('DIR')\""

    static func dir() throws -> URL {
        guard let path = ProcessInfo.processInfo.environment["EDGECLIP_FIXTURES"],
              !path.trimmingCharacters(in: .whitespaces).isEmpty else {
            throw EdgeclipException("no fixtures: " + HOW_TO)
        }
        let dir = URL(fileURLWithPath: path)
        if !FileManager.default.fileExists(atPath: dir.appendingPathComponent("export/golden.json").path) {
            throw EdgeclipException("\(dir.path) has no export/golden.json: " + HOW_TO)
        }
        return dir
    }

    static func export() throws -> URL {
        return try dir().appendingPathComponent("export")
    }

    static func golden() throws -> [String: Any] {
        return try Json.asObject(Json.parse(export().appendingPathComponent("golden.json")), "golden.json")
    }

    /// A PNG decoded to RGB with ImageIO (the Java tests use javax.imageio).
    static func readPng(_ file: URL) throws -> RgbImage {
        return try RgbImage.decode(file)
    }

    /// Escaped text, so a mismatch report shows invisible characters.
    static func escape(_ s: String) -> String {
        var out = "\""
        for c in s.unicodeScalars {
            if c.value >= 0x20 && c.value < 0x7F {
                out.unicodeScalars.append(c)
            } else {
                out += String(format: "\\u{%04X}", c.value)
            }
        }
        return out + "\""
    }

    /// Little-endian bytes of a float32 tensor (Java's ByteBuffer.order(LITTLE_ENDIAN)).
    static func littleEndianBytes(_ tensor: [Float]) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(tensor.count * 4)
        for v in tensor {
            let bits = v.bitPattern.littleEndian
            bytes.append(UInt8(truncatingIfNeeded: bits))
            bytes.append(UInt8(truncatingIfNeeded: bits >> 8))
            bytes.append(UInt8(truncatingIfNeeded: bits >> 16))
            bytes.append(UInt8(truncatingIfNeeded: bits >> 24))
        }
        return bytes
    }

    /// A copy of the fixture export in a fresh temporary folder (for tampering tests).
    static func copyExport() throws -> URL {
        let tmp = FileManager.default.temporaryDirectory.appendingPathComponent("edgeclip-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
        let target = tmp.appendingPathComponent("export")
        try FileManager.default.copyItem(at: export(), to: target)
        return target
    }

    static func temporaryFolder() throws -> URL {
        let tmp = FileManager.default.temporaryDirectory.appendingPathComponent("edgeclip-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
        return tmp
    }

    /// The error `body` throws, which must be an EdgeclipException.
    static func thrown(_ body: () throws -> Void, file: StaticString = #filePath, line: UInt = #line) -> EdgeclipException {
        do {
            try body()
        } catch let e as EdgeclipException {
            return e
        } catch {
            XCTFail("threw \(error), not an EdgeclipException", file: file, line: line)
            return EdgeclipException("\(error)")
        }
        XCTFail("did not throw", file: file, line: line)
        return EdgeclipException("did not throw")
    }
}
