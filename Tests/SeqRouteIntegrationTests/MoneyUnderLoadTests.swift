import Foundation
import SeqRouteCore
import SeqRouteLedger
import SeqRouteServer
import Testing

@Suite(.serialized) struct MoneyUnderLoadTests {
    /// 50 clients route on one account with a small cap, with reports, repeated reports,
    /// unreported turns that expire, and closes. A sampler watches the account row meanwhile.
    @Test func concurrentClientsNeverOverspendAndTheLedgerReconciles() throws {
        let dsn = try TestCluster.freshDatabase()
        let db = try PGConnection(dsn: dsn)
        let cap: Int64 = 60_000
        try db.setAccount("tight", cap: cap)
        let daemon = try DaemonProcess(dsn: dsn, config: testConfig.replacingOccurrences(
            of: "hold_expiry_seconds = 600", with: "hold_expiry_seconds = 1"))
        try daemon.start()

        final class Shared: @unchecked Sendable {
            let lock = NSLock()
            var failures: [String] = []
        }
        let shared = Shared()
        let sampler = AccountSampler(dsn: dsn, account: "tight")

        let group = DispatchGroup()
        for client in 0..<50 {
            group.enter()
            Thread {
                defer { group.leave() }
                var random = SplitMix64(seed: UInt64(client) + 11)
                func fail(_ s: String) { shared.lock.withLock { shared.failures.append(s) } }
                do {
                    let c = try daemon.client()
                    for s in 0..<4 {
                        let id = "c\(client)-\(s)"
                        let budget = 2_000 + Int64(random.next() % 8_000)
                        let opened = try c.request("OPEN \(id) budget=\(budget) account=tight horizon=5")
                        guard opened.hasPrefix("OK") else { fail(opened); continue }
                        for _ in 0..<5 {
                            let routed = try c.request("ROUTE \(id) tokens=\(10 + random.next() % 300)")
                            guard routed.hasPrefix("OK") else { fail(routed); break }
                            let f = LineClient.fields(routed)
                            if f["bankrupt"] != nil { continue }
                            let hold = Int64(f["hold"]!)!
                            let roll = random.next() % 10
                            if roll == 0 { continue }  // never reported: the hold expires
                            let cost = hold == 0 ? 0 : Int64(random.next() % UInt64(hold + 1))
                            let line = "REPORT \(id) \(f["turn"]!) cost=\(cost) quality=0.5"
                            let first = try c.request(line)
                            guard first.hasPrefix("OK") else { fail("\(line) -> \(first)"); continue }
                            if roll == 1 {
                                let again = try c.request(line)
                                if again != first { fail("repeat \(line): \(first) then \(again)") }
                            }
                        }
                        if random.next() % 2 == 0 {
                            let closed = try c.request("CLOSE \(id)")
                            if !closed.hasPrefix("OK") { fail(closed) }
                        }
                    }
                } catch {
                    fail("\(error)")
                }
            }.start()
        }
        group.wait()
        // Let unreported holds pass their expiry (1 s) and the expiry sweep (every 0.5 s) run.
        sleep(3)
        let watched = sampler.stop()

        #expect(shared.failures.isEmpty, "\(shared.failures.prefix(5))")
        #expect(watched.samples > 10)
        #expect(watched.largest <= cap)
        let row = try db.query("SELECT spent, held FROM accounts WHERE id = 'tight'")[0]
        #expect(row.int64(0)! + row.int64(1)! <= cap)
        #expect(row.int64(0)! > 0)
        #expect(try reconciliationRows(db).isEmpty)
        #expect(try db.query("SELECT count(*) FROM decisions WHERE status = 'held'")[0][0] == "0")
        #expect(try db.query("SELECT count(*) FROM ledger_entries WHERE kind = 'expiry'")[0].int(0)! > 0)
        #expect(try db.query("SELECT count(*) FROM sessions WHERE account_id = 'tight'")[0][0] == "200")
        #expect(daemon.terminate() == 0)
    }

    @Test func acknowledgedReportSurvivesKill9() throws {
        let dsn = try TestCluster.freshDatabase()
        let daemon = try DaemonProcess(dsn: dsn)
        try daemon.start()
        var c = try daemon.client()
        _ = try c.request("OPEN k9 budget=100000 horizon=4")
        let hold = Int64(LineClient.fields(try c.request("ROUTE k9 tokens=50"))["hold"]!)!
        #expect(try c.request("REPORT k9 1 cost=123 quality=0.7") == "OK spent=123 remaining=99877")
        daemon.kill9()

        try daemon.start()
        c = try daemon.client()
        #expect(LineClient.fields(try c.request("STATUS k9"))["spent"] == "123")
        #expect(try c.request("REPORT k9 1 cost=123 quality=0.7") == "OK spent=123 remaining=99877")
        #expect(try c.request("ROUTE k9 tokens=50").hasPrefix("OK turn=2 "))
        let db = try PGConnection(dsn: dsn)
        let entries = try db.query("SELECT kind, amount FROM ledger_entries WHERE session_id = 'k9' AND turn = 1 ORDER BY id")
            .map { "\($0[0]!):\($0[1]!)" }
        #expect(entries == ["hold:\(hold)", "capture:123", "release:\(hold - 123)"])
        #expect(try reconciliationRows(db).isEmpty)
    }

    /// READY=1 arrives on NOTIFY_SOCKET once the daemon listens; SIGTERM sends STOPPING=1,
    /// answers what it received, commits it, and exits 0.
    @Test func notifiesSystemdAndStopsCleanlyOnSigterm() throws {
        let dsn = try TestCluster.freshDatabase()
        let daemon = try DaemonProcess(dsn: dsn)
        let notifyPath = daemon.directory + "/notify.sock"
        let fd = try boundUnixSocket(Int32(SOCK_DGRAM.rawValue), at: notifyPath)
        defer { close(fd) }
        var tv = timeval(tv_sec: 20, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        func receive() -> String {
            var buf = [UInt8](repeating: 0, count: 4096)
            let n = recv(fd, &buf, buf.count, 0)
            return n > 0 ? String(decoding: buf[0..<n], as: UTF8.self) : ""
        }

        try daemon.start(environment: ["NOTIFY_SOCKET": notifyPath])
        #expect(receive().hasPrefix("READY=1"))

        let c = try daemon.client()
        _ = try c.request("OPEN term budget=10000000 horizon=40")
        var lines = ""
        for t in 1...30 { lines += "ROUTE term tokens=5\nREPORT term \(t) cost=2\n" }
        try c.send(raw: Array(lines.utf8))
        let status = daemon.terminate()
        #expect(status == 0)
        #expect(receive().hasPrefix("STOPPING=1"))
        var oks = 0
        while let answer = try c.readLine() {
            #expect(answer.hasPrefix("OK"), "\(answer)")
            if answer.hasPrefix("OK spent=") { oks += 1 }
        }
        let db = try PGConnection(dsn: dsn)
        let captured = try db.query("SELECT count(*) FROM ledger_entries WHERE session_id = 'term' AND kind = 'capture'")[0].int(0)!
        #expect(captured >= oks)
        #expect(try reconciliationRows(db).isEmpty)
        #expect(!FileManager.default.fileExists(atPath: daemon.socketPath))
    }

    /// With PostgreSQL stopped, requests fail at once with `unavailable`; when it is back the
    /// daemon serves again by itself.
    @Test func ledgerOutageFailsFastAndRecovers() throws {
        let pg = try EmbeddedPostgres(directory: try makeTempDirectory("pg2"), database: "postgres")
        try pg.start()
        defer { pg.forceStop() }
        let admin = try PGConnection(dsn: pg.adminDSN)
        try Migrations.apply(Migrations.load(from: packageRoot + "/sql"), on: admin)
        let daemon = try DaemonProcess(dsn: pg.adminDSN)
        try daemon.start()
        let c = try daemon.client()
        _ = try c.request("OPEN out budget=10000000 horizon=40")
        #expect(try c.request("ROUTE out tokens=5").hasPrefix("OK turn=1"))

        pg.forceStop()
        let t0 = Date()
        let during = try c.request("ROUTE out tokens=5")
        #expect(during.hasPrefix("ERR unavailable "), "\(during)")
        #expect(Date().timeIntervalSince(t0) < 2)
        let again = Date()
        let second = try c.request("ROUTE out tokens=5")
        #expect(second.hasPrefix("ERR unavailable "), "\(second)")
        #expect(Date().timeIntervalSince(again) < 0.5)
        #expect(try c.request("PING") == "OK pong")
        // A session this daemon has not seen yet: the ledger cannot say, so `unavailable`.
        #expect(try c.request("ROUTE never-seen tokens=5").hasPrefix("ERR unavailable "))

        try pg.start()
        var recovered = false
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline {
            if try c.request("ROUTE out tokens=5").hasPrefix("OK turn=") {
                recovered = true
                break
            }
            usleep(200_000)
        }
        #expect(recovered)
        let db = try PGConnection(dsn: pg.adminDSN)
        #expect(try reconciliationRows(db).isEmpty)
        #expect(daemon.terminate() == 0)
    }
}
