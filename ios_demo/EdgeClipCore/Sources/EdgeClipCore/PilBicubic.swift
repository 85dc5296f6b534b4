import Foundation

/// Pillow's `Image.resize(size, Image.BICUBIC)` for 8-bit RGB, bit-exact (Pillow 13.0.0,
/// `src/libImaging/Resample.c`).
///
/// Why not any bicubic: resizers differ in kernel (a = -0.5 here, -0.75 elsewhere), in
/// whether they widen the kernel when shrinking (antialiasing: Pillow does, by the scale),
/// in rounding, and in clamping between passes. Each difference moves pixels by a few levels,
/// and CLIP's accuracy is measured on Pillow's pixels.
///
/// Pillow's algorithm: separable, one pass per axis that changes size. For each output
/// position it takes the source interval the output pixel covers, a cubic kernel stretched by
/// max(scale, 1) (support 2·max(scale, 1)), weights normalised to sum 1, then converted to
/// fixed point with 22 fractional bits (rounded half away from zero). Each pass sums
/// pixel·weight in an int starting at 0.5 (for rounding), shifts right by 22 and clips to
/// 0..255, so the intermediate image is 8-bit too. The horizontal pass runs first, over only
/// the source rows the vertical pass will read, unless the height shrinks by more than twice
/// as many pixels as the width does, in which case the vertical pass runs first.
public enum PilBicubic {
    /// Pillow's PRECISION_BITS: 32 - 8 - 2.
    static let PRECISION_BITS = 22
    private static let SUPPORT = 2.0 // the bicubic filter's support

    /// Pillow's bicubic_filter, a = -0.5 (Keys' cubic convolution).
    static func bicubic(_ xIn: Double) -> Double {
        let a = -0.5
        var x = xIn
        if x < 0.0 {
            x = -x
        }
        if x < 1.0 {
            return ((a + 2.0) * x - (a + 3.0)) * x * x + 1
        }
        if x < 2.0 {
            return (((x - 5) * x + 8) * x - 4) * a
        }
        return 0.0
    }

    /// Weights of one axis: for output i, source [start[i], start[i] + count[i]) with weights[i].
    struct Coefficients {
        let start: [Int]
        let count: [Int]
        let weights: [[Int]] // fixed point, PRECISION_BITS fractional bits
    }

    /// Pillow's precompute_coeffs (box = the whole axis) followed by normalize_coeffs_8bpc.
    static func coefficients(_ inSize: Int, _ outSize: Int) -> Coefficients {
        let scale = Double(inSize) / Double(outSize)
        let filterScale = scale < 1.0 ? 1.0 : scale
        let support = SUPPORT * filterScale
        let invFilterScale = 1.0 / filterScale
        var start = [Int](repeating: 0, count: outSize)
        var count = [Int](repeating: 0, count: outSize)
        var weights = [[Int]](repeating: [], count: outSize)
        for xx in 0..<outSize {
            let center = (Double(xx) + 0.5) * scale // box starts at 0: in0 + (xx + 0.5) * scale
            // Int() truncates toward zero, as C's cast does; then clamp to the image.
            var xmin = Int(center - support + 0.5)
            if xmin < 0 {
                xmin = 0
            }
            var xmax = Int(center + support + 0.5)
            if xmax > inSize {
                xmax = inSize
            }
            xmax -= xmin
            var k = [Double](repeating: 0, count: max(xmax, 0))
            var ww = 0.0
            for x in 0..<max(xmax, 0) {
                // Same operation order as C: ((x + xmin) - center + 0.5) * inv_filterscale.
                let w = bicubic((Double(x + xmin) - center + 0.5) * invFilterScale)
                k[x] = w
                ww += w
            }
            var fixed = [Int](repeating: 0, count: max(xmax, 0))
            for x in 0..<max(xmax, 0) {
                let v = ww != 0.0 ? k[x] / ww : k[x]
                // normalize_coeffs_8bpc: round half away from zero into fixed point.
                fixed[x] = v < 0 ? Int(-0.5 + v * Double(1 << PRECISION_BITS))
                    : Int(0.5 + v * Double(1 << PRECISION_BITS))
            }
            start[xx] = xmin
            count[xx] = xmax
            weights[xx] = fixed
        }
        return Coefficients(start: start, count: count, weights: weights)
    }

    /// Pillow's clip8: the accumulated sum shifted back to 8 bits and clamped to 0..255.
    static func clip8(_ sum: Int) -> UInt8 {
        let v = sum >> PRECISION_BITS // arithmetic shift, as C's >> on a negative int here
        if v < 0 {
            return 0
        }
        return v > 255 ? 255 : UInt8(v)
    }

    /// `image` resized to `outWidth`×`outHeight` exactly as Pillow's BICUBIC.
    public static func resize(_ image: RgbImage, _ outWidth: Int, _ outHeight: Int) throws -> RgbImage {
        if outWidth < 1 || outHeight < 1 {
            throw EdgeclipException("resize target must be at least 1x1, got \(outWidth)x\(outHeight)")
        }
        let needHorizontal = outWidth != image.width
        let needVertical = outHeight != image.height
        if !needHorizontal && !needVertical {
            return try RgbImage(width: image.width, height: image.height, rgb: image.rgb)
        }
        // Pillow (since 11.x) runs the vertical pass first when the height shrinks by more than
        // twice as many pixels as the width, to make the horizontal pass cheaper. The order
        // changes the result (each pass rounds to 8 bits), so it is mirrored.
        let horizontalFirst = !((image.height - outHeight) > 0
            && (image.height - outHeight) > (image.width - outWidth) * 2)
        let vertical = coefficients(image.height, outHeight)
        let horizontal: Coefficients? = needHorizontal ? coefficients(image.width, outWidth) : nil

        var current = image
        if horizontalFirst {
            if needHorizontal {
                // Only the rows the vertical pass reads: from the first row of its first window
                // to the last row of its last window.
                let firstRow = vertical.start[0]
                let lastRow = vertical.start[outHeight - 1] + vertical.count[outHeight - 1]
                current = try horizontalPass(current, horizontal!, outWidth, firstRow, lastRow - firstRow)
                if needVertical {
                    current = try verticalPass(current, vertical, outHeight, firstRow)
                }
            } else {
                current = try verticalPass(current, vertical, outHeight, 0)
            }
        } else {
            if needVertical {
                current = try verticalPass(current, vertical, outHeight, 0)
            }
            if needHorizontal {
                current = try horizontalPass(current, horizontal!, outWidth, 0, outHeight)
            }
        }
        return current
    }

    /// Resamples each of `rows` rows starting at source row `firstRow` horizontally.
    private static func horizontalPass(_ input: RgbImage, _ c: Coefficients, _ outWidth: Int,
                                       _ firstRow: Int, _ rows: Int) throws -> RgbImage {
        var out = [UInt8](repeating: 0, count: outWidth * rows * 3)
        let half = 1 << (PRECISION_BITS - 1)
        let src = input.rgb
        for yy in 0..<rows {
            let rowStart = (yy + firstRow) * input.width * 3
            for xx in 0..<outWidth {
                let xmin = c.start[xx]
                let k = c.weights[xx]
                var ss0 = half
                var ss1 = half
                var ss2 = half
                for x in 0..<c.count[xx] {
                    let p = rowStart + (x + xmin) * 3
                    ss0 += Int(src[p]) * k[x]
                    ss1 += Int(src[p + 1]) * k[x]
                    ss2 += Int(src[p + 2]) * k[x]
                }
                let o = (yy * outWidth + xx) * 3
                out[o] = clip8(ss0)
                out[o + 1] = clip8(ss1)
                out[o + 2] = clip8(ss2)
            }
        }
        return try RgbImage(width: outWidth, height: rows, rgb: out)
    }

    /// Resamples vertically; `rowOffset` is the source row that `input`'s first row
    /// stands for (the horizontal pass may have computed only a band of rows).
    private static func verticalPass(_ input: RgbImage, _ c: Coefficients, _ outHeight: Int,
                                     _ rowOffset: Int) throws -> RgbImage {
        let width = input.width
        var out = [UInt8](repeating: 0, count: width * outHeight * 3)
        let half = 1 << (PRECISION_BITS - 1)
        let src = input.rgb
        for yy in 0..<outHeight {
            let ymin = c.start[yy] - rowOffset
            let k = c.weights[yy]
            for xx in 0..<width {
                var ss0 = half
                var ss1 = half
                var ss2 = half
                for y in 0..<c.count[yy] {
                    let p = ((y + ymin) * width + xx) * 3
                    ss0 += Int(src[p]) * k[y]
                    ss1 += Int(src[p + 1]) * k[y]
                    ss2 += Int(src[p + 2]) * k[y]
                }
                let o = (yy * width + xx) * 3
                out[o] = clip8(ss0)
                out[o + 1] = clip8(ss1)
                out[o + 2] = clip8(ss2)
            }
        }
        return try RgbImage(width: width, height: outHeight, rgb: out)
    }
}
