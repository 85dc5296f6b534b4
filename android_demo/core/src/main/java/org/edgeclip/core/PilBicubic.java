package org.edgeclip.core;

/**
 * Pillow's {@code Image.resize(size, Image.BICUBIC)} for 8-bit RGB, bit-exact (Pillow 13.0.0,
 * {@code src/libImaging/Resample.c}).
 *
 * <p>Why not any bicubic: resizers differ in kernel (a = -0.5 here, -0.75 elsewhere), in
 * whether they widen the kernel when shrinking (antialiasing: Pillow does, by the scale),
 * in rounding, and in clamping between passes. Each difference moves pixels by a few levels,
 * and CLIP's accuracy is measured on Pillow's pixels.
 *
 * <p>Pillow's algorithm: separable, one pass per axis that changes size. For each output
 * position it takes the source interval the output pixel covers, a cubic kernel stretched by
 * max(scale, 1) (support 2·max(scale, 1)), weights normalised to sum 1, then converted to
 * fixed point with 22 fractional bits (rounded half away from zero). Each pass sums
 * pixel·weight in an int starting at 0.5 (for rounding), shifts right by 22 and clips to
 * 0..255, so the intermediate image is 8-bit too. The horizontal pass runs first, over only
 * the source rows the vertical pass will read, unless the height shrinks by more than twice
 * as many pixels as the width does, in which case the vertical pass runs first.
 */
public final class PilBicubic {
    private PilBicubic() {}

    /** Pillow's PRECISION_BITS: 32 - 8 - 2. */
    static final int PRECISION_BITS = 22;
    private static final double SUPPORT = 2.0; // the bicubic filter's support

    /** Pillow's bicubic_filter, a = -0.5 (Keys' cubic convolution). */
    static double bicubic(double x) {
        final double a = -0.5;
        if (x < 0.0) {
            x = -x;
        }
        if (x < 1.0) {
            return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
        }
        if (x < 2.0) {
            return (((x - 5) * x + 8) * x - 4) * a;
        }
        return 0.0;
    }

    /** Weights of one axis: for output i, source [start[i], start[i] + count[i]) with weights[i]. */
    static final class Coefficients {
        final int[] start;
        final int[] count;
        final int[][] weights; // fixed point, PRECISION_BITS fractional bits

        Coefficients(int[] start, int[] count, int[][] weights) {
            this.start = start;
            this.count = count;
            this.weights = weights;
        }
    }

    /** Pillow's precompute_coeffs (box = the whole axis) followed by normalize_coeffs_8bpc. */
    static Coefficients coefficients(int inSize, int outSize) {
        double scale = (double) inSize / outSize;
        double filterScale = scale < 1.0 ? 1.0 : scale;
        double support = SUPPORT * filterScale;
        double invFilterScale = 1.0 / filterScale;
        int[] start = new int[outSize];
        int[] count = new int[outSize];
        int[][] weights = new int[outSize][];
        for (int xx = 0; xx < outSize; xx++) {
            double center = (xx + 0.5) * scale; // box starts at 0: in0 + (xx + 0.5) * scale
            // (int) truncates toward zero, as C's cast does; then clamp to the image.
            int xmin = (int) (center - support + 0.5);
            if (xmin < 0) {
                xmin = 0;
            }
            int xmax = (int) (center + support + 0.5);
            if (xmax > inSize) {
                xmax = inSize;
            }
            xmax -= xmin;
            double[] k = new double[xmax];
            double ww = 0.0;
            for (int x = 0; x < xmax; x++) {
                // Same operation order as C: ((x + xmin) - center + 0.5) * inv_filterscale.
                double w = bicubic((x + xmin - center + 0.5) * invFilterScale);
                k[x] = w;
                ww += w;
            }
            int[] fixed = new int[xmax];
            for (int x = 0; x < xmax; x++) {
                double v = ww != 0.0 ? k[x] / ww : k[x];
                // normalize_coeffs_8bpc: round half away from zero into fixed point.
                fixed[x] = v < 0 ? (int) (-0.5 + v * (1 << PRECISION_BITS))
                        : (int) (0.5 + v * (1 << PRECISION_BITS));
            }
            start[xx] = xmin;
            count[xx] = xmax;
            weights[xx] = fixed;
        }
        return new Coefficients(start, count, weights);
    }

    /** Pillow's clip8: the accumulated sum shifted back to 8 bits and clamped to 0..255. */
    static int clip8(int sum) {
        int v = sum >> PRECISION_BITS; // arithmetic shift, as C's >> on a negative int here
        if (v < 0) {
            return 0;
        }
        return v > 255 ? 255 : v;
    }

    /** {@code image} resized to {@code outWidth}×{@code outHeight} exactly as Pillow's BICUBIC. */
    public static RgbImage resize(RgbImage image, int outWidth, int outHeight) {
        if (outWidth < 1 || outHeight < 1) {
            throw new EdgeclipException("resize target must be at least 1x1, got " + outWidth + "x" + outHeight);
        }
        boolean needHorizontal = outWidth != image.width;
        boolean needVertical = outHeight != image.height;
        if (!needHorizontal && !needVertical) {
            return new RgbImage(image.width, image.height, image.rgb.clone());
        }
        // Pillow (since 11.x) runs the vertical pass first when the height shrinks by more than
        // twice as many pixels as the width, to make the horizontal pass cheaper. The order
        // changes the result (each pass rounds to 8 bits), so it is mirrored.
        boolean horizontalFirst = !((image.height - outHeight) > 0
                && (image.height - outHeight) > (image.width - outWidth) * 2);
        Coefficients vertical = coefficients(image.height, outHeight);
        Coefficients horizontal = needHorizontal ? coefficients(image.width, outWidth) : null;

        RgbImage current = image;
        if (horizontalFirst) {
            if (needHorizontal) {
                // Only the rows the vertical pass reads: from the first row of its first window
                // to the last row of its last window.
                int firstRow = vertical.start[0];
                int lastRow = vertical.start[outHeight - 1] + vertical.count[outHeight - 1];
                current = horizontalPass(current, horizontal, outWidth, firstRow, lastRow - firstRow);
                if (needVertical) {
                    current = verticalPass(current, vertical, outHeight, firstRow);
                }
            } else {
                current = verticalPass(current, vertical, outHeight, 0);
            }
        } else {
            if (needVertical) {
                current = verticalPass(current, vertical, outHeight, 0);
            }
            if (needHorizontal) {
                current = horizontalPass(current, horizontal, outWidth, 0, outHeight);
            }
        }
        return current;
    }

    /** Resamples each of {@code rows} rows starting at source row {@code firstRow} horizontally. */
    private static RgbImage horizontalPass(RgbImage in, Coefficients c, int outWidth, int firstRow, int rows) {
        byte[] out = new byte[outWidth * rows * 3];
        int half = 1 << (PRECISION_BITS - 1);
        for (int yy = 0; yy < rows; yy++) {
            int rowStart = (yy + firstRow) * in.width * 3;
            for (int xx = 0; xx < outWidth; xx++) {
                int xmin = c.start[xx];
                int[] k = c.weights[xx];
                int ss0 = half;
                int ss1 = half;
                int ss2 = half;
                for (int x = 0; x < c.count[xx]; x++) {
                    int p = rowStart + (x + xmin) * 3;
                    ss0 += (in.rgb[p] & 0xFF) * k[x];
                    ss1 += (in.rgb[p + 1] & 0xFF) * k[x];
                    ss2 += (in.rgb[p + 2] & 0xFF) * k[x];
                }
                int o = (yy * outWidth + xx) * 3;
                out[o] = (byte) clip8(ss0);
                out[o + 1] = (byte) clip8(ss1);
                out[o + 2] = (byte) clip8(ss2);
            }
        }
        return new RgbImage(outWidth, rows, out);
    }

    /**
     * Resamples vertically; {@code rowOffset} is the source row that {@code in}'s first row
     * stands for (the horizontal pass may have computed only a band of rows).
     */
    private static RgbImage verticalPass(RgbImage in, Coefficients c, int outHeight, int rowOffset) {
        int width = in.width;
        byte[] out = new byte[width * outHeight * 3];
        int half = 1 << (PRECISION_BITS - 1);
        for (int yy = 0; yy < outHeight; yy++) {
            int ymin = c.start[yy] - rowOffset;
            int[] k = c.weights[yy];
            for (int xx = 0; xx < width; xx++) {
                int ss0 = half;
                int ss1 = half;
                int ss2 = half;
                for (int y = 0; y < c.count[yy]; y++) {
                    int p = ((y + ymin) * width + xx) * 3;
                    ss0 += (in.rgb[p] & 0xFF) * k[y];
                    ss1 += (in.rgb[p + 1] & 0xFF) * k[y];
                    ss2 += (in.rgb[p + 2] & 0xFF) * k[y];
                }
                int o = (yy * width + xx) * 3;
                out[o] = (byte) clip8(ss0);
                out[o + 1] = (byte) clip8(ss1);
                out[o + 2] = (byte) clip8(ss2);
            }
        }
        return new RgbImage(width, outHeight, out);
    }
}
