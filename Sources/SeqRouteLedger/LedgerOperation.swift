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
    /// The session's account, when the daemon knows it (`LedgerOperation.report`).
    public var account: String?

    public init(session: String, turn: Int, model: String?, hold: Int64, minHold: Int64, policyVersion: String,
                lambda: Double, poolID: String, task: String?, promptTokens: Int, features: [Double],
                budgetState: [Double], holds: [Int64], feasible: [Bool], propensity: Double?, scores: [Double]?,
                peerUID: UInt32? = nil, account: String? = nil) {
        self.peerUID = peerUID
        self.account = account
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
    /// `account`, as in `RouteRecord`: the session's account when the daemon knows it (it opened
    /// the session), which spares the ledger a lookup to find the account to lock. The ledger
    /// locks the account named, and serves only sessions of accounts it locked: a wrong name
    /// cannot write without the right lock (the request is answered `unknown_session`, unless
    /// the batch locks the right account for another operation anyway).
    case report(ReportRequest, account: String?)
    case feedback(session: String, turn: Int, quality: Double)
    case close(session: String)
    case status(session: String)

    /// The session the operation concerns; a batch holds at most one operation per session.
    public var session: String {
        switch self {
        case .open(let session, _, _, _, _, _), .feedback(let session, _, _), .close(let session), .status(let session):
            return session
        case .route(let r): return r.session
        case .report(let r, _): return r.session
        }
    }

    /// This operation as a `seqroute_op` record in PostgreSQL's binary format, every column
    /// after `n` (its position, which only the batch knows: `BatchRecord.batch` writes it).
    /// Encoded where the operation is submitted, so that the committer's turn (one at a time)
    /// stays short.
    var record: [UInt8] {
        var o = BatchRecord()
        switch self {
        case let .open(session, account, user, budget, horizon, lambda):
            o.text(.k, "open"); o.text(.s, session); o.text(.a, account); o.text(.u, user)
            o.int8(.b, budget); o.int4(.h, horizon); o.float8(.l, lambda)
        case .route(let r):
            o.text(.k, "route"); o.text(.s, r.session); o.text(.a, r.account); o.float8(.l, r.lambda); o.int4(.t, r.turn)
            o.text(.m, r.model); o.int8(.hd, r.hold); o.int8(.mh, r.minHold); o.text(.pv, r.policyVersion)
            o.text(.pool, r.poolID); o.text(.task, r.task); o.int4(.pt, r.promptTokens)
            o.array(.bs, r.budgetState)
            o.array(.hs, r.holds)
            o.array(.fe, r.feasible)
            o.float8(.p, r.propensity)
            if let scores = r.scores { o.array(.sc, scores) }
            o.int8(.pu, r.peerUID.map(Int64.init))
            o.features(.fb, r.features)
        case .report(let r, let account):
            o.text(.k, "report"); o.text(.s, r.session); o.text(.a, account); o.int4(.t, r.turn); o.int8(.c, r.cost)
            o.float8(.q, r.quality); o.int4(.i, r.inTokens); o.int4(.o, r.outTokens)
        case let .feedback(session, turn, quality):
            o.text(.k, "feedback"); o.text(.s, session); o.int4(.t, turn); o.float8(.q, quality)
        case .close(let session):
            o.text(.k, "close"); o.text(.s, session)
        case .status(let session):
            o.text(.k, "status"); o.text(.s, session)
        }
        return o.finished()
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

/// How the decision log stores features (`decisions.features`, a bytea): IEEE 754 binary32,
/// big-endian (the byte order of PostgreSQL's float4send), 4 bytes per feature. Parsing them as
/// text was the largest part of the batch function's decoding (docs/BENCHMARKS.md).
/// `BatchRecord.features` writes them.
enum FeatureBytes {
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

/// `s` as a JSON string literal, escaping quotes, backslashes and control characters.
func jsonString(_ s: String) -> String {
    var bytes: [UInt8] = [UInt8(ascii: "\"")]
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
    return String(decoding: bytes, as: UTF8.self)
}
