import CoreML
import Foundation

/// The benchmark mode's settings, from the app's launch arguments:
///
///     -benchmark coreml-fp16 -runs 50 -warmup 5 -computeUnits cpuAndNeuralEngine
///
/// (`xcrun devicectl device process launch ... org.edgeclip.demo -benchmark ...` or
/// `xcrun simctl launch booted org.edgeclip.demo -benchmark ...`; see ios_demo/README.md).
public struct BenchmarkOptions {
    /// The export folder's name (Documents/<name> or the app bundle's Exports/<name>) or an absolute path.
    public var export: String
    public var runs: Int = 50
    public var warmup: Int = 5
    public var computeUnits: ComputeUnitSetting = .all

    public init(export: String) {
        self.export = export
    }

    /// The options in `arguments` (CommandLine.arguments), or nil when there is no `-benchmark`.
    public static func parse(_ arguments: [String]) throws -> BenchmarkOptions? {
        func value(_ flag: String) -> String? {
            guard let i = arguments.firstIndex(of: flag), i + 1 < arguments.count else { return nil }
            return arguments[i + 1]
        }
        guard let export = value("-benchmark") else {
            return nil
        }
        var options = BenchmarkOptions(export: export)
        if let runs = value("-runs") {
            guard let n = Int(runs), n >= 1 else { throw EdgeclipException("-runs \(runs): expected an integer >= 1") }
            options.runs = n
        }
        if let warmup = value("-warmup") {
            guard let n = Int(warmup), n >= 0 else { throw EdgeclipException("-warmup \(warmup): expected an integer >= 0") }
            options.warmup = n
        }
        if let units = value("-computeUnits") {
            guard let setting = ComputeUnitSetting(rawValue: units) else {
                throw EdgeclipException("-computeUnits \(units): expected one of "
                    + ComputeUnitSetting.allCases.map { $0.rawValue }.joined(separator: ", "))
            }
            options.computeUnits = setting
        }
        return options
    }
}

/// Times both Core ML towers of an export folder and writes one profile record per tower
/// (`BenchmarkRecord`, the same record as the Android app's and edgeclip's profiler) to
/// `<profileDir>/<tower>.json`, then `<profileDir>/done.json`.
public enum Benchmark {

    /// Runs the benchmark and always ends by writing done.json ({"ok": true, "records": [...]}
    /// or {"ok": false, "error": "..."}); returns whether it succeeded.
    @discardableResult
    public static func runAndMark(_ options: BenchmarkOptions, exportDir: URL, profileDir: URL,
                                  progress: (String) -> Void = { _ in }) -> Bool {
        let done = profileDir.appendingPathComponent("done.json")
        try? FileManager.default.removeItem(at: done)
        var result = OrderedMap()
        result.put("export", options.export)
        result.put("runs", options.runs)
        result.put("warmup", options.warmup)
        result.put("compute_units", options.computeUnits.rawValue)
        var ok = false
        do {
            let written = try run(options, exportDir: exportDir, profileDir: profileDir, progress: progress)
            result.put("ok", true)
            result.put("records", written.map { $0.path as Any })
            ok = true
        } catch {
            result.put("ok", false)
            result.put("error", "\(error)")
        }
        do {
            try FileManager.default.createDirectory(at: profileDir, withIntermediateDirectories: true)
            try Data((JsonWriter.write(result) + "\n").utf8).write(to: done, options: .atomic)
        } catch {
            progress("cannot write \(done.path): \(error)")
        }
        return ok
    }

    /// Measures both towers of `exportDir`; returns the records written.
    public static func run(_ options: BenchmarkOptions, exportDir: URL, profileDir: URL,
                           progress: (String) -> Void = { _ in }) throws -> [URL] {
        let folder = try ExportFolder.open(exportDir) // manifests and sha256 of both models
        let golden = exportDir.appendingPathComponent("golden.png")
        let picture = try Manifest.isFile(golden)
            ? RgbImage.decode(golden)
            : RgbImage(width: 256, height: 256, rgb: [UInt8](repeating: 128, count: 256 * 256 * 3))
        let image = try folder.preprocessor().preprocess(picture)
        let tokens = try folder.tokenizer().tokenize("a photo of a dog.")
        try FileManager.default.createDirectory(at: profileDir, withIntermediateDirectories: true)
        var written: [URL] = []
        for (towerDir, manifest) in [(folder.imageDir(), folder.image), (folder.textDir(), folder.text)] {
            progress("\(manifest.tower): compiling")
            // Compiling (first launch only) is not loading: it is done, and timed, apart.
            var t0 = now()
            _ = try CoreMLEncoder.compiledModel(package: manifest.modelFile(towerDir), sha256: manifest.sha256)
            let compileMs = msSince(t0)
            progress("\(manifest.tower): loading")
            t0 = now()
            let encoder = try CoreMLEncoder(towerDir: towerDir, manifest: manifest, computeUnits: options.computeUnits)
            let loadMs = msSince(t0)
            let infer: () throws -> Void = {
                if manifest.tower == "image" {
                    _ = try encoder.embed(image: image)
                } else {
                    _ = try encoder.embed(tokens: tokens)
                }
            }
            t0 = now()
            try infer()
            let firstMs = msSince(t0)
            progress("\(manifest.tower): \(options.warmup) warm-up runs")
            for _ in 0..<options.warmup {
                try infer()
            }
            progress("\(manifest.tower): \(options.runs) timed runs")
            var times: [Double] = []
            for _ in 0..<options.runs {
                let start = now()
                try infer()
                times.append(msSince(start))
            }
            let record = try BenchmarkRecord(manifest, exportDir.lastPathComponent, "coreml (\(osName()))",
                                             options.computeUnits.rawValue, options.warmup, times)
            record.loadMs = loadMs
            record.firstInferenceMs = firstMs
            record.threads = nil // Core ML chooses
            record.peakRssMb = peakRssMb()
            record.device = deviceFacts()
            var environment = OrderedMap()
            environment.put("app", "org.edgeclip.demo " + (Bundle.main.infoDictionary?["CFBundleShortVersionString"] as? String ?? "?"))
            environment.put("os", osName())
            environment.put("compile_ms", compileMs)
            environment.put("exported_with", (manifest.raw["libraries"] as? [String: Any])?["coremltools"])
            record.environment = environment
            let file = profileDir.appendingPathComponent("\(manifest.tower).json")
            try record.write(file) // written aside, then renamed into place
            written.append(file)
            progress("\(manifest.tower): p50 \(record.latency.p50) ms")
        }
        return written
    }

    private static func now() -> UInt64 {
        return DispatchTime.now().uptimeNanoseconds
    }

    private static func msSince(_ start: UInt64) -> Double {
        return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6
    }

    static func osName() -> String {
        let v = ProcessInfo.processInfo.operatingSystemVersion
        #if os(iOS)
        let name = "iOS"
        #else
        let name = "macOS"
        #endif
        return "\(name) \(v.majorVersion).\(v.minorVersion).\(v.patchVersion)"
    }

    /// The process's peak resident memory so far (getrusage's ru_maxrss, bytes on Darwin), in MB.
    static func peakRssMb() -> Double? {
        var usage = rusage()
        guard getrusage(RUSAGE_SELF, &usage) == 0 else {
            return nil
        }
        return Double(usage.ru_maxrss) / (1024 * 1024)
    }

    /// What the device is: its model identifier (hw.machine, e.g. "iPhone16,1"), OS and cores.
    public static func deviceFacts() -> OrderedMap {
        var facts = OrderedMap()
        facts.put("kind", "apple-app")
        facts.put("model", sysctlString("hw.machine"))
        facts.put("soc", nil)
        facts.put("os", osName())
        facts.put("cores", ProcessInfo.processInfo.activeProcessorCount)
        return facts
    }

    private static func sysctlString(_ name: String) -> String? {
        var size = 0
        guard sysctlbyname(name, nil, &size, nil, 0) == 0, size > 0 else {
            return nil
        }
        var buffer = [CChar](repeating: 0, count: size)
        guard sysctlbyname(name, &buffer, &size, nil, 0) == 0 else {
            return nil
        }
        return String(cString: buffer)
    }
}
