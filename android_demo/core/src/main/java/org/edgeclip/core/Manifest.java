package org.edgeclip.core;

import java.io.File;
import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.ArrayList;
import java.util.Collections;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * One tower's {@code manifest.json} (edgeclip's {@code export/manifest.py}): what the model
 * file is, what it takes and gives, and how an app must prepare its input.
 *
 * <p>Only {@link #SUPPORTED_VERSION} is read: a version bump means a field changed meaning,
 * and guessing would reintroduce exactly the silent glue bugs this library exists to prevent.
 */
public final class Manifest {
    /** The manifest_version this code understands (edgeclip's MANIFEST_VERSION). */
    public static final int SUPPORTED_VERSION = 2;
    /** The manifest's file name inside a tower folder. */
    public static final String FILE_NAME = "manifest.json";

    /** One model input or output: {"name", "shape", "dtype"}. */
    public static final class TensorSpec {
        public final String name;
        public final long[] shape;
        public final String dtype;

        public TensorSpec(String name, long[] shape, String dtype) {
            this.name = name;
            this.shape = shape;
            this.dtype = dtype;
        }
    }

    /** The image tower's "preprocessing" block: how pixels become the input tensor. */
    public static final class Preprocessing {
        /** Output [width, height]; edgeclip exports square inputs. */
        public final int[] size;
        public final String resize;
        public final String interpolation;
        public final String crop;
        public final String color;
        public final String layout;
        public final double[] valueRange;
        public final double[] mean;
        public final double[] std;

        public Preprocessing(int[] size, String resize, String interpolation, String crop,
                String color, String layout, double[] valueRange, double[] mean, double[] std) {
            this.size = size;
            this.resize = resize;
            this.interpolation = interpolation;
            this.crop = crop;
            this.color = color;
            this.layout = layout;
            this.valueRange = valueRange;
            this.mean = mean;
            this.std = std;
        }
    }

    /** The text tower's "tokenizer" block. */
    public static final class TokenizerSpec {
        public final String kind;
        /** The BPE merges file, in the text tower's folder. */
        public final String vocabFile;
        public final int contextLength;
        public final int sotId;
        public final int eotId;
        public final int padId;

        public TokenizerSpec(String kind, String vocabFile, int contextLength, int sotId, int eotId,
                int padId) {
            this.kind = kind;
            this.vocabFile = vocabFile;
            this.contextLength = contextLength;
            this.sotId = sotId;
            this.eotId = eotId;
            this.padId = padId;
        }
    }

    /** Where this manifest was read from (for messages). */
    public final File path;
    public final int manifestVersion;
    public final String model;
    /** "image" or "text". */
    public final String tower;
    /** The export target ("onnx", "executorch", "coreml"). */
    public final String target;
    /** The exported precision ("fp32", "fp16", "int8"). */
    public final String precision;
    /** The runtime the export was verified in. */
    public final String runtime;
    /** The model file (or bundle folder) name inside the tower folder. */
    public final String file;
    /** SHA-256 (hex) of the model file, or of a bundle folder's listing (see verifyModelFile). */
    public final String sha256;
    /** SHA-256 of every shipped file by relative path; may be empty in older exports. */
    public final Map<String, String> files;
    public final List<TensorSpec> inputs;
    public final List<TensorSpec> outputs;
    public final int embedDim;
    /** s in logits = s · image_emb · text_emb. */
    public final double logitScale;
    /** Floating-point operations per call, counted at export; null when not counted. */
    public final Long flops;
    /** The image tower's preprocessing; null for the text tower. */
    public final Preprocessing preprocessing;
    /** The text tower's tokenizer; null for the image tower. */
    public final TokenizerSpec tokenizer;
    /** The whole parsed manifest, for fields not modelled here. */
    public final Map<String, Object> raw;

    private Manifest(File path, Map<String, Object> m) {
        String where = path.toString();
        this.path = path;
        this.raw = m;
        this.manifestVersion = SUPPORTED_VERSION;
        this.model = Json.asString(Json.require(m, "model", where), where + " model");
        this.tower = Json.asString(Json.require(m, "tower", where), where + " tower");
        if (!tower.equals("image") && !tower.equals("text")) {
            throw new EdgeclipException(where + ": tower \"" + tower + "\", expected \"image\" or \"text\"");
        }
        this.target = Json.asString(Json.require(m, "target", where), where + " target");
        this.precision = Json.asString(Json.require(m, "precision", where), where + " precision");
        this.runtime = Json.asString(Json.require(m, "runtime", where), where + " runtime");
        this.file = Json.asString(Json.require(m, "file", where), where + " file");
        this.sha256 = Json.asString(Json.require(m, "sha256", where), where + " sha256");
        Map<String, String> fileHashes = new LinkedHashMap<>();
        if (m.get("files") != null) {
            for (Map.Entry<String, Object> e : Json.asObject(m.get("files"), where + " files").entrySet()) {
                fileHashes.put(e.getKey(), Json.asString(e.getValue(), where + " files." + e.getKey()));
            }
        }
        this.files = Collections.unmodifiableMap(fileHashes);
        this.inputs = readSpecs(Json.require(m, "inputs", where), where + " inputs");
        this.outputs = m.containsKey("outputs")
                ? readSpecs(m.get("outputs"), where + " outputs")
                : Collections.<TensorSpec>emptyList();
        this.embedDim = Json.asInt(Json.require(m, "embed_dim", where), where + " embed_dim");
        this.logitScale = Json.asDouble(Json.require(m, "logit_scale", where), where + " logit_scale");
        Object flopsValue = m.get("flops");
        this.flops = flopsValue == null ? null : Json.asLong(flopsValue, where + " flops");
        if (tower.equals("image")) {
            this.preprocessing = readPreprocessing(
                    Json.asObject(Json.require(m, "preprocessing", where), where + " preprocessing"),
                    where + " preprocessing");
            this.tokenizer = null;
        } else {
            this.preprocessing = null;
            this.tokenizer = readTokenizer(
                    Json.asObject(Json.require(m, "tokenizer", where), where + " tokenizer"),
                    where + " tokenizer");
        }
    }

    /**
     * Reads {@code towerDir/manifest.json}, refusing any manifest_version but
     * {@link #SUPPORTED_VERSION} with a message naming the file and both versions.
     */
    public static Manifest read(File towerDir) {
        File path = new File(towerDir, FILE_NAME);
        if (!path.isFile()) {
            throw new EdgeclipException(path + ": missing (every tower folder of an export has one)");
        }
        Map<String, Object> m = Json.asObject(Json.parse(path), path.toString());
        // The version is checked before any other field: a newer manifest may have renamed them.
        Object version = m.get("manifest_version");
        if (!(version instanceof Long) || (Long) version != SUPPORTED_VERSION) {
            throw new EdgeclipException(path + ": manifest_version " + version + "; this app reads "
                    + SUPPORTED_VERSION + " (re-export the model with a matching edgeclip, or update the app)");
        }
        return new Manifest(path, m);
    }

    /** The model file (or bundle folder) this manifest describes, inside {@code towerDir}. */
    public File modelFile(File towerDir) {
        return new File(towerDir, file);
    }

    /**
     * Checks the model file's SHA-256 against the manifest: a plain file's bytes, or, for a
     * bundle folder (Core ML's model.mlpackage), the SHA-256 of the UTF-8 listing that
     * edgeclip's {@code sha256_path} hashes (see {@link #sha256Path}).
     *
     * @throws EdgeclipException naming the file when it is missing or differs.
     */
    public void verifyModelFile(File towerDir) {
        File model = modelFile(towerDir);
        if (!model.exists()) {
            throw new EdgeclipException(model + ": missing (named by " + path + ")");
        }
        String actual = sha256Path(model);
        if (!actual.equals(sha256)) {
            throw new EdgeclipException(model + ": sha256 " + actual + " differs from " + sha256
                    + " in " + path + " (" + pathBytes(model) + " bytes); the file was changed or truncated");
        }
    }

    /**
     * Checks one shipped file against the manifest's "files" table, when the table lists it
     * (e.g. the tokenizer vocabulary); a file the table does not list is not checked.
     */
    public void verifyListedFile(File towerDir, String name) {
        String expected = files.get(name);
        if (expected == null) {
            return;
        }
        File f = new File(towerDir, name);
        if (!f.isFile()) {
            throw new EdgeclipException(f + ": missing (listed in " + path + ")");
        }
        String actual = sha256File(f);
        if (!actual.equals(expected)) {
            throw new EdgeclipException(f + ": sha256 " + actual + " differs from " + expected
                    + " in " + path + " (" + f.length() + " bytes); the file was changed or truncated");
        }
    }

    // ---- hashing, exactly as export/manifest.py ----------------------------------------

    /**
     * SHA-256 (lower-case hex) of a file, or of a bundle folder: the UTF-8 bytes of the text
     * made, for each file under it except ones named manifest.json, sorted by relative path,
     * of {@code relpath + "  " + sha256(file) + "\n"}. Python sorts Path objects, i.e. by
     * their lists of path components, so that is the order used here.
     */
    public static String sha256Path(File path) {
        if (path.isFile()) {
            return sha256File(path);
        }
        List<String> names = new ArrayList<>();
        listFiles(path, "", names);
        Collections.sort(names, new Comparator<String>() {
            @Override
            public int compare(String a, String b) {
                return comparePaths(a, b);
            }
        });
        StringBuilder listing = new StringBuilder();
        for (String name : names) {
            listing.append(name).append("  ").append(sha256File(new File(path, name))).append("\n");
        }
        return hex(sha256(listing.toString().getBytes(StandardCharsets.UTF_8)));
    }

    /** SHA-256 (lower-case hex) of a file's bytes, read in chunks. */
    public static String sha256File(File file) {
        MessageDigest digest = newDigest();
        byte[] buffer = new byte[1 << 16];
        try (InputStream in = Files.newInputStream(file.toPath())) {
            int n;
            while ((n = in.read(buffer)) > 0) {
                digest.update(buffer, 0, n);
            }
        } catch (IOException e) {
            throw new EdgeclipException(file + ": cannot read (" + e.getMessage() + ")", e);
        }
        return hex(digest.digest());
    }

    /** SHA-256 of bytes. */
    public static byte[] sha256(byte[] bytes) {
        return newDigest().digest(bytes);
    }

    /** Lower-case hex, as Python's hexdigest(). */
    public static String hex(byte[] bytes) {
        StringBuilder out = new StringBuilder(bytes.length * 2);
        for (byte b : bytes) {
            out.append(Character.forDigit((b >> 4) & 0xF, 16)).append(Character.forDigit(b & 0xF, 16));
        }
        return out.toString();
    }

    private static MessageDigest newDigest() {
        try {
            return MessageDigest.getInstance("SHA-256");
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException("SHA-256 is missing from this JVM", e);
        }
    }

    /** Every regular file under {@code dir} but ones named manifest.json, as relative POSIX paths. */
    private static void listFiles(File dir, String prefix, List<String> out) {
        File[] children = dir.listFiles();
        if (children == null) {
            throw new EdgeclipException(dir + ": cannot list the folder");
        }
        for (File child : children) {
            String rel = prefix.isEmpty() ? child.getName() : prefix + "/" + child.getName();
            if (child.isDirectory()) {
                listFiles(child, rel, out);
            } else if (child.isFile() && !child.getName().equals(FILE_NAME)) {
                out.add(rel);
            }
        }
    }

    /** Orders relative paths as Python orders Path objects: component by component, each by code points. */
    static int comparePaths(String a, String b) {
        String[] pa = a.split("/", -1);
        String[] pb = b.split("/", -1);
        for (int i = 0; i < pa.length && i < pb.length; i++) {
            int c = compareCodePoints(pa[i], pb[i]);
            if (c != 0) {
                return c;
            }
        }
        return Integer.compare(pa.length, pb.length);
    }

    /** Python's str ordering (by code point), which differs from Java's UTF-16 order above U+FFFF. */
    static int compareCodePoints(String a, String b) {
        int i = 0;
        int j = 0;
        while (i < a.length() && j < b.length()) {
            int ca = a.codePointAt(i);
            int cb = b.codePointAt(j);
            if (ca != cb) {
                return Integer.compare(ca, cb);
            }
            i += Character.charCount(ca);
            j += Character.charCount(cb);
        }
        return Integer.compare(a.length() - i, b.length() - j);
    }

    private static long pathBytes(File path) {
        if (path.isFile()) {
            return path.length();
        }
        long total = 0;
        File[] children = path.listFiles();
        if (children != null) {
            for (File child : children) {
                total += pathBytes(child);
            }
        }
        return total;
    }

    // ---- field readers -----------------------------------------------------------------

    private static List<TensorSpec> readSpecs(Object value, String where) {
        List<TensorSpec> specs = new ArrayList<>();
        List<Object> list = Json.asList(value, where);
        for (int i = 0; i < list.size(); i++) {
            String at = where + "[" + i + "]";
            Map<String, Object> spec = Json.asObject(list.get(i), at);
            specs.add(new TensorSpec(
                    Json.asString(Json.require(spec, "name", at), at + " name"),
                    Json.asLongArray(Json.require(spec, "shape", at), at + " shape"),
                    Json.asString(Json.require(spec, "dtype", at), at + " dtype")));
        }
        return Collections.unmodifiableList(specs);
    }

    private static Preprocessing readPreprocessing(Map<String, Object> p, String where) {
        long[] size = Json.asLongArray(Json.require(p, "size", where), where + " size");
        if (size.length != 2) {
            throw new EdgeclipException(where + ": size needs [width, height], got " + size.length + " values");
        }
        return new Preprocessing(
                new int[] {(int) size[0], (int) size[1]},
                Json.asString(Json.require(p, "resize", where), where + " resize"),
                Json.asString(Json.require(p, "interpolation", where), where + " interpolation"),
                Json.asString(Json.require(p, "crop", where), where + " crop"),
                Json.asString(Json.require(p, "color", where), where + " color"),
                Json.asString(Json.require(p, "layout", where), where + " layout"),
                p.containsKey("value_range")
                        ? Json.asDoubleArray(p.get("value_range"), where + " value_range")
                        : new double[] {0.0, 1.0},
                Json.asDoubleArray(Json.require(p, "mean", where), where + " mean"),
                Json.asDoubleArray(Json.require(p, "std", where), where + " std"));
    }

    private static TokenizerSpec readTokenizer(Map<String, Object> t, String where) {
        return new TokenizerSpec(
                Json.asString(Json.require(t, "kind", where), where + " kind"),
                Json.asString(Json.require(t, "vocab_file", where), where + " vocab_file"),
                Json.asInt(Json.require(t, "context_length", where), where + " context_length"),
                Json.asInt(Json.require(t, "sot_id", where), where + " sot_id"),
                Json.asInt(Json.require(t, "eot_id", where), where + " eot_id"),
                t.containsKey("pad_id") ? Json.asInt(t.get("pad_id"), where + " pad_id") : 0);
    }
}
