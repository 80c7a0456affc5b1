// Group commit (money rule 5): requests queue here; one thread owns one PostgreSQL connection,
// takes everything queued, applies it in one transaction with one round trip, and only once
// it has committed answers each request (after sending the next batch, so that PostgreSQL
// works meanwhile). When requests come back fast enough, the next batch is sent before the
// last has committed, to wait behind it on the connection. libpq blocks, so this thread keeps
// it away from the socket's event loops.
// While the ledger is unreachable every request fails at once with `unavailable`, and the
// thread reconnects by itself.

import Foundation

public final class GroupCommitter: @unchecked Sendable {
    public typealias Completion = @Sendable (Result<LedgerResult, LedgerFailure>) -> Void

    public struct Counters: Sendable {
        public var batches = 0
        public var operations = 0
        public var reconnects = 0
        public var expiredHolds = 0
        public var largestBatch = 0
    }

    private let dsn: String
    private let maxBatch: Int
    private let holdExpirySeconds: Int
    private let log: @Sendable (String) -> Void

    private let cond = NSCondition()
    private var queue: [Pending] = []
    private var connected = false
    private var lastFailure = ""
    private var stopping = false
    private var stopped = false
    private var counters = Counters()
    private var thread: Thread?
    /// The ledger's OID of `seqroute_op`, which every batch names; set on connecting.
    private var opType: UInt32 = 0

    /// A pipe written when the queue reaches `wakeAt` requests, to wake the committer waiting
    /// for a batch's answer (`awaitAnswerOrRequests`).
    private var wake: (read: Int32, write: Int32) = (-1, -1)
    private var wakeAt = Int.max

    /// How often a down ledger is retried, and unreported holds are expired; a chain of batches
    /// (`commitInTurn`) ends for it.
    private let housekeepingInterval: TimeInterval

    /// Called with the size of each committed batch (the metrics' batch-size histogram).
    private let onBatch: @Sendable (Int) -> Void

    public init(dsn: String, maxBatch: Int, holdExpirySeconds: Int, housekeepingInterval: TimeInterval = 0.5,
                log: @escaping @Sendable (String) -> Void, onBatch: @escaping @Sendable (Int) -> Void = { _ in }) {
        self.housekeepingInterval = housekeepingInterval
        self.onBatch = onBatch
        self.dsn = dsn
        self.maxBatch = maxBatch
        self.holdExpirySeconds = holdExpirySeconds
        self.log = log
    }

    deinit {
        if wake.read >= 0 {
            close(wake.read)
            close(wake.write)
        }
    }

    /// Connects (throws when the ledger is unreachable) and starts the committer thread.
    public func start() throws {
        guard thread == nil else { throw PGError(sqlState: nil, message: "the committer runs already", connectionLost: false) }
        var fds: [Int32] = [-1, -1]
        guard pipe(&fds) == 0 else { throw PGError(sqlState: nil, message: "cannot make a pipe: \(errno)", connectionLost: false) }
        for fd in fds { _ = fcntl(fd, F_SETFL, O_NONBLOCK); _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        wake = (fds[0], fds[1])
        let db = try PGConnection(dsn: dsn)
        opType = try BatchRecord.checkType(on: db)
        cond.lock()
        connected = true
        cond.unlock()
        let t = Thread { [self] in run(db) }
        t.name = "seqroute-committer"
        thread = t
        t.start()
    }

    /// Commits what is queued, then stops the thread. Later submissions fail as unavailable.
    public func stop() {
        cond.lock()
        stopping = true
        cond.broadcast()
        while !stopped && thread != nil { cond.wait() }
        cond.unlock()
    }

    public var counterSnapshot: Counters {
        cond.lock()
        defer { cond.unlock() }
        return counters
    }

    public var isConnected: Bool {
        cond.lock()
        defer { cond.unlock() }
        return connected
    }

    /// A queued operation with its binary record (`LedgerOperation.record`).
    private struct Pending {
        let op: LedgerOperation
        let record: [UInt8]
        let done: Completion
    }

    public func submit(_ op: LedgerOperation, _ done: @escaping Completion) {
        let record = op.record
        cond.lock()
        guard connected, !stopping else {
            let why = stopping ? "the daemon is shutting down" : "the ledger is unreachable: \(lastFailure)"
            cond.unlock()
            done(.failure(.unavailable(why)))
            return
        }
        queue.append(Pending(op: op, record: record, done: done))
        if queue.count >= wakeAt {
            wakeAt = .max
            var one: UInt8 = 1
            _ = write(wake.write, &one, 1)
        }
        cond.signal()
        cond.unlock()
    }

    public func submit(_ op: LedgerOperation) async -> Result<LedgerResult, LedgerFailure> {
        await withCheckedContinuation { cont in submit(op) { cont.resume(returning: $0) } }
    }

    private func run(_ first: PGConnection) {
        var db: PGConnection? = first
        var nextHousekeeping = Date()
        while true {
            cond.lock()
            while queue.isEmpty && !stopping && Date() < nextHousekeeping {
                _ = cond.wait(until: nextHousekeeping)
            }
            if queue.isEmpty && stopping {
                stopped = true
                connected = false
                cond.broadcast()
                cond.unlock()
                return
            }
            let batch = takeBatch()
            cond.unlock()

            if !batch.isEmpty {
                db = commitInTurn(batch, on: db, until: nextHousekeeping)
            }
            if Date() >= nextHousekeeping {
                db = housekeeping(db)
                nextHousekeeping = Date().addingTimeInterval(housekeepingInterval)
            }
        }
    }

    /// Commits `first`, then whatever has queued meanwhile, batch after batch until the queue is
    /// empty or `deadline` (housekeeping) has passed; the backend, which limits throughput,
    /// should never wait for this thread. Once a batch has committed, the next goes to
    /// PostgreSQL before this thread answers the last. And if as many requests have queued as
    /// the last batch answered (its clients coming back) before the batch being applied has
    /// committed, they go at once, to wait on the connection behind it in a transaction of
    /// their own: the backend goes from one to the next without a round trip. Such a batch
    /// holds no session of the one ahead, because a batch that fails is applied again after
    /// the one behind it, and each session's operations must be applied in the order they came.
    private func commitInTurn(_ first: [Pending], on db: PGConnection?, until deadline: Date) -> PGConnection? {
        guard let db else { return commit(first, on: nil) }
        do { try db.send(Self.statement, [encode(first)]) } catch { return commitUnsent(first, on: db, after: error) }
        var applying = first
        var answered = 0
        while true {
            var (behind, sendError): ([Pending], Error?) = ([], nil)
            if answered > 0 && Date() < deadline && !awaitAnswerOrRequests(db, count: answered, until: deadline) {
                (behind, sendError) = sendNext(on: db, excluding: Set(applying.map(\.op.session)))
            }
            let rows: [PGRow]
            do {
                rows = try db.receive()
            } catch {
                // The batch behind, of other sessions, is settled first; then this one on its own.
                var conn: PGConnection? = db
                if !behind.isEmpty {
                    conn = sendError.map { commitUnsent(behind, on: conn, after: $0) } ?? receiveAndSettle(behind, on: conn)
                }
                return commitFailed(applying, on: conn, after: error)
            }
            if behind.isEmpty && sendError == nil && Date() < deadline {
                (behind, sendError) = sendNext(on: db, excluding: [])
            }
            settle(applying, rows)
            if let sendError { return commitUnsent(behind, on: db, after: sendError) }
            if behind.isEmpty { return db }
            answered = applying.count
            applying = behind
        }
    }

    /// Takes the next batch, of sessions other than `busy`, and sends it unless it is empty.
    private func sendNext(on db: PGConnection, excluding busy: Set<String>) -> ([Pending], Error?) {
        cond.lock()
        let batch = takeBatch(excluding: busy)
        cond.unlock()
        guard !batch.isEmpty else { return ([], nil) }
        do {
            try db.send(Self.statement, [encode(batch)])
            return (batch, nil)
        } catch {
            return (batch, error)
        }
    }

    /// Waits until the batch in flight on `db` has its answer (true), or `count` requests have
    /// queued (false), whichever comes first; true too at `deadline`, or when the connection's
    /// socket cannot be waited on.
    private func awaitAnswerOrRequests(_ db: PGConnection, count: Int, until deadline: Date) -> Bool {
        guard let socket = db.pollableSocket else { return true }
        if db.answerWaiting { return true }
        cond.lock()
        let queued = queue.count >= count
        if !queued { wakeAt = count }
        cond.unlock()
        if queued { return false }
        var fds = [pollfd(fd: socket, events: Int16(POLLIN), revents: 0),
                   pollfd(fd: wake.read, events: Int16(POLLIN), revents: 0)]
        let milliseconds = Int32(max(0, min(deadline.timeIntervalSinceNow * 1000, 1000)).rounded(.up))
        var ready: Int32
        repeat { ready = poll(&fds, 2, milliseconds) } while ready < 0 && errno == EINTR
        cond.lock()
        wakeAt = .max
        var drained: UInt8 = 0
        while read(wake.read, &drained, 1) == 1 {}
        cond.unlock()
        // An answer arriving as well is taken first: the next batch then holds more.
        return fds[0].revents != 0 || fds[1].revents == 0
    }

    private func receiveAndSettle(_ batch: [Pending], on db: PGConnection?) -> PGConnection? {
        guard let db else { return commit(batch, on: nil) }
        do {
            settle(batch, try db.receive())
            return db
        } catch {
            return commitFailed(batch, on: db, after: error)
        }
    }

    /// A batch whose statement failed.
    private func commitFailed(_ batch: [Pending], on db: PGConnection?, after error: Error) -> PGConnection? {
        // A migration changed what the prepared statement returns; `query` prepares it again.
        if (error as? PGError)?.sqlState == "0A000" { return commit(batch, on: db) }
        // Nothing else is in flight: the batch is handled on its own.
        return commit(batch, on: db, failedWith: error)
    }

    /// A batch that could not be sent: lost with the connection, or not applied and run again.
    private func commitUnsent(_ batch: [Pending], on db: PGConnection?, after error: Error) -> PGConnection? {
        (error as? PGError)?.connectionLost == true ? commit(batch, on: db, failedWith: error) : commit(batch, on: db)
    }

    /// Takes the next batch off the queue, of sessions other than `busy`. The caller holds `cond`.
    private func takeBatch(excluding busy: Set<String> = []) -> [Pending] {
        let (batch, rest) = Self.nextBatch(of: queue, max: maxBatch, excluding: busy) { $0.op.session }
        queue = rest
        return batch
    }

    /// Up to `max` items of `queue` with distinct sessions, none of `excluding`, in arrival order,
    /// and what is left. An item whose session is already in the batch (or excluded) stays, and so
    /// does everything after it for that session: each session's operations are applied in the
    /// order they came.
    public static func nextBatch<T>(of queue: [T], max: Int, excluding: Set<String> = [],
                                    session: (T) -> String) -> (batch: [T], rest: [T]) {
        var batch: [T] = []
        var rest: [T] = []
        var sessions = excluding
        for item in queue {
            if batch.count < max && sessions.insert(session(item)).inserted {
                batch.append(item)
            } else {
                rest.append(item)
            }
        }
        return (batch, rest)
    }

    private func markDown(_ error: PGError) {
        cond.lock()
        let wasUp = connected
        connected = false
        lastFailure = error.message
        let pending = queue
        queue.removeAll()
        cond.unlock()
        if wasUp { log("<3>ledger unreachable: \(error.message)") }
        for p in pending { p.done(.failure(.unavailable("the ledger is unreachable: \(error.message)"))) }
    }

    /// Answers the requests of a batch that has committed. Rows that do not answer each
    /// operation once are a fault between daemon and schema: the requests get `internal`, and
    /// nothing is applied again.
    private func settle(_ batch: [Pending], _ rows: [PGRow]) {
        let results: [LedgerResult]
        do {
            results = try Self.results(of: rows, count: batch.count)
        } catch {
            log("<3>ledger committed a batch but answered it unreadably: \(error)")
            for p in batch { p.done(.failure(.internalError("\(error)"))) }
            return
        }
        cond.lock()
        counters.batches += 1
        counters.operations += batch.count
        counters.largestBatch = max(counters.largestBatch, batch.count)
        cond.unlock()
        onBatch(batch.count)
        for (p, r) in zip(batch, results) { p.done(.success(r)) }
    }

    /// Applies `batch` alone and answers its requests: again after a deadlock, and one
    /// operation at a time when one of them spoils the batch. `failedWith` is the error of an
    /// attempt already made.
    private func commit(_ batch: [Pending], on db: PGConnection?, failedWith: Error? = nil) -> PGConnection? {
        guard let db else {
            for p in batch { p.done(.failure(.unavailable("the ledger is unreachable: \(lastFailure)"))) }
            return nil
        }
        var failure = failedWith
        var attempt = failure == nil ? 0 : 1
        while true {
            if failure == nil {
                attempt += 1
                do {
                    settle(batch, try db.query(Self.statement, parameters: [encode(batch)], prepared: true))
                    return db
                } catch {
                    failure = error
                }
            }
            switch failure {
            case let e as PGError where e.connectionLost:
                // The commit's fate is unknown to us; nothing was acknowledged, so the client
                // sees `unavailable` and may retry (REPORT is idempotent).
                markDown(e)
                for p in batch { p.done(.failure(.unavailable("the ledger connection was lost: \(e.message)"))) }
                return nil
            case let e as PGError where (e.sqlState == "40P01" || e.sqlState == "40001") && attempt < 5:
                failure = nil  // deadlock or serialization failure: the batch rolled back; run it again
            default:
                if batch.count == 1 {
                    log("<3>ledger refused an operation: \(failure!)")
                    batch[0].done(.failure(.internalError((failure as? PGError)?.summary ?? "\(failure!)")))
                    return db
                }
                // One operation spoiled the batch: apply each alone so that the others commit.
                var conn: PGConnection? = db
                for item in batch { conn = commit([item], on: conn) }
                return conn
            }
        }
    }

    private static let statement = "SELECT * FROM seqroute_apply($1::seqroute_op[])"

    /// The batch as seqroute_apply() reads it (`BatchRecord`).
    private func encode(_ ops: [Pending]) -> PGParameter {
        .binary(BatchRecord.batch(ops.map(\.record), elementType: opType))
    }

    /// One row per operation, grouped by kind: put back in the batch's order.
    private static func results(of rows: [PGRow], count: Int) throws -> [LedgerResult] {
        var results = [LedgerResult?](repeating: nil, count: count)
        for row in rows {
            guard let n = row.int(0), (1...count).contains(n), results[n - 1] == nil else {
                throw PGError(sqlState: nil, message: "seqroute_apply answered an unexpected row \(row.int(0).map(String.init) ?? "null")",
                              connectionLost: false)
            }
            results[n - 1] = LedgerResult(row)
        }
        guard results.allSatisfy({ $0 != nil }) else {
            throw PGError(sqlState: nil, message: "seqroute_apply left operations of the batch unanswered", connectionLost: false)
        }
        return results.map { $0! }
    }

    private func housekeeping(_ db: PGConnection?) -> PGConnection? {
        var db = db
        if db == nil || !(db!.isHealthy) {
            do {
                let fresh = try PGConnection(dsn: dsn)
                opType = try BatchRecord.checkType(on: fresh)
                db = fresh
                cond.lock()
                connected = !stopping
                counters.reconnects += 1
                cond.unlock()
                log("<5>ledger reachable again")
            } catch let e as PGError {
                // A ledger that answers but cannot be served (its batch type differs) is logged
                // once, not only when the daemon goes down, which a lost connection may have done.
                cond.lock()
                let repeated = e.message == lastFailure
                cond.unlock()
                if !e.connectionLost && !repeated { log("<3>ledger unusable: \(e.message)") }
                markDown(e)
                return nil
            } catch {
                return nil
            }
        }
        do {
            let rows = try db!.query("SELECT seqroute_expire_holds(make_interval(secs => $1))", [String(holdExpirySeconds)])
            let n = rows.first?.int(0) ?? 0
            if n > 0 {
                cond.lock()
                counters.expiredHolds += n
                cond.unlock()
                log("<5>expired \(n) unreported hold(s)")
            }
        } catch let e as PGError where e.connectionLost {
            markDown(e)
            return nil
        } catch {
            log("<4>hold expiry failed: \(error)")
        }
        return db
    }
}
