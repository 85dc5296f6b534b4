import Foundation

/// HTML character references, decoded two ways, each exactly as its Python original:
/// `python` is CPython 3.11's `html.unescape` and `ftfy` is ftfy 6.3.1's
/// `fixes.unescape_html`. The CLIP tokenizer's cleaning runs both (ftfy inside fix_text,
/// then html.unescape twice), and they differ (ftfy wants the ';', knows upper-case names
/// such as "&EACUTE;"; Python accepts "&amp" without ';' and longest-prefix names).
///
/// Numeric references (decimal and hex) are complete, with Python's replacements for
/// invalid ones. Named references cover the HTML 4 names and "apos" in all their html5
/// spellings; see `HtmlEntities` for what is not covered.
///
/// Swift twin note: indexes count Unicode scalars where the Java core counts UTF-16 chars;
/// names are limited to 32 code points in both, as Python counts.
enum HtmlUnescape {
    typealias Scalars = [Unicode.Scalar]

    private static let PYTHON_NAMES = toMap(HtmlEntities.PYTHON_HTML5)
    private static let FTFY_NAMES = toMap(HtmlEntities.FTFY)

    private static func toMap(_ pairs: [String]) -> [String: String] {
        var map: [String: String] = [:]
        var i = 0
        while i < pairs.count {
            map[pairs[i]] = pairs[i + 1]
            i += 2
        }
        return map
    }

    // ---- Python's html.unescape -------------------------------------------------------

    /// CPython's `html.unescape`: every match of
    /// `&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)` is replaced, left to
    /// right, without overlaps; unknown names are left as they are.
    static func python(_ text: String) -> String {
        let s = Array(text.unicodeScalars)
        if !s.contains("&") {
            return text
        }
        var out = ""
        var i = 0
        while i < s.count {
            let c = s[i]
            if c != "&" {
                out.unicodeScalars.append(c)
                i += 1
                continue
            }
            let end = matchPythonReference(s, i)
            if end < 0 {
                out += "&"
                i += 1
                continue
            }
            out += replacePythonReference(Array(s[(i + 1)..<end]))
            i = end
        }
        return out
    }

    /// End (exclusive) of the reference starting with the '&' at `amp`, or -1.
    private static func matchPythonReference(_ s: Scalars, _ amp: Int) -> Int {
        let j = amp + 1
        if j < s.count && s[j] == "#" {
            let k = j + 1
            // '#' digits ';'?   (tried first, so "&#0x41" is "&#0" then "x41")
            var digits = k
            while digits < s.count && isAsciiDigit(s[digits]) {
                digits += 1
            }
            if digits > k {
                return optionalSemicolon(s, digits)
            }
            // '#' [xX] hex digits ';'?
            if k < s.count && (s[k] == "x" || s[k] == "X") {
                var hex = k + 1
                while hex < s.count && isAsciiHexDigit(s[hex]) {
                    hex += 1
                }
                if hex > k + 1 {
                    return optionalSemicolon(s, hex)
                }
            }
            return -1 // '#' cannot start a name
        }
        // 1 to 32 characters (code points, as Python counts) other than \t \n \f space < & # ;
        var k = j
        var count = 0
        while k < s.count && count < 32 {
            let cp = s[k]
            if cp == "\t" || cp == "\n" || cp == "\u{0C}" || cp == " " || cp == "<" || cp == "&"
                || cp == "#" || cp == ";" {
                break
            }
            k += 1
            count += 1
        }
        return count == 0 ? -1 : optionalSemicolon(s, k)
    }

    private static func optionalSemicolon(_ s: Scalars, _ at: Int) -> Int {
        return at < s.count && s[at] == ";" ? at + 1 : at
    }

    /// Python's `_replace_charref` for the reference text after the '&'.
    private static func replacePythonReference(_ ref: Scalars) -> String {
        if ref[0] == "#" {
            let digits = ref[ref.count - 1] == ";" ? Array(ref.dropLast()) : ref
            var radix: UInt32 = 10
            var start = 1
            if digits[1] == "x" || digits[1] == "X" {
                radix = 16
                start = 2
            }
            // Python's int is unbounded; anything past U+10FFFF is simply "too big".
            var num: UInt32 = 0
            for i in start..<digits.count {
                num = num * radix + hexValue(digits[i])
                if num > 0x10FFFF {
                    num = 0x110000
                }
            }
            return numericReference(num)
        }
        let name = TextCleaner.string(ref)
        if let value = PYTHON_NAMES[name] {
            return value
        }
        // The longest name that is a prefix (of at least 2 code points), as the HTML5 spec says:
        // "&notit;" is "¬it;".
        var x = ref.count - 1
        while x > 1 {
            if let value = PYTHON_NAMES[TextCleaner.string(ref[0..<x])] {
                return value + TextCleaner.string(ref[x...])
            }
            x -= 1
        }
        return "&" + name
    }

    /// A numeric reference's text, with the HTML5 spec's (and Python's) repairs.
    private static func numericReference(_ num: UInt32) -> String {
        if num == 0x00 {
            return "\u{FFFD}"
        }
        if num == 0x0D {
            return "\r"
        }
        if num >= 0x80 && num <= 0x9F {
            // Windows-1252 meanings of the C1 range, with its five undefined bytes kept as is:
            // Python's _invalid_charrefs is exactly ftfy's sloppy-windows-1252 table.
            return TextCleaner.c1Replacement(Unicode.Scalar(num)!)
        }
        if (num >= 0xD800 && num <= 0xDFFF) || num > 0x10FFFF {
            return "\u{FFFD}"
        }
        if isInvalidCodepoint(num) {
            return ""
        }
        return String(Unicode.Scalar(num)!)
    }

    /// Python's `html._invalid_codepoints`: controls and noncharacters, dropped.
    private static func isInvalidCodepoint(_ num: UInt32) -> Bool {
        return (num >= 0x01 && num <= 0x08) || num == 0x0B || (num >= 0x0E && num <= 0x1F)
            || (num >= 0x7F && num <= 0x9F) || (num >= 0xFDD0 && num <= 0xFDEF)
            || (num & 0xFFFE) == 0xFFFE
    }

    // ---- ftfy's unescape_html -------------------------------------------------------------

    /// ftfy's `unescape_html`: only references matching `&#?[0-9A-Za-z]{1,24};`
    /// (so the ';' is required), named ones from ftfy's table, numeric ones through Python's
    /// html.unescape but only when that consumes the whole reference.
    static func ftfy(_ text: String) -> String {
        let s = Array(text.unicodeScalars)
        if !s.contains("&") {
            return text
        }
        var out = ""
        var i = 0
        while i < s.count {
            let c = s[i]
            let end = c == "&" ? matchFtfyReference(s, i) : -1
            if end < 0 {
                out.unicodeScalars.append(c)
                i += 1
                continue
            }
            let ref = TextCleaner.string(s[i..<end])
            if let value = FTFY_NAMES[ref] {
                out += value
            } else if ref.hasPrefix("&#") {
                let unescaped = python(ref)
                // "If html.unescape only decoded part of the string, that's not what we want."
                out += unescaped.unicodeScalars.contains(";") ? ref : unescaped
            } else {
                out += ref
            }
            i = end
        }
        return out
    }

    /// End (exclusive) of a `&#?[0-9A-Za-z]{1,24};` match at `amp`, or -1.
    private static func matchFtfyReference(_ s: Scalars, _ amp: Int) -> Int {
        var j = amp + 1
        if j < s.count && s[j] == "#" {
            j += 1
        }
        var k = j
        while k < s.count && isAsciiAlnum(s[k]) {
            k += 1
        }
        let count = k - j
        if count >= 1 && count <= 24 && k < s.count && s[k] == ";" {
            return k + 1
        }
        // Without the '#' the class would have to match '#', which it cannot: no match.
        return -1
    }

    private static func isAsciiDigit(_ c: Unicode.Scalar) -> Bool {
        return c.value >= 0x30 && c.value <= 0x39
    }

    private static func isAsciiHexDigit(_ c: Unicode.Scalar) -> Bool {
        return isAsciiDigit(c) || (c.value >= 0x61 && c.value <= 0x66) || (c.value >= 0x41 && c.value <= 0x46)
    }

    private static func isAsciiAlnum(_ c: Unicode.Scalar) -> Bool {
        return isAsciiDigit(c) || (c.value >= 0x61 && c.value <= 0x7A) || (c.value >= 0x41 && c.value <= 0x5A)
    }

    /// The value of an ASCII (hex) digit.
    private static func hexValue(_ c: Unicode.Scalar) -> UInt32 {
        if isAsciiDigit(c) {
            return c.value - 0x30
        }
        return (c.value | 0x20) - 0x61 + 10
    }
}
