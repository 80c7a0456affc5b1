// How the group committer forms batches, and what the batch function does with one: a batch
// holds at most one operation per session, and a session's operations keep their order.

import Foundation
@testable import SeqRouteCore
import SeqRouteLedger
import Testing

@Suite struct BatchTests {
    @Test func aBatchTakesOneOperationPerSessionInArrivalOrder() {
        let queue = ["a1", "b1", "a2", "c1", "b2", "a3", "d1"]
        let session: (String) -> String = { String($0.prefix(1)) }
        let all = GroupCommitter.nextBatch(of: queue, max: 10, session: session)
        #expect(all.batch == ["a1", "b1", "c1", "d1"])
        #expect(all.rest == ["a2", "b2", "a3"])
        // Full at two: c1 and d1 wait too, and the rest keeps the queue's order.
        let two = GroupCommitter.nextBatch(of: queue, max: 2, session: session)
        #expect(two.batch == ["a1", "b1"])
        #expect(two.rest == ["a2", "c1", "b2", "a3", "d1"])
        // Draining batch after batch applies each session's operations in their order.
        var rest = queue
        var applied: [String] = []
        while !rest.isEmpty {
            let next = GroupCommitter.nextBatch(of: rest, max: 3, session: session)
            #expect(Set(next.batch.map(session)).count == next.batch.count)
            applied += next.batch
            rest = next.rest
        }
        for s in ["a", "b", "c", "d"] {
            #expect(applied.filter { $0.hasPrefix(s) } == queue.filter { $0.hasPrefix(s) })
        }
    }

    /// A batch sent behind one still being applied takes none of its sessions, nor anything
    /// after them: the one ahead may fail and be applied again after it.
    @Test func aBatchBehindAnotherLeavesItsSessionsQueued() {
        let queue = ["a2", "b1", "c1", "a3", "c2", "d1"]
        let session: (String) -> String = { String($0.prefix(1)) }
        let next = GroupCommitter.nextBatch(of: queue, max: 10, excluding: ["a", "c"], session: session)
        #expect(next.batch == ["b1", "d1"])
        #expect(next.rest == ["a2", "c1", "a3", "c2"])
    }

    /// Statements sent behind one another (libpq's pipeline mode) each run in a transaction of
    /// their own and are answered in order: one that fails spares those around it, and the
    /// connection is usable afterwards.
    @Test func statementsInFlightAnswerInOrderEachInItsOwnTransaction() throws {
        let db = try PGConnection(dsn: try TestCluster.freshDatabase())
        try db.execute(script: "CREATE TABLE piped (x integer PRIMARY KEY)")
        let insert = "INSERT INTO piped VALUES ($1::integer) RETURNING x"
        for x in ["1", "1", "2"] { try db.send(insert, [.text(x)]) }
        #expect(try db.receive().map { $0[0] } == ["1"])
        #expect(throws: PGError.self) { try db.receive() }
        #expect(try db.receive().map { $0[0] } == ["2"])
        #expect(try db.query("SELECT count(*) FROM piped")[0][0] == "2")
        // A statement cannot be prepared behind another, and the one in flight is not lost.
        try db.send(insert, [.text("3")])
        do {
            try db.send("SELECT count(*) FROM piped", [])
            Issue.record("an unprepared statement was sent behind another")
        } catch let e as PGError {
            #expect(!e.connectionLost)
        }
        #expect(try db.receive().map { $0[0] } == ["3"])
        #expect(try db.query("SELECT count(*) FROM piped")[0][0] == "3")
        // A statement whose rows came and whose commit then failed is an error, and the one
        // behind it still commits.
        try db.execute(script: """
            CREATE FUNCTION refuse_zero() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN IF NEW.x = 0 THEN RAISE EXCEPTION 'zero refused at commit'; END IF; RETURN NULL; END $$;
            CREATE CONSTRAINT TRIGGER refuse_zero AFTER INSERT ON piped DEFERRABLE INITIALLY DEFERRED
                FOR EACH ROW EXECUTE FUNCTION refuse_zero();
            """)
        for x in ["0", "4"] { try db.send(insert, [.text(x)]) }
        do {
            _ = try db.receive()
            Issue.record("a commit that failed was received as rows")
        } catch let e as PGError {
            #expect(!e.connectionLost && e.message.contains("zero refused at commit"), "\(e)")
        }
        #expect(try db.receive().map { $0[0] } == ["4"])
        #expect(try db.query("SELECT array_agg(x ORDER BY x)::text FROM piped")[0][0] == "{1,2,3,4}")
    }

    @Test func theBatchFunctionRefusesASessionNamedTwice() throws {
        let dsn = try TestCluster.freshDatabase()
        let db = try PGConnection(dsn: dsn)
        try db.setAccount("acct", cap: 1_000_000)
        let before = try ledgerFingerprint(db)
        let twice = """
            [{"n":1,"k":"open","s":"x","a":"acct","b":5000},{"n":2,"k":"status","s":"x"}]
            """
        #expect(throws: PGError.self) { try db.query("SELECT * FROM seqroute_apply($1::json)", [twice]) }
        #expect(try ledgerFingerprint(db) == before)
        // The same two, in two batches, are applied in order.
        let opened = try db.query("SELECT n, status FROM seqroute_apply($1::json)",
                                  [#"[{"n":1,"k":"open","s":"x","a":"acct","b":5000},{"n":2,"k":"open","s":"y","a":"nobody","b":1}]"#])
        #expect(opened.map { [$0.int(0).map(String.init), $0[1]] } == [["1", "ok"], ["2", "unknown_account"]])
        let status = try db.query("SELECT n, status, budget FROM seqroute_apply($1::json)", [#"[{"n":1,"k":"status","s":"x"}]"#])
        #expect(status.first?[1] == "ok" && status.first?.int64(2) == 5000)
        // Daemons of earlier releases send jsonb; they get the same answer.
        let viaJSONB = try db.query("SELECT n, status, budget FROM seqroute_apply($1::jsonb)", [#"[{"n":1,"k":"status","s":"x"}]"#])
        #expect(viaJSONB.map(\.values) == status.map(\.values))
    }

    /// OPENs, FEEDBACKs and CLOSEs by the hundred in one batch are each answered for their own
    /// session: made or existing, fed or not, closed or left bankrupt. (Their answers were once
    /// joined to the rows the batch wrote, a nested loop quadratic in the batch.)
    @Test func largeBatchesAnswerEachOperationForItsOwnSession() throws {
        let db = try PGConnection(dsn: try TestCluster.freshDatabase())
        try db.setAccount("acct", cap: 1_000_000_000)
        // The answers in order, as runs of equal ones ("ok/closed x300"), which read better
        // than 400 rows when an expectation fails.
        func apply(_ ops: [String]) throws -> [String] {
            let answers = try db.query("SELECT status, state FROM seqroute_apply($1::json) ORDER BY n", [jsonBatch(ops)])
                .map { ($0[0] ?? "-") + "/" + ($0[1] ?? "-") }
            var runs: [(String, Int)] = []
            for a in answers {
                if runs.last?.0 == a { runs[runs.count - 1].1 += 1 } else { runs.append((a, 1)) }
            }
            return runs.map { "\($0.0) x\($0.1)" }
        }
        func open(_ i: Int, account: String = "acct", budget: Int = 100_000) -> String {
            #""k":"open","s":"s\#(i)","a":"\#(account)","b":\#(budget)"#
        }
        func feedback(_ session: String) -> String { #""k":"feedback","s":"\#(session)","t":1,"q":0.25"# }
        func close(_ session: String) -> String { #""k":"close","s":"\#(session)""# }

        #expect(try apply((0..<200).map { open($0) }) == ["ok/open x200"])
        #expect(try apply((0..<400).map { open($0) } + (400..<410).map { open($0, account: "nobody") })
                == ["exists/open x200", "ok/open x200", "unknown_account/open x10"])
        // Turn 1 of s0 … s4 routed and reported; s5 left bankrupt (its budget is below the
        // cheapest hold, and the route names no model).
        for i in 0..<5 {
            #expect(try apply([routeOp("s\(i)", turn: 1)]) == ["ok/open x1"])
            #expect(try apply([#""k":"report","s":"s\#(i)","t":1,"c":200"#]) == ["ok/- x1"])
        }
        #expect(try apply([open(500, budget: 50)]) == ["ok/open x1"])
        #expect(try apply([#""k":"route","s":"s500","t":1,"mh":100,"pv":"v","l":0,"pool":"p","pt":3,"#
                           + #""fb":"\\x3f000000","bs":[1,0,50,0,0,0],"hs":[100],"fe":[false]"#]) == ["bankrupt/bankrupt x1"])

        #expect(try apply((0..<300).map { feedback("s\($0)") } + [feedback("s500"), feedback("nowhere")])
                == ["ok/- x5", "unknown_turn/- x296", "unknown_session/- x1"])
        #expect(try db.query("SELECT count(*) FROM decisions WHERE quality = 0.25").first?[0] == "5")

        #expect(try apply((0..<300).map { close("s\($0)") } + [close("s500"), close("nowhere")])
                == ["ok/closed x300", "ok/bankrupt x1", "unknown_session/- x1"])
        #expect(try apply((0..<3).map { close("s\($0)") }) == ["ok/closed x3"])
        #expect(try db.query("SELECT count(*) FROM sessions WHERE closed_at IS NOT NULL").first?[0] == "301")
        #expect(try reconciliationRows(db).isEmpty)
    }

    /// Every answer carries its account's remaining money after its kind's statement, whether
    /// or not the operation itself moved money, for each account of a batch.
    @Test func answersCarryTheirAccountsRemainingMoney() throws {
        let db = try PGConnection(dsn: try TestCluster.freshDatabase())
        for (a, cap) in [("a1", 10_000), ("a2", 20_000), ("a3", 30_000)] { try db.setAccount(a, cap: Int64(cap)) }
        let sessions = ["s1": "a1", "s2": "a1", "s3": "a2", "s4": "a2", "s5": "a3", "s6": "a3"]
        func remaining() throws -> [String: String] {
            Dictionary(uniqueKeysWithValues: try db.query("SELECT id, cap - spent - held FROM accounts").map { ($0[0]!, $0[1]!) })
        }
        // Each operation's status, and whether its remaining money is its account's now (nil
        // for an operation without an account).
        func apply(_ ops: [String]) throws -> [String] {
            let rows = try db.query("SELECT n, status, account_remaining FROM seqroute_apply($1::json) ORDER BY n",
                                    [jsonBatch(ops)])
            let now = try remaining()
            return rows.map { row in
                let session = ops[Int(row[0]!)! - 1].components(separatedBy: #""s":""#)[1].prefix { $0 != "\"" }
                let account = sessions[String(session)]
                return row[1]! + "/" + (account.map { now[$0] == row[2] ? "now" : "was \(row[2] ?? "nil")" } ?? (row[2] ?? "nil"))
            }
        }
        let opens = sessions.keys.sorted().map { #""k":"open","s":"\#($0)","a":"\#(sessions[$0]!)","b":5000"# }
        #expect(try apply(opens) == Array(repeating: "ok/now", count: 6))
        #expect(try apply((1...6).map { routeOp("s\($0)", turn: 1, hold: 1000 + 100 * $0) } + [routeOp("nowhere", turn: 1)])
                == Array(repeating: "ok/now", count: 6) + ["unknown_session/nil"])
        func report(_ s: String, _ turn: Int) -> String { #""k":"report","s":"\#(s)","t":\#(turn),"c":500"# }
        // s5's turn 2 was never routed; its account still had s6's report in the batch.
        #expect(try apply([report("s1", 1), report("s3", 1), report("s5", 2), report("s6", 1)])
                == ["ok/now", "ok/now", "unknown_turn/now", "ok/now"])
        #expect(try apply(["s2", "s4", "s5", "nowhere"].map { #""k":"close","s":"\#($0)""# })
                == ["ok/now", "ok/now", "ok/now", "unknown_session/nil"])
        #expect(try reconciliationRows(db).isEmpty)
    }

    /// A REPORT reads its own decision, however long its session: the probe takes the whole
    /// key, session and turn. Keyed by the session alone, the function's plan (made once, on a
    /// nearly empty ledger, as here) read every decision of the session and kept one.
    @Test func aReportReadsOnlyItsOwnDecision() throws {
        let db = try PGConnection(dsn: try TestCluster.freshDatabase())
        try db.setAccount("acct", cap: 1_000_000)
        func apply(_ op: String) throws -> String? {
            try db.query("SELECT status FROM seqroute_apply($1::json)", ["[{\"n\":1," + op + "}]"]).first?[0]
        }
        func route(_ turn: Int) -> String { routeOp("x", turn: turn) }
        func report(_ turn: Int) -> String { #""k":"report","s":"x","t":\#(turn),"c":200,"q":0.5"# }
        #expect(try apply(#""k":"open","s":"x","a":"acct","b":100000"#) == "ok")
        let turns = 12
        for turn in 1...turns {
            #expect(try apply(route(turn)) == "ok")
            if turn < turns { #expect(try apply(report(turn)) == "ok") }
        }
        // Rows of `decisions` fetched through its indexes, counted by this backend (the count
        // may include earlier transactions' until the backend reports them, which it does not
        // do inside a transaction): the REPORT's lookup and its update, one each.
        func fetched() throws -> Int64? {
            try db.query("SELECT idx_tup_fetch FROM pg_stat_xact_user_tables WHERE relname = 'decisions'").first?.int64(0)
        }
        try db.execute(script: "BEGIN")
        let before = try fetched()
        let answer = try apply(report(turns))
        let after = try fetched()
        try db.execute(script: "COMMIT")
        #expect(answer == "ok")
        #expect(before.flatMap { b in after.map { $0 - b } } == 2, "\(String(describing: before)) \(String(describing: after))")
        #expect(try reconciliationRows(db).isEmpty)
    }

    /// A prepared statement whose result changes shape under it (a migration while the daemon
    /// runs) is prepared again, not failed from then on.
    @Test func aPreparedStatementFollowsAChangeOfItsResult() throws {
        let db = try PGConnection(dsn: try TestCluster.freshDatabase())
        try db.query("CREATE TABLE shape (a integer)")
        try db.query("INSERT INTO shape VALUES (1)")
        #expect(try db.query("SELECT * FROM shape", prepared: true).first?.values == ["1"])
        try db.query("ALTER TABLE shape ADD COLUMN b integer DEFAULT 2")
        #expect(try db.query("SELECT * FROM shape", prepared: true).first?.values == ["1", "2"])
        #expect(try db.query("SELECT * FROM shape", prepared: true).first?.values == ["1", "2"])
    }

    /// A hold whose transaction commits after a sweep has passed its date is expired by a later
    /// sweep: a sweep reaches no further than the start of a writing transaction still running.
    /// The daemon's role is no superuser here, so the sweep sees only that role's activity.
    @Test func aHoldCommittedBehindASweepIsExpiredByTheNext() throws {
        let dsn = try TestCluster.freshDatabaseOfOwnRole()
        let writer = try PGConnection(dsn: dsn)
        let sweeper = try PGConnection(dsn: dsn)
        try writer.setAccount("acct", cap: 1_000_000)
        try writer.query("SELECT * FROM seqroute_apply($1::json)", [#"[{"n":1,"k":"open","s":"x","a":"acct","b":5000}]"#])
        // The route's commit stalls for a second, as a slow disk would make it.
        try writer.query("""
            CREATE FUNCTION stall() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(1); RETURN NULL; END $$
            """)
        try writer.query("""
            CREATE CONSTRAINT TRIGGER stall AFTER INSERT ON decisions DEFERRABLE INITIALLY DEFERRED
                FOR EACH ROW EXECUTE FUNCTION stall()
            """)
        let route = rawRoute("x", features: #""fb":"\\x3f000000""#)
        func sweep() throws -> Int? {
            try sweeper.query("SELECT seqroute_expire_holds(make_interval(secs => 0.2))").first?.int(0)
        }
        try writer.send("SELECT status FROM seqroute_apply($1::json)", [.text(route)])
        Thread.sleep(forTimeInterval: 0.5)
        #expect(try sweep() == 0)  // due, but still committing
        #expect(try writer.receive().first?[0] == "ok")
        #expect(try sweep() == 1)
        #expect(try sweep() == 0)
        #expect(try writer.query("SELECT status FROM decisions WHERE session_id = 'x'").first?[0] == "expired")
        #expect(try writer.query("SELECT spent, held FROM accounts WHERE id = 'acct'").first?.values == ["300", "0"])
        #expect(try reconciliationRows(writer).isEmpty)
    }

    /// A ROUTE whose session another daemon opens while the batch waits for its locks: the batch
    /// looked the session up before the OPEN committed, so it holds no lock on its account, and
    /// it must not read or write the session (a concurrent batch holding that account could be
    /// admitting holds meanwhile). It answers unknown_session, as if the ROUTE came first.
    @Test func aSessionOpenedWhileTheBatchWaitsIsNotWrittenWithoutItsAccountsLock() throws {
        let dsn = try TestCluster.freshDatabase()
        let db = try PGConnection(dsn: dsn), opener = try PGConnection(dsn: dsn), holder = try PGConnection(dsn: dsn)
        try db.setAccount("one", cap: 1_000_000)
        try db.setAccount("two", cap: 1_000_000)
        try db.query("SELECT * FROM seqroute_apply($1::json)", [#"[{"n":1,"k":"open","s":"other","a":"two","b":5000}]"#])
        try holder.execute(script: "BEGIN; SELECT 1 FROM accounts WHERE id = 'two' FOR UPDATE;")
        try opener.execute(script: "BEGIN")
        try opener.query("SELECT * FROM seqroute_apply($1::json)", [#"[{"n":1,"k":"open","s":"x","a":"one","b":5000}]"#])
        // The batch surveys (x does not exist yet for it), then waits for account two.
        let route = rawRoute("x", features: #""fb":"\\x3f000000""#)
        let batch = #"[{"n":1,"k":"status","s":"other"},"# + route.dropFirst().replacingOccurrences(of: #""n":1"#, with: #""n":2"#)
        try db.send("SELECT n, status FROM seqroute_apply($1::json)", [.text(batch)])
        Thread.sleep(forTimeInterval: 0.3)
        try opener.execute(script: "COMMIT")
        try holder.execute(script: "COMMIT")
        let answers = try db.receive().map { $0.values }
        #expect(answers.contains(["2", "unknown_session"]), "\(answers)")
        #expect(try db.query("SELECT count(*) FROM decisions WHERE session_id = 'x'").first?[0] == "0")
        #expect(try db.query("SELECT held FROM accounts WHERE id = 'one'").first?[0] == "0")
        // Sent again, it is routed.
        #expect(try db.query("SELECT status FROM seqroute_apply($1::json)", [route]).first?[0] == "ok")
        #expect(try reconciliationRows(db).isEmpty)
        // The accounts a batch may serve are those locked, not those named.
        #expect(try db.query("SELECT seqroute_lock_accounts(ARRAY['two', 'nobody', 'one', NULL])").first?[0] == "{one,two}")
    }

    /// A fresh ledger with account `acct`, and a committer started on it; the caller stops it.
    private func startedCommitter() throws -> (PGConnection, GroupCommitter) {
        let dsn = try TestCluster.freshDatabase()
        let db = try PGConnection(dsn: dsn)
        try db.setAccount("acct", cap: 1_000_000)
        let committer = GroupCommitter(dsn: dsn, maxBatch: 64, holdExpirySeconds: 600, log: { _ in })
        try committer.start()
        return (db, committer)
    }

    /// A batch of one ROUTE, as seqroute_apply() reads it: turn 1 of `session`, a hold of 300 on
    /// model "m" of pool "p", with `features` the JSON member that carries them.
    private func rawRoute(_ session: String, features: String) -> String {
        #"[{"n":1,"k":"route","s":"\#(session)","t":1,"m":"m","hd":300,"mh":100,"pv":"v","l":0,"pool":"p","pt":3,"#
            + features + #","bs":[1,0,5000,0,0,0],"hs":[300],"fe":[true]}]"#
    }

    /// A ROUTE record for the committer tests: a hold of 100 on model "m".
    private func route(_ session: String, _ turn: Int) -> LedgerOperation {
        .route(RouteRecord(session: session, turn: turn, model: "m", hold: 100, minHold: 100, policyVersion: "test",
                           lambda: 0, poolID: "pool", task: nil, promptTokens: 10, features: [0.5, 0.25],
                           budgetState: [Double(turn), 0, 1000, 0, 0, 0], holds: [100], feasible: [true],
                           propensity: 1, scores: nil))
    }

    /// A batch whose rows arrive and whose commit then fails (a deferred check refuses session
    /// `boom` at commit) is not acknowledged: its other operations are applied on their own and
    /// answered, boom's ROUTE gets `internal`, and nothing of it is in the ledger.
    @Test func aBatchThatFailsAtCommitAfterItsRowsIsNotAcknowledged() async throws {
        let dsn = try TestCluster.freshDatabase()
        let db = try PGConnection(dsn: dsn)
        try db.setAccount("acct", cap: 1_000_000)
        try db.query("""
            CREATE FUNCTION refuse_boom() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.session_id = 'boom' THEN RAISE EXCEPTION 'boom refused at commit'; END IF;
                RETURN NULL;
            END $$
            """)
        try db.query("""
            CREATE CONSTRAINT TRIGGER refuse_boom AFTER INSERT ON decisions DEFERRABLE INITIALLY DEFERRED
                FOR EACH ROW EXECUTE FUNCTION refuse_boom()
            """)
        let committer = GroupCommitter(dsn: dsn, maxBatch: 64, holdExpirySeconds: 600, log: { _ in })
        try committer.start()
        defer { committer.stop() }

        let sessions = ["a", "boom", "b"]
        var ops: [LedgerOperation] = sessions.map {
            .open(session: $0, account: "acct", user: nil, budget: 1000, horizon: nil, lambda: nil)
        }
        ops += sessions.map { route($0, 1) }
        let done = LockedResults(count: ops.count)
        for (i, op) in ops.enumerated() { committer.submit(op) { done.set(i, $0) } }
        let answers = await done.all()
        for i in [0, 1, 2, 3, 5] { #expect(try answers[i].get().status == "ok", "operation \(i)") }
        guard case .failure(.internalError(let message)) = answers[4] else {
            Issue.record("boom's ROUTE answered \(answers[4])")
            return
        }
        #expect(message.contains("boom refused at commit"))
        // The server's first line only: its CONTEXT (here the trigger's line) stays in the log.
        #expect(!message.contains("\n") && !message.contains("CONTEXT"), "\(message)")
        #expect(try db.query("SELECT session_id FROM decisions ORDER BY 1").map { $0[0] } == ["a", "b"])
        #expect(try db.query("SELECT held FROM sessions WHERE id = 'boom'").first?[0] == "0")
        #expect(try db.query("SELECT held FROM accounts WHERE id = 'acct'").first?[0] == "200")
        #expect(try reconciliationRows(db).isEmpty)
    }

    /// A batch that commits but whose answer rows do not answer each operation (here the batch
    /// function is wrapped to drop them for a ROUTE of session `mute`) gets `internal`, and is
    /// not applied again: the hold is in the ledger once, and the committer goes on serving.
    @Test func aCommittedBatchWithoutItsAnswersIsNotAppliedAgain() async throws {
        let dsn = try TestCluster.freshDatabase()
        let db = try PGConnection(dsn: dsn)
        try db.setAccount("acct", cap: 1_000_000)
        try db.query("ALTER FUNCTION seqroute_apply(seqroute_op[]) RENAME TO seqroute_apply_whole")
        try db.query("""
            CREATE FUNCTION seqroute_apply(ops seqroute_op[]) RETURNS SETOF seqroute_result LANGUAGE plpgsql AS $$
            DECLARE
                r seqroute_result;
                mute boolean := EXISTS (SELECT 1 FROM unnest(ops) x WHERE x.k = 'route' AND x.s = 'mute');
            BEGIN
                FOR r IN SELECT * FROM seqroute_apply_whole(ops) LOOP
                    IF NOT mute THEN RETURN NEXT r; END IF;
                END LOOP;
            END $$
            """)
        let committer = GroupCommitter(dsn: dsn, maxBatch: 64, holdExpirySeconds: 600, log: { _ in })
        try committer.start()
        defer { committer.stop() }

        let opened = await committer.submit(.open(session: "mute", account: "acct", user: nil, budget: 1000,
                                                  horizon: nil, lambda: nil))
        #expect(try opened.get().status == "ok")
        guard case .failure(.internalError) = await committer.submit(route("mute", 1)) else {
            Issue.record("the unanswered ROUTE was not answered internal")
            return
        }
        #expect(try db.query("SELECT count(*) FROM decisions WHERE session_id = 'mute'").first?[0] == "1")
        #expect(try db.query("SELECT count(*) FROM ledger_entries WHERE session_id = 'mute'").first?[0] == "1")
        #expect(try db.query("SELECT held FROM sessions WHERE id = 'mute'").first?[0] == "100")
        #expect(try reconciliationRows(db).isEmpty)
        let status = await committer.submit(.status(session: "mute"))
        #expect(try status.get().held == 100)
    }

    /// A ledger whose batch type differs from the one this daemon writes (here a later release
    /// added a field) is refused when the committer connects, with a message that says so.
    @Test func aLedgerWithAnotherBatchTypeIsRefusedAtStart() throws {
        let dsn = try TestCluster.freshDatabase()
        let db = try PGConnection(dsn: dsn)
        try db.query("ALTER TYPE seqroute_op ADD ATTRIBUTE z integer")
        let committer = GroupCommitter(dsn: dsn, maxBatch: 64, holdExpirySeconds: 600, log: { _ in })
        let error = #expect(throws: PGError.self) { try committer.start() }
        #expect(error?.message.contains("the ledger's seqroute_op has the attributes") == true)
        #expect(error?.message.contains("fb 17, z 23), but this daemon writes") == true)
    }

    /// Many operations of one session queued at once through a real committer: each is applied
    /// after the one before it, and every answer is the one a serial order gives.
    @Test func oneSessionsQueuedOperationsAreAppliedInOrder() async throws {
        let (db, committer) = try startedCommitter()
        defer { committer.stop() }

        var ops: [LedgerOperation] = []
        for s in ["p", "q", "r"] {
            ops.append(.open(session: s, account: "acct", user: nil, budget: 1000, horizon: 4, lambda: nil))
            ops += (1...4).map { route(s, $0) }
            ops += [.status(session: s), .close(session: s), .status(session: s)]
        }
        // Submitted without waiting, so they queue behind each other.
        let done = LockedResults(count: ops.count)
        for (i, op) in ops.enumerated() {
            committer.submit(op) { done.set(i, $0) }
        }
        let answers = await done.all()
        for (i, op) in ops.enumerated() {
            let r = try answers[i].get()
            #expect(r.status == "ok", "operation \(i): \(op) answered \(r.status)")
        }
        for s in 0..<3 {
            let base = s * 8
            #expect(try answers[base + 5].get().held == 400)       // four holds of 100 before the STATUS
            #expect(try answers[base + 5].get().closed == false)
            #expect(try answers[base + 7].get().closed == true)     // the STATUS after the CLOSE
            #expect(try answers[base + 7].get().held == 0)
        }
        #expect(committer.counterSnapshot.operations == ops.count)
        #expect(try reconciliationRows(db).isEmpty)
    }

    /// A batch sent behind one still being applied, because its requests came first, holds none
    /// of the sessions ahead of it. When the batch ahead fails, the one behind is answered first
    /// and the failed one is applied again after it, once. Here the batch function is wrapped to
    /// take 1 s for batches naming z, p1, p2 or slow, and to fail the first with slow's OPEN as
    /// a deadlock would; the requests come half-way through the batches they follow.
    @Test func aBatchBehindAFailedOneIsAnsweredFirstAndTheFailedOneOnce() async throws {
        let dsn = try TestCluster.freshDatabase()
        let db = try PGConnection(dsn: dsn)
        try db.setAccount("acct", cap: 1_000_000)
        try db.execute(script: """
            ALTER FUNCTION seqroute_apply(seqroute_op[]) RENAME TO seqroute_apply_inner;
            CREATE SEQUENCE slow_failures;
            CREATE FUNCTION seqroute_apply(ops seqroute_op[]) RETURNS SETOF seqroute_result LANGUAGE plpgsql AS $$
            BEGIN
                IF EXISTS (SELECT 1 FROM unnest(ops) x WHERE x.s IN ('z', 'p1', 'p2', 'slow')) THEN
                    PERFORM pg_sleep(1);
                END IF;
                IF EXISTS (SELECT 1 FROM unnest(ops) x WHERE x.s = 'slow' AND x.k = 'open') AND nextval('slow_failures') = 1 THEN
                    RAISE EXCEPTION 'as if deadlocked' USING ERRCODE = 'deadlock_detected';
                END IF;
                RETURN QUERY SELECT * FROM seqroute_apply_inner(ops);
            END $$;
            """)
        // Housekeeping, which ends a chain of batches, not due during the test.
        let committer = GroupCommitter(dsn: dsn, maxBatch: 64, holdExpirySeconds: 600, housekeepingInterval: 30, log: { _ in })
        try committer.start()
        defer { committer.stop() }
        usleep(100_000)  // past the first housekeeping, at start
        final class Order: @unchecked Sendable {
            private let lock = NSLock()
            private var labels: [String] = []
            func add(_ label: String) { lock.withLock { labels.append(label) } }
            var all: [String] { lock.withLock { labels } }
        }
        let order = Order()
        let labels = ["z", "p1", "p2", "slow", "slow-status", "x"]
        let done = LockedResults(count: labels.count)
        func submit(_ i: Int, _ op: LedgerOperation) {
            committer.submit(op) { order.add(labels[i]); done.set(i, $0) }
        }
        func open(_ s: String) -> LedgerOperation {
            .open(session: s, account: "acct", user: nil, budget: 1000, horizon: nil, lambda: nil)
        }
        submit(0, open("z"))              // applied 0 – 1 s
        usleep(400_000)
        submit(1, open("p1"))             // queued together, applied 1 – 2 s
        submit(2, open("p2"))
        usleep(1_100_000)
        submit(3, open("slow"))           // one request as z's batch had: sent behind p1 and p2
        usleep(1_000_000)
        // Applying slow (2 – 3 s, then it fails). Two requests, as many as the batch before:
        // x goes behind slow at once; slow's STATUS waits for slow's OPEN.
        submit(4, .status(session: "slow"))
        submit(5, open("x"))
        let answers = await done.all()
        for (label, answer) in zip(labels, answers) { #expect(try answer.get().status == "ok", "\(label): \(answer)") }
        #expect(order.all == ["z", "p1", "p2", "x", "slow", "slow-status"])
        #expect(try db.query("SELECT last_value FROM slow_failures")[0][0] == "2")
    }

    /// A ROUTE or REPORT may name its session's account, and the ledger then locks that account
    /// without looking the session up. Named wrongly, the session is not found under the lock
    /// taken: the request is answered `unknown_session` and nothing is written.
    @Test func anOperationNamingTheWrongAccountWritesNothing() async throws {
        let (db, committer) = try startedCommitter()
        defer { committer.stop() }
        try db.setAccount("other", cap: 1_000_000)
        #expect(try await committer.submit(.open(session: "w", account: "acct", user: nil, budget: 1000, horizon: nil,
                                                  lambda: nil)).get().status == "ok")
        func routeNaming(_ account: String, turn: Int) -> LedgerOperation {
            guard case .route(var r) = route("w", turn) else {
                Issue.record("route() made no ROUTE")
                return route("w", turn)
            }
            r.account = account
            return .route(r)
        }
        let report = ReportRequest(session: "w", turn: 1, cost: 40, quality: 0.5, inTokens: nil, outTokens: nil)
        var before = try ledgerFingerprint(db)
        #expect(try await committer.submit(routeNaming("other", turn: 1)).get().status == "unknown_session")
        #expect(try ledgerFingerprint(db) == before)
        // Named rightly, a ROUTE is served; a REPORT of its held turn naming the wrong account is not.
        #expect(try await committer.submit(routeNaming("acct", turn: 1)).get().status == "ok")
        before = try ledgerFingerprint(db)
        #expect(try await committer.submit(.report(report, account: "other")).get().status == "unknown_session")
        #expect(try ledgerFingerprint(db) == before)
        #expect(try await committer.submit(.report(report, account: "acct")).get().status == "ok")
        #expect(try await committer.submit(route("w", 2)).get().status == "ok")
        #expect(try reconciliationRows(db).isEmpty)
    }

    /// What the committer encodes reaches the ledger unchanged: text that JSON must escape,
    /// non-ASCII text, and the numbers and arrays of a ROUTE.
    @Test func theCommittersEncodingSurvivesTheRoundTrip() async throws {
        let (db, committer) = try startedCommitter()
        defer { committer.stop() }

        let user = "q\"b\\s\u{1}\n\u{7F}é→"
        let opened = await committer.submit(.open(session: "e", account: "acct", user: user, budget: 1000, horizon: nil,
                                                  lambda: 0.125))
        #expect(try opened.get().status == "ok")
        let routed = await committer.submit(.route(RouteRecord(
            session: "e", turn: 1, model: "vendor/model \"x\"", hold: 250, minHold: 100, policyVersion: "v\\1",
            lambda: 0.125, poolID: "pool", task: "arc-challenge", promptTokens: 12, features: [0.1, -2.5e-7, 3],
            budgetState: [1, 0, 1000, 0, 0, 999_999.5], holds: [100, 250], feasible: [true, false], propensity: 0.75,
            scores: [-1.5, 1e-9])))
        #expect(try routed.get().status == "ok")
        let session = try #require(try db.query("SELECT user_id, lambda FROM sessions WHERE id = 'e'").first)
        #expect(session[0] == user)
        #expect(session.double(1) == 0.125)
        // The features' bytes are what PostgreSQL's own float4send makes of the same numbers.
        let d = try #require(try db.query("""
            SELECT model, policy_version, task, features = seqroute_features_bytes('{0.1,-2.5e-07,3}'), budget_state, holds,
                   feasible, propensity, scores, hold
              FROM decisions WHERE session_id = 'e' AND turn = 1
            """).first)
        #expect(d.values == ["vendor/model \"x\"", "v\\1", "arc-challenge", "t", "{1,0,1000,0,0,999999.5}",
                             "{100,250}", "{t,f}", "0.75", "{-1.5,1e-09}", "250"])
    }

    /// A daemon of an earlier release sends features as a real[] literal (`f`): they are logged as
    /// the same bytes, and the decision log reads them back as the numbers sent.
    @Test func featuresOfAnEarlierReleaseAreLoggedAsTheSameBytes() throws {
        let db = try PGConnection(dsn: try TestCluster.freshDatabase())
        try db.setAccount("acct", cap: 1_000_000)
        for s in ["old", "new"] {
            try db.query("SELECT * FROM seqroute_apply($1::json)", [#"[{"n":1,"k":"open","s":"\#(s)","a":"acct","b":5000}]"#])
        }
        #expect(try db.query("SELECT status FROM seqroute_apply($1::json)", [rawRoute("old", features: #""f":"{0.5,-1.25e-3}""#)]).first?[0] == "ok")
        #expect(try db.query("SELECT status FROM seqroute_apply($1::json)", [rawRoute("new", features: #""fb":"\\x3f000000baa3d70a""#)]).first?[0] == "ok")
        #expect(try db.query("SELECT encode(features, 'hex') FROM decisions ORDER BY session_id").map { $0[0] }
                == ["3f000000baa3d70a", "3f000000baa3d70a"])
        for s in ["old", "new"] { try db.query("SELECT * FROM seqroute_apply($1::json)", [#"[{"n":1,"k":"close","s":"\#(s)"}]"#]) }
        let logged = try db.readDecisions(poolID: "p", pool: ["m"])
        #expect(logged.map(\.features) == [[0.5, Double(Float(-1.25e-3))], [0.5, Double(Float(-1.25e-3))]])
    }
}

/// Completions arrive on the committer's thread; the test waits for all of them.
/// Operations (their keys, without `n`) as the JSON batch seqroute_apply() reads, numbered in order.
private func jsonBatch(_ ops: [String]) -> String {
    "[" + ops.enumerated().map { "{\"n\":\($0.offset + 1)," + $0.element + "}" }.joined(separator: ",") + "]"
}

/// A ROUTE's keys for a JSON batch: model m, one feature, a pool of one model.
private func routeOp(_ session: String, turn: Int, hold: Int = 300) -> String {
    #""k":"route","s":"\#(session)","t":\#(turn),"m":"m","hd":\#(hold),"mh":100,"pv":"v","l":0,"pool":"p","pt":3,"#
        + #""fb":"\\x3f000000","bs":[\#(turn),0,100000,0,0,0],"hs":[\#(hold)],"fe":[true]"#
}

private final class LockedResults: @unchecked Sendable {
    private let cond = NSCondition()
    private var results: [Result<LedgerResult, LedgerFailure>?]

    init(count: Int) { results = Array(repeating: nil, count: count) }

    func set(_ i: Int, _ r: Result<LedgerResult, LedgerFailure>) {
        cond.lock()
        results[i] = r
        cond.broadcast()
        cond.unlock()
    }

    func all() async -> [Result<LedgerResult, LedgerFailure>] {
        await withCheckedContinuation { cont in
            Thread {
                self.cond.lock()
                while self.results.contains(where: { $0 == nil }) { self.cond.wait() }
                let done = self.results.map { $0! }
                self.cond.unlock()
                cont.resume(returning: done)
            }.start()
        }
    }
}
