// Reads the decision log back for learning, with COPY: one round trip streams every row, which
// row-by-row fetching would not. COPY takes no bind parameters, so the filter values travel as
// session settings set by a parameterized statement and read inside the query.

import SeqRouteCore

public struct DecisionLogError: Error, CustomStringConvertible, Sendable {
    public var description: String
}

extension PGConnection {
    /// Every decision made with the pool `poolID` in sessions that are over (closed or
    /// bankrupt), decided at or after `since` (a PostgreSQL timestamp, optional), ordered by
    /// session and turn. `pool` turns model names into indices.
    public func readDecisions(poolID: String, pool: [String], since: String? = nil) throws -> [DecisionRecord] {
        try query("SELECT set_config('seqroute.log_pool', $1, false), set_config('seqroute.log_since', $2, false)",
                  [poolID, since ?? "-infinity"])
        let modelIndex = Dictionary(uniqueKeysWithValues: pool.enumerated().map { ($1, $0) })
        var out: [DecisionRecord] = []
        var failure: Error?
        try copyOut("""
            COPY (SELECT d.session_id, d.turn, extract(epoch FROM d.decided_at), d.policy_version, d.lambda, d.task,
                         encode(d.features, 'hex'), d.budget_state, d.holds, d.feasible, d.model, d.propensity, d.status, d.cost,
                         d.quality, s.budget, s.state
                    FROM decisions d JOIN sessions s ON s.id = d.session_id
                   WHERE d.pool_id = current_setting('seqroute.log_pool')
                     AND d.decided_at >= current_setting('seqroute.log_since')::timestamptz
                     AND s.state IN ('closed', 'bankrupt')
                   ORDER BY d.session_id, d.turn) TO STDOUT
            """) { row in
            guard failure == nil else { return }
            do { out.append(try Self.decision(fromCopyRow: row, modelIndex: modelIndex)) } catch { failure = error }
        }
        if let failure { throw failure }
        return out
    }

    static func decision(fromCopyRow row: UnsafeBufferPointer<UInt8>,
                         modelIndex: [String: Int]) throws -> DecisionRecord {
        var end = row.count
        if end > 0 && row[end - 1] == UInt8(ascii: "\n") { end -= 1 }
        let f = CopyText.fields(row[0..<end])
        guard f.count == 17 else { throw DecisionLogError(description: "decision log row has \(f.count) fields, expected 17") }
        func need(_ i: Int) throws -> String {
            guard let v = f[i] else { throw DecisionLogError(description: "decision log field \(i + 1) is unexpectedly NULL") }
            return v
        }
        func number<T: LosslessStringConvertible>(_ i: Int) throws -> T {
            guard let v = T(try need(i)) else { throw DecisionLogError(description: "decision log field \(i + 1) is not a number") }
            return v
        }
        let state: [Double] = try CopyText.array(try need(7))
        guard state.count == 6 else { throw DecisionLogError(description: "budget_state has \(state.count) values, expected 6") }
        let modelName = f[10]
        var model: Int?
        if let modelName {
            guard let m = modelIndex[modelName] else {
                throw DecisionLogError(description: "decision names model \(modelName), which is not in the pool")
            }
            model = m
        }
        let feasible: [String] = try CopyText.array(try need(9))
        return DecisionRecord(
            sessionID: try need(0), turn: try number(1), decidedAt: try number(2), policyVersion: try need(3),
            lambda: try number(4), task: f[5], features: try FeatureBytes.decode(hex: try need(6)),
            horizon: state[1] > 0 ? Int(state[1]) : nil, spent: Int64(state[3]), held: Int64(state[4]),
            accountRemaining: Int64(state[5]), holds: try CopyText.array(try need(8)),
            feasible: feasible.map { $0 == "t" }, model: model, propensity: f[11].flatMap(Double.init),
            status: try need(12), cost: f[13].flatMap { Int64($0) }, quality: f[14].flatMap(Double.init),
            sessionBudget: try number(15), sessionState: try need(16))
    }
}

/// PostgreSQL's COPY text format: tab-separated fields, `\N` for NULL, backslash escapes.
enum CopyText {
    static func fields(_ bytes: Slice<UnsafeBufferPointer<UInt8>>) -> [String?] {
        bytes.split(separator: UInt8(ascii: "\t"), omittingEmptySubsequences: false).map { field in
            if field.count == 2 && field.first == UInt8(ascii: "\\") && field.last == UInt8(ascii: "N") { return nil }
            return unescape(field)
        }
    }

    static func unescape<C: Collection>(_ field: C) -> String where C.Element == UInt8 {
        guard field.contains(UInt8(ascii: "\\")) else { return String(decoding: field, as: UTF8.self) }
        var out: [UInt8] = []
        var it = Array(field)[...]
        while let b = it.popFirst() {
            guard b == UInt8(ascii: "\\"), let e = it.popFirst() else { out.append(b); continue }
            switch e {
            case UInt8(ascii: "b"): out.append(8)
            case UInt8(ascii: "f"): out.append(12)
            case UInt8(ascii: "n"): out.append(10)
            case UInt8(ascii: "r"): out.append(13)
            case UInt8(ascii: "t"): out.append(9)
            case UInt8(ascii: "v"): out.append(11)
            case UInt8(ascii: "0")...UInt8(ascii: "7"):
                var v = Int(e - UInt8(ascii: "0"))
                for _ in 0..<2 {
                    guard let d = it.first, (UInt8(ascii: "0")...UInt8(ascii: "7")).contains(d) else { break }
                    v = v * 8 + Int(d - UInt8(ascii: "0"))
                    it.removeFirst()
                }
                out.append(UInt8(truncatingIfNeeded: v))
            default: out.append(e)
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// A one-dimensional array of numbers or booleans: `{1,2.5,3}`.
    static func array<T: LosslessStringConvertible>(_ text: String) throws -> [T] {
        guard text.first == "{", text.last == "}" else { throw DecisionLogError(description: "not an array: \(text.prefix(40))") }
        let inner = text.dropFirst().dropLast()
        if inner.isEmpty { return [] }
        return try inner.split(separator: ",", omittingEmptySubsequences: false).map {
            guard let v = T(String($0)) else { throw DecisionLogError(description: "bad array element \($0.prefix(40))") }
            return v
        }
    }
}
