// swift-tools-version:5.9
// EdgeClipCore: the Swift twin of the Java core in android_demo/core (manifests, tokenizer, image
// preprocessing, zero-shot, benchmark records), plus the Core ML encoder and the benchmark mode.
import PackageDescription

let package = Package(
    name: "EdgeClipCore",
    platforms: [.iOS(.v16), .macOS(.v13)],
    products: [
        .library(name: "EdgeClipCore", targets: ["EdgeClipCore"]),
    ],
    targets: [
        .target(name: "EdgeClipCore"),
        .testTarget(name: "EdgeClipCoreTests", dependencies: ["EdgeClipCore"]),
    ]
)
