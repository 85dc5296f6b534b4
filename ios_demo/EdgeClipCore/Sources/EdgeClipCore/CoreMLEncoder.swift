import CoreML
import Foundation

/// Where Core ML may run a model: `MLModelConfiguration.computeUnits`, by the names the app's
/// setting and the `-computeUnits` launch argument use.
public enum ComputeUnitSetting: String, CaseIterable, Identifiable {
    case cpuOnly
    case cpuAndGPU
    case cpuAndNeuralEngine
    case all

    public var id: String { rawValue }

    public var mlComputeUnits: MLComputeUnits {
        switch self {
        case .cpuOnly: return .cpuOnly
        case .cpuAndGPU: return .cpuAndGPU
        case .cpuAndNeuralEngine: return .cpuAndNeuralEngine
        case .all: return .all
        }
    }
}

/// One exported tower (`model.mlpackage`) loaded into Core ML. The package is compiled at first use
/// with `MLModel.compileModel(at:)` and the compiled `.mlmodelc` is kept in Caches, keyed by the
/// package's SHA-256 from the manifest and the OS version, so later launches load it directly.
/// The input is the manifest's single input (`image` float32 [1,3,S,S] or `tokens` int32 [1,C]);
/// the output is `embedding` float32 [1,D], already L2-normalised.
public final class CoreMLEncoder {
    public let manifest: Manifest
    public let model: MLModel
    private let inputName: String
    private let inputShape: [Int]
    private let inputType: MLMultiArrayDataType
    private let outputName: String

    public init(towerDir: URL, manifest: Manifest, computeUnits: ComputeUnitSetting) throws {
        guard manifest.file.hasSuffix(".mlpackage") else {
            throw EdgeclipException("\(manifest.tower) tower: \(manifest.file) is not a Core ML package (target \(manifest.target))")
        }
        guard manifest.inputs.count == 1, let input = manifest.inputs.first,
              let output = manifest.outputs.first else {
            throw EdgeclipException("\(manifest.tower) tower: expected one input and one output in the manifest")
        }
        switch input.dtype {
        case "float32": inputType = .float32
        case "int32": inputType = .int32
        default:
            throw EdgeclipException("\(manifest.tower) tower: input dtype \(input.dtype) (Core ML takes float32 or int32)")
        }
        self.manifest = manifest
        self.inputName = input.name
        self.inputShape = input.shape.map { Int($0) }
        self.outputName = output.name
        let compiled = try CoreMLEncoder.compiledModel(
            package: towerDir.appendingPathComponent(manifest.file), sha256: manifest.sha256)
        let configuration = MLModelConfiguration()
        configuration.computeUnits = computeUnits.mlComputeUnits
        self.model = try MLModel(contentsOf: compiled, configuration: configuration)
    }

    /// The image tower: a preprocessed NCHW float32 image of the manifest's shape.
    public func embed(image nchw: [Float]) throws -> [Float] {
        let array = try makeInput(.float32, count: nchw.count)
        array.withUnsafeMutableBufferPointer(ofType: Float.self) { dst, _ in
            for i in 0..<nchw.count { dst[i] = nchw[i] }
        }
        return try predict(array)
    }

    /// The text tower: token ids (the core's int64 ids, as int32: Core ML has no int64).
    public func embed(tokens: [Int64]) throws -> [Float] {
        let array = try makeInput(.int32, count: tokens.count)
        for id in tokens where Int32(exactly: id) == nil {
            throw EdgeclipException("token id \(id) does not fit int32")
        }
        array.withUnsafeMutableBufferPointer(ofType: Int32.self) { dst, _ in
            for i in 0..<tokens.count { dst[i] = Int32(tokens[i]) }
        }
        return try predict(array)
    }

    /// A fresh (so contiguous, row-major) multiarray of the manifest's input shape.
    private func makeInput(_ type: MLMultiArrayDataType, count: Int) throws -> MLMultiArray {
        guard type == inputType else {
            throw EdgeclipException("\(manifest.tower) tower: its input is not \(type == .int32 ? "int32" : "float32")")
        }
        let array = try MLMultiArray(shape: inputShape.map { NSNumber(value: $0) }, dataType: type)
        guard array.count == count else {
            throw EdgeclipException("\(manifest.tower) tower: \(count) input values for shape \(inputShape)")
        }
        return array
    }

    private func predict(_ input: MLMultiArray) throws -> [Float] {
        let features = try MLDictionaryFeatureProvider(dictionary: [inputName: MLFeatureValue(multiArray: input)])
        let result = try model.prediction(from: features)
        guard let out = result.featureValue(for: outputName)?.multiArrayValue else {
            throw EdgeclipException("\(manifest.tower) tower: no output named \(outputName)")
        }
        // [1, D] (or [D]), read by index so that strides and the output's data type do not matter.
        let dim = out.shape.last?.intValue ?? 0
        let lead = [NSNumber](repeating: NSNumber(value: 0), count: max(out.shape.count - 1, 0))
        var embedding = [Float](repeating: 0, count: dim)
        for i in 0..<dim {
            embedding[i] = out[lead + [NSNumber(value: i)]].floatValue
        }
        return embedding
    }

    /// The compiled model for `package`, compiling and caching it on first use.
    public static func compiledModel(package: URL, sha256: String) throws -> URL {
        let fileManager = FileManager.default
        let os = ProcessInfo.processInfo.operatingSystemVersion
        let caches = try fileManager.url(for: .cachesDirectory, in: .userDomainMask, appropriateFor: nil, create: true)
            .appendingPathComponent("EdgeClipCompiledModels", isDirectory: true)
        try fileManager.createDirectory(at: caches, withIntermediateDirectories: true)
        let key = "\(sha256)-os\(os.majorVersion).\(os.minorVersion).\(os.patchVersion)"
        let cached = caches.appendingPathComponent("\(key).mlmodelc", isDirectory: true)
        if fileManager.fileExists(atPath: cached.path) {
            return cached
        }
        let temporary = try MLModel.compileModel(at: package) // a folder under the temporary directory
        do {
            try fileManager.moveItem(at: temporary, to: cached)
        } catch {
            // Another load compiled it meanwhile: keep that one.
            try? fileManager.removeItem(at: temporary)
            if !fileManager.fileExists(atPath: cached.path) { throw error }
        }
        return cached
    }
}
