import Foundation
import XCTest
@testable import EdgeClipCore

/// Requirement 1: every caption the Python side tokenized gets exactly the same ids here.
final class ClipTokenizerTests: XCTestCase {
    private static var folder: ExportFolder?

    private func loadFolder() throws -> ExportFolder {
        if let folder = ClipTokenizerTests.folder {
            return folder
        }
        let folder = try ExportFolder.open(Fixtures.export())
        ClipTokenizerTests.folder = folder
        return folder
    }

    func testGoldenCaptions() throws {
        let folder = try loadFolder()
        let captions = try Json.asList(Fixtures.golden()["captions"], "golden.json captions")
        XCTAssertTrue(captions.count > 0, "golden.json has no captions")
        try check(folder.tokenizer(), captions, "golden.json")
    }

    func testCaptionsJson() throws {
        let folder = try loadFolder()
        let file = try Json.asObject(
            Json.parse(Fixtures.dir().appendingPathComponent("captions.json")), "captions.json")
        // captions.json may use another context length than the tiny model's (open_clip's 77,
        // so that BPE rather than truncation decides the ids): same vocabulary, its length.
        let contextLength = try Json.asInt(file["context_length"], "captions.json context_length")
        let spec = folder.text.tokenizer!
        let tokenizer = try ClipTokenizer.fromVocab(folder.vocabFile(), contextLength, spec.sotId, spec.eotId)
        let captions = try Json.asList(file["captions"], "captions.json captions")
        XCTAssertTrue(captions.count >= 1000, "captions.json has only \(captions.count) captions")
        try check(tokenizer, captions, "captions.json")
    }

    private func check(_ tokenizer: ClipTokenizer, _ captions: [Any], _ source: String) throws {
        var mismatches: [String] = []
        for item in captions {
            let caption = try Json.asObject(item, source)
            let text = try Json.asString(caption["text"], source + " text")
            let expected = try Json.asLongArray(caption["ids"], source + " ids")
            let actual = try tokenizer.tokenize(text)
            if expected != actual {
                mismatches.append(Fixtures.escape(text) + "\n    python \(expected)"
                    + "\n    swift  \(actual)"
                    + "\n    cleaned " + Fixtures.escape(TextCleaner.clean(text)))
            }
        }
        if !mismatches.isEmpty {
            XCTFail("\(mismatches.count) of \(captions.count) \(source) captions tokenize differently:\n  "
                + mismatches.prefix(20).joined(separator: "\n  "))
        }
    }
}
