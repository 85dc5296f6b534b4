import Foundation
import XCTest
@testable import EdgeClipCore

/// Requirement 2: golden.png through the preprocessor gives Python's pixels and tensor.
final class ImagePreprocessorTests: XCTestCase {

    func testGoldenImage() throws {
        let golden = try Fixtures.golden()
        let image = try Json.asObject(golden["image"], "golden.json image")
        let pre = try Json.asObject(golden["preprocessed"], "golden.json preprocessed")
        let export = try Fixtures.export()
        let png = export.appendingPathComponent(try Json.asString(image["file"], "image.file"))
        XCTAssertEqual(try Json.asString(image["sha256"], "image.sha256"), try Manifest.sha256File(png),
                       "\(png.path) is not the file golden.json describes")

        let input = try Fixtures.readPng(png)
        XCTAssertEqual(try Json.asInt(image["width"], "width"), input.width)
        XCTAssertEqual(try Json.asInt(image["height"], "height"), input.height)

        let folder = try ExportFolder.open(export)
        let preprocessor = try folder.preprocessor()
        let shape = try Json.asLongArray(pre["shape"], "preprocessed.shape")
        XCTAssertEqual(Int64(preprocessor.size), shape[2])

        // Pixels after resize + crop, against Python's golden_input.png.
        let expected = try Fixtures.readPng(export.appendingPathComponent(try Json.asString(pre["file"], "preprocessed.file")))
        let actual = try preprocessor.resizeAndCrop(input)
        XCTAssertEqual(expected.width, actual.width)
        XCTAssertEqual(expected.height, actual.height)
        var differ = 0
        var maxDiff = 0
        for i in 0..<expected.rgb.count {
            let d = abs(Int(expected.rgb[i]) - Int(actual.rgb[i]))
            if d != 0 {
                differ += 1
                maxDiff = max(maxDiff, d)
            }
        }
        if differ != 0 {
            XCTFail("\(differ) of \(expected.rgb.count) resized pixel values differ from golden_input.png, by up to "
                + "\(maxDiff) levels (\(input.width)x\(input.height) -> \(preprocessor.size))")
        }
        XCTAssertEqual(try Json.asString(pre["pixels_sha256"], "pixels_sha256"), Manifest.hex(Manifest.sha256(actual.rgb)),
                       "sha256 of the HWC pixels")

        // The normalised tensor, bit for bit.
        let tensor = try preprocessor.preprocess(input)
        XCTAssertEqual(Int(shape[0] * shape[1] * shape[2] * shape[3]), tensor.count)
        XCTAssertEqual(try Json.asString(pre["tensor_sha256"], "tensor_sha256"),
                       Manifest.hex(Manifest.sha256(Fixtures.littleEndianBytes(tensor))),
                       "sha256 of the float32 NCHW tensor (little-endian): normalisation differs from numpy's float32")

        // Per-channel statistics (Double here; the Python side computed them in float32).
        let mean = try Json.asDoubleArray(pre["mean"], "mean")
        let std = try Json.asDoubleArray(pre["std"], "std")
        let minimum = try Json.asDoubleArray(pre["min"], "min")
        let maximum = try Json.asDoubleArray(pre["max"], "max")
        let plane = preprocessor.size * preprocessor.size
        for c in 0..<3 {
            var sum = 0.0
            var lo = Double.infinity
            var hi = -Double.infinity
            for i in 0..<plane {
                let v = Double(tensor[c * plane + i])
                sum += v
                lo = min(lo, v)
                hi = max(hi, v)
            }
            let m = sum / Double(plane)
            var squares = 0.0
            for i in 0..<plane {
                squares += (Double(tensor[c * plane + i]) - m) * (Double(tensor[c * plane + i]) - m)
            }
            let population = (squares / Double(plane)).squareRoot()
            let sample = (squares / Double(plane - 1)).squareRoot()
            XCTAssertEqual(mean[c], m, accuracy: 1e-5, "channel \(c) mean")
            XCTAssertEqual(Float(minimum[c]), Float(lo), "channel \(c) min")
            XCTAssertEqual(Float(maximum[c]), Float(hi), "channel \(c) max")
            // numpy's std is the population one, torch's the sample one: accept either.
            if abs(std[c] - population) > 1e-5 && abs(std[c] - sample) > 1e-5 {
                XCTFail("channel \(c) std \(std[c]) is neither the population (\(population)"
                    + ") nor the sample (\(sample)) std of the tensor")
            }
        }
    }

    func testToTensorOfGoldenPixelsMatchesTensorSha() throws {
        // Separates the normalisation from the resize: Python's own pixels, normalised here.
        let pre = try Json.asObject(Fixtures.golden()["preprocessed"], "preprocessed")
        let export = try Fixtures.export()
        let pixels = try Fixtures.readPng(export.appendingPathComponent(try Json.asString(pre["file"], "file")))
        let tensor = try ExportFolder.open(export).preprocessor().toTensor(pixels)
        XCTAssertEqual(try Json.asString(pre["tensor_sha256"], "tensor_sha256"),
                       Manifest.hex(Manifest.sha256(Fixtures.littleEndianBytes(tensor))))
    }
}
