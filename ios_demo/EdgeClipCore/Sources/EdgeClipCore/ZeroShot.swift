import Foundation

/// Zero-shot classification as open_clip does it: each class embedding is the mean of its
/// prompt embeddings (one per template, each L2-normalised), L2-normalised again; a class's
/// score is logitScale · dot(image embedding, class embedding).
///
/// Sums run in Double and results are returned as Float; scores agree with PyTorch's
/// float32 to about 1e-6 relative.
public final class ZeroShot {
    /// Embeds token ids (from `ClipTokenizer.tokenize`): the app's ExecuTorch/Core ML text tower, or a stub in tests.
    public typealias TextEncoder = ([Int64]) throws -> [Float]

    /// One ranked class.
    public struct Prediction: CustomStringConvertible {
        public let index: Int
        public let label: String
        public let score: Float
        public let probability: Double

        public init(index: Int, label: String, score: Float, probability: Double) {
            self.index = index
            self.label = label
            self.score = score
            self.probability = probability
        }

        public var description: String {
            return "\(label) (\(score), p=\(probability))"
        }
    }

    private let labels_: [String]
    private let classEmbeddings: [[Float]]
    private let logitScale: Double

    /// A classifier from ready class embeddings (one per label, any norm: they are normalised).
    public init(_ labels: [String], _ classEmbeddings: [[Float]], _ logitScale: Double) throws {
        if labels.count != classEmbeddings.count {
            throw EdgeclipException("\(labels.count) labels but \(classEmbeddings.count) class embeddings")
        }
        self.labels_ = labels
        self.classEmbeddings = classEmbeddings.map { ZeroShot.l2Normalize($0) }
        self.logitScale = logitScale
    }

    /// Embeds every label with every template through `encoder` and builds the classifier.
    public static func build(_ labels: [String], _ templates: [String], _ tokenizer: ClipTokenizer,
                             _ encoder: TextEncoder, _ logitScale: Double) throws -> ZeroShot {
        var embeddings: [[Float]] = []
        for label in labels {
            embeddings.append(try classEmbedding(label, templates, tokenizer, encoder))
        }
        return try ZeroShot(labels, embeddings, logitScale)
    }

    /// A template with its "{}" (every one) replaced by the label, like str.format with one argument.
    public static func formatPrompt(_ template: String, _ label: String) -> String {
        return template.replacingOccurrences(of: "{}", with: label)
    }

    /// One class's embedding: the normalised mean of its normalised prompt embeddings.
    public static func classEmbedding(_ label: String, _ templates: [String], _ tokenizer: ClipTokenizer,
                                      _ encoder: TextEncoder) throws -> [Float] {
        var prompts: [[Float]] = []
        for template in templates {
            prompts.append(try encoder(tokenizer.tokenize(formatPrompt(template, label))))
        }
        return try averagePrompts(prompts)
    }

    /// normalize(mean(normalize(e) for e in prompt embeddings)).
    public static func averagePrompts(_ promptEmbeddings: [[Float]]) throws -> [Float] {
        guard let firstPrompt = promptEmbeddings.first else {
            throw EdgeclipException("a class needs at least one prompt embedding")
        }
        let dim = firstPrompt.count
        var sum = [Double](repeating: 0, count: dim)
        for e in promptEmbeddings {
            if e.count != dim {
                throw EdgeclipException("prompt embeddings of different sizes: \(dim) and \(e.count)")
            }
            let n = l2Normalize(e)
            for i in 0..<dim {
                sum[i] += Double(n[i])
            }
        }
        var mean = [Float](repeating: 0, count: dim)
        for i in 0..<dim {
            mean[i] = Float(sum[i] / Double(promptEmbeddings.count))
        }
        return l2Normalize(mean)
    }

    /// v / max(‖v‖, 1e-12), as torch.nn.functional.normalize. Exported towers already
    /// normalise, but normalising again is harmless and guards against a tower that does not.
    public static func l2Normalize(_ v: [Float]) -> [Float] {
        var norm = 0.0
        for x in v {
            norm += Double(x) * Double(x)
        }
        norm = max(norm.squareRoot(), 1e-12)
        var out = [Float](repeating: 0, count: v.count)
        for i in 0..<v.count {
            out[i] = Float(Double(v[i]) / norm)
        }
        return out
    }

    public func labels() -> [String] {
        return labels_
    }

    /// logitScale · dot(normalize(image), class) for every class, in label order.
    public func scores(_ imageEmbedding: [Float]) throws -> [Float] {
        let image = ZeroShot.l2Normalize(imageEmbedding)
        var out = [Float](repeating: 0, count: classEmbeddings.count)
        for c in 0..<classEmbeddings.count {
            if classEmbeddings[c].count != image.count {
                throw EdgeclipException("image embedding has \(image.count) values, class embeddings "
                    + "\(classEmbeddings[c].count); the towers are from different models")
            }
            var dot = 0.0
            for i in 0..<image.count {
                dot += Double(image[i]) * Double(classEmbeddings[c][i])
            }
            out[c] = Float(logitScale * dot)
        }
        return out
    }

    /// Class indices, best score first; ties keep the lower index first (a stable sort).
    public static func ranking(_ scores: [Float]) -> [Int] {
        let n = scores.count
        var order = Array(0..<n)
        // Insertion sort: stable, simple to port, and class counts are small.
        var i = 1
        while i < n {
            let current = order[i]
            var j = i - 1
            while j >= 0 && scores[order[j]] < scores[current] {
                order[j + 1] = order[j]
                j -= 1
            }
            order[j + 1] = current
            i += 1
        }
        return order
    }

    /// softmax(scores): probabilities summing to 1, computed stably (max subtracted).
    public static func softmax(_ scores: [Float]) -> [Double] {
        var maxScore = -Double.infinity
        for s in scores {
            maxScore = max(maxScore, Double(s))
        }
        var out = [Double](repeating: 0, count: scores.count)
        var sum = 0.0
        for i in 0..<scores.count {
            out[i] = exp(Double(scores[i]) - maxScore)
            sum += out[i]
        }
        for i in 0..<scores.count {
            out[i] /= sum
        }
        return out
    }

    /// The `k` best classes for an image embedding, with scores and softmax probabilities.
    public func topK(_ imageEmbedding: [Float], _ k: Int) throws -> [Prediction] {
        let scores = try self.scores(imageEmbedding)
        let probabilities = ZeroShot.softmax(scores)
        let order = ZeroShot.ranking(scores)
        var out: [Prediction] = []
        for i in 0..<min(k, order.count) {
            let c = order[i]
            out.append(Prediction(index: c, label: labels_[c], score: scores[c], probability: probabilities[c]))
        }
        return out
    }
}
