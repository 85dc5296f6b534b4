import Foundation

/// Decoded 8-bit RGB pixels, row-major, interleaved (HWC): the byte for channel c of pixel
/// (x, y) is `rgb[(y * width + x) * 3 + c]`.
///
/// The core never decodes image files: the app decodes with its platform (BitmapFactory,
/// CGImage) and hands over pixels.
public struct RgbImage {
    public let width: Int
    public let height: Int
    public let rgb: [UInt8]

    public init(width: Int, height: Int, rgb: [UInt8]) throws {
        if width < 1 || height < 1 {
            throw EdgeclipException("image size must be at least 1x1, got \(width)x\(height)")
        }
        if rgb.count != width * height * 3 {
            throw EdgeclipException("RGB buffer holds \(rgb.count) bytes; a \(width)x"
                + "\(height) image needs \(width * height * 3)")
        }
        self.width = width
        self.height = height
        self.rgb = rgb
    }

    /// From packed ARGB ints (Android's `Bitmap.getPixels`, Java's getRGB), alpha ignored.
    ///
    /// Fully opaque images (camera photos, JPEGs) are what this expects; composite a
    /// translucent image onto a background first.
    public static func fromArgb(_ width: Int, _ height: Int, _ argb: [UInt32]) throws -> RgbImage {
        if argb.count != width * height {
            throw EdgeclipException("ARGB buffer holds \(argb.count) pixels; a \(width)x"
                + "\(height) image needs \(width * height)")
        }
        var rgb = [UInt8](repeating: 0, count: width * height * 3)
        for i in 0..<argb.count {
            let p = argb[i]
            rgb[i * 3] = UInt8(truncatingIfNeeded: p >> 16)
            rgb[i * 3 + 1] = UInt8(truncatingIfNeeded: p >> 8)
            rgb[i * 3 + 2] = UInt8(truncatingIfNeeded: p)
        }
        return try RgbImage(width: width, height: height, rgb: rgb)
    }

    /// From RGBA (or RGBX) bytes, 4 per pixel, as a CGContext with 8 bits per component draws
    /// them; the fourth byte is ignored. (iOS's counterpart of fromArgb.)
    public static func fromRgba(_ width: Int, _ height: Int, _ rgba: [UInt8]) throws -> RgbImage {
        if rgba.count != width * height * 4 {
            throw EdgeclipException("RGBA buffer holds \(rgba.count) bytes; a \(width)x"
                + "\(height) image needs \(width * height * 4)")
        }
        var rgb = [UInt8](repeating: 0, count: width * height * 3)
        for i in 0..<(width * height) {
            rgb[i * 3] = rgba[i * 4]
            rgb[i * 3 + 1] = rgba[i * 4 + 1]
            rgb[i * 3 + 2] = rgba[i * 4 + 2]
        }
        return try RgbImage(width: width, height: height, rgb: rgb)
    }

    /// Channel `c` (0 = R, 1 = G, 2 = B) of pixel (x, y), 0..255.
    public func get(_ x: Int, _ y: Int, _ c: Int) -> Int {
        return Int(rgb[(y * width + x) * 3 + c])
    }

    /// The `w`×`h` region whose top-left pixel is (left, top); it must lie inside.
    public func crop(_ left: Int, _ top: Int, _ w: Int, _ h: Int) throws -> RgbImage {
        if left < 0 || top < 0 || left + w > width || top + h > height {
            throw EdgeclipException("crop \(w)x\(h) at (\(left), \(top)) leaves the \(width)x\(height) image")
        }
        var out = [UInt8](repeating: 0, count: w * h * 3)
        for y in 0..<h {
            let src = ((top + y) * width + left) * 3
            out.replaceSubrange((y * w * 3)..<((y + 1) * w * 3), with: rgb[src..<(src + w * 3)])
        }
        return try RgbImage(width: w, height: h, rgb: out)
    }
}
