package org.edgeclip.core;

import java.io.File;

/**
 * An edgeclip export folder, as an app receives it:
 *
 * <pre>
 *   EXPORT/image/manifest.json   the image tower: model file (or bundle), preprocessing
 *   EXPORT/text/manifest.json    the text tower: model file, tokenizer, vocabulary file
 *   EXPORT/golden.json, golden.png, golden_input.png   (optional) the Python reference outputs
 * </pre>
 *
 * <p>{@link #open} reads both manifests and checks both model files' SHA-256 (and the
 * vocabulary's, when the manifest lists it), so a truncated download or a model swapped for
 * another fails at load time, naming the file, rather than classifying wrongly.
 */
public final class ExportFolder {
    public static final String IMAGE = "image";
    public static final String TEXT = "text";

    public final File dir;
    public final Manifest image;
    public final Manifest text;

    private ExportFolder(File dir, Manifest image, Manifest text) {
        this.dir = dir;
        this.image = image;
        this.text = text;
    }

    /** Reads and verifies the export folder {@code dir}; see the class comment. */
    public static ExportFolder open(File dir) {
        if (!dir.isDirectory()) {
            throw new EdgeclipException(dir + ": no such folder");
        }
        for (String tower : new String[] {IMAGE, TEXT}) {
            if (!new File(new File(dir, tower), Manifest.FILE_NAME).isFile()) {
                throw new EdgeclipException(dir + ": not an export folder (expected image/"
                        + Manifest.FILE_NAME + " and text/" + Manifest.FILE_NAME + ")");
            }
        }
        Manifest image = Manifest.read(new File(dir, IMAGE));
        Manifest text = Manifest.read(new File(dir, TEXT));
        expectTower(image, IMAGE);
        expectTower(text, TEXT);
        // Both towers must come from one export: mixing them breaks the shared embedding space.
        if (image.embedDim != text.embedDim) {
            throw new EdgeclipException(dir + ": image embed_dim " + image.embedDim
                    + " differs from text embed_dim " + text.embedDim + "; the towers are from different models");
        }
        image.verifyModelFile(new File(dir, IMAGE));
        text.verifyModelFile(new File(dir, TEXT));
        text.verifyListedFile(new File(dir, TEXT), text.tokenizer.vocabFile);
        return new ExportFolder(dir, image, text);
    }

    private static void expectTower(Manifest manifest, String tower) {
        if (!manifest.tower.equals(tower)) {
            throw new EdgeclipException(manifest.path + ": tower \"" + manifest.tower + "\", expected \"" + tower + "\"");
        }
    }

    public File imageDir() {
        return new File(dir, IMAGE);
    }

    public File textDir() {
        return new File(dir, TEXT);
    }

    /** The image tower's model file (or bundle folder). */
    public File imageModel() {
        return image.modelFile(imageDir());
    }

    /** The text tower's model file (or bundle folder). */
    public File textModel() {
        return text.modelFile(textDir());
    }

    /** The BPE vocabulary shipped beside the text model. */
    public File vocabFile() {
        return new File(textDir(), text.tokenizer.vocabFile);
    }

    /** s in logits = s · image_emb · text_emb (the image manifest's; both carry the same). */
    public double logitScale() {
        return image.logitScale;
    }

    /** A tokenizer built from the shipped vocabulary and the text manifest's settings. */
    public ClipTokenizer tokenizer() {
        return ClipTokenizer.fromManifest(text, textDir());
    }

    /** The image preprocessing the image manifest asks for. */
    public ImagePreprocessor preprocessor() {
        return new ImagePreprocessor(image.preprocessing);
    }
}
