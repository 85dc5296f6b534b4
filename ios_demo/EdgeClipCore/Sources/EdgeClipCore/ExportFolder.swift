import Foundation

/// An edgeclip export folder, as an app receives it:
///
///     EXPORT/image/manifest.json   the image tower: model file (or bundle), preprocessing
///     EXPORT/text/manifest.json    the text tower: model file, tokenizer, vocabulary file
///     EXPORT/golden.json, golden.png, golden_input.png   (optional) the Python reference outputs
///
/// `open` reads both manifests and checks both model files' SHA-256 (and the
/// vocabulary's, when the manifest lists it), so a truncated download or a model swapped for
/// another fails at load time, naming the file, rather than classifying wrongly.
public final class ExportFolder {
    public static let IMAGE = "image"
    public static let TEXT = "text"

    public let dir: URL
    public let image: Manifest
    public let text: Manifest

    private init(_ dir: URL, _ image: Manifest, _ text: Manifest) {
        self.dir = dir
        self.image = image
        self.text = text
    }

    /// Reads and verifies the export folder `dir`; see the class comment.
    public static func open(_ dir: URL) throws -> ExportFolder {
        var isDirectory: ObjCBool = false
        if !FileManager.default.fileExists(atPath: dir.path, isDirectory: &isDirectory) || !isDirectory.boolValue {
            throw EdgeclipException("\(dir.path): no such folder")
        }
        for tower in [IMAGE, TEXT] {
            if !Manifest.isFile(dir.appendingPathComponent(tower).appendingPathComponent(Manifest.FILE_NAME)) {
                throw EdgeclipException("\(dir.path): not an export folder (expected image/"
                    + Manifest.FILE_NAME + " and text/" + Manifest.FILE_NAME + ")")
            }
        }
        let image = try Manifest.read(dir.appendingPathComponent(IMAGE))
        let text = try Manifest.read(dir.appendingPathComponent(TEXT))
        try expectTower(image, IMAGE)
        try expectTower(text, TEXT)
        // Both towers must come from one export: mixing them breaks the shared embedding space.
        if image.embedDim != text.embedDim {
            throw EdgeclipException("\(dir.path): image embed_dim \(image.embedDim)"
                + " differs from text embed_dim \(text.embedDim); the towers are from different models")
        }
        try image.verifyModelFile(dir.appendingPathComponent(IMAGE))
        try text.verifyModelFile(dir.appendingPathComponent(TEXT))
        try text.verifyListedFile(dir.appendingPathComponent(TEXT), text.tokenizer!.vocabFile)
        return ExportFolder(dir, image, text)
    }

    private static func expectTower(_ manifest: Manifest, _ tower: String) throws {
        if manifest.tower != tower {
            throw EdgeclipException("\(manifest.path.path): tower \"\(manifest.tower)\", expected \"\(tower)\"")
        }
    }

    public func imageDir() -> URL {
        return dir.appendingPathComponent(ExportFolder.IMAGE)
    }

    public func textDir() -> URL {
        return dir.appendingPathComponent(ExportFolder.TEXT)
    }

    /// The image tower's model file (or bundle folder).
    public func imageModel() -> URL {
        return image.modelFile(imageDir())
    }

    /// The text tower's model file (or bundle folder).
    public func textModel() -> URL {
        return text.modelFile(textDir())
    }

    /// The BPE vocabulary shipped beside the text model.
    public func vocabFile() -> URL {
        return textDir().appendingPathComponent(text.tokenizer!.vocabFile)
    }

    /// s in logits = s · image_emb · text_emb (the image manifest's; both carry the same).
    public func logitScale() -> Double {
        return image.logitScale
    }

    /// A tokenizer built from the shipped vocabulary and the text manifest's settings.
    public func tokenizer() throws -> ClipTokenizer {
        return try ClipTokenizer.fromManifest(text, textDir())
    }

    /// The image preprocessing the image manifest asks for.
    public func preprocessor() throws -> ImagePreprocessor {
        return try ImagePreprocessor(image.preprocessing)
    }
}
