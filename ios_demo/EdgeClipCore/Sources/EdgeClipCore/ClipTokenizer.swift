import Foundation

/// open_clip's CLIP tokenizer (`open_clip/tokenizer.py` SimpleTokenizer, open_clip_torch
/// 3.3.0), exactly: text → `TextCleaner.clean` → pre-tokenised by open_clip's pattern →
/// each piece's UTF-8 bytes mapped to printable characters → byte-pair merges by rank →
/// vocabulary ids. `tokenize` adds start/end tokens and pads or truncates to the
/// context length as open_clip does.
///
/// The vocabulary is the gzip'd merges file shipped in the text tower folder, built as
/// SimpleTokenizer builds it: the 256 byte characters, the same with "</w>", the
/// merges of lines 1..48894 joined, then "<start_of_text>" and "<end_of_text>"
/// (ids 49406 and 49407 with the standard file).
///
/// Not thread-safe (the merge cache is a plain Dictionary); use one per thread.
public final class ClipTokenizer {
    static let SOT_TEXT = "<start_of_text>"
    static let EOT_TEXT = "<end_of_text>"
    /// SimpleTokenizer keeps merges[1 : 49152 - 256 - 2 + 1]: 48894 merges after the header line.
    static let MERGE_LINES_END = 49152 - 256 - 2 + 1
    /// Past this many cached words the cache is cleared, so it cannot grow without bound.
    private static let CACHE_LIMIT = 100_000

    private let contextLength_: Int
    private let sotId_: Int
    private let eotId_: Int
    /// byte value → its printable stand-in character (open_clip's bytes_to_unicode).
    private let byteEncoder: [Unicode.Scalar]
    private let encoder: [String: Int]
    /// "first second" → merge rank (lower merges first). Symbols never contain a space.
    private let bpeRanks: [String: Int]
    private var cache: [String: [Int]] = [:]

    private init(_ contextLength: Int, _ sotId: Int, _ eotId: Int, _ byteEncoder: [Unicode.Scalar],
                 _ encoder: [String: Int], _ bpeRanks: [String: Int]) {
        self.contextLength_ = contextLength
        self.sotId_ = sotId
        self.eotId_ = eotId
        self.byteEncoder = byteEncoder
        self.encoder = encoder
        self.bpeRanks = bpeRanks
    }

    /// Builds the tokenizer from the gzip'd merges file. `sotId`/`eotId` are the
    /// manifest's; they are checked against the ids the vocabulary gives the special tokens,
    /// so a wrong vocabulary file is refused instead of producing wrong ids.
    public static func fromVocab(_ gz: Data, _ contextLength: Int, _ sotId: Int, _ eotId: Int) throws -> ClipTokenizer {
        if contextLength < 2 {
            throw EdgeclipException("context_length must be >= 2 (start and end tokens), got \(contextLength)")
        }
        let inflated: Data
        do {
            inflated = try Gzip.decompress(gz)
        } catch let e as EdgeclipException {
            throw EdgeclipException("cannot read the BPE vocabulary (\(e.message))")
        }
        guard let text = String(data: inflated, encoding: .utf8) else {
            throw EdgeclipException("cannot read the BPE vocabulary (not UTF-8)")
        }
        // merges = text.split('\n')[1:48895], each merge = line.split()
        // (Split by scalars: Swift's Characters would fuse "\r\n" into one.)
        let lines = text.unicodeScalars.split(separator: "\n", omittingEmptySubsequences: false)
        let end = min(lines.count, MERGE_LINES_END)
        var merges: [[String]] = []
        if end > 1 {
            for i in 1..<end {
                let merge = lines[i].split(whereSeparator: { $0.value <= 0x20 }).map { TextCleaner.string($0) }
                if merge.count != 2 {
                    throw EdgeclipException("BPE vocabulary line \(i + 1) is not a merge of two symbols: \"\(TextCleaner.string(lines[i]))\"")
                }
                merges.append(merge)
            }
        }

        let byteEncoder = bytesToUnicode()
        // Python's vocab is list(bytes_to_unicode().values()): the dict's insertion order, which
        // is the printable bytes first, then the other 68, not byte order.
        var vocab: [String] = []
        for b in byteOrder() {
            vocab.append(String(byteEncoder[b]))
        }
        for b in byteOrder() {
            vocab.append(String(byteEncoder[b]) + "</w>")
        }
        for merge in merges {
            vocab.append(merge[0] + merge[1])
        }
        vocab.append(SOT_TEXT)
        vocab.append(EOT_TEXT)
        // As Python's dict(zip(vocab, range)): a repeated entry keeps its last id.
        var encoder: [String: Int] = [:]
        for i in 0..<vocab.count {
            encoder[vocab[i]] = i
        }
        var ranks: [String: Int] = [:]
        for i in 0..<merges.count {
            ranks[merges[i][0] + " " + merges[i][1]] = i
        }
        let vocabSot = encoder[SOT_TEXT]!
        let vocabEot = encoder[EOT_TEXT]!
        if vocabSot != sotId || vocabEot != eotId {
            throw EdgeclipException("the BPE vocabulary gives start/end ids \(vocabSot)/\(vocabEot)"
                + " but the manifest says \(sotId)/\(eotId); wrong vocabulary file")
        }
        return ClipTokenizer(contextLength, sotId, eotId, byteEncoder, encoder, ranks)
    }

    /// `fromVocab(_:_:_:_:)` from a file; errors name the file.
    public static func fromVocab(_ gzFile: URL, _ contextLength: Int, _ sotId: Int, _ eotId: Int) throws -> ClipTokenizer {
        let data: Data
        do {
            data = try Data(contentsOf: gzFile)
        } catch {
            throw EdgeclipException("\(gzFile.path): cannot read (\(error.localizedDescription))")
        }
        do {
            return try fromVocab(data, contextLength, sotId, eotId)
        } catch let e as EdgeclipException {
            throw EdgeclipException("\(gzFile.path): \(e.message)")
        }
    }

    /// The tokenizer a text manifest describes, from the vocabulary in `towerDir`.
    public static func fromManifest(_ text: Manifest, _ towerDir: URL) throws -> ClipTokenizer {
        guard let spec = text.tokenizer else {
            throw EdgeclipException("\(text.path.path): no tokenizer block (is this the text tower?)")
        }
        if spec.kind != "clip_bpe" {
            throw EdgeclipException("\(text.path.path): tokenizer kind \"\(spec.kind)\"; this app implements \"clip_bpe\"")
        }
        if spec.padId != 0 {
            throw EdgeclipException("\(text.path.path): tokenizer pad_id \(spec.padId); this app pads with 0")
        }
        return try fromVocab(towerDir.appendingPathComponent(spec.vocabFile), spec.contextLength, spec.sotId, spec.eotId)
    }

    public func contextLength() -> Int {
        return contextLength_
    }

    public func sotId() -> Int {
        return sotId_
    }

    public func eotId() -> Int {
        return eotId_
    }

    /// The model input for `text`: [SOT, ids..., EOT] zero-padded to the context length.
    /// Too long, it is cut to the context length and its last id replaced by EOT (open_clip).
    public func tokenize(_ text: String) throws -> [Int64] {
        let ids = try encode(text)
        var out = [Int64](repeating: 0, count: contextLength_)
        out[0] = Int64(sotId_)
        let n = min(ids.count, contextLength_ - 1)
        for i in 0..<n {
            out[1 + i] = Int64(ids[i])
        }
        if 1 + ids.count < contextLength_ {
            out[1 + ids.count] = Int64(eotId_)
        } else {
            out[contextLength_ - 1] = Int64(eotId_) // exactly full, or truncated: the last is EOT
        }
        return out
    }

    /// The BPE ids of the cleaned text, without SOT/EOT (open_clip's SimpleTokenizer.encode).
    public func encode(_ text: String) throws -> [Int] {
        let cleaned = Array(TextCleaner.clean(text).unicodeScalars)
        var ids: [Int] = []
        var pos = 0
        while pos < cleaned.count {
            let end = ClipTokenizer.matchPiece(cleaned, pos)
            if end < 0 { // nothing matches here (whitespace): findall moves on one character
                pos += 1
                continue
            }
            ids.append(contentsOf: try bpeIds(byteEncode(cleaned[pos..<end])))
            pos = end
        }
        return ids
    }

    // ---- pre-tokenisation -------------------------------------------------------------

    /// Where the piece starting at `pos` ends, or -1: open_clip's pattern, tried in its
    /// order at one position (the first alternative that matches wins, not the longest),
    /// compiled with IGNORECASE:
    /// `<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+`.
    /// Case-insensitive literals compare simple case mappings, as Java's regionMatches(ignoreCase)
    /// does, which, like the regex module's simple case folding, also lets "ſ" (long s) match "s".
    static func matchPiece(_ text: [Unicode.Scalar], _ pos: Int) -> Int {
        for special in [SOT_TEXT, EOT_TEXT] {
            if regionMatchesIgnoreCase(text, pos, special) {
                return pos + special.unicodeScalars.count
            }
        }
        if text[pos] == "'" {
            for suffix in ["s", "t", "re", "ve", "m", "ll", "d"] {
                if regionMatchesIgnoreCase(text, pos + 1, suffix) {
                    return pos + 1 + suffix.unicodeScalars.count
                }
            }
        }
        let cp = text[pos]
        if isLetter(cp) { // \p{L}: Lu, Ll, Lt, Lm, Lo
            var end = pos
            while end < text.count && isLetter(text[end]) {
                end += 1
            }
            return end
        }
        if isNumber(cp) { // one number character at a time
            return pos + 1
        }
        if TextCleaner.isPythonSpace(cp.value) {
            return -1
        }
        var end = pos // a run of anything else: punctuation, symbols, marks, emoji
        while end < text.count {
            let c = text[end]
            if TextCleaner.isPythonSpace(c.value) || isLetter(c) || isNumber(c) {
                break
            }
            end += 1
        }
        return end
    }

    /// Java's String.regionMatches(true, ...): each character equal, or equal after simple
    /// upper-casing, or after lower-casing that.
    private static func regionMatchesIgnoreCase(_ text: [Unicode.Scalar], _ pos: Int, _ literal: String) -> Bool {
        let other = Array(literal.unicodeScalars)
        if pos < 0 || pos + other.count > text.count {
            return false
        }
        for i in 0..<other.count {
            let c1 = text[pos + i]
            let c2 = other[i]
            if c1 == c2 {
                continue
            }
            let u1 = simpleUpper(c1)
            let u2 = simpleUpper(c2)
            if u1 == u2 || simpleLower(u1) == simpleLower(u2) {
                continue
            }
            return false
        }
        return true
    }

    /// A one-scalar case mapping, or the scalar itself (as Character.toUpperCase(char)).
    private static func simpleUpper(_ c: Unicode.Scalar) -> Unicode.Scalar {
        let mapped = c.properties.uppercaseMapping.unicodeScalars
        return mapped.count == 1 ? mapped.first! : c
    }

    private static func simpleLower(_ c: Unicode.Scalar) -> Unicode.Scalar {
        let mapped = c.properties.lowercaseMapping.unicodeScalars
        return mapped.count == 1 ? mapped.first! : c
    }

    /// \p{L}: Lu, Ll, Lt, Lm, Lo.
    private static func isLetter(_ c: Unicode.Scalar) -> Bool {
        switch c.properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter:
            return true
        default:
            return false
        }
    }

    /// \p{N}: Nd, Nl, No.
    private static func isNumber(_ c: Unicode.Scalar) -> Bool {
        switch c.properties.generalCategory {
        case .decimalNumber, .letterNumber, .otherNumber:
            return true
        default:
            return false
        }
    }

    /// A piece's UTF-8 bytes, each as its printable stand-in character.
    private func byteEncode(_ piece: ArraySlice<Unicode.Scalar>) -> String {
        var out = String.UnicodeScalarView()
        for b in TextCleaner.string(piece).utf8 {
            out.append(byteEncoder[Int(b)])
        }
        return String(out)
    }

    // ---- byte-pair encoding -----------------------------------------------------------

    /// The ids of one byte-encoded piece (SimpleTokenizer.bpe, then the encoder lookup).
    private func bpeIds(_ token: String) throws -> [Int] {
        if let cached = cache[token] {
            return cached
        }
        var ids: [Int]
        if token == ClipTokenizer.SOT_TEXT || token == ClipTokenizer.EOT_TEXT {
            // SimpleTokenizer pre-fills its cache with the special tokens: they are never split.
            ids = [encoder[token]!]
        } else {
            let word = bpe(token)
            ids = []
            for symbol in word {
                guard let id = encoder[symbol] else {
                    throw EdgeclipException("BPE symbol \"\(symbol)\" is not in the vocabulary")
                }
                ids.append(id)
            }
        }
        if cache.count >= ClipTokenizer.CACHE_LIMIT {
            cache.removeAll()
        }
        cache[token] = ids
        return ids
    }

    /// SimpleTokenizer.bpe: start from single characters (the last one marked with "</w>"),
    /// then repeatedly merge every occurrence, left to right, of the adjacent pair with the
    /// lowest rank, until no adjacent pair is a known merge or one symbol is left.
    private func bpe(_ token: String) -> [String] {
        var word: [String] = []
        // Byte stand-ins are all single scalars (U+0021..U+0143): one symbol per scalar.
        let chars = Array(token.unicodeScalars)
        for i in 0..<(chars.count - 1) {
            word.append(String(chars[i]))
        }
        word.append(String(chars[chars.count - 1]) + "</w>")
        while word.count > 1 {
            var bestRank = Int.max
            var first: String? = nil
            var second: String? = nil
            for i in 0..<(word.count - 1) {
                if let rank = bpeRanks[word[i] + " " + word[i + 1]], rank < bestRank {
                    bestRank = rank
                    first = word[i]
                    second = word[i + 1]
                }
            }
            guard let a = first, let b = second else {
                break
            }
            var merged: [String] = []
            var i = 0
            while i < word.count {
                if i < word.count - 1 && word[i] == a && word[i + 1] == b {
                    merged.append(a + b)
                    i += 2
                } else {
                    merged.append(word[i])
                    i += 1
                }
            }
            word = merged
        }
        return word
    }

    /// open_clip's bytes_to_unicode: printable Latin-1 bytes ('!'..'~', '¡'..'¬', '®'..'ÿ') stand
    /// for themselves; the other 68 bytes get U+0100, U+0101, ... in byte order, so no byte
    /// is represented by whitespace or a control character.
    static func bytesToUnicode() -> [Unicode.Scalar] {
        var table: [Unicode.Scalar] = []
        var n: UInt32 = 0
        for b in 0..<256 {
            if isPrintableByte(b) {
                table.append(Unicode.Scalar(UInt32(b))!)
            } else {
                table.append(Unicode.Scalar(256 + n)!)
                n += 1
            }
        }
        return table
    }

    /// The bytes in bytes_to_unicode's insertion order: printable ones ascending, then the rest ascending.
    static func byteOrder() -> [Int] {
        var order: [Int] = []
        for b in 0..<256 where isPrintableByte(b) {
            order.append(b)
        }
        for b in 0..<256 where !isPrintableByte(b) {
            order.append(b)
        }
        return order
    }

    /// '!'..'~', '¡'..'¬', '®'..'ÿ': the bytes that stand for themselves.
    private static func isPrintableByte(_ b: Int) -> Bool {
        return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)
    }
}

/// gzip (RFC 1952) decompression over Foundation's raw-DEFLATE decoder, for the vocabulary file
/// (Java has GZIPInputStream; Foundation only inflates raw DEFLATE streams).
enum Gzip {
    static func decompress(_ data: Data) throws -> Data {
        let bytes = [UInt8](data)
        guard bytes.count >= 18, bytes[0] == 0x1F, bytes[1] == 0x8B, bytes[2] == 8 else {
            throw EdgeclipException("not a gzip file")
        }
        let flags = bytes[3]
        var offset = 10
        if flags & 0x04 != 0 { // FEXTRA
            guard offset + 2 <= bytes.count else { throw EdgeclipException("truncated gzip header") }
            offset += 2 + Int(bytes[offset]) + Int(bytes[offset + 1]) << 8
        }
        for flag in [UInt8(0x08), UInt8(0x10)] where flags & flag != 0 { // FNAME, FCOMMENT: NUL-terminated
            while offset < bytes.count && bytes[offset] != 0 {
                offset += 1
            }
            offset += 1
        }
        if flags & 0x02 != 0 { // FHCRC
            offset += 2
        }
        guard offset <= bytes.count - 8 else {
            throw EdgeclipException("truncated gzip file")
        }
        let deflate = Data(bytes[offset..<(bytes.count - 8)])
        let inflated: Data
        do {
            inflated = try (deflate as NSData).decompressed(using: .zlib) as Data
        } catch {
            throw EdgeclipException("corrupt gzip data (\(error.localizedDescription))")
        }
        // ISIZE: the uncompressed size modulo 2^32, little-endian.
        let n = bytes.count
        let isize = UInt32(bytes[n - 4]) | UInt32(bytes[n - 3]) << 8 | UInt32(bytes[n - 2]) << 16 | UInt32(bytes[n - 1]) << 24
        if UInt32(truncatingIfNeeded: inflated.count) != isize {
            throw EdgeclipException("gzip size check failed (truncated or multi-member file)")
        }
        return inflated
    }
}
