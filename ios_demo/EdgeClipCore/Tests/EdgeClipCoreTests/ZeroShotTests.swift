import Foundation
import XCTest
@testable import EdgeClipCore

/// Requirement 3: zero-shot scores and ranking from the stored embeddings match Python's.
final class ZeroShotTests: XCTestCase {

    func testScoresAndRanking() throws {
        let golden = try Fixtures.golden()
        let folder = try ExportFolder.open(Fixtures.export())
        let tokenizer = try folder.tokenizer()

        // The text "tower" is the stored Python embeddings, looked up by prompt text; the
        // stub also checks that the ids it is given are the ones Python embedded.
        var embeddingByText: [String: [Float]] = [:]
        var idsByText: [String: [Int64]] = [:]
        for item in try Json.asList(golden["captions"], "captions") {
            let c = try Json.asObject(item, "caption")
            let text = try Json.asString(c["text"], "text")
            embeddingByText[text] = try Json.asFloatArray(c["embedding"], "embedding")
            idsByText[text] = try Json.asLongArray(c["ids"], "ids")
        }
        let zs = try Json.asObject(golden["zero_shot"], "zero_shot")
        let labels = try strings(zs["labels"])
        let templates = try strings(zs["templates"])
        let logitScale = try Json.asDouble(zs["logit_scale"], "logit_scale")
        XCTAssertEqual(logitScale, folder.logitScale(), accuracy: 1e-6 * logitScale, "manifest logit_scale vs golden")

        var embeddingByIds: [[Int64]: [Float]] = [:]
        for (text, ids) in idsByText {
            embeddingByIds[ids] = embeddingByText[text]
        }
        for label in labels {
            for template in templates {
                let prompt = ZeroShot.formatPrompt(template, label)
                XCTAssertNotNil(embeddingByText[prompt], "golden.json has no caption for prompt \"\(prompt)\"")
            }
        }
        let stored: ZeroShot.TextEncoder = { tokens in
            guard let e = embeddingByIds[tokens] else {
                throw EdgeclipException("no stored embedding for token ids \(tokens)")
            }
            return e
        }
        let classifier = try ZeroShot.build(labels, templates, tokenizer, stored, logitScale)
        let image = try Json.asFloatArray(golden["image_embedding"], "image_embedding")
        let scores = try classifier.scores(image)
        let expected = try Json.asDoubleArray(zs["scores"], "scores")
        XCTAssertEqual(expected.count, scores.count)
        for i in 0..<scores.count {
            let tolerance = 1e-4 * max(abs(expected[i]), 1e-3)
            XCTAssertEqual(expected[i], Double(scores[i]), accuracy: tolerance, "score of \"\(labels[i])\"")
        }
        let expectedRanking = try Json.asLongArray(zs["ranking"], "ranking")
        let ranking = ZeroShot.ranking(scores)
        XCTAssertEqual(expectedRanking, ranking.map { Int64($0) }, "ranking, best first")

        let top = try classifier.topK(image, 3)
        XCTAssertEqual(min(3, labels.count), top.count)
        XCTAssertEqual(labels[Int(expectedRanking[0])], top[0].label)
        let total = ZeroShot.softmax(scores).reduce(0, +)
        XCTAssertEqual(1.0, total, accuracy: 1e-9)
    }

    func testRankingIsStableAndNormalisationMatchesTorch() throws {
        XCTAssertEqual([1, 3, 0, 2], ZeroShot.ranking([1, 2, 0.5, 2]))
        let n = ZeroShot.l2Normalize([3, 4])
        XCTAssertEqual(0.6, n[0], accuracy: 1e-7)
        XCTAssertEqual(0.8, n[1], accuracy: 1e-7)
        XCTAssertEqual([0, 0], ZeroShot.l2Normalize([0, 0]))
        // mean of normalised prompts, normalised again: (1,0) and (0,2) -> (1,1)/sqrt(2)
        let c = try ZeroShot.averagePrompts([[1, 0], [0, 2]])
        XCTAssertEqual(0.70710677, c[0], accuracy: 1e-7)
        XCTAssertEqual(0.70710677, c[1], accuracy: 1e-7)
        XCTAssertEqual("a photo of a cat, a cat.", ZeroShot.formatPrompt("a photo of a {}, a {}.", "cat"))
        let p = ZeroShot.softmax([0, Float(log(3.0))])
        XCTAssertEqual(0.25, p[0], accuracy: 1e-7)
    }

    private func strings(_ value: Any?) throws -> [String] {
        return try Json.asList(value, "strings").map { try Json.asString($0, "string") }
    }
}
