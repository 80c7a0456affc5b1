import Foundation
import SeqRouteCore
import SeqRouteLedger
import SeqRouteServer
import Testing

@Suite(.serialized) struct DaemonTests {
    @Test func sessionLifecycleOverTheSocket() throws {
        let dsn = try TestCluster.freshDatabase()
        let daemon = try DaemonProcess(dsn: dsn)
        try daemon.start()
        let c = try daemon.client()
        #expect(try c.request("OPEN life budget=100000 horizon=3") == "OK session=life remaining=100000")
        let routed = LineClient.fields(try c.request("ROUTE life tokens=100 task=qa"))
        #expect(routed["turn"] == "1")
        #expect(["big", "mid", "small"].contains(routed["model"] ?? ""))
        #expect(routed["policy"] == "cold-start-pacing")
        let hold = Int64(routed["hold"]!)!
        #expect(Int64(routed["remaining"]!)! == 100_000 - hold)
        let cost = hold / 2
        let first = try c.request("REPORT life 1 cost=\(cost) quality=0.8")
        #expect(first == "OK spent=\(cost) remaining=\(100_000 - cost)")
        // Repeating the same report is a no-op answered the same way.
        #expect(try c.request("REPORT life 1 cost=\(cost) quality=0.8") == first)
        #expect(try c.request("FEEDBACK life 1 quality=0.9") == "OK")
        let status = LineClient.fields(try c.request("STATUS life"))
        #expect(status["spent"] == "\(cost)" && status["held"] == "0" && status["turn"] == "1" && status["state"] == "open")
        _ = try c.request("ROUTE life text=what%20is%202%2B2%3F")
        #expect(try c.request("CLOSE life") == "OK spent=\(cost) turns=2")
        #expect(try c.request("STATS").hasPrefix("OK requests="))

        let db = try PGConnection(dsn: dsn)
        #expect(try reconciliationRows(db).isEmpty)
        let row = try db.query("SELECT model, propensity, quality, status FROM decisions WHERE session_id = 'life' AND turn = 1")[0]
        #expect(row[0] == routed["model"])
        #expect((row.double(1) ?? 0) > 0)
        #expect(row.double(2) == 0.9)
        #expect(row[3] == "reported")
        // The second turn's hold was released by CLOSE.
        #expect(try db.query("SELECT status FROM decisions WHERE session_id = 'life' AND turn = 2")[0][0] == "released")
        #expect(daemon.terminate() == 0)
    }

    /// The daemon names a session's account to the ledger as it remembers it from the OPEN. A
    /// session the ledger does not find under that account (here moved by hand after the OPEN)
    /// is looked up after all: ROUTE and REPORT are served, under the session's real account.
    @Test func aSessionNotUnderTheAccountRememberedIsStillServed() throws {
        let dsn = try TestCluster.freshDatabase()
        let daemon = try DaemonProcess(dsn: dsn)
        try daemon.start()
        let c = try daemon.client()
        #expect(try c.request("OPEN moved budget=100000 horizon=3").hasPrefix("OK"))
        #expect(try c.request("ROUTE moved tokens=100").hasPrefix("OK turn=1 "))
        let reported = try c.request("REPORT moved 1 cost=10")
        #expect(reported.hasPrefix("OK spent=10 "), "\(reported)")
        let db = try PGConnection(dsn: dsn)
        try db.setAccount("elsewhere", cap: 1_000_000)
        try db.query("UPDATE sessions SET account_id = 'elsewhere' WHERE id = 'moved'")
        // The REPORT again (answered as the first time) and a ROUTE, each first sent naming the
        // account remembered.
        #expect(try c.request("REPORT moved 1 cost=10") == reported)
        let routed = try c.request("ROUTE moved tokens=100")
        #expect(routed.hasPrefix("OK turn=2 "), "\(routed)")
        #expect(try c.request("REPORT moved 2 cost=10").hasPrefix("OK spent=20 "))
        let entries = try db.query("SELECT kind, account_id FROM ledger_entries WHERE session_id = 'moved' AND turn = 2 ORDER BY id")
        #expect(entries.map { "\($0[0]!):\($0[1]!)" } == ["hold:elsewhere", "capture:elsewhere", "release:elsewhere"])
        #expect(daemon.terminate() == 0)
    }

    @Test func overrunIsRecordedAsItIs() throws {
        let dsn = try TestCluster.freshDatabase()
        let daemon = try DaemonProcess(dsn: dsn)
        try daemon.start()
        let c = try daemon.client()
        _ = try c.request("OPEN over budget=100000 horizon=2")
        let hold = Int64(LineClient.fields(try c.request("ROUTE over tokens=100"))["hold"]!)!
        #expect(try c.request("REPORT over 1 cost=\(hold + 500)") == "OK spent=\(hold + 500) remaining=\(100_000 - hold - 500)")
        let db = try PGConnection(dsn: dsn)
        let entries = try db.query("SELECT kind, amount FROM ledger_entries WHERE session_id = 'over' ORDER BY id").map { "\($0[0]!):\($0[1]!)" }
        #expect(entries == ["hold:\(hold)", "capture:\(hold)", "overrun:500"])
        #expect(try reconciliationRows(db).isEmpty)
    }

    @Test func bankruptSessionAnswersBankruptWithFallback() throws {
        let dsn = try TestCluster.freshDatabase()
        let daemon = try DaemonProcess(dsn: dsn, config: testConfig.replacingOccurrences(
            of: "[routing]\n", with: "[routing]\nfallback_model = \"small\"\n"))
        try daemon.start()
        let c = try daemon.client()
        _ = try c.request("OPEN poor budget=10")
        #expect(try c.request("ROUTE poor tokens=100") == "OK turn=1 bankrupt=1 model=small")
        #expect(try c.request("ROUTE poor tokens=1") == "OK turn=2 bankrupt=1 model=small")
        #expect(try c.request("STATUS poor").contains("state=bankrupt"))
        let db = try PGConnection(dsn: dsn)
        #expect(try db.query("SELECT count(*) FROM decisions WHERE session_id = 'poor' AND status = 'bankrupt'")[0][0] == "2")
        #expect(try db.query("SELECT count(*) FROM ledger_entries WHERE session_id = 'poor'")[0][0] == "0")
    }

    @Test func badInputGetsItsCodeAndChangesNothing() throws {
        let dsn = try TestCluster.freshDatabase()
        let daemon = try DaemonProcess(dsn: dsn)
        try daemon.start()
        let db = try PGConnection(dsn: dsn)
        let c = try daemon.client()
        _ = try c.request("OPEN known budget=100000")
        _ = try c.request("ROUTE known tokens=10")
        _ = try c.request("REPORT known 1 cost=5 quality=0.5")
        _ = try c.request("OPEN shut budget=100000")
        _ = try c.request("CLOSE shut")
        let before = try ledgerFingerprint(db)

        let cases: [(String, String)] = [
            ("HELLO", "unknown_verb"),
            ("route known", "unknown_verb"),
            ("OPEN", "bad_request"),
            ("OPEN x budget=-5", "bad_request"),
            ("OPEN x budget=12.5", "bad_request"),
            ("OPEN x budget=abc", "bad_request"),
            ("OPEN known budget=5", "exists"),
            ("OPEN x budget=5 account=nobody", "unknown_account"),
            ("ROUTE ghost", "unknown_session"),
            ("ROUTE shut", "closed"),
            ("ROUTE known features=1,2,3", "bad_request"),
            ("REPORT known 1 cost=-1", "bad_request"),
            ("REPORT known 1 cost=7.5", "bad_request"),
            ("REPORT known 1 cost=5 quality=1.01", "bad_request"),
            ("REPORT known 1 cost=5 quality=NaN", "bad_request"),
            ("REPORT known 1 cost=6 quality=0.5", "conflict"),
            ("REPORT known 9 cost=5", "unknown_turn"),
            ("REPORT ghost 1 cost=5", "unknown_session"),
            ("FEEDBACK known 1 quality=2", "bad_request"),
            ("FEEDBACK known 7 quality=0.5", "unknown_turn"),
            ("STATUS ghost", "unknown_session"),
            ("CLOSE ghost", "unknown_session"),
            ("OPEN  double budget=5", "bad_request"),
        ]
        for (line, code) in cases {
            let answer = try c.request(line)
            #expect(answer.hasPrefix("ERR \(code) "), "\(line) -> \(answer)")
        }
        // Raw bytes: non-UTF-8, NUL, a bare CR inside a line.
        for raw: [UInt8] in [[0x4F, 0x50, 0x45, 0x4E, 0x20, 0xC3, 0x28, 0x0A], [0x50, 0x00, 0x49, 0x0A], [0x50, 0x0D, 0x49, 0x0A]] {
            try c.send(raw: raw)
            let answer = try c.readLine() ?? "closed"
            #expect(answer.hasPrefix("ERR bad_request "), "\(raw) -> \(answer)")
        }
        // The connection stayed open through all of that.
        #expect(try c.request("PING") == "OK pong")
        #expect(try ledgerFingerprint(db) == before)

        // A line over the limit: ERR too_long, then the server closes that connection only.
        let other = try daemon.client()
        try c.send(String(repeating: "A", count: 5_000))
        #expect(try c.readLine()?.hasPrefix("ERR too_long ") == true)
        #expect(try c.readLine() == nil)
        #expect(try other.request("PING") == "OK pong")
        #expect(try ledgerFingerprint(db) == before)
        #expect(daemon.isRunning)
    }

    @Test func pipelinedRequestsAnswerInOrder() throws {
        let dsn = try TestCluster.freshDatabase()
        let daemon = try DaemonProcess(dsn: dsn)
        try daemon.start()
        let c = try daemon.client()
        var batch = "OPEN pipe budget=1000000 horizon=5\n"
        for t in 1...5 { batch += "ROUTE pipe tokens=10\nREPORT pipe \(t) cost=1\n" }
        batch += "CLOSE pipe\n"
        try c.send(raw: Array(batch.utf8))
        #expect(try c.readLine()?.hasPrefix("OK session=pipe") == true)
        for t in 1...5 {
            #expect(try c.readLine()?.hasPrefix("OK turn=\(t) ") == true)
            #expect(try c.readLine() == "OK spent=\(t) remaining=\(1_000_000 - t)")
        }
        #expect(try c.readLine() == "OK spent=5 turns=5")
    }

    /// A client that sends its lines and closes its writing side (as `printf ... | socat` does)
    /// still gets every answer, and what it asked for is committed.
    @Test func halfClosedClientGetsEveryAnswer() throws {
        let dsn = try TestCluster.freshDatabase()
        let daemon = try DaemonProcess(dsn: dsn)
        try daemon.start()
        let c = try daemon.client()
        try c.send(raw: Array("PING\nOPEN half budget=20000\nROUTE half tokens=30\nREPORT half 1 cost=9\nCLOSE half\n".utf8))
        c.finishWriting()
        var answers: [String] = []
        while let a = try c.readLine() { answers.append(a) }
        #expect(answers.count == 5 && answers.allSatisfy { $0.hasPrefix("OK") }, "\(answers)")
        #expect(answers.last == "OK spent=9 turns=1")
    }

    /// Lines before an over-long one are answered in order; then ERR too_long and the close.
    @Test func tooLongLineAnswersWhatCameBefore() throws {
        let dsn = try TestCluster.freshDatabase()
        let daemon = try DaemonProcess(dsn: dsn)
        try daemon.start()
        let c = try daemon.client()
        try c.send(raw: Array(("PING\nOPEN tl budget=100\n" + String(repeating: "x", count: 5_000) + "\nPING\n").utf8))
        #expect(try c.readLine() == "OK pong")
        #expect(try c.readLine() == "OK session=tl remaining=100")
        #expect(try c.readLine()?.hasPrefix("ERR too_long ") == true)
        #expect(try c.readLine() == nil)
    }

    /// REPORT stays idempotent after a FEEDBACK changed the turn's quality, and a REPORT
    /// without quality= keeps a FEEDBACK that came first.
    @Test func reportRepeatsSurviveFeedback() throws {
        let dsn = try TestCluster.freshDatabase()
        let daemon = try DaemonProcess(dsn: dsn)
        try daemon.start()
        let c = try daemon.client()
        _ = try c.request("OPEN fb budget=100000 horizon=3")
        _ = try c.request("ROUTE fb tokens=10")
        let first = try c.request("REPORT fb 1 cost=7 quality=0.4")
        #expect(try c.request("FEEDBACK fb 1 quality=0.9") == "OK")
        #expect(try c.request("REPORT fb 1 cost=7 quality=0.4") == first)
        _ = try c.request("ROUTE fb tokens=10")
        #expect(try c.request("FEEDBACK fb 2 quality=0.6") == "OK")
        _ = try c.request("REPORT fb 2 cost=3")
        let db = try PGConnection(dsn: dsn)
        #expect(try db.query("SELECT quality FROM decisions WHERE session_id = 'fb' ORDER BY turn").map { $0.double(0) } == [0.9, 0.6])
    }

    /// Socket activation: systemd-socket-activate binds the path and passes the socket; the
    /// daemon adopts it (LISTEN_FDS) rather than binding, serves on it, and leaves it in place.
    @Test func adoptsTheSocketSystemdPasses() throws {
        let dsn = try TestCluster.freshDatabase()
        let daemon = try DaemonProcess(dsn: dsn)
        try daemon.start(launcher: ["/usr/bin/systemd-socket-activate", "-l", daemon.socketPath])
        #expect(try daemon.client().request("OPEN act budget=5000") == "OK session=act remaining=5000")
        #expect(daemon.log.contains("listening on the socket passed by systemd"))
        #expect(daemon.terminate() == 0)
        #expect(FileManager.default.fileExists(atPath: daemon.socketPath))
    }

    @Test func accountCommandsAndDefaultAccount() throws {
        let dsn = try TestCluster.freshDatabase()
        let (s1, out1) = try runSeqroute(["account", "set", "acme", "--cap", "5000", "--dsn", dsn])
        #expect(s1 == 0)
        #expect(out1.contains("cap=5000 spent=0 held=0"))
        let (s2, _) = try runSeqroute(["account", "set", "acme", "--cap", "7000", "--dsn", dsn])
        #expect(s2 == 0)
        let (s3, out3) = try runSeqroute(["account", "show", "acme", "--dsn", dsn])
        #expect(s3 == 0)
        #expect(out3 == "cap=7000 spent=0 held=0\n")
        let (s4, _) = try runSeqroute(["account", "show", "nobody", "--dsn", dsn])
        #expect(s4 != 0)
        let (s5, _) = try runSeqroute(["account", "set", "acme", "--cap", "-3", "--dsn", dsn])
        #expect(s5 != 0)

        let daemon = try DaemonProcess(dsn: dsn)
        try daemon.start()
        let c = try daemon.client()
        _ = try c.request("OPEN a1 budget=100000 account=acme")
        let hold = LineClient.fields(try c.request("ROUTE a1 tokens=10"))["hold"]!
        let (_, shown) = try runSeqroute(["account", "show", "acme", "--dsn", dsn])
        #expect(shown == "cap=7000 spent=0 held=\(hold)\n")
        // Without account= the configured default account is used (and was created by the daemon).
        _ = try c.request("OPEN a2 budget=100")
        let db = try PGConnection(dsn: dsn)
        #expect(try db.query("SELECT account_id FROM sessions WHERE id = 'a2'")[0][0] == "default")
    }

    @Test func ledgerIsAppendOnlyAndAuditorReadsOnly() throws {
        let dsn = try TestCluster.freshDatabase()
        let daemon = try DaemonProcess(dsn: dsn)
        try daemon.start()
        let c = try daemon.client()
        _ = try c.request("OPEN au budget=100000")
        _ = try c.request("ROUTE au tokens=10")
        _ = try c.request("REPORT au 1 cost=3")
        let db = try PGConnection(dsn: dsn)
        #expect(throws: PGError.self) { try db.query("UPDATE ledger_entries SET amount = 1") }
        #expect(throws: PGError.self) { try db.query("DELETE FROM ledger_entries") }
        #expect(throws: PGError.self) { try db.query("TRUNCATE ledger_entries") }
        let before = try ledgerFingerprint(db)
        try db.execute(script: "SET ROLE seqroute_auditor")
        #expect(try db.query("SELECT spent_micros FROM audit_spend_daily")[0][0] == "3")
        #expect(try db.query("SELECT count(*) FROM reconciliation")[0][0] == "0")
        #expect(try db.query("SELECT remaining FROM audit_budget_status WHERE account_id = 'default'").count == 1)
        for view in ["audit_sessions", "audit_bankruptcies", "audit_ledger", "audit_spend_monthly", "audit_policy_daily",
                     "audit_overruns_expiries", "audit_bankruptcy_turns", "audit_adjustments", "audit_spend_by_period"] {
            _ = try db.query("SELECT * FROM \(view)")
        }
        // Whatever the auditor tries to change is refused.
        for statement in ["SELECT * FROM ledger_entries", "UPDATE accounts SET cap = 0", "INSERT INTO accounts (id, cap) VALUES ('x', 1)",
                          "DELETE FROM sessions", "UPDATE decisions SET cost = 0", "TRUNCATE ledger_entries",
                          "DROP VIEW audit_ledger", "CREATE TABLE mine (x int)",
                          "SELECT seqroute_adjust(1, -1, 'x')", "SELECT seqroute_set_period('default', 'daily', 'UTC')"] {
            #expect(throws: PGError.self, "\(statement)") { try db.query(statement) }
        }
        try db.execute(script: "RESET ROLE")
        #expect(try ledgerFingerprint(db) == before)
    }

    /// `seqroute status` shows what STATS answers, labelled; it fails when there is no daemon.
    @Test func statusCommandShowsTheFigures() throws {
        let daemon = try DaemonProcess(dsn: try TestCluster.freshDatabase())
        try daemon.start()
        let c = try daemon.client()
        _ = try c.request("OPEN st budget=100000")
        _ = try c.request("ROUTE st tokens=10")
        let (status, out) = try runSeqroute(["status", "--socket", daemon.socketPath])
        #expect(status == 0, "\(out)")
        let lines = out.split(separator: "\n").map { $0.split(separator: " ", omittingEmptySubsequences: true).joined(separator: " ") }
        #expect(lines.contains("policy in force cold-start-pacing"), "\(out)")
        #expect(lines.contains("ledger up") && lines.contains("ROUTE decisions 1"), "\(out)")
        #expect(daemon.terminate() == 0)
        let (gone, _) = try runSeqroute(["status", "--socket", daemon.socketPath])
        #expect(gone != 0)
    }

    /// GET /metrics on the metrics socket: Prometheus text with requests, errors by code,
    /// decisions by model, the ROUTE latency histogram, batch sizes, the policy in force and
    /// the ledger's open sessions and holds.
    @Test func metricsEndpointServesPrometheusText() throws {
        let dsn = try TestCluster.freshDatabase()
        let probe = try DaemonProcess(dsn: dsn)  // only for its folder
        let metricsPath = probe.directory + "/metrics.sock"
        let daemon = try DaemonProcess(dsn: dsn, config: testConfig.replacingOccurrences(
            of: "max_line_bytes = 4096", with: "max_line_bytes = 4096\nmetrics_socket = \"\(metricsPath)\""))
        try daemon.start()
        let c = try daemon.client()
        _ = try c.request("OPEN m1 budget=100000")
        let model = LineClient.fields(try c.request("ROUTE m1 tokens=10"))["model"] ?? "?"
        _ = try c.request("REPORT m1 1 cost=5 quality=1")
        _ = try c.request("ROUTE nobody tokens=10")

        func get(_ path: String) throws -> String {
            let http = try LineClient(path: metricsPath)
            try http.send(raw: Array("GET \(path) HTTP/1.1\r\nHost: seqroute\r\nConnection: close\r\n\r\n".utf8))
            var lines: [String] = []
            while let line = try http.readLine() { lines.append(line) }
            return lines.joined(separator: "\n")
        }
        let text = try get("/metrics")
        #expect(text.hasPrefix("HTTP/1.1 200 OK"), "\(text.prefix(200))")
        // Counters are integers, gauges decimals; the start-up probe's PING counts as a request.
        let requests = text.split(separator: "\n").first { $0.hasPrefix("seqroute_requests_total ") }
            .flatMap { Int($0.split(separator: " ")[1].trimmingCharacters(in: .whitespacesAndNewlines)) } ?? 0
        #expect(requests >= 4)
        for expected in ["seqroute_errors_total{code=\"unknown_session\"} 1",
                         "seqroute_decisions_total{model=\"\(model)\"} 1", "seqroute_route_duration_seconds_count 2",
                         "seqroute_policy_info{version=\"cold-start-pacing\"} 1.0", "seqroute_open_sessions 1.0",
                         "seqroute_open_holds 0.0", "seqroute_ledger_up 1.0", "seqroute_ledger_reconnects_total 0"] {
            #expect(text.contains(expected + "\r") || text.contains(expected + "\n") || text.hasSuffix(expected), "missing \(expected)")
        }
        #expect(text.contains("seqroute_commit_batch_size_count "))
        // Two turns held on m2; m3's hold is released by its CLOSE.
        _ = try c.request("OPEN m2 budget=100000")
        _ = try c.request("ROUTE m2 tokens=10")
        _ = try c.request("ROUTE m2 tokens=10")
        _ = try c.request("OPEN m3 budget=100000")
        _ = try c.request("ROUTE m3 tokens=10")
        _ = try c.request("CLOSE m3")
        let later = try get("/metrics")
        // The sweep starts where the migration left it, moments ago, and trails by at most the
        // expiry (600 s here) once running.
        let lag = later.split(separator: "\n").first { $0.hasPrefix("seqroute_hold_expiry_lag_seconds ") }
            .flatMap { Double($0.split(separator: " ")[1].trimmingCharacters(in: .whitespacesAndNewlines)) }
        #expect(lag.map { $0 >= 0 && $0 < 600 } == true, "lag \(String(describing: lag))")
        for expected in ["seqroute_open_sessions 2.0", "seqroute_open_holds 2.0"] {
            #expect(later.contains(expected + "\r") || later.contains(expected + "\n") || later.hasSuffix(expected),
                    "missing \(expected) in \(later.split(separator: "\n").filter { $0.contains("_open_") })")
        }
        #expect(try get("/other").hasPrefix("HTTP/1.1 404"))
        #expect(daemon.terminate() == 0)
    }

    /// `seqroute ledger adjust` appends a correction that references the corrected entry; the
    /// spent figures follow, nothing is edited, the ledger still reconciles, and a correction
    /// that makes no sense is refused and changes nothing.
    @Test func adjustmentsAreNewEntriesThatReferenceTheCorrectedOne() throws {
        let dsn = try TestCluster.freshDatabase()
        let daemon = try DaemonProcess(dsn: dsn)
        try daemon.start()
        let c = try daemon.client()
        _ = try c.request("OPEN adj budget=100000")
        _ = try c.request("ROUTE adj tokens=10")
        #expect(try c.request("REPORT adj 1 cost=500 quality=1").hasPrefix("OK spent=500 "))
        #expect(daemon.terminate() == 0)
        let db = try PGConnection(dsn: dsn)
        let capture = try db.query("SELECT id FROM ledger_entries WHERE session_id = 'adj' AND kind = 'capture'")[0].int64(0)!
        let accountBefore = try db.account("default")!.spent

        let (status, out) = try runSeqroute(["ledger", "adjust", "\(capture)", "--amount", "-200",
                                             "--reason", "provider refund", "--dsn", dsn])
        #expect(status == 0, "\(out)")
        #expect(out.contains("corrects=\(capture) amount=-200 session_spent=300 "), "\(out)")
        #expect(try db.account("default")!.spent == accountBefore - 200)
        let row = try db.query("SELECT kind, amount, corrects, note FROM ledger_entries WHERE corrects IS NOT NULL")[0]
        #expect(row.values == ["adjustment", "-200", "\(capture)", "provider refund"])
        #expect(try db.query("SELECT amount FROM ledger_entries WHERE id = $1", [String(capture)])[0][0] == "500")
        #expect(try reconciliationRows(db).isEmpty)
        #expect(try db.query("SELECT corrected_kind, amount_micros FROM audit_adjustments")[0].values == ["capture", "-200"])

        let before = try ledgerFingerprint(db)
        let hold = try db.query("SELECT id FROM ledger_entries WHERE session_id = 'adj' AND kind = 'hold'")[0].int64(0)!
        for args in [["\(hold)", "--amount", "10"], ["\(capture)", "--amount", "-1000"], ["999999", "--amount", "5"]] {
            let (refused, message) = try runSeqroute(["ledger", "adjust"] + args + ["--reason", "x", "--dsn", dsn])
            #expect(refused != 0 && message.contains("refused: "), "\(args): \(message)")
        }
        #expect(try ledgerFingerprint(db) == before)
        #expect(throws: PGError.self) { try db.query("UPDATE ledger_entries SET note = 'x' WHERE corrects IS NOT NULL") }

        // No foreign key guards `corrects` (sql/008): an adjustment written past
        // seqroute_adjust() that names no entry shows in the reconciliation.
        let stray = try db.query("""
            INSERT INTO ledger_entries (kind, account_id, session_id, turn, amount, corrects, note)
            VALUES ('adjustment', 'default', 'adj', 1, 5, 999999, 'by hand') RETURNING id
            """)[0][0]!
        #expect(try db.query("SELECT id, ledger_spent FROM reconciliation WHERE kind = 'dangling'").map(\.values)
                == [[stray, "5"]])
    }

    /// A daily budget period: the cap applies per day in the account's time zone. Time is moved
    /// on by shifting yesterday's rows back a day (append-only triggers off for that, as a
    /// superuser): the next ROUTE starts a new period from zero spend, the old entries stay, and
    /// the ledger reconciles on the new period.
    @Test func budgetPeriodStartsAfreshWithoutRewritingHistory() throws {
        let dsn = try TestCluster.freshDatabase()
        let db = try PGConnection(dsn: dsn)
        let (status, out) = try runSeqroute(["account", "set", "daily", "--cap", "6000", "--period", "daily",
                                             "--time-zone", "Europe/Paris", "--dsn", dsn])
        #expect(status == 0 && out.contains("cap=6000 spent=0 held=0"), "\(out)")
        let (bad, message) = try runSeqroute(["account", "set", "daily", "--time-zone", "Mars/Olympus", "--dsn", dsn])
        #expect(bad != 0 && message.contains("time zone"), "\(message)")
        let daemon = try DaemonProcess(dsn: dsn)
        try daemon.start()
        let c = try daemon.client()
        _ = try c.request("OPEN d1 budget=100000 account=daily")
        var spent = 0
        while true {  // spend the day's cap
            let f = LineClient.fields(try c.request("ROUTE d1 tokens=10"))
            guard f["bankrupt"] == nil, let turn = f["turn"], let hold = Int(f["hold"] ?? "") else { break }
            _ = try c.request("REPORT d1 \(turn) cost=\(hold) quality=1")
            spent += hold
        }
        #expect(spent > 3000 && spent <= 6000)
        #expect(try db.account("daily")?.spent == Int64(spent))
        #expect(try reconciliationRows(db).isEmpty)

        // A day passes.
        try db.query("ALTER TABLE ledger_entries DISABLE TRIGGER ledger_entries_no_update")
        try db.query("UPDATE ledger_entries SET at = at - interval '1 day' WHERE account_id = 'daily'")
        try db.query("ALTER TABLE ledger_entries ENABLE TRIGGER ledger_entries_no_update")
        try db.query("UPDATE accounts SET period_start = period_start - interval '1 day' WHERE id = 'daily'")

        let daemon2 = try DaemonProcess(dsn: dsn)  // a fresh cache; the ledger decides anyway
        try daemon2.start()
        let c2 = try daemon2.client()
        _ = try c2.request("OPEN d2 budget=100000 account=daily")
        #expect(try c2.request("ROUTE d2 tokens=10").hasPrefix("OK turn=1 model="))
        let figures = try db.account("daily")!
        #expect(figures.spent == 0 && figures.held > 0)
        #expect(try reconciliationRows(db).isEmpty)
        let periods = try db.query("SELECT spent_micros FROM audit_spend_by_period WHERE account_id = 'daily' ORDER BY period_start")
        #expect(periods.map { $0[0] ?? "" } == ["\(spent)"])
        #expect(try db.query("SELECT count(*) FROM ledger_entries WHERE account_id = 'daily' AND kind = 'capture'")[0].int(0)! > 0)

        // Setting the period again recomputes spent from the entries since the period began:
        // today's capture only, found by walking entry ids back to yesterday's last one.
        #expect(try c2.request("REPORT d2 1 cost=100 quality=1").hasPrefix("OK spent=100 "))
        let (again, said) = try runSeqroute(["account", "set", "daily", "--period", "daily", "--time-zone", "Europe/Paris",
                                             "--dsn", dsn])
        #expect(again == 0 && said.contains(" spent=100 "), "\(said)")
        #expect(try reconciliationRows(db).isEmpty)
        #expect(daemon.terminate() == 0)
        #expect(daemon2.terminate() == 0)
    }

    /// Period starts are midnight, Monday or the first of the month in the account's zone.
    @Test func periodStartsFollowTheTimeZone() throws {
        let db = try PGConnection(dsn: try TestCluster.freshDatabase())
        let t = "2026-11-29 23:30:00+00"  // a Sunday; already Monday 30 November in Paris
        let rows = try db.query("""
            SELECT seqroute_period_start('daily', 'Europe/Paris', $1::timestamptz) AT TIME ZONE 'UTC',
                   seqroute_period_start('weekly', 'Europe/Paris', $1::timestamptz) AT TIME ZONE 'UTC',
                   seqroute_period_start('weekly', 'UTC', $1::timestamptz) AT TIME ZONE 'UTC',
                   seqroute_period_start('monthly', 'America/New_York', $1::timestamptz) AT TIME ZONE 'UTC',
                   seqroute_period_start('none', 'UTC', $1::timestamptz)
            """, [t])[0]
        #expect(rows.values == ["2026-11-29 23:00:00", "2026-11-29 23:00:00", "2026-11-23 00:00:00",
                                "2026-11-01 04:00:00", "-infinity"])
    }

    /// `seqroute report`: CSV rows per day, account, model and policy version that add up to
    /// the ledger; and one HTML page with its charts and nothing fetched from anywhere.
    @Test func reportGivesCSVAndASelfContainedPage() throws {
        let dsn = try TestCluster.freshDatabase()
        let daemon = try DaemonProcess(dsn: dsn)
        try daemon.start()
        let c = try daemon.client()
        try PGConnection(dsn: dsn).setAccount("acme, \"inc\"", cap: 900_000)
        for s in 0..<3 {
            _ = try c.request("OPEN r\(s) budget=100000 account=\(LineProtocol.percentEncoded("acme, \"inc\""))")
            let f = LineClient.fields(try c.request("ROUTE r\(s) tokens=10"))
            _ = try c.request("REPORT r\(s) \(f["turn"]!) cost=\(100 * (s + 1)) quality=0.5")
        }
        #expect(daemon.terminate() == 0)
        let today = try PGConnection(dsn: dsn).query("SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD'), to_char((now() AT TIME ZONE 'UTC') + interval '1 day', 'YYYY-MM-DD')")[0]
        let range = ["--from", today[0]!, "--to", today[1]!, "--dsn", dsn]
        let (status, csv) = try runSeqroute(["report"] + range)
        #expect(status == 0, "\(csv)")
        let lines = csv.split(separator: "\n")
        #expect(lines.first == "day,account,model,policy_version,spent_micros,decisions,mean_quality")
        #expect(lines.dropFirst().allSatisfy { $0.hasPrefix("\(today[0]!),\"acme, \"\"inc\"\"\",") }, "\(csv)")
        let spent = lines.dropFirst().compactMap { Int($0.split(separator: ",").reversed()[2]) }.reduce(0, +)
        #expect(spent == 600)

        let page = try makeTempDirectory("rep") + "/report.html"
        let (htmlStatus, _) = try runSeqroute(["report"] + range + ["--format", "html", "--out", page, "--account", "acme, \"inc\""])
        #expect(htmlStatus == 0)
        let html = try String(contentsOfFile: page, encoding: .utf8)
        #expect(html.hasPrefix("<!DOCTYPE html>") && html.components(separatedBy: "<svg").count == 4)
        #expect(html.contains("acme, &quot;inc&quot;") && html.contains("cold-start-pacing"))
        #expect(!html.contains("<script") && !html.contains("src=") && !html.contains("href="))
        let (bad, message) = try runSeqroute(["report", "--from", "2026-12-01", "--to", "2026-11-01", "--dsn", dsn])
        #expect(bad != 0 && message.contains("--from"))
    }
}
