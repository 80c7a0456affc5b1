// The text featurizer (SeqRouteCore/Featurizer.swift). Policy files record its identity, so
// a faster implementation must give the same bits for every text: the checksums below were
// taken from the first implementation of hash-ngram-v1, before it was made faster.

import SeqRouteCore
import Testing

@Suite struct FeaturizerTests {
    @Test func isDeterministicWithFixedDimension() {
        let f = HashingFeaturizer(dimension: 64)
        let a = f.features(of: "Write a function that reverses a list.")
        #expect(a.count == 64)
        #expect(a == HashingFeaturizer(dimension: 64).features(of: "Write a function that reverses a list."))
        #expect(a != f.features(of: "Which of these is a mammal?"))
        let hashed = a[HashingFeaturizer.lengthSlots...]
        let norm = hashed.reduce(0) { $0 + $1 * $1 }
        #expect(abs(norm - 1) < 1e-9)
        #expect(a[1] > 0 && a[0] > a[1])
    }

    @Test func emptyTextGivesZeros() {
        #expect(HashingFeaturizer(dimension: 16).features(of: "").allSatisfy { $0 == 0 })
    }

    @Test func seedChangesTheVector() {
        #expect(HashingFeaturizer(dimension: 32, seed: 1).features(of: "hello world")
            != HashingFeaturizer(dimension: 32, seed: 2).features(of: "hello world"))
    }

    @Test func estimatesTokens() {
        #expect(HashingFeaturizer.estimatedTokens(of: "") == 1)
        #expect(HashingFeaturizer.estimatedTokens(of: "abcdefgh") == 2)
    }

    /// ASCII and not, upper and lower case, digits, punctuation and runs of separators,
    /// scripts without case, emoji, a combining mark, a long prompt, and letters whose lower
    /// case is ASCII.
    static let texts = [
        "",
        "Which gas do plants absorb?",
        "WRITE a Python function that sorts a list, then returns the MEDIAN value (n=1000).",
        "a  b\tc\nd--e__f 42 x9y",
        "Straße, café, naïve: Ünïcödé letters; 東京タワー and عربي too",
        "emoji 🙂 between words 🚀rocket, and a combining é mark",
        String(repeating: "the quick brown fox jumps over the lazy dog ", count: 40),
        // Letters that lower-case to or with ASCII letters (dotted capital I, the Kelvin sign),
        // the long s, a title-case digraph and a final sigma.
        "İSTANBUL \u{212A}elvin ſtraße ǅemal ΣΊΣΥΦΟΣ A1b2",
    ]

    /// (default featurizer, dimension 16 with seed 7) for each text.
    static let golden: [(UInt64, UInt64)] = [
        (9052592289448545061, 9521082481390710053),
        (3026898590596876393, 15486710837836539581),
        (14543195364020106506, 853979081872696150),
        (17990323602331535518, 18085076021407222019),
        (10167406588321878081, 9654677234321471752),
        (14459890330184515678, 14901335567364253756),
        (1671243429477912234, 6496299231614721520),
        (13482881116460269523, 858305259643238068),
    ]

    /// FNV-1a over the vector's bit patterns: equal only when every component is.
    static func checksum(_ v: [Double]) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for x in v {
            var bits = x.bitPattern
            for _ in 0..<8 {
                h = (h ^ (bits & 0xFF)) &* 0x0000_0100_0000_01B3
                bits >>= 8
            }
        }
        return h
    }

    @Test func outputIsTheFirstImplementations() {
        for (text, (full, small)) in zip(Self.texts, Self.golden) {
            #expect(Self.checksum(HashingFeaturizer().features(of: text)) == full, "\(text.prefix(30))")
            #expect(Self.checksum(HashingFeaturizer(dimension: 16, seed: 7).features(of: text)) == small, "\(text.prefix(30))")
        }
    }
}
