import Foundation
import SeqRouteCore
import SeqRouteLedger
import SeqRouteServer
import Testing

@Suite(.serialized) struct ScaleOutTests {
    /// Three daemons share one ledger and one account. Sessions are opened on one daemon and
    /// routed and reported through any of them; a sampler watches the account meanwhile. The
    /// cap holds at every sample and at the end, and the ledger reconciles.
    @Test func threeDaemonsShareOneAccountWithoutOverspending() throws {
        let dsn = try TestCluster.freshDatabase()
        let db = try PGConnection(dsn: dsn)
        let cap: Int64 = 150_000
        try db.setAccount("shared", cap: cap)
        let daemons = try (0..<3).map { _ in try DaemonProcess(dsn: dsn) }
        for d in daemons { try d.start() }

        final class Shared: @unchecked Sendable {
            let lock = NSLock()
            var failures: [String] = []
            var routed = 0
        }
        let shared = Shared()
        let sampler = AccountSampler(dsn: dsn, account: "shared")

        let group = DispatchGroup()
        for client in 0..<60 {
            group.enter()
            Thread {
                defer { group.leave() }
                var random = SplitMix64(seed: UInt64(client) + 101)
                func fail(_ s: String) { shared.lock.withLock { shared.failures.append(s) } }
                do {
                    let clients = try daemons.map { try $0.client() }
                    func any() -> LineClient { clients[Int(random.next() % 3)] }
                    for s in 0..<3 {
                        let id = "x\(client)-\(s)"
                        let opened = try clients[client % 3].request("OPEN \(id) budget=\(3_000 + random.next() % 9_000) account=shared horizon=5")
                        guard opened.hasPrefix("OK") else { fail(opened); continue }
                        for _ in 0..<5 {
                            let routed = try any().request("ROUTE \(id) tokens=\(10 + random.next() % 300)")
                            guard routed.hasPrefix("OK") else { fail(routed); break }
                            let f = LineClient.fields(routed)
                            if f["bankrupt"] != nil { continue }
                            shared.lock.withLock { shared.routed += 1 }
                            let hold = Int64(f["hold"]!)!
                            let cost = Int64(random.next() % UInt64(hold + 1))
                            let reported = try any().request("REPORT \(id) \(f["turn"]!) cost=\(cost) quality=0.5")
                            if !reported.hasPrefix("OK") { fail(reported) }
                        }
                        let closed = try any().request("CLOSE \(id)")
                        if !closed.hasPrefix("OK") { fail(closed) }
                    }
                } catch {
                    fail("\(error)")
                }
            }.start()
        }
        group.wait()
        let watched = sampler.stop()

        #expect(shared.failures.isEmpty, "\(shared.failures.prefix(5))")
        #expect(watched.samples > 10 && shared.routed > 100)
        #expect(watched.largest <= cap)
        let row = try db.query("SELECT spent, held FROM accounts WHERE id = 'shared'")[0]
        #expect(row.int64(0)! + row.int64(1)! <= cap && row.int64(1)! == 0)
        #expect(try reconciliationRows(db).isEmpty)
        #expect(try db.query("SELECT count(*) FROM sessions WHERE account_id = 'shared' AND state <> 'open'")[0][0] == "180")
        for d in daemons { #expect(d.terminate() == 0) }
    }

    /// Identifiers that look like SQL are stored as the data they are: every statement is
    /// parameterized, so none of them runs.
    @Test func sqlLookingIdentifiersAreJustData() throws {
        let dsn = try TestCluster.freshDatabase()
        let daemon = try DaemonProcess(dsn: dsn)
        try daemon.start()
        let account = "a'; DROP TABLE accounts; --"
        let (status, out) = try runSeqroute(["account", "set", account, "--cap", "500000", "--dsn", dsn])
        #expect(status == 0, "\(out)")
        let c = try daemon.client()
        let session = "s'); DELETE FROM ledger_entries; --"
        let user = "u\" OR 1=1 --"
        let enc = LineProtocol.percentEncoded
        #expect(try c.request("OPEN \(enc(session)) budget=100000 account=\(enc(account)) user=\(enc(user))").hasPrefix("OK"))
        // Task labels are words; one that is not is refused before it reaches SQL.
        #expect(try c.request("ROUTE \(enc(session)) tokens=10 task=\(enc("x'||pg_sleep(5)||'"))").hasPrefix("ERR bad_request "))
        #expect(try c.request("ROUTE \(enc(session)) tokens=10 task=qa").hasPrefix("OK turn=1"))
        #expect(try c.request("REPORT \(enc(session)) 1 cost=10 quality=0.5").hasPrefix("OK"))
        let db = try PGConnection(dsn: dsn)
        #expect(try db.query("SELECT account_id, user_id FROM sessions WHERE id = $1", [session]).first?.values == [account, user])
        #expect(try db.query("SELECT count(*) FROM ledger_entries WHERE session_id = $1", [session])[0][0] == "3")
        #expect(try db.account(account)?.spent == 10)
        #expect(try reconciliationRows(db).isEmpty)
        #expect(daemon.terminate() == 0)
    }
}
