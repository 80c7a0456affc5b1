// `seqroute loadgen`: whole sessions (OPEN, ROUTE and REPORT per turn, CLOSE) over N
// connections, one thread each, spread over one or more daemons' sockets; prints decisions per
// second and ROUTE latency percentiles. With a ledger to watch, it also samples the account's
// spent + held against its cap all through the run.

import Foundation
import Histogram
import SeqRouteCore
import SeqRouteLedger

public struct LoadOptions: Sendable {
    /// Connection c goes to socketPaths[c % count].
    public var socketPaths: [String]
    public var connections: Int
    public var sessions: Int
    public var turns: Int
    public var budget: Int64
    public var account: String?
    /// Target decisions per second over all connections; 0 runs flat out.
    public var rate: Double
    public var seed: UInt64
    /// A libpq connection string: sample `account`'s spent + held against its cap meanwhile.
    public var watchDSN: String?

    public init(socketPaths: [String], connections: Int, sessions: Int, turns: Int, budget: Int64, account: String?,
                rate: Double, seed: UInt64, watchDSN: String? = nil) {
        self.socketPaths = socketPaths
        self.watchDSN = watchDSN
        self.connections = connections
        self.sessions = sessions
        self.turns = turns
        self.budget = budget
        self.account = account
        self.rate = rate
        self.seed = seed
    }
}

public struct LoadReport: Sendable {
    public var decisions: Int
    public var bankrupt: Int
    public var errors: Int
    public var firstErrors: [String]
    public var seconds: Double
    public var p50: Double, p99: Double, p999: Double, max: Double
    /// The watched account: samples taken, the largest spent + held seen, samples over the cap.
    public var watch: (samples: Int, largest: Int64, cap: Int64, overCap: Int)?

    public var summary: String {
        var s = String(format: "decisions=%d seconds=%.2f decisions_per_second=%.0f route_p50_ms=%.3f route_p99_ms=%.3f route_p999_ms=%.3f route_max_ms=%.3f bankrupt_turns=%d errors=%d",
                       decisions, seconds, Double(decisions) / seconds, p50, p99, p999, max, bankrupt, errors)
        if let w = watch {
            s += " watch_samples=\(w.samples) largest_spent_plus_held=\(w.largest) cap=\(w.cap) samples_over_cap=\(w.overCap)"
        }
        return s
    }
}

public enum LoadGenerator {
    public static func run(_ o: LoadOptions) throws -> LoadReport {
        let runID = String(UInt64.random(in: 0..<UInt64.max), radix: 36)
        let totals = Totals()
        let group = DispatchGroup()
        let started = DispatchTime.now().uptimeNanoseconds
        // Each connection paces its own share of the rate: one decision every `interval` ns,
        // at its own phase within the interval.
        let interval = o.rate > 0 ? UInt64(1e9 * Double(o.connections) / o.rate) : 0

        let watcher = try o.watchDSN.map { dsn -> AccountWatcher in
            guard let account = o.account else { throw ServerError("watching a ledger needs --account") }
            return try AccountWatcher(dsn: dsn, account: account)
        }
        watcher?.start()

        for c in 0..<o.connections {
            let mySessions = o.sessions / o.connections + (c < o.sessions % o.connections ? 1 : 0)
            if mySessions == 0 { continue }
            group.enter()
            let thread = Thread {
                defer { group.leave() }
                var local = Histogram<UInt64>(highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: .three)
                var myDecisions = 0, myBankrupt = 0, myErrors = 0
                var myFirstErrors: [String] = []
                var random = SplitMix64(seed: o.seed &+ UInt64(c) &* 0x9E37)
                // Connections start their schedules spread over one interval, so that the
                // offered load is even rather than every connection firing at the same instant.
                var next = DispatchTime.now().uptimeNanoseconds + interval * UInt64(c) / UInt64(o.connections)
                func failed(_ what: String) {
                    myErrors += 1
                    if myFirstErrors.count < 3 { myFirstErrors.append(what) }
                }
                do {
                    let client = try LineClient(path: o.socketPaths[c % o.socketPaths.count])
                    for s in 0..<mySessions {
                        let id = "lg-\(runID)-\(c)-\(s)"
                        var open = "OPEN \(id) budget=\(o.budget) horizon=\(o.turns)"
                        if let a = o.account { open += " account=\(a)" }
                        let opened = try client.request(open)
                        guard opened.hasPrefix("OK") else { failed(opened); continue }
                        for _ in 0..<o.turns {
                            if interval > 0 {
                                next += interval
                                let now = DispatchTime.now().uptimeNanoseconds
                                if next > now { usleep(UInt32((next - now) / 1_000)) }
                            }
                            let tokens = 100 + Int(random.next() % 900)
                            let t0 = DispatchTime.now().uptimeNanoseconds
                            let routed = try client.request("ROUTE \(id) tokens=\(tokens) task=qa")
                            let t1 = DispatchTime.now().uptimeNanoseconds
                            _ = local.record((t1 - t0) / 1_000)
                            guard routed.hasPrefix("OK") else { failed(routed); continue }
                            let f = LineClient.fields(routed)
                            if f["bankrupt"] != nil { myBankrupt += 1; continue }
                            let hold = Int64(f["hold"] ?? "0") ?? 0
                            let cost = hold * Int64(30 + random.next() % 70) / 100
                            let quality = Double(random.next() % 1000) / 1000
                            let reported = try client.request("REPORT \(id) \(f["turn"] ?? "0") cost=\(cost) quality=\(quality)")
                            if reported.hasPrefix("OK") { myDecisions += 1 } else { failed(reported) }
                        }
                        let closed = try client.request("CLOSE \(id)")
                        if !closed.hasPrefix("OK") { failed(closed) }
                    }
                } catch {
                    failed("\(error)")
                }
                totals.lock.withLock {
                    totals.histogram.add(local)
                    totals.decisions += myDecisions
                    totals.bankrupt += myBankrupt
                    totals.errors += myErrors
                    totals.firstErrors += myFirstErrors
                }
            }
            thread.stackSize = 1 << 20
            thread.start()
        }
        group.wait()
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9
        let h = totals.histogram
        return LoadReport(decisions: totals.decisions, bankrupt: totals.bankrupt, errors: totals.errors,
                          firstErrors: totals.firstErrors, seconds: seconds,
                          p50: Double(h.valueAtPercentile(50)) / 1000,
                          p99: Double(h.valueAtPercentile(99)) / 1000,
                          p999: Double(h.valueAtPercentile(99.9)) / 1000,
                          max: Double(h.max) / 1000, watch: watcher?.finish())
    }

    /// Reads one account's cap and spent + held over and over on its own connection.
    private final class AccountWatcher: @unchecked Sendable {
        private let db: PGConnection
        private let account: String
        private let lock = NSLock()
        private var stop = false
        private var samples = 0, overCap = 0
        private var largest: Int64 = 0, cap: Int64 = 0
        private let done = DispatchSemaphore(value: 0)

        init(dsn: String, account: String) throws {
            db = try PGConnection(dsn: dsn)
            self.account = account
        }

        func start() {
            Thread {
                while !self.lock.withLock({ self.stop }) {
                    if let row = try? self.db.query("SELECT cap, spent + held FROM accounts WHERE id = $1", [self.account]).first,
                       let cap = row.int64(0), let committed = row.int64(1) {
                        self.lock.withLock {
                            self.samples += 1
                            self.cap = cap
                            self.largest = Swift.max(self.largest, committed)
                            if committed > cap { self.overCap += 1 }
                        }
                    }
                    usleep(1_000)
                }
                self.done.signal()
            }.start()
        }

        func finish() -> (samples: Int, largest: Int64, cap: Int64, overCap: Int) {
            lock.withLock { stop = true }
            done.wait()
            return lock.withLock { (samples, largest, cap, overCap) }
        }
    }

    /// What the connection threads add up, under one lock.
    private final class Totals: @unchecked Sendable {
        let lock = NSLock()
        var histogram = Histogram<UInt64>(highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: .three)
        var decisions = 0, bankrupt = 0, errors = 0
        var firstErrors: [String] = []
    }
}
