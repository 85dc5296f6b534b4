package org.edgeclip.core;

import java.io.ByteArrayOutputStream;
import java.io.File;
import java.io.FileInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.zip.GZIPInputStream;

/**
 * open_clip's CLIP tokenizer ({@code open_clip/tokenizer.py} SimpleTokenizer, open_clip_torch
 * 3.3.0), exactly: text → {@link TextCleaner#clean} → pre-tokenised by open_clip's pattern →
 * each piece's UTF-8 bytes mapped to printable characters → byte-pair merges by rank →
 * vocabulary ids. {@link #tokenize} adds start/end tokens and pads or truncates to the
 * context length as open_clip does.
 *
 * <p>The vocabulary is the gzip'd merges file shipped in the text tower folder, built as
 * SimpleTokenizer builds it: the 256 byte characters, the same with "&lt;/w&gt;", the
 * merges of lines 1..48894 joined, then "&lt;start_of_text&gt;" and "&lt;end_of_text&gt;"
 * (ids 49406 and 49407 with the standard file).
 *
 * <p>Not thread-safe (the merge cache is a plain HashMap); use one per thread.
 */
public final class ClipTokenizer {
    static final String SOT_TEXT = "<start_of_text>";
    static final String EOT_TEXT = "<end_of_text>";
    /** SimpleTokenizer keeps merges[1 : 49152 - 256 - 2 + 1]: 48894 merges after the header line. */
    static final int MERGE_LINES_END = 49152 - 256 - 2 + 1;
    /** Past this many cached words the cache is cleared, so it cannot grow without bound. */
    private static final int CACHE_LIMIT = 100_000;

    private final int contextLength;
    private final int sotId;
    private final int eotId;
    /** byte value → its printable stand-in character (open_clip's bytes_to_unicode). */
    private final char[] byteEncoder;
    private final Map<String, Integer> encoder;
    /** "first second" → merge rank (lower merges first). Symbols never contain a space. */
    private final Map<String, Integer> bpeRanks;
    private final Map<String, int[]> cache = new HashMap<>();

    private ClipTokenizer(int contextLength, int sotId, int eotId, char[] byteEncoder,
            Map<String, Integer> encoder, Map<String, Integer> bpeRanks) {
        this.contextLength = contextLength;
        this.sotId = sotId;
        this.eotId = eotId;
        this.byteEncoder = byteEncoder;
        this.encoder = encoder;
        this.bpeRanks = bpeRanks;
    }

    /**
     * Builds the tokenizer from the gzip'd merges file. {@code sotId}/{@code eotId} are the
     * manifest's; they are checked against the ids the vocabulary gives the special tokens,
     * so a wrong vocabulary file is refused instead of producing wrong ids.
     */
    public static ClipTokenizer fromVocab(InputStream gz, int contextLength, int sotId, int eotId) {
        if (contextLength < 2) {
            throw new EdgeclipException("context_length must be >= 2 (start and end tokens), got " + contextLength);
        }
        String text;
        try (InputStream in = new GZIPInputStream(gz)) {
            ByteArrayOutputStream bytes = new ByteArrayOutputStream();
            byte[] buffer = new byte[1 << 16];
            int n;
            while ((n = in.read(buffer)) > 0) {
                bytes.write(buffer, 0, n);
            }
            text = new String(bytes.toByteArray(), StandardCharsets.UTF_8);
        } catch (IOException e) {
            throw new EdgeclipException("cannot read the BPE vocabulary (" + e.getMessage() + ")", e);
        }
        // merges = text.split('\n')[1:48895], each merge = line.split()
        String[] lines = text.split("\n", -1);
        int end = Math.min(lines.length, MERGE_LINES_END);
        List<String[]> merges = new ArrayList<>();
        for (int i = 1; i < end; i++) {
            String[] merge = lines[i].trim().split("\\s+");
            if (merge.length != 2) {
                throw new EdgeclipException("BPE vocabulary line " + (i + 1) + " is not a merge of two symbols: \"" + lines[i] + "\"");
            }
            merges.add(merge);
        }

        char[] byteEncoder = bytesToUnicode();
        // Python's vocab is list(bytes_to_unicode().values()): the dict's insertion order, which
        // is the printable bytes first, then the other 68, not byte order.
        List<String> vocab = new ArrayList<>();
        for (int b : byteOrder()) {
            vocab.add(String.valueOf(byteEncoder[b]));
        }
        for (int b : byteOrder()) {
            vocab.add(byteEncoder[b] + "</w>");
        }
        for (String[] merge : merges) {
            vocab.add(merge[0] + merge[1]);
        }
        vocab.add(SOT_TEXT);
        vocab.add(EOT_TEXT);
        // As Python's dict(zip(vocab, range)): a repeated entry keeps its last id.
        Map<String, Integer> encoder = new HashMap<>();
        for (int i = 0; i < vocab.size(); i++) {
            encoder.put(vocab.get(i), i);
        }
        Map<String, Integer> ranks = new HashMap<>();
        for (int i = 0; i < merges.size(); i++) {
            ranks.put(merges.get(i)[0] + " " + merges.get(i)[1], i);
        }
        int vocabSot = encoder.get(SOT_TEXT);
        int vocabEot = encoder.get(EOT_TEXT);
        if (vocabSot != sotId || vocabEot != eotId) {
            throw new EdgeclipException("the BPE vocabulary gives start/end ids " + vocabSot + "/" + vocabEot
                    + " but the manifest says " + sotId + "/" + eotId + "; wrong vocabulary file");
        }
        return new ClipTokenizer(contextLength, sotId, eotId, byteEncoder, encoder, ranks);
    }

    /** {@link #fromVocab(InputStream, int, int, int)} from a file; errors name the file. */
    public static ClipTokenizer fromVocab(File gzFile, int contextLength, int sotId, int eotId) {
        try (InputStream in = new FileInputStream(gzFile)) {
            return fromVocab(in, contextLength, sotId, eotId);
        } catch (IOException e) {
            throw new EdgeclipException(gzFile + ": cannot read (" + e.getMessage() + ")", e);
        } catch (EdgeclipException e) {
            throw new EdgeclipException(gzFile + ": " + e.getMessage(), e);
        }
    }

    /** The tokenizer a text manifest describes, from the vocabulary in {@code towerDir}. */
    public static ClipTokenizer fromManifest(Manifest text, File towerDir) {
        Manifest.TokenizerSpec spec = text.tokenizer;
        if (spec == null) {
            throw new EdgeclipException(text.path + ": no tokenizer block (is this the text tower?)");
        }
        if (!spec.kind.equals("clip_bpe")) {
            throw new EdgeclipException(text.path + ": tokenizer kind \"" + spec.kind + "\"; this app implements \"clip_bpe\"");
        }
        if (spec.padId != 0) {
            throw new EdgeclipException(text.path + ": tokenizer pad_id " + spec.padId + "; this app pads with 0");
        }
        return fromVocab(new File(towerDir, spec.vocabFile), spec.contextLength, spec.sotId, spec.eotId);
    }

    public int contextLength() {
        return contextLength;
    }

    public int sotId() {
        return sotId;
    }

    public int eotId() {
        return eotId;
    }

    /**
     * The model input for {@code text}: [SOT, ids..., EOT] zero-padded to the context length.
     * Too long, it is cut to the context length and its last id replaced by EOT (open_clip).
     */
    public long[] tokenize(String text) {
        int[] ids = encode(text);
        long[] out = new long[contextLength];
        out[0] = sotId;
        int n = Math.min(ids.length, contextLength - 1);
        for (int i = 0; i < n; i++) {
            out[1 + i] = ids[i];
        }
        if (1 + ids.length < contextLength) {
            out[1 + ids.length] = eotId;
        } else {
            out[contextLength - 1] = eotId; // exactly full, or truncated: the last is EOT
        }
        return out;
    }

    /** The BPE ids of the cleaned text, without SOT/EOT (open_clip's SimpleTokenizer.encode). */
    public int[] encode(String text) {
        String cleaned = TextCleaner.clean(text);
        List<Integer> ids = new ArrayList<>();
        int pos = 0;
        while (pos < cleaned.length()) {
            int end = matchPiece(cleaned, pos);
            if (end < 0) { // nothing matches here (whitespace): findall moves on one character
                pos += Character.charCount(cleaned.codePointAt(pos));
                continue;
            }
            for (int id : bpeIds(byteEncode(cleaned.substring(pos, end)))) {
                ids.add(id);
            }
            pos = end;
        }
        int[] out = new int[ids.size()];
        for (int i = 0; i < out.length; i++) {
            out[i] = ids.get(i);
        }
        return out;
    }

    // ---- pre-tokenisation -------------------------------------------------------------

    /**
     * Where the piece starting at {@code pos} ends, or -1: open_clip's pattern, tried in its
     * order at one position (the first alternative that matches wins, not the longest),
     * compiled with IGNORECASE:
     * {@code <start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+}.
     * Case-insensitive literals use String.regionMatches(ignoreCase), which, like the regex
     * module's simple case folding, also lets "ſ" (long s) match "s".
     */
    static int matchPiece(String text, int pos) {
        for (String special : new String[] {SOT_TEXT, EOT_TEXT}) {
            if (text.regionMatches(true, pos, special, 0, special.length())) {
                return pos + special.length();
            }
        }
        if (text.charAt(pos) == '\'') {
            for (String suffix : new String[] {"s", "t", "re", "ve", "m", "ll", "d"}) {
                if (text.regionMatches(true, pos + 1, suffix, 0, suffix.length())) {
                    return pos + 1 + suffix.length();
                }
            }
        }
        int cp = text.codePointAt(pos);
        if (Character.isLetter(cp)) { // \p{L}: Lu, Ll, Lt, Lm, Lo
            int end = pos;
            while (end < text.length() && Character.isLetter(text.codePointAt(end))) {
                end += Character.charCount(text.codePointAt(end));
            }
            return end;
        }
        if (isNumber(cp)) { // one number character at a time
            return pos + Character.charCount(cp);
        }
        if (TextCleaner.isPythonSpace(cp)) {
            return -1;
        }
        int end = pos; // a run of anything else: punctuation, symbols, marks, emoji
        while (end < text.length()) {
            int c = text.codePointAt(end);
            if (TextCleaner.isPythonSpace(c) || Character.isLetter(c) || isNumber(c)) {
                break;
            }
            end += Character.charCount(c);
        }
        return end;
    }

    /** \p{N}: Nd, Nl, No. */
    private static boolean isNumber(int cp) {
        int type = Character.getType(cp);
        return type == Character.DECIMAL_DIGIT_NUMBER || type == Character.LETTER_NUMBER
                || type == Character.OTHER_NUMBER;
    }

    /** A piece's UTF-8 bytes, each as its printable stand-in character. */
    private String byteEncode(String piece) {
        byte[] bytes = piece.getBytes(StandardCharsets.UTF_8);
        char[] out = new char[bytes.length];
        for (int i = 0; i < bytes.length; i++) {
            out[i] = byteEncoder[bytes[i] & 0xFF];
        }
        return new String(out);
    }

    // ---- byte-pair encoding -----------------------------------------------------------

    /** The ids of one byte-encoded piece (SimpleTokenizer.bpe, then the encoder lookup). */
    private int[] bpeIds(String token) {
        int[] cached = cache.get(token);
        if (cached != null) {
            return cached;
        }
        int[] ids;
        if (token.equals(SOT_TEXT) || token.equals(EOT_TEXT)) {
            // SimpleTokenizer pre-fills its cache with the special tokens: they are never split.
            ids = new int[] {encoder.get(token)};
        } else {
            List<String> word = bpe(token);
            ids = new int[word.size()];
            for (int i = 0; i < ids.length; i++) {
                Integer id = encoder.get(word.get(i));
                if (id == null) {
                    throw new EdgeclipException("BPE symbol \"" + word.get(i) + "\" is not in the vocabulary");
                }
                ids[i] = id;
            }
        }
        if (cache.size() >= CACHE_LIMIT) {
            cache.clear();
        }
        cache.put(token, ids);
        return ids;
    }

    /**
     * SimpleTokenizer.bpe: start from single characters (the last one marked with "&lt;/w&gt;"),
     * then repeatedly merge every occurrence, left to right, of the adjacent pair with the
     * lowest rank, until no adjacent pair is a known merge or one symbol is left.
     */
    private List<String> bpe(String token) {
        List<String> word = new ArrayList<>();
        // Byte stand-ins are all in the BMP (U+0021..U+0143), so chars are code points here.
        for (int i = 0; i < token.length() - 1; i++) {
            word.add(String.valueOf(token.charAt(i)));
        }
        word.add(token.charAt(token.length() - 1) + "</w>");
        while (word.size() > 1) {
            int bestRank = Integer.MAX_VALUE;
            String first = null;
            String second = null;
            for (int i = 0; i < word.size() - 1; i++) {
                Integer rank = bpeRanks.get(word.get(i) + " " + word.get(i + 1));
                if (rank != null && rank < bestRank) {
                    bestRank = rank;
                    first = word.get(i);
                    second = word.get(i + 1);
                }
            }
            if (first == null) {
                break;
            }
            List<String> merged = new ArrayList<>();
            int i = 0;
            while (i < word.size()) {
                if (i < word.size() - 1 && word.get(i).equals(first) && word.get(i + 1).equals(second)) {
                    merged.add(first + second);
                    i += 2;
                } else {
                    merged.add(word.get(i));
                    i++;
                }
            }
            word = merged;
        }
        return word;
    }

    /**
     * open_clip's bytes_to_unicode: printable Latin-1 bytes ('!'..'~', '¡'..'¬', '®'..'ÿ') stand
     * for themselves; the other 68 bytes get U+0100, U+0101, ... in byte order, so no byte
     * is represented by whitespace or a control character.
     */
    static char[] bytesToUnicode() {
        char[] table = new char[256];
        int n = 0;
        for (int b = 0; b < 256; b++) {
            if (isPrintableByte(b)) {
                table[b] = (char) b;
            } else {
                table[b] = (char) (256 + n);
                n++;
            }
        }
        return table;
    }

    /** The bytes in bytes_to_unicode's insertion order: printable ones ascending, then the rest ascending. */
    static int[] byteOrder() {
        int[] order = new int[256];
        int i = 0;
        for (int b = 0; b < 256; b++) {
            if (isPrintableByte(b)) {
                order[i++] = b;
            }
        }
        for (int b = 0; b < 256; b++) {
            if (!isPrintableByte(b)) {
                order[i++] = b;
            }
        }
        return order;
    }

    /** '!'..'~', '¡'..'¬', '®'..'ÿ': the bytes that stand for themselves. */
    private static boolean isPrintableByte(int b) {
        return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    }
}
