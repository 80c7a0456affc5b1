// The text featurizer: hashed word and character n-grams plus length, fixed dimension and seed.
// The daemon and the learning engine share this exact code, so a policy trained offline sees
// the same vectors the daemon computes at run time. Documented in docs/PROTOCOL.md.

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

public struct HashingFeaturizer: Sendable, Equatable {
    /// Bump when the output for some text changes; policy files record it.
    public static let version = "hash-ngram-v1"
    public let dimension: Int
    public let seed: UInt64

    /// Slots 0 and 1 hold length features; the rest hold signed n-gram hashes.
    public static let lengthSlots = 2

    public init(dimension: Int = 64, seed: UInt64 = 0x5EC0_7A7E) {
        precondition(dimension > HashingFeaturizer.lengthSlots, "featurizer dimension too small")
        self.dimension = dimension
        self.seed = seed
    }

    public var identity: String { "\(HashingFeaturizer.version)/d\(dimension)/s\(seed)" }

    /// Word unigrams and bigrams of lower-cased alphanumeric words, and character trigrams of
    /// each word padded with spaces, are hashed (FNV-1a 64, seeded) into the hashed slots with a
    /// sign bit; the hashed part is L2-normalised. Slot 0 is ln(1+characters)/10 and slot 1
    /// ln(1+words)/10.
    public func features(of text: String) -> [Double] {
        var v = [Double](repeating: 0, count: dimension)
        let (bytes, starts, ascii) = HashingFeaturizer.words(of: text)
        let hashed = UInt64(dimension - HashingFeaturizer.lengthSlots)
        // Words are runs of `bytes` between `starts`; the n-grams are hashed where they lie,
        // without building them (the hash reads bytes in order, so this is the same hash).
        v.withUnsafeMutableBufferPointer { v in
            func add(_ h: UInt64) {
                v[HashingFeaturizer.lengthSlots + Int(h % hashed)] += (h >> 63) == 0 ? 1 : -1
            }
            bytes.withUnsafeBufferPointer { b in
                for i in 0..<(starts.count - 1) {
                    let from = starts[i], to = starts[i + 1]
                    var h = start(kind: 1)
                    for k in from..<to { h = step(h, b[k]) }
                    add(finish(h))
                    if i > 0 {
                        h = start(kind: 2)
                        for k in starts[i - 1]..<from { h = step(h, b[k]) }
                        h = step(h, 0x20)
                        for k in from..<to { h = step(h, b[k]) }
                        add(finish(h))
                    }
                    // Character trigrams of the word padded with a space at each end: position
                    // p of the padded word is a space at 0 and n − 1, else byte from + p − 1.
                    let n = to - from + 2
                    for j in 0..<max(0, n - 2) {
                        h = start(kind: 3)
                        for p in j..<(j + 3) { h = step(h, p == 0 || p == n - 1 ? 0x20 : b[from + p - 1]) }
                        add(finish(h))
                    }
                }
            }
        }
        var norm = 0.0
        for i in HashingFeaturizer.lengthSlots..<dimension { norm += v[i] * v[i] }
        if norm > 0 {
            let inv = 1 / norm.squareRoot()
            for i in HashingFeaturizer.lengthSlots..<dimension { v[i] *= inv }
        }
        v[0] = log1p(Double(ascii ? text.utf8.count : text.unicodeScalars.count)) / 10
        v[1] = log1p(Double(starts.count - 1)) / 10
        return v
    }

    /// Estimated prompt tokens for a text (about four characters a token), at least 1.
    public static func estimatedTokens(of text: String) -> Int {
        max(1, (text.utf8.count + 3) / 4)
    }

    /// The lower-cased alphanumeric words of `text`, as their UTF-8 bytes one after another and
    /// the offset where each starts (with the end as a last offset), and whether the text is
    /// ASCII. ASCII text, the usual case, is read byte by byte; other text goes through Unicode
    /// lower-casing and letter properties, which for ASCII agree with the byte rules.
    static func words(of text: String) -> (bytes: [UInt8], starts: [Int], ascii: Bool) {
        var text = text
        // One pass over the UTF-8 as ASCII; the first byte above 0x7F sends the whole text to
        // the Unicode path instead.
        let asASCII: (bytes: [UInt8], starts: [Int])? = text.withUTF8 { utf8 in
            var bytes: [UInt8] = [], starts: [Int] = []
            bytes.reserveCapacity(utf8.count)
            var inWord = false
            for var c in utf8 {
                if c >= 0x80 { return nil }
                if c >= UInt8(ascii: "A") && c <= UInt8(ascii: "Z") { c += 32 }
                if (c >= UInt8(ascii: "a") && c <= UInt8(ascii: "z")) || (c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9")) {
                    if !inWord { starts.append(bytes.count) }
                    inWord = true
                    bytes.append(c)
                } else {
                    inWord = false
                }
            }
            starts.append(bytes.count)
            return (bytes, starts)
        }
        if let asASCII { return (asASCII.bytes, asASCII.starts, true) }
        var bytes: [UInt8] = [], starts: [Int] = []
        var inWord = false
        for scalar in text.lowercased().unicodeScalars {
            if scalar.properties.isAlphabetic || (scalar.value >= 48 && scalar.value <= 57) {
                if !inWord { starts.append(bytes.count) }
                inWord = true
                UTF8.encode(scalar) { bytes.append($0) }
            } else {
                inWord = false
            }
        }
        starts.append(bytes.count)
        return (bytes, starts, false)
    }

    // FNV-1a 64, seeded, over a kind byte and then the n-gram's bytes, with a final avalanche
    // so that the slot and the sign bit are well mixed.
    private func start(kind: UInt8) -> UInt64 {
        ((0xcbf2_9ce4_8422_2325 ^ seed) ^ UInt64(kind)) &* 0x0000_0100_0000_01B3
    }

    private func step(_ h: UInt64, _ byte: UInt8) -> UInt64 {
        (h ^ UInt64(byte)) &* 0x0000_0100_0000_01B3
    }

    private func finish(_ h: UInt64) -> UInt64 {
        var h = h
        h ^= h >> 33
        h = h &* 0xff51_afd7_ed55_8ccd
        h ^= h >> 33
        return h
    }
}
