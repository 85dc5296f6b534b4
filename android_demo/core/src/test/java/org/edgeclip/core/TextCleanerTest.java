package org.edgeclip.core;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.File;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;

/**
 * Hand-picked cleaning cases, expected values from open_clip 3.3.0's {@code _clean_lower}
 * (ftfy 6.3.1, CPython 3.11.7) pasted here, and token ids from its SimpleTokenizer at
 * context length 77 (so truncation of long text is visible).
 */
class TextCleanerTest {
    // {case, input, Python's _clean_lower(input)}
    private static final String[][] CLEAN = {
        {"curly quotes", "\u201CHello\u201D \u2018world\u2019 it\u2019s \u201Esmart\u201F \u02BCx", "\"hello\" 'world' it's \"smart\" 'x"},
        {"ligatures", "\uFB01ne \uFB02our \uFB00 \uFB03 \uFB04 \uFB05 \uFB06 \u0132 \u01C6", "fine flour ff ffi ffl \u017Ft st ij d\u017E"},
        {"fullwidth", "\uFF26\uFF35\uFF2C\uFF2C\u3000\uFF57\uFF49\uFF44\uFF54\uFF48\uFF01 \uFF11\uFF12\uFF13 \uFF76\uFF80\uFF76\uFF85", "full width! 123 \u30AB\u30BF\u30AB\u30CA"},
        {"nbsp and spaces", "a\u00A0b\u2009c\u3000d\u202Fe\u205Ff\u1680g \t\n\r\u000B\u000C\u001C\u001Dh  ", "a b c d e f g h"},
        {"entities", "a &amp; b &lt;c&gt; &quot;d&quot; &apos;e&apos; &#39;f&#x27; &nbsp;g &eacute;&EACUTE; &copy &hellip; &mdash;", "a & b <c> \"d\" 'e' 'f' g \u00E9\u00E9 \u00A9 \u2026 \u2014"},
        {"double escaped", "&amp;amp; &amp;lt;x&amp;gt; &amp;#233;", "& <x> \u00E9"},
        {"numeric edge", "&#0; &#128; &#x80; &#150; &#1114112; &#xD800; &#65 &#x41; &#11; &#xFFFE; &#0x41", "\uFFFD \u20AC \u20AC \u2013 \uFFFD \uFFFD a a \uFFFDx41"},
        {"html with <", "<b>bold</b> &eacute; &amp;lt;", "<b>bold</b> \u00E9 <"},
        {"lt on later line", "caf&eacute;\n<p> &EACUTE;\nna&iuml;ve", "caf\u00E9 <p> &eacute; na\u00EFve"},
        {"prefix names", "&notit; &ampx &copyright &AMP; &SZLIG;", "\u00ACit; &x \u00A9right & ss"},
        {"emoji", "emoji \uD83D\uDE00\uD83D\uDC4D\uD83C\uDFFD \u2764\uFE0F \uD83C\uDDEB\uD83C\uDDF7 \uD83D\uDC69\u200D\uD83D\uDCBB", "emoji \uD83D\uDE00\uD83D\uDC4D\uD83C\uDFFD \u2764\uFE0F \uD83C\uDDEB\uD83C\uDDF7 \uD83D\uDC69\u200D\uD83D\uDCBB"},
        {"cjk", "\u6F22\u5B57\u3068\u304B\u306A \u4E2D\u6587\u5B57 \uD55C\uAD6D\uC5B4", "\u6F22\u5B57\u3068\u304B\u306A \u4E2D\u6587\u5B57 \uD55C\uAD6D\uC5B4"},
        {"arabic", "\u0645\u0631\u062D\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645 \u0661\u0662\u0663", "\u0645\u0631\u062D\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645 \u0661\u0662\u0663"},
        {"hebrew devanagari thai", "\u05E9\u05DC\u05D5\u05DD \u0928\u092E\u0938\u094D\u0924\u0947 \u0E2A\u0E27\u0E31\u0E2A\u0E14\u0E35", "\u05E9\u05DC\u05D5\u05DD \u0928\u092E\u0938\u094D\u0924\u0947 \u0E2A\u0E27\u0E31\u0E2A\u0E14\u0E35"},
        {"accents NFD", "cafe\u0301 nai\u0308ve Zu\u0308rich A\u030A", "caf\u00E9 na\u00EFve z\u00FCrich \u00E5"},
        {"case", "\u0130STANBUL \u039F\u0394\u039F\u03A3 \u03A3\u0391\u03A3. \u03A3 \u1F48\u0394\u03A5\u03A3\u03A3\u0395\u038E\u03A3 STRASSE \u1E9E \u01C5", "i\u0307stanbul \u03BF\u03B4\u03BF\u03C2 \u03C3\u03B1\u03C2. \u03C3 \u1F40\u03B4\u03C5\u03C3\u03C3\u03B5\u03CD\u03C2 strasse \u00DF d\u017E"},
        {"contractions", "Don't YOU'LL we've I'M he'd it's they're O'Neil rock'n'roll ''s", "don't you'll we've i'm he'd it's they're o'neil rock'n'roll ''s"},
        {"c1 controls", "\u0093quoted\u0094 \u0085 \u0080uro \u0081", "\"quoted\" \u2026 \u20ACuro \u0081"},
        {"terminal escapes", "\u001B[31mred\u001B[0m \u001B[1;2x \u001B[\u0661m", "red"},
        {"control chars", "a\u0000b\u0007c\u007Fd\u200Be\u200Df\uFEFFg\uFFFCh\u206Ai", "abcd\u200Be\u200Dfghi"},
        {"line breaks", "a\r\nb\rc\u2028d\u2029e", "a b c d e"},
        {"numbers", "3.14 1,000 \u00BD \u00B2 \u216B 2024\u5E74 \u0663", "3.14 1,000 \u00BD \u00B2 \u217B 2024\u5E74 \u0663"},
        {"punctuation", "Hello, World!!! (paren) [b] {c} #hash @user http://x.com/a?b=c&d=e ... \u2014 \u2026 \u00BFqu\u00E9?", "hello, world!!! (paren) [b] {c} #hash @user http://x.com/a?b=c&d=e ... \u2014 \u2026 \u00BFqu\u00E9?"},
        {"special tokens typed", "<start_of_text> a <END_OF_TEXT> b <start_of_text>", "<start_of_text> a <end_of_text> b <start_of_text>"},
        {"empty", "", ""},
        {"only spaces", " \u3000 \t ", ""},
    };

    // {input, Python's SimpleTokenizer(context_length=77)(input) ids, space-separated}
    private static final String[][] IDS = {
        {"A very long caption about a small red circle next to a big blue square a small red circle next to a big blue square a small red circle next to a big blue square a small red circle next to a big blue square a small red circle next to a big blue square a small red circle next to a big blue square a small red circle next to a big blue square a small red circle next to a big blue square a small red circle next to a big blue square a small red circle next to a big blue square a small red circle next to a big blue square a small red circle next to a big blue square", "49406 320 1070 1538 11327 781 320 2442 736 7117 1131 531 320 1205 1746 3999 320 2442 736 7117 1131 531 320 1205 1746 3999 320 2442 736 7117 1131 531 320 1205 1746 3999 320 2442 736 7117 1131 531 320 1205 1746 3999 320 2442 736 7117 1131 531 320 1205 1746 3999 320 2442 736 7117 1131 531 320 1205 1746 3999 320 2442 736 7117 1131 531 320 1205 1746 3999 49407"},
        {"emoji \uD83D\uDE00\uD83D\uDC4D\uD83C\uDFFD \u2764\uFE0F \uD83C\uDDEB\uD83C\uDDF7 \uD83D\uDC69\u200D\uD83D\uDCBB", "49406 16327 12832 43722 1752 16223 26304 18135 49407 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0"},
        {"\u6F22\u5B57\u3068\u304B\u306A \u4E2D\u6587\u5B57 \uD55C\uAD6D\uC5B4", "49406 162 120 95 35751 245 34671 4813 36218 359 19759 255 29032 229 35751 501 15197 250 31871 255 31625 368 49407 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0"},
        {"\u0130STANBUL \u039F\u0394\u039F\u03A3 \u03A3\u0391\u03A3. \u03A3 \u1F48\u0394\u03A5\u03A3\u03A3\u0395\u038E\u03A3 STRASSE \u1E9E \u01C5", "49406 328 16384 11231 138 123 138 112 138 123 139 480 139 225 138 109 139 480 269 139 481 157 121 222 138 112 139 227 139 225 139 225 138 113 139 235 139 480 1894 8938 127 509 67 129 378 49407 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0"},
        {"<start_of_text> a <END_OF_TEXT> b <start_of_text>", "49406 49406 320 49407 321 49406 49407 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0"},
        {"Don't YOU'LL we've I'M he'd it's they're O'Neil rock'n'roll ''s", "49406 847 713 592 1342 649 1200 328 880 797 1896 585 568 889 982 334 262 8030 2172 262 333 262 3341 8445 338 49407 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0"},
    };

    @Test
    void cleaningMatchesOpenClip() {
        List<String> failures = new ArrayList<>();
        for (String[] c : CLEAN) {
            String actual = TextCleaner.clean(c[1]);
            if (!actual.equals(c[2])) {
                failures.add(c[0] + ": python " + Fixtures.escape(c[2]) + " java " + Fixtures.escape(actual));
            }
        }
        assertTrue(failures.isEmpty(), String.join("\n", failures));
    }

    @Test
    void idsMatchOpenClipWithTruncation() {
        File export = Fixtures.export();
        ExportFolder folder = ExportFolder.open(export);
        ClipTokenizer tokenizer = ClipTokenizer.fromVocab(folder.vocabFile(), 77, 49406, 49407);
        for (String[] c : IDS) {
            String[] parts = c[1].split(" ");
            long[] expected = new long[parts.length];
            for (int i = 0; i < parts.length; i++) {
                expected[i] = Long.parseLong(parts[i]);
            }
            assertArrayEquals(expected, tokenizer.tokenize(c[0]), Fixtures.escape(c[0]));
        }
        long[] longIds = tokenizer.tokenize(IDS[0][0]);
        assertEquals(49406, longIds[0]);
        assertEquals(49407, longIds[76]); // truncated: the last is forced to EOT
        assertTrue(tokenizer.encode(IDS[0][0]).length > 76);
        long[] empty = tokenizer.tokenize("");
        assertEquals(49406, empty[0]);
        assertEquals(49407, empty[1]);
        assertEquals(0, empty[2]);
    }

    @Test
    void wrongSpecialIdsAreRefused() {
        File vocab = ExportFolder.open(Fixtures.export()).vocabFile();
        EdgeclipException e = org.junit.jupiter.api.Assertions.assertThrows(EdgeclipException.class,
                () -> ClipTokenizer.fromVocab(vocab, 77, 1, 2));
        assertTrue(e.getMessage().contains("49406/49407"), e.getMessage());
    }

    @Test
    void pythonWhitespaceAndStrip() {
        assertTrue(TextCleaner.isPythonSpace(0xA0));
        assertTrue(TextCleaner.isPythonSpace(0x1C));
        assertTrue(TextCleaner.isPythonSpace(0x3000));
        assertTrue(!TextCleaner.isPythonSpace(0x200B));
        assertTrue(!TextCleaner.isPythonSpace(0x180E));
        assertEquals("a b", TextCleaner.whitespaceClean("\u00A0a\u2003\u2003b\u0085"));
        assertEquals("x", TextCleaner.pythonStrip("\u3000x\u2029"));
        assertEquals("i\u0307", TextCleaner.pythonLower("\u0130"));
        assertEquals("\u03BF\u03C2 \u03C3", TextCleaner.pythonLower("\u039F\u03A3 \u03A3"));
    }

    @Test
    void pieces() {
        // open_clip's pattern splits letters, single digits, and other runs; contractions first.
        List<String> pieces = new ArrayList<>();
        String text = "it's 42 caf\u00E9!! \u6F22\u5B57 <start_of_text>x '\u017F";
        int pos = 0;
        while (pos < text.length()) {
            int end = ClipTokenizer.matchPiece(text, pos);
            if (end < 0) {
                pos++;
                continue;
            }
            pieces.add(text.substring(pos, end));
            pos = end;
        }
        assertEquals(java.util.Arrays.asList("it", "'s", "4", "2", "caf\u00E9", "!!", "\u6F22\u5B57",
                "<start_of_text>", "x", "'\u017F"), pieces);
    }
}
