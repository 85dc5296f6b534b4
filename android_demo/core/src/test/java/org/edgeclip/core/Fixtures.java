package org.edgeclip.core;

import static org.junit.jupiter.api.Assertions.fail;

import java.awt.image.BufferedImage;
import java.io.File;
import java.io.IOException;
import java.util.Map;
import javax.imageio.ImageIO;

/**
 * The Python-made fixtures every golden test reads: the folder named by the system property
 * {@code edgeclip.fixtures}, holding {@code export/} (an export folder with golden.json,
 * golden.png, golden_input.png) and {@code captions.json}. Without it the tests fail (never
 * skip), saying how to make it.
 */
final class Fixtures {
    private Fixtures() {}

    static final String HOW_TO = "set -Dedgeclip.fixtures=DIR (Gradle: -Pedgeclip.fixtures=DIR), a folder made "
            + "from the repository root with: .venv/bin/python -m tests.app_fixtures DIR";

    static File dir() {
        String path = System.getProperty("edgeclip.fixtures");
        if (path == null || path.trim().isEmpty()) {
            fail("no fixtures: " + HOW_TO);
        }
        File dir = new File(path);
        if (!new File(dir, "export/golden.json").isFile()) {
            fail(dir + " has no export/golden.json: " + HOW_TO);
        }
        return dir;
    }

    static File export() {
        return new File(dir(), "export");
    }

    static Map<String, Object> golden() {
        return Json.asObject(Json.parse(new File(export(), "golden.json")), "golden.json");
    }

    /** A PNG decoded to RGB with javax.imageio (tests only: Android has no imageio). */
    static RgbImage readPng(File file) {
        BufferedImage image;
        try {
            image = ImageIO.read(file);
        } catch (IOException e) {
            throw new AssertionError(file + ": " + e.getMessage(), e);
        }
        if (image == null) {
            throw new AssertionError(file + ": not an image imageio can read");
        }
        int w = image.getWidth();
        int h = image.getHeight();
        int[] argb = image.getRGB(0, 0, w, h, null, 0, w);
        return RgbImage.fromArgb(w, h, argb);
    }

    /** Java-escaped text, so a mismatch report shows invisible characters. */
    static String escape(String s) {
        StringBuilder out = new StringBuilder("\"");
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            if (c >= 0x20 && c < 0x7F) {
                out.append(c);
            } else {
                out.append(String.format("\\u%04X", (int) c));
            }
        }
        return out.append('"').toString();
    }
}
