import Foundation
import SeqRouteCore
import SeqRouteLedger
import SeqRouteServer
import Testing

/// How many faults each test injects: small in the test command; the longer version is
/// `SEQROUTE_FAULT_ROUNDS=50 swift test --filter CrashTests`.
let faultRounds = ProcessInfo.processInfo.environment["SEQROUTE_FAULT_ROUNDS"].flatMap { Int($0) } ?? 3

@Suite(.serialized) struct CrashTests {
    /// Clients keep routing and reporting while the daemon is killed with SIGKILL (3 times, or
    /// SEQROUTE_FAULT_ROUNDS) and started again. Every ROUTE and REPORT a client got OK for is in the ledger as
    /// answered; after the expiry time no hold is open; the ledger reconciles.
    @Test func repeatedKill9UnderLoadLosesNothingAcknowledged() throws {
        let dsn = try TestCluster.freshDatabase()
        let daemon = try DaemonProcess(dsn: dsn, config: testConfig.replacingOccurrences(
            of: "hold_expiry_seconds = 600", with: "hold_expiry_seconds = 1"))
        try daemon.start()

        final class Acknowledged: @unchecked Sendable {
            let lock = NSLock()
            var routes: [String: Int64] = [:]    // "session/turn" → hold
            var reports: [String: Int64] = [:]   // "session/turn" → cost
            var stop = false
        }
        let acked = Acknowledged()
        let group = DispatchGroup()
        for client in 0..<8 {
            group.enter()
            Thread {
                defer { group.leave() }
                var random = SplitMix64(seed: UInt64(client) + 5)
                var session = 0
                while !acked.lock.withLock({ acked.stop }) {
                    guard let c = try? daemon.client() else { usleep(20_000); continue }
                    let id = "k\(client)-\(session)"
                    session += 1
                    guard (try? c.request("OPEN \(id) budget=5000000 horizon=6"))?.hasPrefix("OK") == true else { continue }
                    for _ in 0..<6 {
                        guard let routed = try? c.request("ROUTE \(id) tokens=\(10 + random.next() % 200)"),
                              routed.hasPrefix("OK") else { break }
                        let f = LineClient.fields(routed)
                        guard let turn = f["turn"], let hold = f["hold"].flatMap({ Int64($0) }) else { continue }
                        acked.lock.withLock { acked.routes["\(id)/\(turn)"] = hold }
                        if random.next() % 4 == 0 { continue }  // left to expire
                        let cost = Int64(random.next() % UInt64(hold + 1))
                        guard let reported = try? c.request("REPORT \(id) \(turn) cost=\(cost) quality=0.5"),
                              reported.hasPrefix("OK") else { break }
                        acked.lock.withLock { acked.reports["\(id)/\(turn)"] = cost }
                    }
                }
            }.start()
        }
        for _ in 0..<faultRounds {
            usleep(700_000)
            daemon.kill9()
            usleep(100_000)
            try daemon.start()
        }
        usleep(700_000)
        acked.lock.withLock { acked.stop = true }
        group.wait()
        sleep(3)  // past the 1 s expiry and a sweep

        let db = try PGConnection(dsn: dsn)
        var rows: [String: (hold: Int64, status: String, cost: Int64?)] = [:]
        for r in try db.query("SELECT session_id || '/' || turn, hold, status, cost FROM decisions") {
            rows[r[0]!] = (r.int64(1)!, r[2]!, r.int64(3))
        }
        let (routes, reports) = acked.lock.withLock { (acked.routes, acked.reports) }
        #expect(routes.count > 50 && reports.count > 30)
        for (key, hold) in routes { #expect(rows[key]?.hold == hold, "acknowledged ROUTE \(key) missing or changed") }
        for (key, cost) in reports {
            #expect(rows[key]?.status == "reported" && rows[key]?.cost == cost, "acknowledged REPORT \(key): \(String(describing: rows[key]))")
        }
        #expect(try db.query("SELECT count(*) FROM decisions WHERE status = 'held'")[0][0] == "0")
        #expect(try reconciliationRows(db).isEmpty)
        #expect(daemon.terminate() == 0)
    }

    /// PostgreSQL stops and starts again (3 times, or SEQROUTE_FAULT_ROUNDS) while clients route
    /// and report: meanwhile
    /// requests fail fast with `unavailable`; service resumes by itself; every acknowledged
    /// ROUTE and REPORT is in the ledger once, and no money movement is written twice.
    @Test func ledgerRestartsUnderLoadLoseAndDuplicateNothing() throws {
        let pg = try EmbeddedPostgres(directory: try makeTempDirectory("pg3"), database: "postgres")
        try pg.start()
        defer { pg.forceStop() }
        try Migrations.apply(Migrations.load(from: packageRoot + "/sql"), on: try PGConnection(dsn: pg.adminDSN))
        let daemon = try DaemonProcess(dsn: pg.adminDSN)
        try daemon.start()

        final class Tally: @unchecked Sendable {
            let lock = NSLock()
            var routes: [String: Int64] = [:]
            var reports: [String: Int64] = [:]
            var unavailable = 0
            var other: [String] = []
            var stop = false
        }
        let tally = Tally()
        let group = DispatchGroup()
        for client in 0..<6 {
            group.enter()
            Thread {
                defer { group.leave() }
                var random = SplitMix64(seed: UInt64(client) + 9)
                guard let c = try? daemon.client() else { return }
                func note(_ answer: String) {
                    tally.lock.withLock {
                        if answer.hasPrefix("ERR unavailable ") { tally.unavailable += 1 } else { tally.other.append(answer) }
                    }
                }
                var session = 0
                while !tally.lock.withLock({ tally.stop }) {
                    let id = "r\(client)-\(session)"
                    session += 1
                    guard let opened = try? c.request("OPEN \(id) budget=5000000 horizon=4") else { return }
                    guard opened.hasPrefix("OK") else { note(opened); usleep(50_000); continue }
                    for _ in 0..<4 {
                        guard let routed = try? c.request("ROUTE \(id) tokens=\(10 + random.next() % 200)") else { return }
                        guard routed.hasPrefix("OK") else { note(routed); usleep(50_000); break }
                        let f = LineClient.fields(routed)
                        guard let turn = f["turn"], let hold = f["hold"].flatMap({ Int64($0) }) else { continue }
                        tally.lock.withLock { tally.routes["\(id)/\(turn)"] = hold }
                        let cost = Int64(random.next() % UInt64(hold + 1))
                        // Retried until acknowledged: a REPORT is idempotent.
                        while !tally.lock.withLock({ tally.stop }) {
                            guard let reported = try? c.request("REPORT \(id) \(turn) cost=\(cost) quality=0.5") else { return }
                            if reported.hasPrefix("OK") {
                                tally.lock.withLock { tally.reports["\(id)/\(turn)"] = cost }
                                break
                            }
                            note(reported)
                            usleep(50_000)
                        }
                    }
                }
            }.start()
        }
        for _ in 0..<faultRounds {
            usleep(600_000)
            pg.forceStop()
            usleep(800_000)
            try pg.start()
        }
        usleep(1_500_000)
        tally.lock.withLock { tally.stop = true }
        group.wait()

        let db = try PGConnection(dsn: pg.adminDSN)
        let (routes, reports, unavailable, other) = tally.lock.withLock { (tally.routes, tally.reports, tally.unavailable, tally.other) }
        #expect(unavailable > 0, "the outages were not seen")
        #expect(other.isEmpty, "\(other.prefix(5))")
        #expect(routes.count > 30 && reports.count > 20)
        var rows: [String: (hold: Int64, cost: Int64?)] = [:]
        for r in try db.query("SELECT session_id || '/' || turn, hold, cost FROM decisions") { rows[r[0]!] = (r.int64(1)!, r.int64(2)) }
        for (key, hold) in routes { #expect(rows[key]?.hold == hold, "acknowledged ROUTE \(key)") }
        for (key, cost) in reports { #expect(rows[key]?.cost == cost, "acknowledged REPORT \(key)") }
        #expect(try db.query("""
            SELECT count(*) FROM (SELECT 1 FROM ledger_entries GROUP BY session_id, turn, kind HAVING count(*) > 1) d
            """)[0][0] == "0")
        #expect(try reconciliationRows(db).isEmpty)
        #expect(daemon.terminate() == 0)
    }
}
