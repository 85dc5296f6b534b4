import EdgeClipCore
import Foundation
import UIKit

/// An export folder's two Core ML towers, its tokenizer and its image preprocessing, ready to run.
final class ClipEngine {
    let dir: URL
    let folder: ExportFolder
    let image: CoreMLEncoder
    let text: CoreMLEncoder
    let tokenizer: ClipTokenizer
    let preprocessor: ImagePreprocessor
    let computeUnits: ComputeUnitSetting

    /// Opens `dir` through the core (manifest versions, sha256 of both models), then loads both towers.
    init(dir: URL, computeUnits: ComputeUnitSetting) throws {
        self.dir = dir
        self.computeUnits = computeUnits
        folder = try ExportFolder.open(dir)
        image = try CoreMLEncoder(towerDir: folder.imageDir(), manifest: folder.image, computeUnits: computeUnits)
        text = try CoreMLEncoder(towerDir: folder.textDir(), manifest: folder.text, computeUnits: computeUnits)
        tokenizer = try folder.tokenizer()
        preprocessor = try folder.preprocessor()
    }

    var logitScale: Double { folder.logitScale() }

    var textEncoder: ZeroShot.TextEncoder {
        let text = self.text
        return { tokens in try text.embed(tokens: tokens) }
    }

    func embedImage(_ rgb: RgbImage) throws -> [Float] {
        return try image.embed(image: preprocessor.preprocess(rgb))
    }

    /// A photo's pixels, upright (UIImage orientation applied), 8-bit sRGB, the shorter side
    /// brought down to at most `maxShortSide` pixels (the model needs 224 or so; the core's
    /// bicubic resize then makes the exact input).
    static func rgb(from photo: UIImage, maxShortSide: CGFloat = 896) throws -> RgbImage {
        let pixels = CGSize(width: photo.size.width * photo.scale, height: photo.size.height * photo.scale)
        let factor = min(1, maxShortSide / max(1, min(pixels.width, pixels.height)))
        let target = CGSize(width: (pixels.width * factor).rounded(), height: (pixels.height * factor).rounded())
        let format = UIGraphicsImageRendererFormat()
        format.scale = 1
        format.opaque = true
        format.preferredRange = .standard
        let rendered = UIGraphicsImageRenderer(size: target, format: format).image { _ in
            photo.draw(in: CGRect(origin: .zero, size: target))
        }
        guard let cgImage = rendered.cgImage else {
            throw EdgeclipException("cannot render the photo")
        }
        return try RgbImage.fromCGImage(cgImage)
    }
}

/// Where export folders are: Documents/<name> (copied in with Finder or the Files app, or
/// `xcrun devicectl device copy to`), or bundled in the app as Exports/<name>.
enum Exports {
    static var documents: URL {
        FileManager.default.urls(for: .documentDirectory, in: .userDomainMask)[0]
    }

    static var bundled: URL? {
        Bundle.main.url(forResource: "Exports", withExtension: nil)
    }

    /// Every export folder the app can see, pushed ones first.
    static func list() -> [URL] {
        var found: [URL] = []
        for root in [documents, bundled].compactMap({ $0 }) {
            let children = (try? FileManager.default.contentsOfDirectory(
                at: root, includingPropertiesForKeys: nil, options: [.skipsHiddenFiles])) ?? []
            found += children.filter(isExport).sorted { $0.lastPathComponent < $1.lastPathComponent }
        }
        return found
    }

    static func isExport(_ dir: URL) -> Bool {
        let fm = FileManager.default
        return fm.fileExists(atPath: dir.appendingPathComponent("image/manifest.json").path)
            && fm.fileExists(atPath: dir.appendingPathComponent("text/manifest.json").path)
    }

    /// An absolute path, or the name of a folder that `list` finds (e.g. "coreml-fp16").
    static func resolve(_ name: String) -> URL {
        if name.hasPrefix("/") {
            return URL(fileURLWithPath: name)
        }
        return list().first { $0.lastPathComponent == name } ?? documents.appendingPathComponent(name)
    }
}

/// The screen's state; all model work runs on one background queue.
final class ClipModel: ObservableObject {
    @Published var exports: [String] = []
    @Published var selected = ""
    @Published var computeUnits: ComputeUnitSetting = .all
    @Published var status = "Looking for export folders…"
    @Published var result = ""
    @Published var photo: UIImage?

    private var engine: ClipEngine? // touched on `queue` only
    private var started = false
    private let queue = DispatchQueue(label: "org.edgeclip.demo.work", qos: .userInitiated)

    /// Lists the export folders; in benchmark mode (launch arguments) runs the benchmark.
    func start() {
        if started { return }
        started = true
        let options: BenchmarkOptions?
        do {
            options = try BenchmarkOptions.parse(CommandLine.arguments)
        } catch {
            status = "Benchmark arguments: \(error)"
            return
        }
        if let options {
            runBenchmark(options)
            return
        }
        exports = Exports.list().map { $0.lastPathComponent }
        if let first = exports.first {
            selected = first // onChange loads it
        } else {
            status = "No export folder: copy one into the app's Documents (Finder or Files) or bundle it in Exports/ (README)."
        }
    }

    func load() {
        guard !selected.isEmpty else { return }
        let dir = Exports.resolve(selected)
        let units = computeUnits
        work("loading \(dir.lastPathComponent)") { [self] in
            engine = nil
            let start = Date()
            let loaded = try ClipEngine(dir: dir, computeUnits: units)
            engine = loaded
            let image = loaded.folder.image
            return String(format: "%@: %@ %@, image %@, D=%ld, %@, loaded in %.0f ms",
                          dir.lastPathComponent, image.model, image.precision, "\(image.inputs[0].shape)",
                          image.embedDim, units.rawValue, Date().timeIntervalSince(start) * 1000)
        }
    }

    func setPhoto(_ image: UIImage) {
        photo = image
        result = ""
    }

    func classify(labels text: String) {
        guard let photo else {
            status = "Pick or take a photo first."
            return
        }
        let labels = text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        guard !labels.isEmpty else {
            status = "Type at least one label."
            return
        }
        work("classifying") { [self] in
            guard let clip = engine else { throw EdgeclipException("no export folder loaded") }
            let rgb = try ClipEngine.rgb(from: photo)
            var start = Date()
            let imageEmbedding = try clip.embedImage(rgb)
            let imageMs = Date().timeIntervalSince(start) * 1000
            start = Date()
            let classifier = try ZeroShot.build(labels, ClipModel.TEMPLATES, clip.tokenizer, clip.textEncoder, clip.logitScale)
            let prompts = labels.count * ClipModel.TEMPLATES.count
            let textMs = Date().timeIntervalSince(start) * 1000 / Double(prompts)
            var lines = try classifier.topK(imageEmbedding, 5).map { p in
                String(format: "%@  %7.2f  %5.1f%%", p.label.padding(toLength: 20, withPad: " ", startingAt: 0),
                       p.score, 100 * p.probability)
            }
            lines.append("")
            lines.append(String(format: "image %.1f ms (preprocessing included) · text %.1f ms per prompt (%ld prompts)",
                                imageMs, textMs, prompts))
            let text = lines.joined(separator: "\n")
            DispatchQueue.main.async { self.result = text }
            return "Top \(min(5, labels.count)) of \(labels.count) labels"
        }
    }

    func goldenCheck() {
        work("golden self-check") { [self] in
            guard let clip = engine else { throw EdgeclipException("no export folder loaded") }
            let report = try GoldenCheck.run(clip)
            DispatchQueue.main.async { self.result = report.text }
            return report.passed ? "Golden self-check PASSED" : "Golden self-check FAILED"
        }
    }

    private func runBenchmark(_ options: BenchmarkOptions) {
        let dir = Exports.resolve(options.export)
        let profile = Exports.documents.appendingPathComponent("profile")
        status = "Benchmark of \(dir.lastPathComponent) (\(options.computeUnits.rawValue))…"
        queue.async {
            let ok = Benchmark.runAndMark(options, exportDir: dir, profileDir: profile) { line in
                DispatchQueue.main.async { self.status = line }
            }
            let done = (try? String(contentsOf: profile.appendingPathComponent("done.json"), encoding: .utf8)) ?? ""
            DispatchQueue.main.async {
                self.status = ok ? "Benchmark done: Documents/profile/" : "Benchmark FAILED (see done.json)"
                self.result = done
            }
        }
    }

    /// Runs `task` on the work queue; its result (or its error) becomes the status line.
    private func work(_ what: String, _ task: @escaping () throws -> String) {
        status = "\(what)…"
        queue.async {
            let line: String
            do {
                line = try task()
            } catch {
                line = "\(what) failed: \(error)"
            }
            DispatchQueue.main.async { self.status = line }
        }
    }

    /// Prompt templates averaged per label ("{}" is the label), a few of CLIP's ImageNet ones.
    static let TEMPLATES = [
        "a photo of a {}.",
        "a blurry photo of a {}.",
        "a photo of the large {}.",
        "a photo of the small {}.",
        "a close-up photo of a {}.",
    ]
}
