package org.edgeclip.core;

import java.text.Normalizer;
import java.util.HashMap;
import java.util.Locale;
import java.util.Map;

/**
 * open_clip's default text cleaning ("lower"), step for step:
 *
 * <pre>
 *   clean(text) = whitespace_clean(basic_clean(text)).lower()
 *   basic_clean = ftfy.fix_text, then html.unescape twice, then str.strip()
 *   whitespace_clean = " ".join(text.split())
 * </pre>
 *
 * <p>The tokenizer was trained on text cleaned this way, so a caption cleaned differently
 * tokenizes differently and embeds somewhere else: this is why every step mirrors Python.
 *
 * <p>ftfy.fix_text (6.3.1, default TextFixerConfig) is reproduced in its order, per line
 * segment, repeated until nothing changes: unescape_html (disabled from the first segment
 * holding '<' on, as ftfy's "auto" does), fix_c1_controls, fix_latin_ligatures,
 * fix_character_width, uncurl_quotes, fix_line_breaks, fix_surrogates,
 * remove_terminal_escapes, remove_control_chars, NFC normalisation.
 *
 * <p>Left out, knowingly: ftfy's mojibake repair (fix_encoding with restore_byte_a0,
 * replace_lossy_sequences, decode_inconsistent_utf8). It guesses which wrong codec produced
 * text such as "cafÃ©" from a statistical "badness" heuristic that cannot be reproduced
 * faithfully in a small port; text typed on a phone is not mojibake, so it is a no-op there.
 * Also left out: ftfy's 1,000,000-character segment cap (captions are short). Unicode data
 * (NFC, letter/number classes, case mapping) comes from the platform (Java 17: Unicode 13;
 * Python 3.11: Unicode 14), so characters assigned after Unicode 13 may differ.
 */
public final class TextCleaner {
    private TextCleaner() {}

    private static final Map<Character, String> WIDTH = toMap(FtfyTables.WIDTH);
    private static final Map<Character, String> LIGATURES = toMap(FtfyTables.LIGATURES);
    private static final Map<Character, String> C1_CONTROLS = toMap(FtfyTables.C1_CONTROLS);

    private static Map<Character, String> toMap(String[] pairs) {
        Map<Character, String> map = new HashMap<>();
        for (int i = 0; i < pairs.length; i += 2) {
            map.put(pairs[i].charAt(0), pairs[i + 1]);
        }
        return map;
    }

    /** open_clip's {@code _clean_lower}: what SimpleTokenizer.encode tokenizes. */
    public static String clean(String text) {
        return pythonLower(whitespaceClean(basicClean(text)));
    }

    /** open_clip's {@code basic_clean}: fix_text, html.unescape twice, strip. */
    public static String basicClean(String text) {
        String fixed = fixText(text);
        fixed = HtmlUnescape.python(HtmlUnescape.python(fixed));
        return pythonStrip(fixed);
    }

    /** open_clip's {@code whitespace_clean}: runs of Python whitespace become one space, ends trimmed. */
    public static String whitespaceClean(String text) {
        StringBuilder out = new StringBuilder(text.length());
        int i = 0;
        while (i < text.length()) {
            int cp = text.codePointAt(i);
            if (isPythonSpace(cp)) {
                i += Character.charCount(cp);
                continue;
            }
            int start = i;
            while (i < text.length() && !isPythonSpace(text.codePointAt(i))) {
                i += Character.charCount(text.codePointAt(i));
            }
            if (out.length() > 0) {
                out.append(' ');
            }
            out.append(text, start, i);
        }
        return out.toString();
    }

    /**
     * Python's {@code str.lower()}: full Unicode lowercasing (İ becomes "i̇", a final Σ
     * becomes ς). Java's toLowerCase with Locale.ROOT implements the same unconditional and
     * Final_Sigma rules; ROOT avoids the Turkish/Lithuanian locale rules Python never applies.
     */
    public static String pythonLower(String text) {
        return text.toLowerCase(Locale.ROOT);
    }

    /**
     * Python's {@code str.isspace()} for one code point (Unicode 14): categories Zs plus the
     * bidi classes B, S and WS. Not Java's {@code \s} (ASCII) nor Character.isWhitespace
     * (which excludes U+00A0 and includes U+001C..U+001F differently).
     */
    public static boolean isPythonSpace(int cp) {
        switch (cp) {
            case 0x09: case 0x0A: case 0x0B: case 0x0C: case 0x0D:
            case 0x1C: case 0x1D: case 0x1E: case 0x1F: case 0x20:
            case 0x85: case 0xA0: case 0x1680:
            case 0x2028: case 0x2029: case 0x202F: case 0x205F: case 0x3000:
                return true;
            default:
                return cp >= 0x2000 && cp <= 0x200A;
        }
    }

    /** Python's {@code str.strip()} (no arguments). */
    public static String pythonStrip(String text) {
        int start = 0;
        int end = text.length();
        while (start < end && isPythonSpace(text.codePointAt(start))) {
            start += Character.charCount(text.codePointAt(start));
        }
        while (end > start && isPythonSpace(text.codePointBefore(end))) {
            end -= Character.charCount(text.codePointBefore(end));
        }
        return text.substring(start, end);
    }

    // ---- ftfy.fix_text ----------------------------------------------------------------

    /** ftfy.fix_text with its default configuration, less mojibake repair (see the class comment). */
    public static String fixText(String text) {
        StringBuilder out = new StringBuilder(text.length());
        boolean unescapeHtml = true; // ftfy's "auto"
        int pos = 0;
        while (pos < text.length()) {
            // ftfy fixes line by line: a segment runs up to and including the next '\n'.
            int end = text.indexOf('\n', pos) + 1;
            if (end == 0) {
                end = text.length();
            }
            String segment = text.substring(pos, end);
            // A literal '<' suggests real HTML, whose entities are meant: from this segment on,
            // ftfy leaves entities alone (its config change sticks for later segments).
            if (unescapeHtml && segment.indexOf('<') >= 0) {
                unescapeHtml = false;
            }
            out.append(fixSegment(segment, unescapeHtml));
            pos = end;
        }
        return out.toString();
    }

    /** ftfy's fix_and_explain loop on one segment: apply every fixer until nothing changes. */
    static String fixSegment(String text, boolean unescapeHtml) {
        while (true) {
            String original = text;
            if (unescapeHtml) {
                text = HtmlUnescape.ftfy(text);
            }
            // (ftfy's fix_encoding would run here; see the class comment.)
            text = translate(text, C1_CONTROLS);
            text = translate(text, LIGATURES);
            text = translate(text, WIDTH);
            text = uncurlQuotes(text);
            text = fixLineBreaks(text);
            text = fixSurrogates(text);
            text = removeTerminalEscapes(text);
            text = removeControlChars(text);
            text = Normalizer.normalize(text, Normalizer.Form.NFC);
            if (text.equals(original)) {
                return text;
            }
        }
    }

    /** The Windows-1252 reading of a C1 control character (U+0080..U+009F), as ftfy's sloppy codec. */
    static String c1Replacement(char c) {
        String s = C1_CONTROLS.get(c);
        return s != null ? s : String.valueOf(c);
    }

    /** Python's str.translate with a table of single BMP characters. */
    private static String translate(String text, Map<Character, String> table) {
        StringBuilder out = null;
        for (int i = 0; i < text.length(); i++) {
            String replacement = table.get(text.charAt(i));
            if (replacement != null && out == null) {
                out = new StringBuilder(text.length());
                out.append(text, 0, i);
            }
            if (out != null) {
                out.append(replacement != null ? replacement : String.valueOf(text.charAt(i)));
            }
        }
        return out == null ? text : out.toString();
    }

    /** uncurl_quotes: U+201C..U+201F to '"', U+02BC and U+2018..U+201B to '\''. */
    static String uncurlQuotes(String text) {
        StringBuilder out = new StringBuilder(text.length());
        for (int i = 0; i < text.length(); i++) {
            char c = text.charAt(i);
            if (c >= '\u201C' && c <= '\u201F') {
                out.append('"');
            } else if (c == '\u02BC' || (c >= '\u2018' && c <= '\u201B')) {
                out.append('\'');
            } else {
                out.append(c);
            }
        }
        return out.toString();
    }

    /** fix_line_breaks: CRLF, CR, U+2028, U+2029 and U+0085 become '\n' (in this order). */
    static String fixLineBreaks(String text) {
        return text.replace("\r\n", "\n").replace("\r", "\n").replace("\u2028", "\n")
                .replace("\u2029", "\n").replace("\u0085", "\n");
    }

    /**
     * fix_surrogates: Python strings can hold a surrogate pair as two code points, which ftfy
     * joins; in Java a valid pair already is one character, so only unpaired surrogates are
     * left to replace with U+FFFD, as ftfy does.
     */
    static String fixSurrogates(String text) {
        StringBuilder out = null;
        for (int i = 0; i < text.length(); i++) {
            char c = text.charAt(i);
            boolean lone = false;
            if (Character.isHighSurrogate(c)) {
                if (i + 1 < text.length() && Character.isLowSurrogate(text.charAt(i + 1))) {
                    if (out != null) {
                        out.append(c).append(text.charAt(i + 1));
                    }
                    i++;
                    continue;
                }
                lone = true;
            } else if (Character.isLowSurrogate(c)) {
                lone = true;
            }
            if (lone && out == null) {
                out = new StringBuilder(text.length());
                out.append(text, 0, i);
            }
            if (out != null) {
                out.append(lone ? '\uFFFD' : c);
            }
        }
        return out == null ? text : out.toString();
    }

    /**
     * remove_terminal_escapes: drops every match of {@code \033\[((?:\d|;)*)([a-zA-Z])}, where
     * Python's \d is any Unicode decimal digit (category Nd), not just 0-9.
     */
    static String removeTerminalEscapes(String text) {
        if (text.indexOf('\033') < 0) {
            return text;
        }
        StringBuilder out = new StringBuilder(text.length());
        int i = 0;
        while (i < text.length()) {
            if (text.charAt(i) == '\033' && i + 1 < text.length() && text.charAt(i + 1) == '[') {
                int j = i + 2;
                while (j < text.length()) {
                    int cp = text.codePointAt(j);
                    if (cp == ';' || Character.getType(cp) == Character.DECIMAL_DIGIT_NUMBER) {
                        j += Character.charCount(cp);
                    } else {
                        break;
                    }
                }
                if (j < text.length() && isAsciiLetter(text.charAt(j))) {
                    i = j + 1; // drop the whole escape
                    continue;
                }
            }
            out.append(text.charAt(i));
            i++;
        }
        return out.toString();
    }

    /**
     * remove_control_chars: U+0000..U+0008, U+000B, U+000E..U+001F, U+007F, U+206A..U+206F,
     * U+FEFF and U+FFF9..U+FFFC are dropped (tabs, line breaks, C1 controls, joiners stay).
     */
    static String removeControlChars(String text) {
        StringBuilder out = null;
        for (int i = 0; i < text.length(); i++) {
            char c = text.charAt(i);
            boolean drop = c <= 0x08 || c == 0x0B || (c >= 0x0E && c <= 0x1F) || c == 0x7F
                    || (c >= 0x206A && c <= 0x206F) || c == 0xFEFF || (c >= 0xFFF9 && c <= 0xFFFC);
            if (drop && out == null) {
                out = new StringBuilder(text.length());
                out.append(text, 0, i);
            }
            if (out != null && !drop) {
                out.append(c);
            }
        }
        return out == null ? text : out.toString();
    }

    private static boolean isAsciiLetter(char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    }
}
