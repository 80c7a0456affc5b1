// A small safe wrapper around libpq: one connection, parameterized statements, text results.
// Not thread-safe: a connection may move between threads but is used by one at a time.

import CLibPQ
#if canImport(Glibc)
import Glibc
#endif

public struct PGError: Error, CustomStringConvertible, Sendable {
    /// SQLSTATE, when the server sent one.
    public var sqlState: String?
    public var message: String
    /// True when the connection itself failed (the ledger is unreachable), not the statement.
    public var connectionLost: Bool
    public var description: String { sqlState.map { "\(message) (SQLSTATE \($0))" } ?? message }
    /// The message's first line and the SQLSTATE, without the server's DETAIL and CONTEXT lines
    /// (which may quote a whole statement of the batch function): what a client is told.
    public var summary: String {
        let first = String(message.prefix { $0 != "\n" })
        return sqlState.map { "\(first) (SQLSTATE \($0))" } ?? first
    }
}

public struct PGRow: Sendable {
    public var values: [String?]
    public subscript(_ i: Int) -> String? { values[i] }
    public func int64(_ i: Int) -> Int64? { values[i].flatMap { Int64($0) } }
    public func int(_ i: Int) -> Int? { values[i].flatMap { Int($0) } }
    public func double(_ i: Int) -> Double? { values[i].flatMap { Double($0) } }
    public func bool(_ i: Int) -> Bool? { values[i].map { $0 == "t" } }
}

/// A statement's parameter: text, or bytes in the binary format of the parameter's type (the
/// group committer sends its batch so, which the server reads without parsing text).
public enum PGParameter: Sendable {
    case text(String?)
    case binary([UInt8])
}

public final class PGConnection: @unchecked Sendable {
    private var conn: OpaquePointer?
    public let dsn: String

    public init(dsn: String) throws {
        self.dsn = dsn
        conn = PQconnectdb(dsn)
        guard let conn, PQstatus(conn) == CONNECTION_OK else {
            let message = conn.map { String(cString: PQerrorMessage($0)) } ?? "out of memory"
            PQfinish(conn)
            self.conn = nil
            throw PGError(sqlState: nil, message: "cannot connect to PostgreSQL: \(trimmed(message))",
                          connectionLost: true)
        }
        // Notices (for example "relation already exists, skipping") are not errors; keep stderr clean.
        PQsetNoticeProcessor(conn, { _, _ in }, nil)
    }

    deinit { PQfinish(conn) }

    public var isHealthy: Bool { conn.map { PQstatus($0) == CONNECTION_OK } ?? false }

    /// Statements prepared on this connection, by text: the group committer runs the same one
    /// for every batch, and a prepared statement is not parsed and planned again each time.
    private var preparedNames: [String: String] = [:]
    private var preparedCount = 0

    /// Runs one statement with text parameters; returns its rows as text. `prepared` keeps the
    /// statement on the server for the next call with the same text.
    @discardableResult
    public func query(_ sql: String, _ params: [String?] = [], prepared: Bool = false) throws -> [PGRow] {
        try query(sql, parameters: params.map(PGParameter.text), prepared: prepared)
    }

    /// Runs one statement; returns its rows as text. `prepared` as above.
    @discardableResult
    public func query(_ sql: String, parameters params: [PGParameter], prepared: Bool = false) throws -> [PGRow] {
        do {
            return try run(sql, params, prepared: prepared)
        } catch let e as PGError where prepared && e.sqlState == "0A000" {
            // "cached plan must not change result type": a migration changed what the statement
            // returns while this connection kept it. Prepare it again, once.
            if let stale = preparedNames.removeValue(forKey: sql) { PQclear(PQexec(conn, "DEALLOCATE \(stale)")) }
            return try run(sql, params, prepared: true)
        }
    }

    private func run(_ sql: String, _ params: [PGParameter], prepared: Bool) throws -> [PGRow] {
        guard let conn else { throw PGError(sqlState: nil, message: "connection closed", connectionLost: true) }
        // Only after a fault of the caller's; the connection cannot be trusted with more.
        guard inFlight == 0 else {
            drop()
            throw PGError(sqlState: nil, message: "statements sent were never received", connectionLost: true)
        }
        let name = prepared ? try preparedName(sql, parameters: params.count) : nil
        let result: OpaquePointer? = withParameters(params) { values, lengths, formats in
            if let name { return PQexecPrepared(conn, name, Int32(params.count), values, lengths, formats, 0) }
            return PQexecParams(conn, sql, Int32(params.count), nil, values, lengths, formats, 0)
        }
        defer { PQclear(result) }
        return try rows(of: result)
    }

    /// The server-side name of `sql`, prepared now if this connection has not prepared it yet.
    private func preparedName(_ sql: String, parameters: Int) throws -> String {
        if let name = preparedNames[sql] { return name }
        let fresh = "seqroute_\(preparedCount)"
        let made = PQprepare(conn, fresh, sql, Int32(parameters), nil)
        defer { PQclear(made) }
        guard let made, PQresultStatus(made) == PGRES_COMMAND_OK else { throw lastError(made) }
        preparedCount += 1
        preparedNames[sql] = fresh
        return fresh
    }

    /// Statements sent and not yet received.
    private var inFlight = 0

    /// Sends one prepared statement, to run in a transaction of its own after any still in
    /// flight, without waiting for its answer; `receive` gives the answers in the order sent
    /// (libpq's pipeline mode). Until all are received the connection takes nothing else.
    public func send(_ sql: String, _ params: [PGParameter]) throws {
        guard let conn else { throw PGError(sqlState: nil, message: "connection closed", connectionLost: true) }
        // Preparing takes a round trip of its own, which cannot go behind statements in flight.
        guard inFlight == 0 || preparedNames[sql] != nil else {
            throw PGError(sqlState: nil, message: "a statement cannot be prepared behind others in flight", connectionLost: false)
        }
        let name = try preparedName(sql, parameters: params.count)
        if inFlight == 0 {
            guard PQenterPipelineMode(conn) == 1 else { throw lastError(nil) }
        }
        let sent = withParameters(params) { values, lengths, formats in
            PQsendQueryPrepared(conn, name, Int32(params.count), values, lengths, formats, 0)
        }
        // A statement half queued in libpq's buffer would go out ahead of the next one.
        guard sent == 1 else {
            let e = lastError(nil)
            drop()
            throw PGError(sqlState: e.sqlState, message: "cannot send: \(e.message)", connectionLost: true)
        }
        // The Sync ends the statement's transaction. Without it the connection is unusable.
        guard PQpipelineSync(conn) == 1 else {
            drop()
            throw PGError(sqlState: nil, message: "cannot send a statement's end", connectionLost: true)
        }
        inFlight += 1
    }

    /// Whether the oldest statement in flight has (the start of) its answer here, so that
    /// `receive` would not wait long for the server.
    public var answerWaiting: Bool {
        guard let conn else { return true }
        return PQconsumeInput(conn) == 0 || PQisBusy(conn) == 0
    }

    /// The connection's socket, to wait for an answer beside other events; nil when waiting on
    /// it could miss an answer already read (TLS and GSS encryption buffer what they decrypt).
    public var pollableSocket: Int32? {
        guard let conn, PQsslInUse(conn) == 0, PQgssEncInUse(conn) == 0 else { return nil }
        return PQsocket(conn)
    }

    /// Closes a connection left in a state it cannot be used in: every later use fails as lost.
    private func drop() {
        PQfinish(conn)
        conn = nil
        inFlight = 0
    }

    /// The rows of the oldest statement `send` sent, once its transaction has committed, or its
    /// error.
    public func receive() throws -> [PGRow] {
        guard let conn, inFlight > 0 else {
            throw PGError(sqlState: nil, message: "no statement in flight", connectionLost: conn == nil)
        }
        guard let result = PQgetResult(conn) else {
            let e = PGError(sqlState: nil, message: "no answer: \(lastError(nil).message)", connectionLost: true)
            drop()
            throw e
        }
        let answer = Result { try rows(of: result) }
        PQclear(result)
        // The statement's transaction commits at its Sync, after its rows were sent: an error can
        // still follow them (a failed commit), and only the Sync's answer says done.
        var failure: PGError?
        var ends = 0
        while true {
            guard let more = PQgetResult(conn) else {
                // A NULL ends each run of results (the statement's, a failed commit's); more
                // of them, with no Sync seen, mean the connection is gone.
                ends += 1
                guard ends <= 2, PQstatus(conn) == CONNECTION_OK else {
                    let e = PGError(sqlState: nil, message: "the statement's end was not seen: \(lastError(nil).message)",
                                    connectionLost: true)
                    drop()
                    throw e
                }
                continue
            }
            defer { PQclear(more) }
            if PQresultStatus(more) == PGRES_PIPELINE_SYNC { break }
            if failure == nil, case .failure(let e as PGError) = Result(catching: { try rows(of: more) }) { failure = e }
        }
        inFlight -= 1
        // The answer stands; a connection that cannot leave pipeline mode is not used again.
        if inFlight == 0 && PQexitPipelineMode(conn) != 1 { drop() }
        if let failure { throw failure }
        return try answer.get()
    }

    private func rows(of result: OpaquePointer?) throws -> [PGRow] {
        guard let result else { throw lastError(nil) }
        let status = PQresultStatus(result)
        guard status == PGRES_TUPLES_OK || status == PGRES_COMMAND_OK else { throw lastError(result) }
        let nrows = PQntuples(result), ncols = PQnfields(result)
        var rows: [PGRow] = []
        rows.reserveCapacity(Int(nrows))
        for r in 0..<nrows {
            var values: [String?] = []
            values.reserveCapacity(Int(ncols))
            for c in 0..<ncols {
                values.append(PQgetisnull(result, r, c) == 1 ? nil : String(cString: PQgetvalue(result, r, c)))
            }
            rows.append(PGRow(values: values))
        }
        return rows
    }

    /// Runs a script of several statements (no parameters), as migrations are.
    public func execute(script: String) throws {
        guard let conn else { throw PGError(sqlState: nil, message: "connection closed", connectionLost: true) }
        let result = PQexec(conn, script)
        defer { PQclear(result) }
        let status = result.map { PQresultStatus($0) }
        guard status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK else { throw lastError(result) }
    }

    /// Streams the result of `COPY (...) TO STDOUT`, one chunk (a row in text format) at a time.
    public func copyOut(_ sql: String, _ body: (UnsafeBufferPointer<UInt8>) throws -> Void) throws {
        guard let conn else { throw PGError(sqlState: nil, message: "connection closed", connectionLost: true) }
        let start = PQexec(conn, sql)
        let status = start.map { PQresultStatus($0) }
        if status != PGRES_COPY_OUT {
            defer { PQclear(start) }
            throw lastError(start)
        }
        PQclear(start)
        while true {
            var buffer: UnsafeMutablePointer<CChar>?
            let n = PQgetCopyData(conn, &buffer, 0)
            if n > 0, let buffer {
                defer { PQfreemem(buffer) }
                try buffer.withMemoryRebound(to: UInt8.self, capacity: Int(n)) {
                    try body(UnsafeBufferPointer(start: $0, count: Int(n)))
                }
            } else if n == -1 {
                break
            } else {
                throw lastError(nil)
            }
        }
        let end = PQgetResult(conn)
        defer { PQclear(end) }
        guard end.map({ PQresultStatus($0) }) == PGRES_COMMAND_OK else { throw lastError(end) }
        while let extra = PQgetResult(conn) { PQclear(extra) }
    }

    private func lastError(_ result: OpaquePointer?) -> PGError {
        var message = conn.map { String(cString: PQerrorMessage($0)) } ?? "no connection"
        var state: String?
        if let result {
            let m = String(cString: PQresultErrorMessage(result))
            if !m.isEmpty { message = m }
            if let s = PQresultErrorField(result, Int32(UInt8(ascii: "C"))) { state = String(cString: s) }
        }
        let lost = conn.map { PQstatus($0) != CONNECTION_OK } ?? true
        // Class 08 is "connection exception"; 57P01..57P03 are server shutdown and start-up.
        let lostState = state.map { $0.hasPrefix("08") || $0.hasPrefix("57P") } ?? false
        return PGError(sqlState: state, message: trimmed(message), connectionLost: lost || lostState)
    }
}

private func trimmed(_ s: String) -> String {
    var t = Substring(s)
    while let last = t.last, last == "\n" || last == " " { t = t.dropLast() }
    return String(t)
}

/// libpq's three parallel arrays for `params`: values (text ones NUL-terminated), lengths and
/// formats (0 text, 1 binary; a text value's length is not read).
private func withParameters<R>(_ params: [PGParameter],
                               _ body: ([UnsafePointer<CChar>?], [Int32], [Int32]) -> R) -> R {
    var lengths: [Int32] = []
    var formats: [Int32] = []
    let owned: [UnsafeMutablePointer<CChar>?] = params.map { param in
        switch param {
        case .text(let s):
            lengths.append(0)
            formats.append(0)
            return s.map { strdup($0) } ?? nil
        case .binary(let bytes):
            lengths.append(Int32(bytes.count))
            formats.append(1)
            let copy = UnsafeMutablePointer<CChar>.allocate(capacity: max(bytes.count, 1))
            bytes.withUnsafeBytes { b in
                if let base = b.baseAddress { copy.initialize(from: base.assumingMemoryBound(to: CChar.self), count: b.count) }
            }
            return copy
        }
    }
    defer {
        for (p, param) in zip(owned, params) {
            if case .binary = param { p?.deallocate() } else { free(p) }
        }
    }
    return body(owned.map { $0.map { UnsafePointer($0) } }, lengths, formats)
}
