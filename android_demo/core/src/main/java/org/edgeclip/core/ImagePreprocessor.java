package org.edgeclip.core;

/**
 * The image tower's input, exactly as edgeclip's Python transform makes it
 * ({@code compress/data/transforms.py} ImageTransform: pixels, then normalize), which is
 * open_clip's eval transform:
 *
 * <ol>
 *   <li>resize so the shorter side is S (the longer one becomes {@code int(S * long / short)},
 *       truncated), with Pillow's antialiased BICUBIC ({@link PilBicubic}); skipped when the
 *       image already has that size;</li>
 *   <li>centre crop S×S at {@code round((new - S) / 2)}, Python's round (half to even);</li>
 *   <li>{@code x / 255} then {@code (x - mean) / std} per channel, in float32 and in that order
 *       (so the result is bit-identical to numpy's float32), laid out NCHW with N = 1.</li>
 * </ol>
 *
 * <p>The manifest's preprocessing block is checked against what is implemented here; anything
 * else is refused rather than approximated (bilinear instead of bicubic or the wrong mean are
 * the classic silent accuracy losses of shipped CLIP apps).
 */
public final class ImagePreprocessor {
    /** The output side S. */
    public final int size;
    private final float[] mean;
    private final float[] std;

    public ImagePreprocessor(Manifest.Preprocessing spec) {
        if (spec == null) {
            throw new EdgeclipException("no preprocessing block (is this the image tower's manifest?)");
        }
        expect("resize", spec.resize, "shortest_side");
        expect("interpolation", spec.interpolation, "bicubic");
        expect("crop", spec.crop, "center");
        expect("color", spec.color, "rgb");
        expect("layout", spec.layout, "NCHW");
        if (spec.size.length != 2 || spec.size[0] != spec.size[1] || spec.size[0] < 1) {
            throw new EdgeclipException("preprocessing size " + java.util.Arrays.toString(spec.size)
                    + " is not supported; this app implements square sizes [S, S]");
        }
        if (spec.valueRange.length != 2 || spec.valueRange[0] != 0.0 || spec.valueRange[1] != 1.0) {
            throw new EdgeclipException("preprocessing value_range " + java.util.Arrays.toString(spec.valueRange)
                    + " is not supported; this app implements [0.0, 1.0] (x / 255)");
        }
        if (spec.mean.length != 3 || spec.std.length != 3) {
            throw new EdgeclipException("preprocessing mean and std need 3 values (RGB), got "
                    + spec.mean.length + " and " + spec.std.length);
        }
        this.size = spec.size[0];
        // numpy builds float32 arrays from the Python floats: round each double to float once.
        this.mean = new float[] {(float) spec.mean[0], (float) spec.mean[1], (float) spec.mean[2]};
        this.std = new float[] {(float) spec.std[0], (float) spec.std[1], (float) spec.std[2]};
    }

    private static void expect(String field, String actual, String implemented) {
        if (!implemented.equals(actual)) {
            throw new EdgeclipException("preprocessing " + field + " \"" + actual
                    + "\" is not supported; this app implements \"" + implemented + "\"");
        }
    }

    /** The whole transform: pixels → the float32 NCHW tensor (1·3·S·S values). */
    public float[] preprocess(RgbImage image) {
        return toTensor(resizeAndCrop(image));
    }

    /** Steps 1 and 2: the S×S uint8 pixels the tensor is made from. */
    public RgbImage resizeAndCrop(RgbImage image) {
        int s = size;
        int w = image.width;
        int h = image.height;
        if (w == s && h == s) {
            return image;
        }
        int newW;
        int newH;
        // Like torchvision: the shorter side becomes s, the longer one is truncated. Python
        // computes int(s * h / w) with a float division; Java's double division rounds alike.
        if (w <= h) {
            newW = s;
            newH = (int) ((double) ((long) s * h) / w);
        } else {
            newW = (int) ((double) ((long) s * w) / h);
            newH = s;
        }
        RgbImage resized = (newW == w && newH == h) ? image : PilBicubic.resize(image, newW, newH);
        if (newW == s && newH == s) {
            return resized;
        }
        return resized.crop(roundHalfEven(newW - s), roundHalfEven(newH - s), s, s);
    }

    /** Python's {@code round(d / 2)} for an integer d >= 0: halves go to the even neighbour. */
    static int roundHalfEven(int d) {
        int half = d / 2;
        if (d % 2 == 1 && half % 2 == 1) {
            half += 1; // e.g. 1.5 → 2 and 9.5 → 10, but 0.5 → 0 and 8.5 → 8
        }
        return half;
    }

    /** Step 3: S×S pixels → (pixel / 255 - mean) / std, float32, channel-major (NCHW). */
    public float[] toTensor(RgbImage cropped) {
        if (cropped.width != size || cropped.height != size) {
            throw new EdgeclipException("toTensor takes " + size + "x" + size + " pixels, got "
                    + cropped.width + "x" + cropped.height + "; call resizeAndCrop first");
        }
        int plane = size * size;
        float[] out = new float[3 * plane];
        for (int c = 0; c < 3; c++) {
            for (int i = 0; i < plane; i++) {
                // Two float32 operations, rounded separately, as numpy does them.
                float x = (cropped.rgb[i * 3 + c] & 0xFF) / 255.0f;
                out[c * plane + i] = (x - mean[c]) / std[c];
            }
        }
        return out;
    }
}
