import EdgeClipCore
import Foundation

/// The on-device proof that the glue is right: golden.png and the captions of golden.json go
/// through the real models (ImageIO decoding, the core's preprocessing and tokenizer, Core ML)
/// and the results are compared with PyTorch's, stored in golden.json by edgeclip's exporter.
enum GoldenCheck {
    struct Report {
        let passed: Bool
        let text: String
    }

    /// The least cosine to PyTorch's embeddings that each precision must reach.
    static func minCosine(_ precision: String) -> Double {
        switch precision {
        case "fp32": return 0.9999
        case "fp16": return 0.999
        default: return 0.99 // int8
        }
    }

    static func run(_ clip: ClipEngine) throws -> Report {
        let dir = clip.dir
        let goldenFile = dir.appendingPathComponent("golden.json")
        guard FileManager.default.fileExists(atPath: goldenFile.path) else {
            return Report(passed: false, text: "\(goldenFile.path): missing (export with a current edgeclip)")
        }
        let golden = try Json.asObject(Json.parse(goldenFile), "golden.json")
        let precision = clip.folder.image.precision
        let minCos = minCosine(precision)
        var lines = ["\(dir.lastPathComponent) (\(precision), \(clip.computeUnits.rawValue)): cosine must be ≥ \(minCos)"]
        var passed = true
        func verify(_ ok: Bool, _ line: String) {
            passed = passed && ok
            lines.append((ok ? "ok   " : "FAIL ") + line)
        }

        // The image: decoded untouched, preprocessed by the core, embedded by the image tower.
        let imageName = ((golden["image"] as? [String: Any])?["file"] as? String) ?? "golden.png"
        let picture = try RgbImage.decode(dir.appendingPathComponent(imageName))
        let imageEmbedding = try clip.embedImage(picture)
        let imageCos = cosine(imageEmbedding, try Json.asFloatArray(Json.require(golden, "image_embedding", "golden.json"), "image_embedding"))
        verify(imageCos >= minCos, String(format: "image %@: cosine %.6f", imageName, imageCos))

        // Each caption: the core's token ids must be Python's exactly; then the text tower.
        let captions = try Json.asList(Json.require(golden, "captions", "golden.json"), "captions")
        for (i, item) in captions.enumerated() {
            let caption = try Json.asObject(item, "captions[\(i)]")
            let text = try Json.asString(Json.require(caption, "text", "captions[\(i)]"), "captions[\(i)].text")
            let expectedIds = try Json.asLongArray(Json.require(caption, "ids", "captions[\(i)]"), "captions[\(i)].ids")
            let ids = try clip.tokenizer.tokenize(text)
            verify(ids == expectedIds, "tokens of \"\(text)\"" + (ids == expectedIds ? "" :
                ": \(ids.prefix(12))… vs Python's \(expectedIds.prefix(12))…"))
            let cos = cosine(try clip.text.embed(tokens: ids),
                             try Json.asFloatArray(Json.require(caption, "embedding", "captions[\(i)]"), "captions[\(i)].embedding"))
            verify(cos >= minCos, String(format: "text \"%@\": cosine %.6f", text, cos))
        }

        // Zero-shot on the golden image with golden.json's labels and templates.
        if let zs = golden["zero_shot"], !Json.isNull(zs) {
            let z = try Json.asObject(zs, "zero_shot")
            let labels = try Json.asList(Json.require(z, "labels", "zero_shot"), "zero_shot.labels").map { try Json.asString($0, "label") }
            let templates = try Json.asList(Json.require(z, "templates", "zero_shot"), "zero_shot.templates").map { try Json.asString($0, "template") }
            let scale = try z["logit_scale"] != nil ? Json.asDouble(z["logit_scale"], "zero_shot.logit_scale") : clip.logitScale
            let expectedScores = try Json.asFloatArray(Json.require(z, "scores", "zero_shot"), "zero_shot.scores")
            let expectedRanking = try Json.asLongArray(Json.require(z, "ranking", "zero_shot"), "zero_shot.ranking").map { Int($0) }
            let scores = try ZeroShot.build(labels, templates, clip.tokenizer, clip.textEncoder, scale).scores(imageEmbedding)
            let ranking = ZeroShot.ranking(scores)
            let maxDiff = (0..<min(scores.count, expectedScores.count)).map { abs(scores[$0] - expectedScores[$0]) }.max() ?? 0
            verify(ranking.first == expectedRanking.first,
                   "zero-shot best label: \(labels[ranking[0]]) (PyTorch: \(labels[expectedRanking[0]]))")
            lines.append("info zero-shot full ranking "
                + (ranking == expectedRanking ? "identical" : "differs: \(ranking.map { labels[$0] }) vs \(expectedRanking.map { labels[$0] })")
                + String(format: "; largest score difference %.4f", Double(maxDiff)))
        }
        lines.append(passed ? "PASSED" : "FAILED")
        return Report(passed: passed, text: lines.joined(separator: "\n"))
    }

    static func cosine(_ a: [Float], _ b: [Float]) -> Double {
        precondition(a.count == b.count, "embeddings of \(a.count) and \(b.count) values")
        var dot = 0.0
        var na = 0.0
        var nb = 0.0
        for i in 0..<a.count {
            dot += Double(a[i]) * Double(b[i])
            na += Double(a[i]) * Double(a[i])
            nb += Double(b[i]) * Double(b[i])
        }
        return dot / (na.squareRoot() * nb.squareRoot() + 1e-30)
    }
}
