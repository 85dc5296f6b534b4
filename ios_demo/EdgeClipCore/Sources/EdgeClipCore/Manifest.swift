import CryptoKit
import Foundation

/// One tower's `manifest.json` (edgeclip's `export/manifest.py`): what the model
/// file is, what it takes and gives, and how an app must prepare its input.
///
/// Only `SUPPORTED_VERSION` is read: a version bump means a field changed meaning,
/// and guessing would reintroduce exactly the silent glue bugs this library exists to prevent.
public final class Manifest {
    /// The manifest_version this code understands (edgeclip's MANIFEST_VERSION).
    public static let SUPPORTED_VERSION = 2
    /// The manifest's file name inside a tower folder.
    public static let FILE_NAME = "manifest.json"

    /// One model input or output: {"name", "shape", "dtype"}.
    public struct TensorSpec {
        public let name: String
        public let shape: [Int64]
        public let dtype: String

        public init(name: String, shape: [Int64], dtype: String) {
            self.name = name
            self.shape = shape
            self.dtype = dtype
        }
    }

    /// The image tower's "preprocessing" block: how pixels become the input tensor.
    public struct Preprocessing {
        /// Output [width, height]; edgeclip exports square inputs.
        public let size: [Int]
        public let resize: String
        public let interpolation: String
        public let crop: String
        public let color: String
        public let layout: String
        public let valueRange: [Double]
        public let mean: [Double]
        public let std: [Double]

        public init(size: [Int], resize: String, interpolation: String, crop: String,
                    color: String, layout: String, valueRange: [Double], mean: [Double], std: [Double]) {
            self.size = size
            self.resize = resize
            self.interpolation = interpolation
            self.crop = crop
            self.color = color
            self.layout = layout
            self.valueRange = valueRange
            self.mean = mean
            self.std = std
        }
    }

    /// The text tower's "tokenizer" block.
    public struct TokenizerSpec {
        public let kind: String
        /// The BPE merges file, in the text tower's folder.
        public let vocabFile: String
        public let contextLength: Int
        public let sotId: Int
        public let eotId: Int
        public let padId: Int

        public init(kind: String, vocabFile: String, contextLength: Int, sotId: Int, eotId: Int, padId: Int) {
            self.kind = kind
            self.vocabFile = vocabFile
            self.contextLength = contextLength
            self.sotId = sotId
            self.eotId = eotId
            self.padId = padId
        }
    }

    /// Where this manifest was read from (for messages).
    public let path: URL
    public let manifestVersion: Int
    public let model: String
    /// "image" or "text".
    public let tower: String
    /// The export target ("onnx", "executorch", "coreml").
    public let target: String
    /// The exported precision ("fp32", "fp16", "int8").
    public let precision: String
    /// The runtime the export was verified in.
    public let runtime: String
    /// The model file (or bundle folder) name inside the tower folder.
    public let file: String
    /// SHA-256 (hex) of the model file, or of a bundle folder's listing (see verifyModelFile).
    public let sha256: String
    /// SHA-256 of every shipped file by relative path; may be empty in older exports.
    public let files: [String: String]
    public let inputs: [TensorSpec]
    public let outputs: [TensorSpec]
    public let embedDim: Int
    /// s in logits = s · image_emb · text_emb.
    public let logitScale: Double
    /// Floating-point operations per call, counted at export; nil when not counted.
    public let flops: Int64?
    /// The image tower's preprocessing; nil for the text tower.
    public let preprocessing: Preprocessing?
    /// The text tower's tokenizer; nil for the image tower.
    public let tokenizer: TokenizerSpec?
    /// The whole parsed manifest, for fields not modelled here.
    public let raw: [String: Any]

    private init(_ path: URL, _ m: [String: Any]) throws {
        let location = path.path
        self.path = path
        self.raw = m
        self.manifestVersion = Manifest.SUPPORTED_VERSION
        self.model = try Json.asString(Json.require(m, "model", location), location + " model")
        let tower = try Json.asString(Json.require(m, "tower", location), location + " tower")
        self.tower = tower
        if tower != "image" && tower != "text" {
            throw EdgeclipException("\(location): tower \"\(tower)\", expected \"image\" or \"text\"")
        }
        self.target = try Json.asString(Json.require(m, "target", location), location + " target")
        self.precision = try Json.asString(Json.require(m, "precision", location), location + " precision")
        self.runtime = try Json.asString(Json.require(m, "runtime", location), location + " runtime")
        self.file = try Json.asString(Json.require(m, "file", location), location + " file")
        self.sha256 = try Json.asString(Json.require(m, "sha256", location), location + " sha256")
        var fileHashes: [String: String] = [:]
        if !Json.isNull(m["files"]) {
            for (key, value) in try Json.asObject(m["files"], location + " files") {
                fileHashes[key] = try Json.asString(value, location + " files." + key)
            }
        }
        self.files = fileHashes
        self.inputs = try Manifest.readSpecs(Json.require(m, "inputs", location), location + " inputs")
        self.outputs = try m["outputs"] != nil
            ? Manifest.readSpecs(m["outputs"], location + " outputs")
            : []
        self.embedDim = try Json.asInt(Json.require(m, "embed_dim", location), location + " embed_dim")
        self.logitScale = try Json.asDouble(Json.require(m, "logit_scale", location), location + " logit_scale")
        let flopsValue = m["flops"]
        self.flops = try Json.isNull(flopsValue) ? nil : Json.asLong(flopsValue, location + " flops")
        if tower == "image" {
            self.preprocessing = try Manifest.readPreprocessing(
                Json.asObject(Json.require(m, "preprocessing", location), location + " preprocessing"),
                location + " preprocessing")
            self.tokenizer = nil
        } else {
            self.preprocessing = nil
            self.tokenizer = try Manifest.readTokenizer(
                Json.asObject(Json.require(m, "tokenizer", location), location + " tokenizer"),
                location + " tokenizer")
        }
    }

    /// Reads `towerDir/manifest.json`, refusing any manifest_version but
    /// `SUPPORTED_VERSION` with a message naming the file and both versions.
    public static func read(_ towerDir: URL) throws -> Manifest {
        let path = towerDir.appendingPathComponent(FILE_NAME)
        if !isFile(path) {
            throw EdgeclipException("\(path.path): missing (every tower folder of an export has one)")
        }
        let m = try Json.asObject(Json.parse(path), path.path)
        // The version is checked before any other field: a newer manifest may have renamed them.
        let version = m["manifest_version"]
        guard let number = version as? NSNumber, Json.isInteger(number), number.int64Value == Int64(SUPPORTED_VERSION) else {
            throw EdgeclipException("\(path.path): manifest_version \(version.map { "\($0)" } ?? "nil"); this app reads "
                + "\(SUPPORTED_VERSION) (re-export the model with a matching edgeclip, or update the app)")
        }
        return try Manifest(path, m)
    }

    /// The model file (or bundle folder) this manifest describes, inside `towerDir`.
    public func modelFile(_ towerDir: URL) -> URL {
        return towerDir.appendingPathComponent(file)
    }

    /// Checks the model file's SHA-256 against the manifest: a plain file's bytes, or, for a
    /// bundle folder (Core ML's model.mlpackage), the SHA-256 of the UTF-8 listing that
    /// edgeclip's `sha256_path` hashes (see `sha256Path`).
    ///
    /// Throws an EdgeclipException naming the file when it is missing or differs.
    public func verifyModelFile(_ towerDir: URL) throws {
        let model = modelFile(towerDir)
        if !FileManager.default.fileExists(atPath: model.path) {
            throw EdgeclipException("\(model.path): missing (named by \(path.path))")
        }
        let actual = try Manifest.sha256Path(model)
        if actual != sha256 {
            throw EdgeclipException("\(model.path): sha256 \(actual) differs from \(sha256)"
                + " in \(path.path) (\(Manifest.pathBytes(model)) bytes); the file was changed or truncated")
        }
    }

    /// Checks one shipped file against the manifest's "files" table, when the table lists it
    /// (e.g. the tokenizer vocabulary); a file the table does not list is not checked.
    public func verifyListedFile(_ towerDir: URL, _ name: String) throws {
        guard let expected = files[name] else {
            return
        }
        let f = towerDir.appendingPathComponent(name)
        if !Manifest.isFile(f) {
            throw EdgeclipException("\(f.path): missing (listed in \(path.path))")
        }
        let actual = try Manifest.sha256File(f)
        if actual != expected {
            throw EdgeclipException("\(f.path): sha256 \(actual) differs from \(expected)"
                + " in \(path.path) (\(Manifest.pathBytes(f)) bytes); the file was changed or truncated")
        }
    }

    // ---- hashing, exactly as export/manifest.py ----------------------------------------

    /// SHA-256 (lower-case hex) of a file, or of a bundle folder: the UTF-8 bytes of the text
    /// made, for each file under it except ones named manifest.json, sorted by relative path,
    /// of `relpath + "  " + sha256(file) + "\n"`. Python sorts Path objects, i.e. by
    /// their lists of path components, so that is the order used here.
    public static func sha256Path(_ path: URL) throws -> String {
        if isFile(path) {
            return try sha256File(path)
        }
        var names: [String] = []
        try listFiles(path, "", &names)
        names.sort { comparePaths($0, $1) < 0 }
        var listing = ""
        for name in names {
            let digest = try sha256File(path.appendingPathComponent(name))
            listing += name + "  " + digest + "\n"
        }
        return hex(sha256(Array(listing.utf8)))
    }

    /// SHA-256 (lower-case hex) of a file's bytes, read in chunks.
    public static func sha256File(_ file: URL) throws -> String {
        var digest = SHA256()
        guard let handle = try? FileHandle(forReadingFrom: file) else {
            throw EdgeclipException("\(file.path): cannot read")
        }
        defer { try? handle.close() }
        while true {
            let chunk: Data
            do {
                chunk = try handle.read(upToCount: 1 << 16) ?? Data()
            } catch {
                throw EdgeclipException("\(file.path): cannot read (\(error.localizedDescription))")
            }
            if chunk.isEmpty {
                break
            }
            digest.update(data: chunk)
        }
        return hex(Array(digest.finalize()))
    }

    /// SHA-256 of bytes.
    public static func sha256(_ bytes: [UInt8]) -> [UInt8] {
        return Array(SHA256.hash(data: bytes))
    }

    /// Lower-case hex, as Python's hexdigest().
    public static func hex(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef")
        var out = ""
        out.reserveCapacity(bytes.count * 2)
        for b in bytes {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 0xF)])
        }
        return out
    }

    /// Every regular file under `dir` but ones named manifest.json, as relative POSIX paths.
    private static func listFiles(_ dir: URL, _ prefix: String, _ out: inout [String]) throws {
        guard let children = try? FileManager.default.contentsOfDirectory(
            at: dir, includingPropertiesForKeys: [.isDirectoryKey, .isRegularFileKey]) else {
            throw EdgeclipException("\(dir.path): cannot list the folder")
        }
        for child in children {
            let name = child.lastPathComponent
            let rel = prefix.isEmpty ? name : prefix + "/" + name
            let values = try? child.resourceValues(forKeys: [.isDirectoryKey, .isRegularFileKey])
            if values?.isDirectory == true {
                try listFiles(child, rel, &out)
            } else if values?.isRegularFile == true && name != FILE_NAME {
                out.append(rel)
            }
        }
    }

    /// Orders relative paths as Python orders Path objects: component by component, each by code points.
    static func comparePaths(_ a: String, _ b: String) -> Int {
        let pa = a.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        let pb = b.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        var i = 0
        while i < pa.count && i < pb.count {
            let c = compareCodePoints(pa[i], pb[i])
            if c != 0 {
                return c
            }
            i += 1
        }
        return pa.count < pb.count ? -1 : (pa.count > pb.count ? 1 : 0)
    }

    /// Python's str ordering (by code point); Swift's String `<` compares by Unicode canonical
    /// ordering instead, so scalars are compared one by one.
    static func compareCodePoints(_ a: String, _ b: String) -> Int {
        let sa = Array(a.unicodeScalars)
        let sb = Array(b.unicodeScalars)
        var i = 0
        while i < sa.count && i < sb.count {
            if sa[i] != sb[i] {
                return sa[i].value < sb[i].value ? -1 : 1
            }
            i += 1
        }
        return sa.count < sb.count ? -1 : (sa.count > sb.count ? 1 : 0)
    }

    private static func pathBytes(_ path: URL) -> Int64 {
        if isFile(path) {
            let attributes = try? FileManager.default.attributesOfItem(atPath: path.path)
            return (attributes?[.size] as? NSNumber)?.int64Value ?? 0
        }
        var total: Int64 = 0
        if let children = try? FileManager.default.contentsOfDirectory(at: path, includingPropertiesForKeys: nil) {
            for child in children {
                total += pathBytes(child)
            }
        }
        return total
    }

    /// A regular file (not a folder) exists at `url`.
    static func isFile(_ url: URL) -> Bool {
        var isDirectory: ObjCBool = false
        return FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory) && !isDirectory.boolValue
    }

    // ---- field readers -----------------------------------------------------------------

    private static func readSpecs(_ value: Any?, _ location: String) throws -> [TensorSpec] {
        var specs: [TensorSpec] = []
        let list = try Json.asList(value, location)
        for i in 0..<list.count {
            let at = "\(location)[\(i)]"
            let spec = try Json.asObject(list[i], at)
            specs.append(TensorSpec(
                name: try Json.asString(Json.require(spec, "name", at), at + " name"),
                shape: try Json.asLongArray(Json.require(spec, "shape", at), at + " shape"),
                dtype: try Json.asString(Json.require(spec, "dtype", at), at + " dtype")))
        }
        return specs
    }

    private static func readPreprocessing(_ p: [String: Any], _ location: String) throws -> Preprocessing {
        let size = try Json.asLongArray(Json.require(p, "size", location), location + " size")
        if size.count != 2 {
            throw EdgeclipException("\(location): size needs [width, height], got \(size.count) values")
        }
        return Preprocessing(
            size: [Int(size[0]), Int(size[1])],
            resize: try Json.asString(Json.require(p, "resize", location), location + " resize"),
            interpolation: try Json.asString(Json.require(p, "interpolation", location), location + " interpolation"),
            crop: try Json.asString(Json.require(p, "crop", location), location + " crop"),
            color: try Json.asString(Json.require(p, "color", location), location + " color"),
            layout: try Json.asString(Json.require(p, "layout", location), location + " layout"),
            valueRange: try p["value_range"] != nil
                ? Json.asDoubleArray(p["value_range"], location + " value_range")
                : [0.0, 1.0],
            mean: try Json.asDoubleArray(Json.require(p, "mean", location), location + " mean"),
            std: try Json.asDoubleArray(Json.require(p, "std", location), location + " std"))
    }

    private static func readTokenizer(_ t: [String: Any], _ location: String) throws -> TokenizerSpec {
        return TokenizerSpec(
            kind: try Json.asString(Json.require(t, "kind", location), location + " kind"),
            vocabFile: try Json.asString(Json.require(t, "vocab_file", location), location + " vocab_file"),
            contextLength: try Json.asInt(Json.require(t, "context_length", location), location + " context_length"),
            sotId: try Json.asInt(Json.require(t, "sot_id", location), location + " sot_id"),
            eotId: try Json.asInt(Json.require(t, "eot_id", location), location + " eot_id"),
            padId: try t["pad_id"] != nil ? Json.asInt(t["pad_id"], location + " pad_id") : 0)
    }
}
