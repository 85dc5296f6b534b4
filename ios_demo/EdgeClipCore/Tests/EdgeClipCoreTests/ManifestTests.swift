import Foundation
import XCTest
@testable import EdgeClipCore

/// Requirement 4: manifests read and verified; tampering and unknown versions refused by name.
final class ManifestTests: XCTestCase {

    func testReadsAndVerifiesTheFixtureExport() throws {
        let folder = try ExportFolder.open(Fixtures.export())
        XCTAssertEqual("image", folder.image.tower)
        XCTAssertEqual("text", folder.text.tower)
        XCTAssertEqual(Manifest.SUPPORTED_VERSION, folder.image.manifestVersion)
        XCTAssertEqual(folder.image.embedDim, folder.text.embedDim)
        XCTAssertEqual(64, folder.image.sha256.count)
        XCTAssertEqual(try Manifest.sha256Path(folder.imageModel()), folder.image.sha256)
        XCTAssertEqual(try Manifest.sha256Path(folder.textModel()), folder.text.sha256)
        XCTAssertNotNil(folder.image.preprocessing)
        XCTAssertNotNil(folder.text.tokenizer)
        XCTAssertEqual(1, folder.image.inputs.count)
        XCTAssertEqual(4, folder.image.inputs[0].shape.count)
        // Core ML has no int64: its text towers take int32 ids
        XCTAssertEqual(folder.text.target == "coreml" ? "int32" : "int64", folder.text.inputs[0].dtype)
        XCTAssertTrue(Manifest.isFile(folder.vocabFile()))
        XCTAssertTrue(folder.logitScale() > 0)
    }

    func testTamperedModelIsRefusedNamingTheFile() throws {
        let copy = try Fixtures.copyExport()
        let model = try ExportFolder.open(copy).imageModel()
        let file = try ManifestTests.payload(model)
        var bytes = [UInt8](try Data(contentsOf: file))
        bytes[bytes.count / 2] ^= 0x01
        try Data(bytes).write(to: file)
        let e = Fixtures.thrown { _ = try ExportFolder.open(copy) }
        XCTAssertTrue(e.message.contains(model.path), e.message)
        XCTAssertTrue(e.message.contains("sha256"), e.message)
    }

    func testTruncatedTextModelIsRefused() throws {
        let copy = try Fixtures.copyExport()
        let model = try ExportFolder.open(copy).textModel()
        let file = try ManifestTests.payload(model)
        let bytes = try Data(contentsOf: file)
        try bytes.prefix(bytes.count - 1).write(to: file)
        let e = Fixtures.thrown { _ = try ExportFolder.open(copy) }
        XCTAssertTrue(e.message.contains(model.path), e.message)
    }

    /// The model file, or a bundle's (model.mlpackage) largest file: its weights.
    private static func payload(_ model: URL) throws -> URL {
        if Manifest.isFile(model) {
            return model
        }
        var largest: (URL, Int)?
        let files = FileManager.default.enumerator(at: model, includingPropertiesForKeys: [.isRegularFileKey, .fileSizeKey])
        while let url = files?.nextObject() as? URL {
            let values = try url.resourceValues(forKeys: [.isRegularFileKey, .fileSizeKey])
            if values.isRegularFile == true, values.fileSize ?? 0 > largest?.1 ?? -1 {
                largest = (url, values.fileSize ?? 0)
            }
        }
        guard let found = largest else {
            throw EdgeclipException("\(model.path): an empty bundle")
        }
        return found.0
    }

    func testTamperedVocabularyIsRefused() throws {
        let copy = try Fixtures.copyExport()
        let folder = try ExportFolder.open(copy)
        if folder.text.files[folder.text.tokenizer!.vocabFile] == nil {
            return // an export without a files table cannot check its vocabulary
        }
        try Data([1, 2, 3]).write(to: folder.vocabFile())
        let e = Fixtures.thrown { _ = try ExportFolder.open(copy) }
        XCTAssertTrue(e.message.contains(folder.vocabFile().path), e.message)
    }

    func testManifestVersion3IsRefusedNamingTheFileAndBothVersions() throws {
        let copy = try Fixtures.copyExport()
        let manifest = copy.appendingPathComponent("text/manifest.json")
        let text = try String(contentsOf: manifest, encoding: .utf8)
        guard let range = text.range(of: "\"manifest_version\":\\s*2", options: .regularExpression) else {
            XCTFail("could not find manifest_version 2 in \(manifest.path)")
            return
        }
        let bumped = text.replacingCharacters(in: range, with: "\"manifest_version\": 3")
        try Data(bumped.utf8).write(to: manifest)
        let e = Fixtures.thrown { _ = try ExportFolder.open(copy) }
        XCTAssertTrue(e.message.contains(manifest.path), e.message)
        XCTAssertTrue(e.message.contains("manifest_version 3"), e.message)
        XCTAssertTrue(e.message.contains("reads 2"), e.message)
    }

    func testMissingManifestIsReported() throws {
        let tmp = try Fixtures.temporaryFolder()
        let e = Fixtures.thrown { _ = try ExportFolder.open(tmp) }
        XCTAssertTrue(e.message.contains("not an export folder"), e.message)
    }

    func testUnsupportedPreprocessingIsRefused() {
        let bilinear = Manifest.Preprocessing(size: [32, 32], resize: "shortest_side", interpolation: "bilinear",
            crop: "center", color: "rgb", layout: "NCHW", valueRange: [0, 1], mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5])
        let e = Fixtures.thrown { _ = try ImagePreprocessor(bilinear) }
        XCTAssertTrue(e.message.contains("interpolation \"bilinear\""), e.message)
        let nhwc = Manifest.Preprocessing(size: [32, 32], resize: "shortest_side", interpolation: "bicubic",
            crop: "center", color: "rgb", layout: "NHWC", valueRange: [0, 1], mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5])
        _ = Fixtures.thrown { _ = try ImagePreprocessor(nhwc) }
    }

    /// A bundle folder (Core ML's model.mlpackage) hashes as Python's sha256_path: the expected
    /// value was computed with export.manifest.sha256_path on the same files. "Data-x" sorting
    /// after "Data/..." checks the component-wise order; Data/manifest.json is left out.
    func testBundleFolderHashMatchesPython() throws {
        let bundle = try Fixtures.temporaryFolder().appendingPathComponent("model.mlpackage")
        try write(bundle.appendingPathComponent("Manifest.json"), Array("{}".utf8))
        try write(bundle.appendingPathComponent("Data/com.apple.CoreML/model.mlmodel"), Array("abc".utf8))
        try write(bundle.appendingPathComponent("Data/com.apple.CoreML/weights/weight.bin"), (0..<256).map { UInt8($0) })
        try write(bundle.appendingPathComponent("Data-x/a"), Array("z".utf8))
        try write(bundle.appendingPathComponent("Data/manifest.json"), Array("ignored".utf8))
        try write(bundle.appendingPathComponent("b.txt"), [])
        try write(bundle.appendingPathComponent("Data/com.apple.CoreML/z"), Array("zz".utf8))
        XCTAssertEqual("c64bcfd23a5c6d6131d288fa8aea389e8424ce5fdadee100a3b974c92993c028",
                       try Manifest.sha256Path(bundle))
    }

    func testPathOrderIsComponentWise() {
        XCTAssertTrue(Manifest.comparePaths("Data/com", "Data-x/a") < 0)
        XCTAssertTrue(Manifest.compareCodePoints("Data/com", "Data-x/a") > 0) // plain string order would differ
        XCTAssertTrue(Manifest.comparePaths("a", "a/b") < 0)
        XCTAssertTrue(Manifest.compareCodePoints("\u{FFFF}", "\u{1F600}") < 0) // U+FFFF < U+1F600
    }

    private func write(_ path: URL, _ bytes: [UInt8]) throws {
        try FileManager.default.createDirectory(at: path.deletingLastPathComponent(), withIntermediateDirectories: true)
        try Data(bytes).write(to: path)
    }
}
