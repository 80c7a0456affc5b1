// The operations the daemon asks of the ledger, and their encoding for seqroute_apply().

import SeqRouteCore

public struct RouteRecord: Sendable {
    public var session: String
    public var turn: Int
    /// nil asks the ledger to record a bankrupt turn (after checking that `minHold` fits nowhere).
    public var model: String?
    public var hold: Int64
    public var minHold: Int64
    public var policyVersion: String
    public var lambda: Double
    public var poolID: String
    public var task: String?
    public var promptTokens: Int
    public var features: [Double]
    public var budgetState: [Double]
    public var holds: [Int64]
    public var feasible: [Bool]
    public var propensity: Double?
    public var scores: [Double]?
    /// The uid of the client process (SO_PEERCRED), when known.
    public var peerUID: UInt32?

    public init(session: String, turn: Int, model: String?, hold: Int64, minHold: Int64, policyVersion: String,
                lambda: Double, poolID: String, task: String?, promptTokens: Int, features: [Double],
                budgetState: [Double], holds: [Int64], feasible: [Bool], propensity: Double?, scores: [Double]?,
                peerUID: UInt32? = nil) {
        self.peerUID = peerUID
        self.session = session
        self.turn = turn
        self.model = model
        self.hold = hold
        self.minHold = minHold
        self.policyVersion = policyVersion
        self.lambda = lambda
        self.poolID = poolID
        self.task = task
        self.promptTokens = promptTokens
        self.features = features
        self.budgetState = budgetState
        self.holds = holds
        self.feasible = feasible
        self.propensity = propensity
        self.scores = scores
    }
}

public enum LedgerOperation: Sendable {
    case open(session: String, account: String, user: String?, budget: Int64, horizon: Int?, lambda: Double?)
    case route(RouteRecord)
    case report(ReportRequest)
    case feedback(session: String, turn: Int, quality: Double)
    case close(session: String)
    case status(session: String)

    /// The session the operation concerns; a batch holds at most one operation per session.
    public var session: String {
        switch self {
        case .open(let session, _, _, _, _, _), .feedback(let session, _, _), .close(let session), .status(let session):
            return session
        case .route(let r): return r.session
        case .report(let r): return r.session
        }
    }

    /// The members of this operation's element in the JSON array that seqroute_apply() reads,
    /// without braces and without `n`, its position, which only the batch knows. Encoded where
    /// the operation is submitted, so that the committer's turn (one at a time) stays short.
    var jsonMembers: [UInt8] {
        var o = JSONObject()
        switch self {
        case let .open(session, account, user, budget, horizon, lambda):
            o.add("k", "open"); o.add("s", session); o.add("a", account); o.add("u", user)
            o.add("b", budget); o.add("h", horizon.map(Int64.init)); o.add("l", lambda)
        case .route(let r):
            o.add("k", "route"); o.add("s", r.session); o.add("t", Int64(r.turn)); o.add("m", r.model)
            o.add("hd", r.hold); o.add("mh", r.minHold); o.add("pv", r.policyVersion); o.add("l", r.lambda)
            o.add("pool", r.poolID); o.add("task", r.task); o.add("pt", Int64(r.promptTokens))
            o.addFeatures("fb", r.features)
            o.addArray("bs", r.budgetState) { $0.description }
            o.addArray("hs", r.holds) { String($0) }
            o.addArray("fe", r.feasible) { $0 ? "t" : "f" }
            o.add("p", r.propensity)
            if let scores = r.scores { o.addArray("sc", scores) { $0.description } }
            o.add("pu", r.peerUID.map(Int64.init))
        case .report(let r):
            o.add("k", "report"); o.add("s", r.session); o.add("t", Int64(r.turn)); o.add("c", r.cost)
            o.add("q", r.quality); o.add("i", r.inTokens.map(Int64.init)); o.add("o", r.outTokens.map(Int64.init))
        case let .feedback(session, turn, quality):
            o.add("k", "feedback"); o.add("s", session); o.add("t", Int64(turn)); o.add("q", quality)
        case .close(let session):
            o.add("k", "close"); o.add("s", session)
        case .status(let session):
            o.add("k", "status"); o.add("s", session)
        }
        return o.bytes
    }
}

/// One row of seqroute_apply()'s answer (the type seqroute_result in sql/002); which fields
/// are set depends on the operation and its status.
public struct LedgerResult: Sendable, Equatable {
    public var status: String
    public var turn: Int?
    public var budget: Int64?
    public var spent: Int64?
    public var held: Int64?
    public var hold: Int64?
    public var horizon: Int?
    public var lambda: Double?
    public var state: String?
    public var closed: Bool?
    public var answerSpent: Int64?
    public var answerRemaining: Int64?
    public var accountRemaining: Int64?

    init(_ row: PGRow) {
        status = row[1] ?? "internal"
        turn = row.int(2)
        budget = row.int64(3)
        spent = row.int64(4)
        held = row.int64(5)
        hold = row.int64(6)
        horizon = row.int(7)
        lambda = row.double(8)
        state = row[9]
        closed = row.bool(10)
        answerSpent = row.int64(11)
        answerRemaining = row.int64(12)
        accountRemaining = row.int64(13)
    }

    /// The session's remaining budget, when the row carries the session's figures.
    public var remaining: Int64? {
        guard let budget, let spent, let held else { return nil }
        return budget - spent - held
    }
}

public enum LedgerFailure: Error, Equatable, Sendable {
    /// The ledger cannot be reached; nothing is known to be committed.
    case unavailable(String)
    /// The ledger refused the operation for a reason that is a bug, not the client's input.
    case internalError(String)
}

/// JSON members written straight into UTF-8 bytes: every ROUTE encodes a few dozen numbers,
/// and building a String per number and joining them cost the daemon more than its policy.
private struct JSONObject {
    var bytes: [UInt8] = []

    // A ROUTE with 64 features takes about 1 kB.
    init() { bytes.reserveCapacity(1024) }

    mutating func key(_ k: StaticString) {
        if !bytes.isEmpty { bytes.append(UInt8(ascii: ",")) }
        bytes.append(UInt8(ascii: "\""))
        k.withUTF8Buffer { bytes.append(contentsOf: $0) }
        bytes.append(UInt8(ascii: "\""))
        bytes.append(UInt8(ascii: ":"))
    }
    mutating func add(_ k: StaticString, _ v: String?) {
        guard let v else { return }
        key(k)
        appendJSONString(v, to: &bytes)
    }
    mutating func add(_ k: StaticString, _ v: Int64?) {
        guard let v else { return }
        key(k)
        bytes.append(contentsOf: String(v).utf8)
    }
    mutating func add(_ k: StaticString, _ v: Double?) {
        guard let v, v.isFinite else { return }
        key(k)
        bytes.append(contentsOf: v.description.utf8)
    }
    /// Features as bytea's hex text (`\x…`), as a JSON string.
    mutating func addFeatures(_ k: StaticString, _ features: [Double]) {
        key(k)
        bytes.append(contentsOf: #""\\x"#.utf8)
        FeatureBytes.appendHex(features, to: &bytes)
        bytes.append(UInt8(ascii: "\""))
    }
    /// A PostgreSQL array literal of plain numbers or booleans, as a JSON string.
    mutating func addArray<T>(_ k: StaticString, _ items: [T], _ text: (T) -> String) {
        key(k)
        bytes.append(UInt8(ascii: "\""))
        bytes.append(UInt8(ascii: "{"))
        for (i, item) in items.enumerated() {
            if i > 0 { bytes.append(UInt8(ascii: ",")) }
            bytes.append(contentsOf: text(item).utf8)
        }
        bytes.append(UInt8(ascii: "}"))
        bytes.append(UInt8(ascii: "\""))
    }
}

/// How the decision log stores features (`decisions.features`, a bytea): IEEE 754 binary32,
/// big-endian (the byte order of PostgreSQL's float4send), 4 bytes per feature. Parsing them as
/// text was the largest part of the batch function's decoding (docs/BENCHMARKS.md).
enum FeatureBytes {
    /// Appends the features as hex digits, 8 per feature (gathered in a word, appended at once).
    static func appendHex(_ features: [Double], to bytes: inout [UInt8]) {
        for value in features {
            let bits = Float(value).bitPattern
            var word: UInt64 = 0
            for i in 0..<8 {
                let nibble = UInt64(bits >> UInt32(28 - 4 * i)) & 0xF
                word |= (nibble < 10 ? nibble + 48 : nibble + 87) << UInt64(8 * i)  // '0'..., 'a'...
            }
            withUnsafeBytes(of: word.littleEndian) { bytes.append(contentsOf: $0) }
        }
    }

    /// The features from their hex digits (as `encode(features, 'hex')` gives them).
    static func decode(hex: String) throws -> [Double] {
        let text = Array(hex.utf8)
        guard text.count % 8 == 0 else { throw DecisionLogError(description: "features are \(text.count) hex digits, not 8 per value") }
        var out: [Double] = []
        out.reserveCapacity(text.count / 8)
        var bits: UInt32 = 0
        for (i, c) in text.enumerated() {
            let v: UInt8
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): v = c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): v = c - UInt8(ascii: "a") + 10
            default: throw DecisionLogError(description: "features hold a non-hex character")
            }
            bits = bits << 4 | UInt32(v)
            if i % 8 == 7 { out.append(Double(Float(bitPattern: bits))); bits = 0 }
        }
        return out
    }
}

func jsonString(_ s: String) -> String {
    var bytes: [UInt8] = []
    appendJSONString(s, to: &bytes)
    return String(decoding: bytes, as: UTF8.self)
}

/// Appends `s` as a JSON string literal, escaping quotes, backslashes and control characters.
func appendJSONString(_ s: String, to bytes: inout [UInt8]) {
    bytes.append(UInt8(ascii: "\""))
    for b in s.utf8 {
        switch b {
        case UInt8(ascii: "\""): bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "\"")])
        case UInt8(ascii: "\\"): bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "\\")])
        case UInt8(ascii: "\n"): bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "n")])
        case UInt8(ascii: "\r"): bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "r")])
        case UInt8(ascii: "\t"): bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "t")])
        case 0..<0x20, 0x7F:
            let hex = Array("0123456789abcdef".utf8)
            bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "u"), UInt8(ascii: "0"), UInt8(ascii: "0"),
                                      hex[Int(b >> 4)], hex[Int(b & 0xF)]])
        default:
            bytes.append(b)  // UTF-8 above ASCII passes through: JSON text is UTF-8
        }
    }
    bytes.append(UInt8(ascii: "\""))
}
