package org.edgeclip.core;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.File;
import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Requirement 4: manifests read and verified; tampering and unknown versions refused by name. */
class ManifestTest {
    @TempDir
    Path tmp;

    @Test
    void readsAndVerifiesTheFixtureExport() {
        ExportFolder folder = ExportFolder.open(Fixtures.export());
        assertEquals("image", folder.image.tower);
        assertEquals("text", folder.text.tower);
        assertEquals(Manifest.SUPPORTED_VERSION, folder.image.manifestVersion);
        assertEquals(folder.image.embedDim, folder.text.embedDim);
        assertEquals(64, folder.image.sha256.length());
        assertEquals(Manifest.sha256Path(folder.imageModel()), folder.image.sha256);
        assertEquals(Manifest.sha256Path(folder.textModel()), folder.text.sha256);
        assertNotNull(folder.image.preprocessing);
        assertNotNull(folder.text.tokenizer);
        assertEquals(1, folder.image.inputs.size());
        assertEquals(4, folder.image.inputs.get(0).shape.length);
        // Core ML has no int64: its text towers take int32 ids
        assertEquals(folder.text.target.equals("coreml") ? "int32" : "int64", folder.text.inputs.get(0).dtype);
        assertTrue(folder.vocabFile().isFile());
        assertTrue(folder.logitScale() > 0);
    }

    @Test
    void tamperedModelIsRefusedNamingTheFile() throws IOException {
        File copy = copyExport();
        File model = ExportFolder.open(copy).imageModel();
        try (RandomAccessFile f = new RandomAccessFile(payload(model), "rw")) {
            long at = f.length() / 2;
            f.seek(at);
            int b = f.read();
            f.seek(at);
            f.write(b ^ 0x01);
        }
        EdgeclipException e = assertThrows(EdgeclipException.class, () -> ExportFolder.open(copy));
        assertTrue(e.getMessage().contains(model.getPath()), e.getMessage());
        assertTrue(e.getMessage().contains("sha256"), e.getMessage());
    }

    @Test
    void truncatedTextModelIsRefused() throws IOException {
        File copy = copyExport();
        File model = ExportFolder.open(copy).textModel();
        try (RandomAccessFile f = new RandomAccessFile(payload(model), "rw")) {
            f.setLength(f.length() - 1);
        }
        EdgeclipException e = assertThrows(EdgeclipException.class, () -> ExportFolder.open(copy));
        assertTrue(e.getMessage().contains(model.getPath()), e.getMessage());
    }

    /** The model file, or a bundle's (model.mlpackage) largest file: its weights. */
    private static File payload(File model) throws IOException {
        if (model.isFile()) {
            return model;
        }
        try (Stream<Path> files = Files.walk(model.toPath())) {
            return files.filter(Files::isRegularFile).map(Path::toFile)
                    .max((a, b) -> Long.compare(a.length(), b.length()))
                    .orElseThrow(() -> new IOException(model + ": an empty bundle"));
        }
    }

    @Test
    void tamperedVocabularyIsRefused() throws IOException {
        File copy = copyExport();
        ExportFolder folder = ExportFolder.open(copy);
        if (!folder.text.files.containsKey(folder.text.tokenizer.vocabFile)) {
            return; // an export without a files table cannot check its vocabulary
        }
        Files.write(folder.vocabFile().toPath(), new byte[] {1, 2, 3});
        EdgeclipException e = assertThrows(EdgeclipException.class, () -> ExportFolder.open(copy));
        assertTrue(e.getMessage().contains(folder.vocabFile().getPath()), e.getMessage());
    }

    @Test
    void manifestVersion3IsRefusedNamingTheFileAndBothVersions() throws IOException {
        File copy = copyExport();
        File manifest = new File(copy, "text/manifest.json");
        String text = new String(Files.readAllBytes(manifest.toPath()), StandardCharsets.UTF_8);
        String bumped = text.replaceFirst("\"manifest_version\":\\s*2", "\"manifest_version\": 3");
        assertTrue(!bumped.equals(text), "could not find manifest_version 2 in " + manifest);
        Files.write(manifest.toPath(), bumped.getBytes(StandardCharsets.UTF_8));
        EdgeclipException e = assertThrows(EdgeclipException.class, () -> ExportFolder.open(copy));
        assertTrue(e.getMessage().contains(manifest.getPath()), e.getMessage());
        assertTrue(e.getMessage().contains("manifest_version 3"), e.getMessage());
        assertTrue(e.getMessage().contains("reads 2"), e.getMessage());
    }

    @Test
    void missingManifestIsReported() {
        EdgeclipException e = assertThrows(EdgeclipException.class, () -> ExportFolder.open(tmp.toFile()));
        assertTrue(e.getMessage().contains("not an export folder"), e.getMessage());
    }

    @Test
    void unsupportedPreprocessingIsRefused() {
        Manifest.Preprocessing bilinear = new Manifest.Preprocessing(new int[] {32, 32}, "shortest_side", "bilinear",
                "center", "rgb", "NCHW", new double[] {0, 1}, new double[] {0.5, 0.5, 0.5}, new double[] {0.5, 0.5, 0.5});
        EdgeclipException e = assertThrows(EdgeclipException.class, () -> new ImagePreprocessor(bilinear));
        assertTrue(e.getMessage().contains("interpolation \"bilinear\""), e.getMessage());
        Manifest.Preprocessing nhwc = new Manifest.Preprocessing(new int[] {32, 32}, "shortest_side", "bicubic",
                "center", "rgb", "NHWC", new double[] {0, 1}, new double[] {0.5, 0.5, 0.5}, new double[] {0.5, 0.5, 0.5});
        assertThrows(EdgeclipException.class, () -> new ImagePreprocessor(nhwc));
    }

    /**
     * A bundle folder (Core ML's model.mlpackage) hashes as Python's sha256_path: the expected
     * value was computed with export.manifest.sha256_path on the same files. "Data-x" sorting
     * after "Data/..." checks the component-wise order; Data/manifest.json is left out.
     */
    @Test
    void bundleFolderHashMatchesPython() throws IOException {
        Path bundle = tmp.resolve("model.mlpackage");
        write(bundle.resolve("Manifest.json"), "{}".getBytes(StandardCharsets.UTF_8));
        write(bundle.resolve("Data/com.apple.CoreML/model.mlmodel"), "abc".getBytes(StandardCharsets.UTF_8));
        byte[] all = new byte[256];
        for (int i = 0; i < 256; i++) {
            all[i] = (byte) i;
        }
        write(bundle.resolve("Data/com.apple.CoreML/weights/weight.bin"), all);
        write(bundle.resolve("Data-x/a"), "z".getBytes(StandardCharsets.UTF_8));
        write(bundle.resolve("Data/manifest.json"), "ignored".getBytes(StandardCharsets.UTF_8));
        write(bundle.resolve("b.txt"), new byte[0]);
        write(bundle.resolve("Data/com.apple.CoreML/z"), "zz".getBytes(StandardCharsets.UTF_8));
        assertEquals("c64bcfd23a5c6d6131d288fa8aea389e8424ce5fdadee100a3b974c92993c028",
                Manifest.sha256Path(bundle.toFile()));
    }

    @Test
    void pathOrderIsComponentWise() {
        assertTrue(Manifest.comparePaths("Data/com", "Data-x/a") < 0);
        assertTrue("Data/com".compareTo("Data-x/a") > 0); // plain string order would differ
        assertTrue(Manifest.comparePaths("a", "a/b") < 0);
        assertTrue(Manifest.compareCodePoints("\uFFFF", "\uD83D\uDE00") < 0); // U+FFFF < U+1F600
    }

    private static void write(Path path, byte[] bytes) throws IOException {
        Files.createDirectories(path.getParent());
        Files.write(path, bytes);
    }

    private File copyExport() throws IOException {
        Path source = Fixtures.export().toPath();
        Path target = tmp.resolve("export");
        try (Stream<Path> paths = Files.walk(source)) {
            for (Path p : (Iterable<Path>) paths::iterator) {
                Path dest = target.resolve(source.relativize(p).toString());
                if (Files.isDirectory(p)) {
                    Files.createDirectories(dest);
                } else {
                    Files.copy(p, dest, StandardCopyOption.REPLACE_EXISTING);
                }
            }
        }
        return target.toFile();
    }
}
