package org.edgeclip.core;

/**
 * Decoded 8-bit RGB pixels, row-major, interleaved (HWC): the byte for channel c of pixel
 * (x, y) is {@code rgb[(y * width + x) * 3 + c]}, read as unsigned.
 *
 * <p>The core never decodes image files (Android has no javax.imageio, iOS no java.awt):
 * the app decodes with its platform (BitmapFactory, CGImage) and hands over pixels.
 */
public final class RgbImage {
    public final int width;
    public final int height;
    public final byte[] rgb;

    public RgbImage(int width, int height, byte[] rgb) {
        if (width < 1 || height < 1) {
            throw new EdgeclipException("image size must be at least 1x1, got " + width + "x" + height);
        }
        if (rgb.length != width * height * 3) {
            throw new EdgeclipException("RGB buffer holds " + rgb.length + " bytes; a " + width + "x"
                    + height + " image needs " + (width * height * 3));
        }
        this.width = width;
        this.height = height;
        this.rgb = rgb;
    }

    /**
     * From packed ARGB ints (Android's {@code Bitmap.getPixels}, Java's getRGB), alpha ignored.
     *
     * <p>Android bitmaps are stored premultiplied by alpha, so a translucent pixel's colour
     * comes back darkened; Python's {@code convert("RGB")} would drop alpha without
     * un-premultiplying. Fully opaque images (camera photos, JPEGs) are what this expects;
     * composite a translucent image onto a background first.
     */
    public static RgbImage fromArgb(int width, int height, int[] argb) {
        if (argb.length != width * height) {
            throw new EdgeclipException("ARGB buffer holds " + argb.length + " pixels; a " + width + "x"
                    + height + " image needs " + (width * height));
        }
        byte[] rgb = new byte[width * height * 3];
        for (int i = 0; i < argb.length; i++) {
            int p = argb[i];
            rgb[i * 3] = (byte) (p >> 16);
            rgb[i * 3 + 1] = (byte) (p >> 8);
            rgb[i * 3 + 2] = (byte) p;
        }
        return new RgbImage(width, height, rgb);
    }

    /** Channel {@code c} (0 = R, 1 = G, 2 = B) of pixel (x, y), 0..255. */
    public int get(int x, int y, int c) {
        return rgb[(y * width + x) * 3 + c] & 0xFF;
    }

    /** The {@code w}×{@code h} region whose top-left pixel is (left, top); it must lie inside. */
    public RgbImage crop(int left, int top, int w, int h) {
        if (left < 0 || top < 0 || left + w > width || top + h > height) {
            throw new EdgeclipException("crop " + w + "x" + h + " at (" + left + ", " + top
                    + ") leaves the " + width + "x" + height + " image");
        }
        byte[] out = new byte[w * h * 3];
        for (int y = 0; y < h; y++) {
            System.arraycopy(rgb, ((top + y) * width + left) * 3, out, y * w * 3, w * 3);
        }
        return new RgbImage(w, h, out);
    }
}
