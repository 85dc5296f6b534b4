import Foundation
import XCTest
@testable import EdgeClipCore

/// Hand-picked cleaning cases, expected values from open_clip 3.3.0's `_clean_lower`
/// (ftfy 6.3.1, CPython 3.11.7) pasted here, and token ids from its SimpleTokenizer at
/// context length 77 (so truncation of long text is visible). Same tables as TextCleanerTest.java.
final class TextCleanerTests: XCTestCase {
    // [case, input, Python's _clean_lower(input)]
    static let CLEAN: [[String]] = [
        ["curly quotes", "\u{201C}Hello\u{201D} \u{2018}world\u{2019} it\u{2019}s \u{201E}smart\u{201F} \u{02BC}x", "\"hello\" 'world' it's \"smart\" 'x"],
        ["ligatures", "\u{FB01}ne \u{FB02}our \u{FB00} \u{FB03} \u{FB04} \u{FB05} \u{FB06} \u{0132} \u{01C6}", "fine flour ff ffi ffl \u{017F}t st ij d\u{017E}"],
        ["fullwidth", "\u{FF26}\u{FF35}\u{FF2C}\u{FF2C}\u{3000}\u{FF57}\u{FF49}\u{FF44}\u{FF54}\u{FF48}\u{FF01} \u{FF11}\u{FF12}\u{FF13} \u{FF76}\u{FF80}\u{FF76}\u{FF85}", "full width! 123 \u{30AB}\u{30BF}\u{30AB}\u{30CA}"],
        ["nbsp and spaces", "a\u{00A0}b\u{2009}c\u{3000}d\u{202F}e\u{205F}f\u{1680}g \u{0009}\u{000A}\u{000D}\u{000B}\u{000C}\u{001C}\u{001D}h  ", "a b c d e f g h"],
        ["entities", "a &amp; b &lt;c&gt; &quot;d&quot; &apos;e&apos; &#39;f&#x27; &nbsp;g &eacute;&EACUTE; &copy &hellip; &mdash;", "a & b <c> \"d\" 'e' 'f' g \u{00E9}\u{00E9} \u{00A9} \u{2026} \u{2014}"],
        ["double escaped", "&amp;amp; &amp;lt;x&amp;gt; &amp;#233;", "& <x> \u{00E9}"],
        ["numeric edge", "&#0; &#128; &#x80; &#150; &#1114112; &#xD800; &#65 &#x41; &#11; &#xFFFE; &#0x41", "\u{FFFD} \u{20AC} \u{20AC} \u{2013} \u{FFFD} \u{FFFD} a a \u{FFFD}x41"],
        ["html with <", "<b>bold</b> &eacute; &amp;lt;", "<b>bold</b> \u{00E9} <"],
        ["lt on later line", "caf&eacute;\u{000A}<p> &EACUTE;\u{000A}na&iuml;ve", "caf\u{00E9} <p> &eacute; na\u{00EF}ve"],
        ["prefix names", "&notit; &ampx &copyright &AMP; &SZLIG;", "\u{00AC}it; &x \u{00A9}right & ss"],
        ["emoji", "emoji \u{1F600}\u{1F44D}\u{1F3FD} \u{2764}\u{FE0F} \u{1F1EB}\u{1F1F7} \u{1F469}\u{200D}\u{1F4BB}", "emoji \u{1F600}\u{1F44D}\u{1F3FD} \u{2764}\u{FE0F} \u{1F1EB}\u{1F1F7} \u{1F469}\u{200D}\u{1F4BB}"],
        ["cjk", "\u{6F22}\u{5B57}\u{3068}\u{304B}\u{306A} \u{4E2D}\u{6587}\u{5B57} \u{D55C}\u{AD6D}\u{C5B4}", "\u{6F22}\u{5B57}\u{3068}\u{304B}\u{306A} \u{4E2D}\u{6587}\u{5B57} \u{D55C}\u{AD6D}\u{C5B4}"],
        ["arabic", "\u{0645}\u{0631}\u{062D}\u{0628}\u{0627} \u{0628}\u{0627}\u{0644}\u{0639}\u{0627}\u{0644}\u{0645} \u{0661}\u{0662}\u{0663}", "\u{0645}\u{0631}\u{062D}\u{0628}\u{0627} \u{0628}\u{0627}\u{0644}\u{0639}\u{0627}\u{0644}\u{0645} \u{0661}\u{0662}\u{0663}"],
        ["hebrew devanagari thai", "\u{05E9}\u{05DC}\u{05D5}\u{05DD} \u{0928}\u{092E}\u{0938}\u{094D}\u{0924}\u{0947} \u{0E2A}\u{0E27}\u{0E31}\u{0E2A}\u{0E14}\u{0E35}", "\u{05E9}\u{05DC}\u{05D5}\u{05DD} \u{0928}\u{092E}\u{0938}\u{094D}\u{0924}\u{0947} \u{0E2A}\u{0E27}\u{0E31}\u{0E2A}\u{0E14}\u{0E35}"],
        ["accents NFD", "cafe\u{0301} nai\u{0308}ve Zu\u{0308}rich A\u{030A}", "caf\u{00E9} na\u{00EF}ve z\u{00FC}rich \u{00E5}"],
        ["case", "\u{0130}STANBUL \u{039F}\u{0394}\u{039F}\u{03A3} \u{03A3}\u{0391}\u{03A3}. \u{03A3} \u{1F48}\u{0394}\u{03A5}\u{03A3}\u{03A3}\u{0395}\u{038E}\u{03A3} STRASSE \u{1E9E} \u{01C5}", "i\u{0307}stanbul \u{03BF}\u{03B4}\u{03BF}\u{03C2} \u{03C3}\u{03B1}\u{03C2}. \u{03C3} \u{1F40}\u{03B4}\u{03C5}\u{03C3}\u{03C3}\u{03B5}\u{03CD}\u{03C2} strasse \u{00DF} d\u{017E}"],
        ["contractions", "Don't YOU'LL we've I'M he'd it's they're O'Neil rock'n'roll ''s", "don't you'll we've i'm he'd it's they're o'neil rock'n'roll ''s"],
        ["c1 controls", "\u{0093}quoted\u{0094} \u{0085} \u{0080}uro \u{0081}", "\"quoted\" \u{2026} \u{20AC}uro \u{0081}"],
        ["terminal escapes", "\u{001B}[31mred\u{001B}[0m \u{001B}[1;2x \u{001B}[\u{0661}m", "red"],
        ["control chars", "a\u{0000}b\u{0007}c\u{007F}d\u{200B}e\u{200D}f\u{FEFF}g\u{FFFC}h\u{206A}i", "abcd\u{200B}e\u{200D}fghi"],
        ["line breaks", "a\u{000D}\u{000A}b\u{000D}c\u{2028}d\u{2029}e", "a b c d e"],
        ["numbers", "3.14 1,000 \u{00BD} \u{00B2} \u{216B} 2024\u{5E74} \u{0663}", "3.14 1,000 \u{00BD} \u{00B2} \u{217B} 2024\u{5E74} \u{0663}"],
        ["punctuation", "Hello, World!!! (paren) [b] {c} #hash @user http://x.com/a?b=c&d=e ... \u{2014} \u{2026} \u{00BF}qu\u{00E9}?", "hello, world!!! (paren) [b] {c} #hash @user http://x.com/a?b=c&d=e ... \u{2014} \u{2026} \u{00BF}qu\u{00E9}?"],
        ["special tokens typed", "<start_of_text> a <END_OF_TEXT> b <start_of_text>", "<start_of_text> a <end_of_text> b <start_of_text>"],
        ["empty", "", ""],
        ["only spaces", " \u{3000} \u{0009} ", ""],
    ]

    // [input, Python's SimpleTokenizer(context_length=77)(input) ids, space-separated]
    static let IDS: [[String]] = [
        ["A very long caption about a small red circle next to a big blue square a small red circle next to a big blue square a small red circle next to a big blue square a small red circle next to a big blue square a small red circle next to a big blue square a small red circle next to a big blue square a small red circle next to a big blue square a small red circle next to a big blue square a small red circle next to a big blue square a small red circle next to a big blue square a small red circle next to a big blue square a small red circle next to a big blue square", "49406 320 1070 1538 11327 781 320 2442 736 7117 1131 531 320 1205 1746 3999 320 2442 736 7117 1131 531 320 1205 1746 3999 320 2442 736 7117 1131 531 320 1205 1746 3999 320 2442 736 7117 1131 531 320 1205 1746 3999 320 2442 736 7117 1131 531 320 1205 1746 3999 320 2442 736 7117 1131 531 320 1205 1746 3999 320 2442 736 7117 1131 531 320 1205 1746 3999 49407"],
        ["emoji \u{1F600}\u{1F44D}\u{1F3FD} \u{2764}\u{FE0F} \u{1F1EB}\u{1F1F7} \u{1F469}\u{200D}\u{1F4BB}", "49406 16327 12832 43722 1752 16223 26304 18135 49407 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0"],
        ["\u{6F22}\u{5B57}\u{3068}\u{304B}\u{306A} \u{4E2D}\u{6587}\u{5B57} \u{D55C}\u{AD6D}\u{C5B4}", "49406 162 120 95 35751 245 34671 4813 36218 359 19759 255 29032 229 35751 501 15197 250 31871 255 31625 368 49407 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0"],
        ["\u{0130}STANBUL \u{039F}\u{0394}\u{039F}\u{03A3} \u{03A3}\u{0391}\u{03A3}. \u{03A3} \u{1F48}\u{0394}\u{03A5}\u{03A3}\u{03A3}\u{0395}\u{038E}\u{03A3} STRASSE \u{1E9E} \u{01C5}", "49406 328 16384 11231 138 123 138 112 138 123 139 480 139 225 138 109 139 480 269 139 481 157 121 222 138 112 139 227 139 225 139 225 138 113 139 235 139 480 1894 8938 127 509 67 129 378 49407 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0"],
        ["<start_of_text> a <END_OF_TEXT> b <start_of_text>", "49406 49406 320 49407 321 49406 49407 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0"],
        ["Don't YOU'LL we've I'M he'd it's they're O'Neil rock'n'roll ''s", "49406 847 713 592 1342 649 1200 328 880 797 1896 585 568 889 982 334 262 8030 2172 262 333 262 3341 8445 338 49407 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0"],
    ]

    func testCleaningMatchesOpenClip() {
        var failures: [String] = []
        for c in TextCleanerTests.CLEAN {
            let actual = TextCleaner.clean(c[1])
            // Scalar by scalar: Swift's == on Strings is canonical equivalence, Java's is not.
            if Array(actual.unicodeScalars) != Array(c[2].unicodeScalars) {
                failures.append(c[0] + ": python " + Fixtures.escape(c[2]) + " swift " + Fixtures.escape(actual))
            }
        }
        XCTAssertTrue(failures.isEmpty, failures.joined(separator: "\n"))
    }

    func testIdsMatchOpenClipWithTruncation() throws {
        let folder = try ExportFolder.open(Fixtures.export())
        let tokenizer = try ClipTokenizer.fromVocab(folder.vocabFile(), 77, 49406, 49407)
        for c in TextCleanerTests.IDS {
            let expected = c[1].split(separator: " ").map { Int64($0)! }
            XCTAssertEqual(expected, try tokenizer.tokenize(c[0]), Fixtures.escape(c[0]))
        }
        let longIds = try tokenizer.tokenize(TextCleanerTests.IDS[0][0])
        XCTAssertEqual(49406, longIds[0])
        XCTAssertEqual(49407, longIds[76]) // truncated: the last is forced to EOT
        XCTAssertTrue(try tokenizer.encode(TextCleanerTests.IDS[0][0]).count > 76)
        let empty = try tokenizer.tokenize("")
        XCTAssertEqual(49406, empty[0])
        XCTAssertEqual(49407, empty[1])
        XCTAssertEqual(0, empty[2])
    }

    func testWrongSpecialIdsAreRefused() throws {
        let vocab = try ExportFolder.open(Fixtures.export()).vocabFile()
        let e = Fixtures.thrown { _ = try ClipTokenizer.fromVocab(vocab, 77, 1, 2) }
        XCTAssertTrue(e.message.contains("49406/49407"), e.message)
    }

    func testPythonWhitespaceAndStrip() {
        XCTAssertTrue(TextCleaner.isPythonSpace(0xA0))
        XCTAssertTrue(TextCleaner.isPythonSpace(0x1C))
        XCTAssertTrue(TextCleaner.isPythonSpace(0x3000))
        XCTAssertTrue(!TextCleaner.isPythonSpace(0x200B))
        XCTAssertTrue(!TextCleaner.isPythonSpace(0x180E))
        XCTAssertEqual("a b", TextCleaner.whitespaceClean("\u{00A0}a\u{2003}\u{2003}b\u{0085}"))
        XCTAssertEqual("x", TextCleaner.pythonStrip("\u{3000}x\u{2029}"))
        XCTAssertEqual(Array("i\u{0307}".unicodeScalars), Array(TextCleaner.pythonLower("\u{0130}").unicodeScalars))
        XCTAssertEqual("\u{03BF}\u{03C2} \u{03C3}", TextCleaner.pythonLower("\u{039F}\u{03A3} \u{03A3}"))
    }

    func testPieces() {
        // open_clip's pattern splits letters, single digits, and other runs; contractions first.
        var pieces: [String] = []
        let text = Array("it's 42 caf\u{00E9}!! \u{6F22}\u{5B57} <start_of_text>x '\u{017F}".unicodeScalars)
        var pos = 0
        while pos < text.count {
            let end = ClipTokenizer.matchPiece(text, pos)
            if end < 0 {
                pos += 1
                continue
            }
            pieces.append(TextCleaner.string(text[pos..<end]))
            pos = end
        }
        XCTAssertEqual(["it", "'s", "4", "2", "caf\u{00E9}", "!!", "\u{6F22}\u{5B57}",
                        "<start_of_text>", "x", "'\u{017F}"], pieces)
    }
}
