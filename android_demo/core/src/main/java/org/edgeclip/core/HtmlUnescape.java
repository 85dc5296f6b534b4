package org.edgeclip.core;

import java.util.HashMap;
import java.util.Map;

/**
 * HTML character references, decoded two ways, each exactly as its Python original:
 * {@link #python} is CPython 3.11's {@code html.unescape} and {@link #ftfy} is ftfy 6.3.1's
 * {@code fixes.unescape_html}. The CLIP tokenizer's cleaning runs both (ftfy inside fix_text,
 * then html.unescape twice), and they differ (ftfy wants the ';', knows upper-case names
 * such as "&amp;EACUTE;"; Python accepts "&amp;amp" without ';' and longest-prefix names).
 *
 * <p>Numeric references (decimal and hex) are complete, with Python's replacements for
 * invalid ones. Named references cover the HTML 4 names and "apos" in all their html5
 * spellings; see {@link HtmlEntities} for what is not covered.
 */
final class HtmlUnescape {
    private HtmlUnescape() {}

    private static final Map<String, String> PYTHON_NAMES = toMap(HtmlEntities.PYTHON_HTML5);
    private static final Map<String, String> FTFY_NAMES = toMap(HtmlEntities.FTFY);

    private static Map<String, String> toMap(String[] pairs) {
        Map<String, String> map = new HashMap<>();
        for (int i = 0; i < pairs.length; i += 2) {
            map.put(pairs[i], pairs[i + 1]);
        }
        return map;
    }

    // ---- Python's html.unescape -------------------------------------------------------

    /**
     * CPython's {@code html.unescape}: every match of
     * {@code &(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)} is replaced, left to
     * right, without overlaps; unknown names are left as they are.
     */
    static String python(String s) {
        if (s.indexOf('&') < 0) {
            return s;
        }
        StringBuilder out = new StringBuilder(s.length());
        int i = 0;
        while (i < s.length()) {
            char c = s.charAt(i);
            if (c != '&') {
                out.append(c);
                i++;
                continue;
            }
            int end = matchPythonReference(s, i);
            if (end < 0) {
                out.append('&');
                i++;
                continue;
            }
            out.append(replacePythonReference(s.substring(i + 1, end)));
            i = end;
        }
        return out.toString();
    }

    /** End (exclusive) of the reference starting with the '&' at {@code amp}, or -1. */
    private static int matchPythonReference(String s, int amp) {
        int j = amp + 1;
        if (j < s.length() && s.charAt(j) == '#') {
            int k = j + 1;
            // '#' digits ';'?   (tried first, so "&#0x41" is "&#0" then "x41")
            int digits = k;
            while (digits < s.length() && isAsciiDigit(s.charAt(digits))) {
                digits++;
            }
            if (digits > k) {
                return optionalSemicolon(s, digits);
            }
            // '#' [xX] hex digits ';'?
            if (k < s.length() && (s.charAt(k) == 'x' || s.charAt(k) == 'X')) {
                int hex = k + 1;
                while (hex < s.length() && isAsciiHexDigit(s.charAt(hex))) {
                    hex++;
                }
                if (hex > k + 1) {
                    return optionalSemicolon(s, hex);
                }
            }
            return -1; // '#' cannot start a name
        }
        // 1 to 32 characters (code points, as Python counts) other than \t \n \f space < & # ;
        int k = j;
        int count = 0;
        while (k < s.length() && count < 32) {
            int cp = s.codePointAt(k);
            if (cp == '\t' || cp == '\n' || cp == '\f' || cp == ' ' || cp == '<' || cp == '&'
                    || cp == '#' || cp == ';') {
                break;
            }
            k += Character.charCount(cp);
            count++;
        }
        return count == 0 ? -1 : optionalSemicolon(s, k);
    }

    private static int optionalSemicolon(String s, int at) {
        return at < s.length() && s.charAt(at) == ';' ? at + 1 : at;
    }

    /** Python's {@code _replace_charref} for the reference text after the '&'. */
    private static String replacePythonReference(String ref) {
        if (ref.charAt(0) == '#') {
            String digits = ref.endsWith(";") ? ref.substring(0, ref.length() - 1) : ref;
            int radix = 10;
            int start = 1;
            if (digits.charAt(1) == 'x' || digits.charAt(1) == 'X') {
                radix = 16;
                start = 2;
            }
            // Python's int is unbounded; anything past U+10FFFF is simply "too big".
            long num = 0;
            for (int i = start; i < digits.length(); i++) {
                num = num * radix + Character.digit(digits.charAt(i), radix);
                if (num > 0x10FFFF) {
                    num = 0x110000;
                }
            }
            return numericReference((int) num);
        }
        String value = PYTHON_NAMES.get(ref);
        if (value != null) {
            return value;
        }
        // The longest name that is a prefix (of at least 2 code points), as the HTML5 spec says:
        // "&notit;" is "¬it;".
        int[] cps = ref.codePoints().toArray();
        for (int x = cps.length - 1; x > 1; x--) {
            String prefix = new String(cps, 0, x);
            value = PYTHON_NAMES.get(prefix);
            if (value != null) {
                return value + new String(cps, x, cps.length - x);
            }
        }
        return "&" + ref;
    }

    /** A numeric reference's text, with the HTML5 spec's (and Python's) repairs. */
    private static String numericReference(int num) {
        if (num == 0x00) {
            return "\uFFFD";
        }
        if (num == 0x0D) {
            return "\r";
        }
        if (num >= 0x80 && num <= 0x9F) {
            // Windows-1252 meanings of the C1 range, with its five undefined bytes kept as is:
            // Python's _invalid_charrefs is exactly ftfy's sloppy-windows-1252 table.
            return TextCleaner.c1Replacement((char) num);
        }
        if ((num >= 0xD800 && num <= 0xDFFF) || num > 0x10FFFF) {
            return "\uFFFD";
        }
        if (isInvalidCodepoint(num)) {
            return "";
        }
        return new String(Character.toChars(num));
    }

    /** Python's {@code html._invalid_codepoints}: controls and noncharacters, dropped. */
    private static boolean isInvalidCodepoint(int num) {
        return (num >= 0x01 && num <= 0x08) || num == 0x0B || (num >= 0x0E && num <= 0x1F)
                || (num >= 0x7F && num <= 0x9F) || (num >= 0xFDD0 && num <= 0xFDEF)
                || (num & 0xFFFE) == 0xFFFE;
    }

    // ---- ftfy's unescape_html -------------------------------------------------------------

    /**
     * ftfy's {@code unescape_html}: only references matching {@code &#?[0-9A-Za-z]{1,24};}
     * (so the ';' is required), named ones from ftfy's table, numeric ones through Python's
     * html.unescape but only when that consumes the whole reference.
     */
    static String ftfy(String s) {
        if (s.indexOf('&') < 0) {
            return s;
        }
        StringBuilder out = new StringBuilder(s.length());
        int i = 0;
        while (i < s.length()) {
            char c = s.charAt(i);
            int end = c == '&' ? matchFtfyReference(s, i) : -1;
            if (end < 0) {
                out.append(c);
                i++;
                continue;
            }
            String ref = s.substring(i, end);
            String value = FTFY_NAMES.get(ref);
            if (value != null) {
                out.append(value);
            } else if (ref.startsWith("&#")) {
                String unescaped = python(ref);
                // "If html.unescape only decoded part of the string, that's not what we want."
                out.append(unescaped.indexOf(';') >= 0 ? ref : unescaped);
            } else {
                out.append(ref);
            }
            i = end;
        }
        return out.toString();
    }

    /** End (exclusive) of a {@code &#?[0-9A-Za-z]{1,24};} match at {@code amp}, or -1. */
    private static int matchFtfyReference(String s, int amp) {
        int j = amp + 1;
        if (j < s.length() && s.charAt(j) == '#') {
            j++;
        }
        int k = j;
        while (k < s.length() && isAsciiAlnum(s.charAt(k))) {
            k++;
        }
        int count = k - j;
        if (count >= 1 && count <= 24 && k < s.length() && s.charAt(k) == ';') {
            return k + 1;
        }
        // Without the '#' the class would have to match '#', which it cannot: no match.
        return -1;
    }

    private static boolean isAsciiDigit(char c) {
        return c >= '0' && c <= '9';
    }

    private static boolean isAsciiHexDigit(char c) {
        return isAsciiDigit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
    }

    private static boolean isAsciiAlnum(char c) {
        return isAsciiDigit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    }
}
