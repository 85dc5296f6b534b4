import Foundation

/// open_clip's default text cleaning ("lower"), step for step:
///
///     clean(text) = whitespace_clean(basic_clean(text)).lower()
///     basic_clean = ftfy.fix_text, then html.unescape twice, then str.strip()
///     whitespace_clean = " ".join(text.split())
///
/// The tokenizer was trained on text cleaned this way, so a caption cleaned differently
/// tokenizes differently and embeds somewhere else: this is why every step mirrors Python.
///
/// ftfy.fix_text (6.3.1, default TextFixerConfig) is reproduced in its order, per line
/// segment, repeated until nothing changes: unescape_html (disabled from the first segment
/// holding '<' on, as ftfy's "auto" does), fix_c1_controls, fix_latin_ligatures,
/// fix_character_width, uncurl_quotes, fix_line_breaks, fix_surrogates,
/// remove_terminal_escapes, remove_control_chars, NFC normalisation.
///
/// Left out, knowingly: ftfy's mojibake repair (fix_encoding with restore_byte_a0,
/// replace_lossy_sequences, decode_inconsistent_utf8). It guesses which wrong codec produced
/// text such as "cafÃ©" from a statistical "badness" heuristic that cannot be reproduced
/// faithfully in a small port; text typed on a phone is not mojibake, so it is a no-op there.
/// Also left out: ftfy's 1,000,000-character segment cap (captions are short). Unicode data
/// (NFC, letter/number classes, case mapping) comes from the platform (Swift's own Unicode
/// tables; Python 3.11: Unicode 14), so characters assigned after Unicode 14 may differ.
///
/// Swift twin note: the Java core walks UTF-16 chars; this walks Unicode scalars (code
/// points). Every rule here touches BMP characters only, so the two agree on valid text, and a
/// Swift String cannot hold the unpaired surrogates that fixSurrogates repairs in Java.
public enum TextCleaner {
    typealias Scalars = [Unicode.Scalar]

    private static let WIDTH = toMap(FtfyTables.WIDTH)
    private static let LIGATURES = toMap(FtfyTables.LIGATURES)
    private static let C1_CONTROLS = toMap(FtfyTables.C1_CONTROLS)

    private static func toMap(_ pairs: [String]) -> [Unicode.Scalar: String] {
        var map: [Unicode.Scalar: String] = [:]
        var i = 0
        while i < pairs.count {
            map[pairs[i].unicodeScalars.first!] = pairs[i + 1]
            i += 2
        }
        return map
    }

    /// open_clip's `_clean_lower`: what SimpleTokenizer.encode tokenizes.
    public static func clean(_ text: String) -> String {
        return pythonLower(whitespaceClean(basicClean(text)))
    }

    /// open_clip's `basic_clean`: fix_text, html.unescape twice, strip.
    public static func basicClean(_ text: String) -> String {
        var fixed = fixText(text)
        fixed = HtmlUnescape.python(HtmlUnescape.python(fixed))
        return pythonStrip(fixed)
    }

    /// open_clip's `whitespace_clean`: runs of Python whitespace become one space, ends trimmed.
    public static func whitespaceClean(_ text: String) -> String {
        let s = Array(text.unicodeScalars)
        var out = String.UnicodeScalarView()
        var i = 0
        while i < s.count {
            if isPythonSpace(s[i].value) {
                i += 1
                continue
            }
            let start = i
            while i < s.count && !isPythonSpace(s[i].value) {
                i += 1
            }
            if !out.isEmpty {
                out.append(" ")
            }
            out.append(contentsOf: s[start..<i])
        }
        return String(out)
    }

    /// Python's `str.lower()`: full Unicode lowercasing (İ becomes "i̇", a final Σ
    /// becomes ς). Swift's per-scalar lowercaseMapping is the full, context-free mapping, so
    /// the one context rule Python applies (Final_Sigma) is done here, as CPython does it.
    public static func pythonLower(_ text: String) -> String {
        let s = Array(text.unicodeScalars)
        var out = String.UnicodeScalarView()
        for i in 0..<s.count {
            if s[i].value == 0x03A3 && isFinalSigma(s, i) {
                out.append("\u{03C2}")
            } else {
                out.append(contentsOf: s[i].properties.lowercaseMapping.unicodeScalars)
            }
        }
        return String(out)
    }

    /// CPython's handle_capital_sigma: a cased letter before (case-ignorables skipped) and
    /// none after.
    private static func isFinalSigma(_ s: Scalars, _ i: Int) -> Bool {
        var j = i - 1
        while j >= 0 && s[j].properties.isCaseIgnorable {
            j -= 1
        }
        if j < 0 || !s[j].properties.isCased {
            return false
        }
        var k = i + 1
        while k < s.count && s[k].properties.isCaseIgnorable {
            k += 1
        }
        return k == s.count || !s[k].properties.isCased
    }

    /// Python's `str.isspace()` for one code point (Unicode 14): categories Zs plus the
    /// bidi classes B, S and WS.
    public static func isPythonSpace(_ cp: UInt32) -> Bool {
        switch cp {
        case 0x09, 0x0A, 0x0B, 0x0C, 0x0D,
             0x1C, 0x1D, 0x1E, 0x1F, 0x20,
             0x85, 0xA0, 0x1680,
             0x2028, 0x2029, 0x202F, 0x205F, 0x3000:
            return true
        default:
            return cp >= 0x2000 && cp <= 0x200A
        }
    }

    /// Python's `str.strip()` (no arguments).
    public static func pythonStrip(_ text: String) -> String {
        let s = Array(text.unicodeScalars)
        var start = 0
        var end = s.count
        while start < end && isPythonSpace(s[start].value) {
            start += 1
        }
        while end > start && isPythonSpace(s[end - 1].value) {
            end -= 1
        }
        return string(s[start..<end])
    }

    // ---- ftfy.fix_text ----------------------------------------------------------------

    /// ftfy.fix_text with its default configuration, less mojibake repair (see the type comment).
    public static func fixText(_ text: String) -> String {
        let s = Array(text.unicodeScalars)
        var out = ""
        var unescapeHtml = true // ftfy's "auto"
        var pos = 0
        while pos < s.count {
            // ftfy fixes line by line: a segment runs up to and including the next '\n'.
            var end = pos
            while end < s.count && s[end] != "\n" {
                end += 1
            }
            end = end < s.count ? end + 1 : s.count
            let segment = s[pos..<end]
            // A literal '<' suggests real HTML, whose entities are meant: from this segment on,
            // ftfy leaves entities alone (its config change sticks for later segments).
            if unescapeHtml && segment.contains("<") {
                unescapeHtml = false
            }
            out += fixSegment(string(segment), unescapeHtml)
            pos = end
        }
        return out
    }

    /// ftfy's fix_and_explain loop on one segment: apply every fixer until nothing changes.
    static func fixSegment(_ input: String, _ unescapeHtml: Bool) -> String {
        var text = input
        while true {
            let original = Array(text.unicodeScalars)
            if unescapeHtml {
                text = HtmlUnescape.ftfy(text)
            }
            // (ftfy's fix_encoding would run here; see the type comment.)
            text = translate(text, C1_CONTROLS)
            text = translate(text, LIGATURES)
            text = translate(text, WIDTH)
            text = uncurlQuotes(text)
            text = fixLineBreaks(text)
            text = fixSurrogates(text)
            text = removeTerminalEscapes(text)
            text = removeControlChars(text)
            text = text.precomposedStringWithCanonicalMapping // NFC
            // Compared scalar by scalar: Swift's == on Strings is canonical equivalence.
            if Array(text.unicodeScalars) == original {
                return text
            }
        }
    }

    /// The Windows-1252 reading of a C1 control character (U+0080..U+009F), as ftfy's sloppy codec.
    static func c1Replacement(_ c: Unicode.Scalar) -> String {
        return C1_CONTROLS[c] ?? String(c)
    }

    /// Python's str.translate with a table of single BMP characters.
    private static func translate(_ text: String, _ table: [Unicode.Scalar: String]) -> String {
        var out = ""
        var changed = false
        for c in text.unicodeScalars {
            if let replacement = table[c] {
                out += replacement
                changed = true
            } else {
                out.unicodeScalars.append(c)
            }
        }
        return changed ? out : text
    }

    /// uncurl_quotes: U+201C..U+201F to '"', U+02BC and U+2018..U+201B to '\''.
    static func uncurlQuotes(_ text: String) -> String {
        var out = String.UnicodeScalarView()
        for c in text.unicodeScalars {
            if c.value >= 0x201C && c.value <= 0x201F {
                out.append("\"")
            } else if c.value == 0x02BC || (c.value >= 0x2018 && c.value <= 0x201B) {
                out.append("'")
            } else {
                out.append(c)
            }
        }
        return String(out)
    }

    /// fix_line_breaks: CRLF, CR, U+2028, U+2029 and U+0085 become '\n' (in this order).
    static func fixLineBreaks(_ text: String) -> String {
        let s = Array(text.unicodeScalars)
        var out = String.UnicodeScalarView()
        var i = 0
        while i < s.count {
            let c = s[i].value
            if c == 0x0D && i + 1 < s.count && s[i + 1].value == 0x0A {
                out.append("\n")
                i += 2
                continue
            }
            out.append(c == 0x0D || c == 0x2028 || c == 0x2029 || c == 0x85 ? "\n" : s[i])
            i += 1
        }
        return String(out)
    }

    /// fix_surrogates: in Python a surrogate pair can be two code points, which ftfy joins, and
    /// a lone surrogate becomes U+FFFD. A Swift String holds neither (it is always valid
    /// Unicode), so there is nothing left to do; kept so the fixer list reads as ftfy's.
    static func fixSurrogates(_ text: String) -> String {
        return text
    }

    /// remove_terminal_escapes: drops every match of `\033\[((?:\d|;)*)([a-zA-Z])`, where
    /// Python's \d is any Unicode decimal digit (category Nd), not just 0-9.
    static func removeTerminalEscapes(_ text: String) -> String {
        let s = Array(text.unicodeScalars)
        if !s.contains("\u{1B}") {
            return text
        }
        var out = String.UnicodeScalarView()
        var i = 0
        while i < s.count {
            if s[i] == "\u{1B}" && i + 1 < s.count && s[i + 1] == "[" {
                var j = i + 2
                while j < s.count {
                    if s[j] == ";" || s[j].properties.generalCategory == .decimalNumber {
                        j += 1
                    } else {
                        break
                    }
                }
                if j < s.count && isAsciiLetter(s[j]) {
                    i = j + 1 // drop the whole escape
                    continue
                }
            }
            out.append(s[i])
            i += 1
        }
        return String(out)
    }

    /// remove_control_chars: U+0000..U+0008, U+000B, U+000E..U+001F, U+007F, U+206A..U+206F,
    /// U+FEFF and U+FFF9..U+FFFC are dropped (tabs, line breaks, C1 controls, joiners stay).
    static func removeControlChars(_ text: String) -> String {
        var out = String.UnicodeScalarView()
        for c in text.unicodeScalars {
            let v = c.value
            let drop = v <= 0x08 || v == 0x0B || (v >= 0x0E && v <= 0x1F) || v == 0x7F
                || (v >= 0x206A && v <= 0x206F) || v == 0xFEFF || (v >= 0xFFF9 && v <= 0xFFFC)
            if !drop {
                out.append(c)
            }
        }
        return String(out)
    }

    private static func isAsciiLetter(_ c: Unicode.Scalar) -> Bool {
        return (c.value >= 0x61 && c.value <= 0x7A) || (c.value >= 0x41 && c.value <= 0x5A)
    }

    /// A String from a run of scalars.
    static func string<S: Sequence>(_ scalars: S) -> String where S.Element == Unicode.Scalar {
        var view = String.UnicodeScalarView()
        view.append(contentsOf: scalars)
        return String(view)
    }
}
