import Foundation

/// The image tower's input, exactly as edgeclip's Python transform makes it
/// (`compress/data/transforms.py` ImageTransform: pixels, then normalize), which is
/// open_clip's eval transform:
///
/// 1. resize so the shorter side is S (the longer one becomes `int(S * long / short)`,
///    truncated), with Pillow's antialiased BICUBIC (`PilBicubic`); skipped when the
///    image already has that size;
/// 2. centre crop S×S at `round((new - S) / 2)`, Python's round (half to even);
/// 3. `x / 255` then `(x - mean) / std` per channel, in float32 and in that order
///    (so the result is bit-identical to numpy's float32), laid out NCHW with N = 1.
///
/// The manifest's preprocessing block is checked against what is implemented here; anything
/// else is refused rather than approximated (bilinear instead of bicubic or the wrong mean are
/// the classic silent accuracy losses of shipped CLIP apps).
public final class ImagePreprocessor {
    /// The output side S.
    public let size: Int
    private let mean: [Float]
    private let std: [Float]

    public init(_ spec: Manifest.Preprocessing?) throws {
        guard let spec = spec else {
            throw EdgeclipException("no preprocessing block (is this the image tower's manifest?)")
        }
        try ImagePreprocessor.expect("resize", spec.resize, "shortest_side")
        try ImagePreprocessor.expect("interpolation", spec.interpolation, "bicubic")
        try ImagePreprocessor.expect("crop", spec.crop, "center")
        try ImagePreprocessor.expect("color", spec.color, "rgb")
        try ImagePreprocessor.expect("layout", spec.layout, "NCHW")
        if spec.size.count != 2 || spec.size[0] != spec.size[1] || spec.size[0] < 1 {
            throw EdgeclipException("preprocessing size \(spec.size)"
                + " is not supported; this app implements square sizes [S, S]")
        }
        if spec.valueRange.count != 2 || spec.valueRange[0] != 0.0 || spec.valueRange[1] != 1.0 {
            throw EdgeclipException("preprocessing value_range \(spec.valueRange)"
                + " is not supported; this app implements [0.0, 1.0] (x / 255)")
        }
        if spec.mean.count != 3 || spec.std.count != 3 {
            throw EdgeclipException("preprocessing mean and std need 3 values (RGB), got "
                + "\(spec.mean.count) and \(spec.std.count)")
        }
        self.size = spec.size[0]
        // numpy builds float32 arrays from the Python floats: round each double to float once.
        self.mean = [Float(spec.mean[0]), Float(spec.mean[1]), Float(spec.mean[2])]
        self.std = [Float(spec.std[0]), Float(spec.std[1]), Float(spec.std[2])]
    }

    private static func expect(_ field: String, _ actual: String, _ implemented: String) throws {
        if implemented != actual {
            throw EdgeclipException("preprocessing \(field) \"\(actual)"
                + "\" is not supported; this app implements \"\(implemented)\"")
        }
    }

    /// The whole transform: pixels → the float32 NCHW tensor (1·3·S·S values).
    public func preprocess(_ image: RgbImage) throws -> [Float] {
        return try toTensor(resizeAndCrop(image))
    }

    /// Steps 1 and 2: the S×S uint8 pixels the tensor is made from.
    public func resizeAndCrop(_ image: RgbImage) throws -> RgbImage {
        let s = size
        let w = image.width
        let h = image.height
        if w == s && h == s {
            return image
        }
        let newW: Int
        let newH: Int
        // Like torchvision: the shorter side becomes s, the longer one is truncated. Python
        // computes int(s * h / w) with a float division; Swift's Double division rounds alike.
        if w <= h {
            newW = s
            newH = Int(Double(s * h) / Double(w))
        } else {
            newW = Int(Double(s * w) / Double(h))
            newH = s
        }
        let resized = try (newW == w && newH == h) ? image : PilBicubic.resize(image, newW, newH)
        if newW == s && newH == s {
            return resized
        }
        return try resized.crop(ImagePreprocessor.roundHalfEven(newW - s), ImagePreprocessor.roundHalfEven(newH - s), s, s)
    }

    /// Python's `round(d / 2)` for an integer d >= 0: halves go to the even neighbour.
    static func roundHalfEven(_ d: Int) -> Int {
        var half = d / 2
        if d % 2 == 1 && half % 2 == 1 {
            half += 1 // e.g. 1.5 → 2 and 9.5 → 10, but 0.5 → 0 and 8.5 → 8
        }
        return half
    }

    /// Step 3: S×S pixels → (pixel / 255 - mean) / std, float32, channel-major (NCHW).
    public func toTensor(_ cropped: RgbImage) throws -> [Float] {
        if cropped.width != size || cropped.height != size {
            throw EdgeclipException("toTensor takes \(size)x\(size) pixels, got "
                + "\(cropped.width)x\(cropped.height); call resizeAndCrop first")
        }
        let plane = size * size
        var out = [Float](repeating: 0, count: 3 * plane)
        for c in 0..<3 {
            for i in 0..<plane {
                // Two float32 operations, rounded separately, as numpy does them.
                let x = Float(cropped.rgb[i * 3 + c]) / Float(255.0)
                out[c * plane + i] = (x - mean[c]) / std[c]
            }
        }
        return out
    }
}
