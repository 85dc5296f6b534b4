package org.edgeclip.core;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.fail;

import java.io.File;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.Map;
import org.junit.jupiter.api.Test;

/** Requirement 2: golden.png through the preprocessor gives Python's pixels and tensor. */
class ImagePreprocessorTest {

    @Test
    void goldenImage() {
        Map<String, Object> golden = Fixtures.golden();
        Map<String, Object> image = Json.asObject(golden.get("image"), "golden.json image");
        Map<String, Object> pre = Json.asObject(golden.get("preprocessed"), "golden.json preprocessed");
        File export = Fixtures.export();
        File png = new File(export, Json.asString(image.get("file"), "image.file"));
        assertEquals(Json.asString(image.get("sha256"), "image.sha256"), Manifest.sha256File(png),
                png + " is not the file golden.json describes");

        RgbImage input = Fixtures.readPng(png);
        assertEquals(Json.asInt(image.get("width"), "width"), input.width);
        assertEquals(Json.asInt(image.get("height"), "height"), input.height);

        ExportFolder folder = ExportFolder.open(export);
        ImagePreprocessor preprocessor = folder.preprocessor();
        long[] shape = Json.asLongArray(pre.get("shape"), "preprocessed.shape");
        assertEquals(preprocessor.size, shape[2]);

        // Pixels after resize + crop, against Python's golden_input.png.
        RgbImage expected = Fixtures.readPng(new File(export, Json.asString(pre.get("file"), "preprocessed.file")));
        RgbImage actual = preprocessor.resizeAndCrop(input);
        assertEquals(expected.width, actual.width);
        assertEquals(expected.height, actual.height);
        int differ = 0;
        int maxDiff = 0;
        for (int i = 0; i < expected.rgb.length; i++) {
            int d = Math.abs((expected.rgb[i] & 0xFF) - (actual.rgb[i] & 0xFF));
            if (d != 0) {
                differ++;
                maxDiff = Math.max(maxDiff, d);
            }
        }
        if (differ != 0) {
            fail(differ + " of " + expected.rgb.length + " resized pixel values differ from golden_input.png, by up to "
                    + maxDiff + " levels (" + input.width + "x" + input.height + " -> " + preprocessor.size + ")");
        }
        assertEquals(Json.asString(pre.get("pixels_sha256"), "pixels_sha256"), Manifest.hex(Manifest.sha256(actual.rgb)),
                "sha256 of the HWC pixels");

        // The normalised tensor, bit for bit.
        float[] tensor = preprocessor.preprocess(input);
        assertEquals(shape[0] * shape[1] * shape[2] * shape[3], tensor.length);
        ByteBuffer bytes = ByteBuffer.allocate(tensor.length * 4).order(ByteOrder.LITTLE_ENDIAN);
        for (float v : tensor) {
            bytes.putFloat(v);
        }
        assertEquals(Json.asString(pre.get("tensor_sha256"), "tensor_sha256"), Manifest.hex(Manifest.sha256(bytes.array())),
                "sha256 of the float32 NCHW tensor (little-endian): normalisation differs from numpy's float32");

        // Per-channel statistics (float64 here; the Python side computed them in float32).
        double[] mean = Json.asDoubleArray(pre.get("mean"), "mean");
        double[] std = Json.asDoubleArray(pre.get("std"), "std");
        double[] min = Json.asDoubleArray(pre.get("min"), "min");
        double[] max = Json.asDoubleArray(pre.get("max"), "max");
        int plane = preprocessor.size * preprocessor.size;
        for (int c = 0; c < 3; c++) {
            double sum = 0;
            double lo = Double.POSITIVE_INFINITY;
            double hi = Double.NEGATIVE_INFINITY;
            for (int i = 0; i < plane; i++) {
                double v = tensor[c * plane + i];
                sum += v;
                lo = Math.min(lo, v);
                hi = Math.max(hi, v);
            }
            double m = sum / plane;
            double squares = 0;
            for (int i = 0; i < plane; i++) {
                squares += (tensor[c * plane + i] - m) * (tensor[c * plane + i] - m);
            }
            double population = Math.sqrt(squares / plane);
            double sample = Math.sqrt(squares / (plane - 1));
            assertEquals(mean[c], m, 1e-5, "channel " + c + " mean");
            assertEquals((float) min[c], (float) lo, "channel " + c + " min");
            assertEquals((float) max[c], (float) hi, "channel " + c + " max");
            // numpy's std is the population one, torch's the sample one: accept either.
            if (Math.abs(std[c] - population) > 1e-5 && Math.abs(std[c] - sample) > 1e-5) {
                fail("channel " + c + " std " + std[c] + " is neither the population (" + population
                        + ") nor the sample (" + sample + ") std of the tensor");
            }
        }
    }

    @Test
    void toTensorOfGoldenPixelsMatchesTensorSha() {
        // Separates the normalisation from the resize: Python's own pixels, normalised here.
        Map<String, Object> pre = Json.asObject(Fixtures.golden().get("preprocessed"), "preprocessed");
        File export = Fixtures.export();
        RgbImage pixels = Fixtures.readPng(new File(export, Json.asString(pre.get("file"), "file")));
        float[] tensor = ExportFolder.open(export).preprocessor().toTensor(pixels);
        ByteBuffer bytes = ByteBuffer.allocate(tensor.length * 4).order(ByteOrder.LITTLE_ENDIAN);
        for (float v : tensor) {
            bytes.putFloat(v);
        }
        assertEquals(Json.asString(pre.get("tensor_sha256"), "tensor_sha256"), Manifest.hex(Manifest.sha256(bytes.array())));
    }
}
