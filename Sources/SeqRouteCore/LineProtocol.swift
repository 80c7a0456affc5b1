// The line protocol of SPEC section 3: parsing requests and formatting answers.
// Pure: no sockets here, so every rule is testable on byte arrays.

/// An error answer: `ERR <code> <message>`.
public struct ProtocolError: Error, Equatable, Sendable {
    public var code: String
    public var message: String
    public init(_ code: String, _ message: String) {
        self.code = code
        self.message = message
    }
    public static func badRequest(_ message: String) -> ProtocolError { ProtocolError("bad_request", message) }
    /// One line whatever the message holds: control characters (a libpq message has
    /// newlines and tabs) become single spaces.
    public var line: String {
        var text = ""
        var lastWasSpace = false
        for u in message.unicodeScalars {
            let space = u.value < 0x20 || u.value == 0x7F || u == " "
            if space {
                if !lastWasSpace { text.unicodeScalars.append(" ") }
            } else {
                text.unicodeScalars.append(u)
            }
            lastWasSpace = space
        }
        return "ERR \(code) \(text)"
    }
}

public struct OpenRequest: Equatable, Sendable {
    public var session: String
    public var budget: Int64?
    public var account: String?
    public var user: String?
    public var horizon: Int?
    public var lambda: Double?
}

public struct RouteRequest: Equatable, Sendable {
    public var session: String
    public var tokens: Int?
    public var task: String?
    public var text: String?
    public var features: [Double]?
    public var lambda: Double?
}

public struct ReportRequest: Equatable, Sendable {
    public var session: String
    public var turn: Int
    public var cost: Int64
    public var quality: Double?
    public var inTokens: Int?
    public var outTokens: Int?
}

public enum Request: Equatable, Sendable {
    case ping
    case open(OpenRequest)
    case route(RouteRequest)
    case report(ReportRequest)
    case feedback(session: String, turn: Int, quality: Double)
    case close(session: String)
    case status(session: String)
    case reload
    case stats
}

/// Limits that bound what a request may carry.
public enum Limits {
    public static let maxIdentifierBytes = 128
    public static let maxMoney: Int64 = 1_000_000_000_000_000  // 10^18 micros: far above any real budget, below Int64.max
    public static let maxTokens = 100_000_000
    public static let maxHorizon = 100_000
    public static let maxTurn = 1_000_000_000
    public static let maxLambda = 1_000.0
    public static let maxFeatures = 4_096
}

public enum LineProtocol {
    /// Parses one request line (without its `\n`; a trailing `\r` is accepted).
    public static func parse(_ raw: some Collection<UInt8>) -> Result<Request, ProtocolError> {
        var bytes = Array(raw)
        if bytes.last == UInt8(ascii: "\r") { bytes.removeLast() }
        if bytes.isEmpty { return .failure(.badRequest("empty line")) }
        for b in bytes where b < 0x20 || b > 0x7E {
            if b >= 0x80 {
                return .failure(.badRequest("line holds a non-ASCII byte; percent-encode it"))
            }
            return .failure(.badRequest("line holds a control byte 0x\(String(b, radix: 16)); percent-encode it"))
        }
        let words = bytes.split(separator: UInt8(ascii: " "), omittingEmptySubsequences: false)
        if words.contains(where: { $0.isEmpty }) {
            return .failure(.badRequest("words must be separated by single spaces"))
        }
        let verb = String(decoding: words[0], as: UTF8.self)
        let rest = words.dropFirst().map { String(decoding: $0, as: UTF8.self) }
        do {
            return .success(try parseVerb(verb, Array(rest)))
        } catch let error as ProtocolError {
            return .failure(error)
        } catch {
            return .failure(.badRequest("\(error)"))
        }
    }

    private static func parseVerb(_ verb: String, _ words: [String]) throws -> Request {
        switch verb {
        case "PING":
            try expectNoArguments(verb, words)
            return .ping
        case "RELOAD":
            try expectNoArguments(verb, words)
            return .reload
        case "STATS":
            try expectNoArguments(verb, words)
            return .stats
        case "OPEN":
            let a = try Arguments(verb, words, positional: 1, allowed: openKeys)
            return .open(OpenRequest(
                session: try identifier(a.positional[0], "session"),
                budget: try a.take("budget").map { try money($0, "budget", allowZero: false) },
                account: try a.take("account").map { try identifier($0, "account") },
                user: try a.take("user").map { try identifier($0, "user") },
                horizon: try a.take("horizon").map { try integer($0, "horizon", 1...Limits.maxHorizon) },
                lambda: try a.take("lambda").map { try lambdaValue($0) }))
        case "ROUTE":
            let a = try Arguments(verb, words, positional: 1, allowed: routeKeys)
            return .route(RouteRequest(
                session: try identifier(a.positional[0], "session"),
                tokens: try a.take("tokens").map { try integer($0, "tokens", 0...Limits.maxTokens) },
                task: try a.take("task").map { try label($0) },
                text: try a.take("text").map { try percentDecoded($0, "text") },
                features: try a.take("features").map { try featureVector($0) },
                lambda: try a.take("lambda").map { try lambdaValue($0) }))
        case "REPORT":
            let a = try Arguments(verb, words, positional: 2, allowed: reportKeys)
            guard let cost = a.take("cost") else { throw ProtocolError.badRequest("REPORT needs cost=<micros>") }
            return .report(ReportRequest(
                session: try identifier(a.positional[0], "session"),
                turn: try integer(a.positional[1], "turn", 1...Limits.maxTurn),
                cost: try money(cost, "cost", allowZero: true),
                quality: try a.take("quality").map { try quality($0) },
                inTokens: try a.take("in").map { try integer($0, "in", 0...Limits.maxTokens) },
                outTokens: try a.take("out").map { try integer($0, "out", 0...Limits.maxTokens) }))
        case "FEEDBACK":
            let a = try Arguments(verb, words, positional: 2, allowed: feedbackKeys)
            guard let q = a.take("quality") else { throw ProtocolError.badRequest("FEEDBACK needs quality=<q>") }
            return .feedback(
                session: try identifier(a.positional[0], "session"),
                turn: try integer(a.positional[1], "turn", 1...Limits.maxTurn),
                quality: try quality(q))
        case "CLOSE":
            let a = try Arguments(verb, words, positional: 1, allowed: [])
            return .close(session: try identifier(a.positional[0], "session"))
        case "STATUS":
            let a = try Arguments(verb, words, positional: 1, allowed: [])
            return .status(session: try identifier(a.positional[0], "session"))
        default:
            let shown = verb.count > 32 ? String(verb.prefix(32)) + "..." : verb
            throw ProtocolError("unknown_verb", "unknown verb \(shown)")
        }
    }

    private static func expectNoArguments(_ verb: String, _ words: [String]) throws {
        if !words.isEmpty { throw ProtocolError.badRequest("\(verb) takes no arguments") }
    }

    private static let openKeys = ["budget", "account", "user", "horizon", "lambda"]
    private static let routeKeys = ["tokens", "task", "text", "features", "lambda"]
    private static let reportKeys = ["cost", "quality", "in", "out"]
    private static let feedbackKeys = ["quality"]

    /// Fixed positional words first, then `key=value` pairs, each key at most once. The keys
    /// are a handful, so they are found by a scan: hashing them cost more than the rest of the
    /// parse.
    private struct Arguments {
        var positional: [String]
        let allowed: [String]
        /// The value of each allowed key, in `allowed`'s order; nil when absent.
        var values: [String?]

        init(_ verb: String, _ words: [String], positional count: Int, allowed: [String]) throws {
            guard words.count >= count, !words.prefix(count).contains(where: { $0.utf8.contains(UInt8(ascii: "=")) }) else {
                let what = count == 1 ? "a session id" : "a session id and a turn"
                throw ProtocolError.badRequest("\(verb) needs \(what)")
            }
            positional = Array(words.prefix(count))
            self.allowed = allowed
            values = Array(repeating: nil, count: allowed.count)
            for word in words.dropFirst(count) {
                guard let eq = word.utf8.firstIndex(of: UInt8(ascii: "=")) else {
                    throw ProtocolError.badRequest("expected key=value, got \(shorten(word))")
                }
                let key = word.utf8[..<eq]
                guard let slot = allowed.firstIndex(where: { $0.utf8.elementsEqual(key) }) else {
                    throw ProtocolError.badRequest("\(verb) takes no argument \(shorten(String(word[..<eq])))")
                }
                guard values[slot] == nil else { throw ProtocolError.badRequest("\(allowed[slot]) given twice") }
                values[slot] = String(word[word.utf8.index(after: eq)...])
            }
        }

        func take(_ key: String) -> String? { values[allowed.firstIndex(of: key)!] }
    }

    static func shorten(_ s: String) -> String { s.count > 32 ? String(s.prefix(32)) + "..." : s }

    /// Percent-decodes a value; the result must be valid UTF-8.
    public static func percentDecoded(_ s: String, _ name: String) throws -> String {
        // Most values have no escape; a String is valid UTF-8 already.
        if !s.utf8.contains(UInt8(ascii: "%")) { return s }
        var s = s
        let out: [UInt8]? = s.withUTF8 { bytes in
            var out: [UInt8] = []
            out.reserveCapacity(bytes.count)
            var i = 0
            while i < bytes.count {
                let b = bytes[i]
                if b == UInt8(ascii: "%") {
                    guard i + 2 < bytes.count, let hv = hexValue(bytes[i + 1]), let lv = hexValue(bytes[i + 2]) else {
                        return nil
                    }
                    out.append(hv << 4 | lv)
                    i += 3
                } else {
                    out.append(b)
                    i += 1
                }
            }
            return out
        }
        guard let out else { throw ProtocolError.badRequest("\(name) has a malformed percent escape") }
        guard let text = String(validating: out, as: UTF8.self) else {
            throw ProtocolError.badRequest("\(name) is not valid UTF-8 once decoded")
        }
        return text
    }

    private static func hexValue(_ b: UInt8) -> UInt8? {
        switch b {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return b - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return b - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return b - UInt8(ascii: "A") + 10
        default: return nil
        }
    }

    /// Percent-encodes bytes that the protocol does not allow raw in a value.
    public static func percentEncoded(_ s: String) -> String {
        var out = ""
        for b in s.utf8 {
            if b > 0x20 && b < 0x7F && b != UInt8(ascii: "=") && b != UInt8(ascii: "%") {
                out.unicodeScalars.append(Unicode.Scalar(b))
            } else {
                let hex = String(b, radix: 16, uppercase: true)
                out += b < 16 ? "%0\(hex)" : "%\(hex)"
            }
        }
        return out
    }

    static func identifier(_ raw: String, _ name: String) throws -> String {
        let value = try percentDecoded(raw, name)
        guard !value.isEmpty, value.utf8.count <= Limits.maxIdentifierBytes else {
            throw ProtocolError.badRequest("\(name) id must be 1 to \(Limits.maxIdentifierBytes) bytes")
        }
        guard !value.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) else {
            throw ProtocolError.badRequest("\(name) id holds a control character")
        }
        return value
    }

    static func label(_ raw: String) throws -> String {
        let ok = !raw.isEmpty && raw.utf8.count <= 64 && raw.utf8.allSatisfy {
            ($0 >= UInt8(ascii: "a") && $0 <= UInt8(ascii: "z")) || ($0 >= UInt8(ascii: "A") && $0 <= UInt8(ascii: "Z"))
                || ($0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9")) || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: "_")
                || $0 == UInt8(ascii: ".")
        }
        guard ok else { throw ProtocolError.badRequest("task must be 1 to 64 letters, digits, '-', '_' or '.'") }
        return raw
    }

    /// Money: an integer count of micro-units, digits only.
    static func money(_ raw: String, _ name: String, allowZero: Bool) throws -> Int64 {
        guard !raw.isEmpty, raw.utf8.count <= 19, raw.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }),
              let v = Int64(raw), v <= Limits.maxMoney
        else {
            throw ProtocolError.badRequest("\(name) must be a non-negative integer count of micro-units")
        }
        if !allowZero && v == 0 { throw ProtocolError.badRequest("\(name) must be positive") }
        return v
    }

    static func integer(_ raw: String, _ name: String, _ range: ClosedRange<Int>) throws -> Int {
        guard !raw.isEmpty, raw.utf8.count <= 18, raw.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }),
              let v = Int(raw), range.contains(v)
        else {
            throw ProtocolError.badRequest("\(name) must be an integer in \(range.lowerBound)...\(range.upperBound)")
        }
        return v
    }

    /// A plain decimal number: digits with at most one '.', an optional leading '-'.
    static func decimal(_ raw: String) -> Double? {
        var body = Substring(raw)
        if body.first == "-" { body = body.dropFirst() }
        guard !body.isEmpty, body.utf8.count <= 40,
              body.filter({ $0 == "." }).count <= 1,
              body.utf8.allSatisfy({ ($0 >= 48 && $0 <= 57) || $0 == UInt8(ascii: ".") }),
              body != "."
        else { return nil }
        return Double(raw)
    }

    static func quality(_ raw: String) throws -> Double {
        guard let q = decimal(raw), q >= 0, q <= 1 else {
            throw ProtocolError.badRequest("quality must be a decimal in [0,1]")
        }
        return q
    }

    static func lambdaValue(_ raw: String) throws -> Double {
        guard let x = decimal(raw), x >= 0, x <= Limits.maxLambda else {
            throw ProtocolError.badRequest("lambda must be a decimal in [0,\(Int(Limits.maxLambda))]")
        }
        return x
    }

    static func featureVector(_ raw: String) throws -> [Double] {
        let parts = raw.split(separator: ",", omittingEmptySubsequences: false)
        guard parts.count <= Limits.maxFeatures else {
            throw ProtocolError.badRequest("features has more than \(Limits.maxFeatures) values")
        }
        return try parts.map { part in
            var body = part
            if body.first == "+" { body = body.dropFirst() }
            // Accept scientific notation here: embeddings are often printed that way.
            guard let v = Double(body), v.isFinite, abs(v) < 1e6 else {
                throw ProtocolError.badRequest("features must be finite numbers separated by commas")
            }
            return v
        }
    }
}

/// An `OK` answer with its `key=value` pairs, values percent-encoded where needed.
public struct OKAnswer: Sendable {
    public var pairs: [(String, String)]
    public init(_ pairs: [(String, String)] = []) { self.pairs = pairs }
    public var line: String {
        var s = "OK"
        for (k, v) in pairs { s += " \(k)=\(LineProtocol.percentEncoded(v))" }
        return s
    }
}
