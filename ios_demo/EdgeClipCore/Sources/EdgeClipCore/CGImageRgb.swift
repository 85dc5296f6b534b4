import CoreGraphics
import Foundation
import ImageIO

/// Decoding for Apple platforms (the core itself never decodes images; this is the platform
/// side, as BitmapFactory + RgbImage.fromArgb is on Android).
extension RgbImage {
    /// The pixels of `image`, drawn 1:1 (no scaling) into an 8-bit RGBX buffer in the image's
    /// own RGB colour space where it has one (so no colour conversion changes the values), else
    /// in sRGB. Alpha is dropped, as Python's convert("RGB") does for opaque images.
    public static func fromCGImage(_ image: CGImage) throws -> RgbImage {
        let width = image.width
        let height = image.height
        let space: CGColorSpace
        if let own = image.colorSpace, own.model == .rgb {
            space = own
        } else {
            space = CGColorSpace(name: CGColorSpace.sRGB)!
        }
        var rgba = [UInt8](repeating: 0, count: width * height * 4)
        let drawn: Bool = rgba.withUnsafeMutableBytes { buffer in
            guard let context = CGContext(data: buffer.baseAddress, width: width, height: height,
                                          bitsPerComponent: 8, bytesPerRow: width * 4, space: space,
                                          bitmapInfo: CGImageAlphaInfo.noneSkipLast.rawValue) else {
                return false
            }
            context.interpolationQuality = .none
            context.draw(image, in: CGRect(x: 0, y: 0, width: width, height: height))
            return true
        }
        if !drawn {
            throw EdgeclipException("cannot draw a \(width)x\(height) image into an RGB buffer")
        }
        return try fromRgba(width, height, rgba)
    }

    /// Decodes an image file (PNG, JPEG, HEIC ...) with ImageIO, at full size and untouched:
    /// golden.png must reach the core pixel-exact.
    public static func decode(_ file: URL) throws -> RgbImage {
        guard let source = CGImageSourceCreateWithURL(file as CFURL, nil),
              let image = CGImageSourceCreateImageAtIndex(source, 0, nil) else {
            throw EdgeclipException("\(file.path): cannot decode the image")
        }
        return try fromCGImage(image)
    }
}
