// `seqroute loadgen`: whole sessions (OPEN, ROUTE and REPORT per turn, CLOSE) over N
// connections, one thread each; prints decisions per second and ROUTE latency percentiles.

import Foundation
import Histogram
import SeqRouteCore

public struct LoadOptions: Sendable {
    public var socketPath: String
    public var connections: Int
    public var sessions: Int
    public var turns: Int
    public var budget: Int64
    public var account: String?
    /// Target decisions per second over all connections; 0 runs flat out.
    public var rate: Double
    public var seed: UInt64

    public init(socketPath: String, connections: Int, sessions: Int, turns: Int, budget: Int64, account: String?,
                rate: Double, seed: UInt64) {
        self.socketPath = socketPath
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

    public var summary: String {
        String(format: "decisions=%d seconds=%.2f decisions_per_second=%.0f route_p50_ms=%.3f route_p99_ms=%.3f route_p999_ms=%.3f route_max_ms=%.3f bankrupt_turns=%d errors=%d",
               decisions, seconds, Double(decisions) / seconds, p50, p99, p999, max, bankrupt, errors)
    }
}

public enum LoadGenerator {
    public static func run(_ o: LoadOptions) throws -> LoadReport {
        let runID = String(UInt64.random(in: 0..<UInt64.max), radix: 36)
        let totals = Totals()
        let group = DispatchGroup()
        let started = DispatchTime.now().uptimeNanoseconds
        // Each connection paces its own share of the rate: one decision every `interval` ns.
        let interval = o.rate > 0 ? UInt64(1e9 * Double(o.connections) / o.rate) : 0

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
                var next = DispatchTime.now().uptimeNanoseconds
                func failed(_ what: String) {
                    myErrors += 1
                    if myFirstErrors.count < 3 { myFirstErrors.append(what) }
                }
                do {
                    let client = try LineClient(path: o.socketPath)
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
                          max: Double(h.max) / 1000)
    }

    /// What the connection threads add up, under one lock.
    private final class Totals: @unchecked Sendable {
        let lock = NSLock()
        var histogram = Histogram<UInt64>(highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: .three)
        var decisions = 0, bankrupt = 0, errors = 0
        var firstErrors: [String] = []
    }
}
