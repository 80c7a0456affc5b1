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
        let words = HashingFeaturizer.words(of: text)
        let hashed = dimension - HashingFeaturizer.lengthSlots
        func add(_ bytes: some Sequence<UInt8>, kind: UInt8) {
            let h = fnv1a(bytes, kind: kind)
            let slot = HashingFeaturizer.lengthSlots + Int(h % UInt64(hashed))
            v[slot] += (h >> 63) == 0 ? 1 : -1
        }
        for (i, w) in words.enumerated() {
            add(w, kind: 1)
            if i > 0 { add(words[i - 1] + [0x20] + w, kind: 2) }
            let padded = [UInt8(0x20)] + w + [0x20]
            if padded.count >= 3 {
                for j in 0...(padded.count - 3) { add(padded[j..<(j + 3)], kind: 3) }
            }
        }
        var norm = 0.0
        for i in HashingFeaturizer.lengthSlots..<dimension { norm += v[i] * v[i] }
        if norm > 0 {
            let inv = 1 / norm.squareRoot()
            for i in HashingFeaturizer.lengthSlots..<dimension { v[i] *= inv }
        }
        v[0] = log1p(Double(text.unicodeScalars.count)) / 10
        v[1] = log1p(Double(words.count)) / 10
        return v
    }

    /// Estimated prompt tokens for a text (about four characters a token), at least 1.
    public static func estimatedTokens(of text: String) -> Int {
        max(1, (text.utf8.count + 3) / 4)
    }

    static func words(of text: String) -> [[UInt8]] {
        var out: [[UInt8]] = []
        var cur: [UInt8] = []
        for scalar in text.lowercased().unicodeScalars {
            if scalar.properties.isAlphabetic || (scalar.value >= 48 && scalar.value <= 57) {
                cur.append(contentsOf: Array(String(scalar).utf8))
            } else if !cur.isEmpty {
                out.append(cur)
                cur.removeAll(keepingCapacity: true)
            }
        }
        if !cur.isEmpty { out.append(cur) }
        return out
    }

    private func fnv1a(_ bytes: some Sequence<UInt8>, kind: UInt8) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325 ^ seed
        h = (h ^ UInt64(kind)) &* 0x0000_0100_0000_01B3
        for b in bytes { h = (h ^ UInt64(b)) &* 0x0000_0100_0000_01B3 }
        // Final avalanche so that the slot and the sign bit are well mixed.
        h ^= h >> 33
        h = h &* 0xff51_afd7_ed55_8ccd
        h ^= h >> 33
        return h
    }
}
