// How the schema is brought up to date: whatever is pending commits together or not at all.

import Foundation
import SeqRouteLedger
import Testing

@Suite struct MigrationTests {
    /// A function definition that fails takes the table changes applied before it back with
    /// it, so that no batch ever sees a new table with an old function; mended, all of it applies.
    @Test func pendingFilesCommitTogetherOrNotAtAll() throws {
        let db = try PGConnection(dsn: try TestCluster.emptyDatabase())
        let dir = try makeTempDirectory("sql")
        try FileManager.default.createDirectory(atPath: dir + "/functions", withIntermediateDirectories: true)
        try "CREATE TABLE m_a (x integer);".write(toFile: dir + "/001_a.sql", atomically: true, encoding: .utf8)
        try "ALTER TABLE m_a ADD COLUMN y integer;".write(toFile: dir + "/002_b.sql", atomically: true, encoding: .utf8)
        let function = dir + "/functions/1_f.sql"
        try "CREATE OR REPLACE FUNCTION m_f() RETURNS integer LANGUAGE sql AS 'SELECT y FROM m_nowhere';"
            .write(toFile: function, atomically: true, encoding: .utf8)
        do {
            try Migrations.apply(Migrations.load(from: dir), on: db)
            Issue.record("a failing definition was applied")
        } catch let e as PGError {
            #expect(e.message.contains("migration functions/1_f.sql failed"), "\(e.message)")
        }
        #expect(try db.query("SELECT to_regclass('m_a') IS NULL").first?[0] == "t")
        #expect(try db.query("SELECT count(*) FROM schema_migrations").first?[0] == "0")

        try "CREATE OR REPLACE FUNCTION m_f() RETURNS integer LANGUAGE sql AS 'SELECT y FROM m_a';"
            .write(toFile: function, atomically: true, encoding: .utf8)
        #expect(try Migrations.apply(Migrations.load(from: dir), on: db) == ["001_a.sql", "002_b.sql", "functions/1_f.sql"])
        #expect(try db.query("SELECT m_f() IS NULL").first?[0] == "t")
        #expect(try Migrations.apply(Migrations.load(from: dir), on: db).isEmpty)
    }

    /// A migration that deadlocks with a transaction already holding one of the ledger's tables
    /// (as a correction does, which reads accounts before sessions) is rolled back by PostgreSQL
    /// and run again.
    @Test func aMigrationThatDeadlocksIsRunAgain() throws {
        let dsn = try TestCluster.emptyDatabase()
        let db = try PGConnection(dsn: dsn), other = try PGConnection(dsn: dsn)
        let all = try Migrations.load(from: packageRoot + "/sql")
        try Migrations.apply(all.filter { ($0.version ?? 0) < 10 }, on: db)
        try other.execute(script: "BEGIN; SELECT count(*) FROM accounts;")
        let migrated = Locked<Result<[String], Error>?>(nil)
        let thread = Thread { migrated.set(Result { try Migrations.apply(all, on: db) }) }
        thread.start()
        Thread.sleep(forTimeInterval: 0.3)  // the migration holds sessions and waits for accounts
        // This waits for the migration: a deadlock, which PostgreSQL ends by rolling back the
        // migration (it waited first, so its check runs first). Only then does this go on.
        let waitedFrom = Date()
        try other.query("SELECT count(*) FROM sessions")
        #expect(Date().timeIntervalSince(waitedFrom) > 0.5)
        try other.execute(script: "COMMIT")
        let result = try #require(migrated.wait { $0 != nil })
        #expect(try result.get() == ["010_binary_features.sql", "011_check_domains.sql"] + definitions)
    }

    /// A ledger on the schema of an earlier release, with a held turn, upgraded while it holds
    /// data: the decision's features become the same numbers as bytes, the expiry sweep starts
    /// no later than the held turn, and the ledger still reconciles.
    @Test func anEarlierSchemaWithDataIsUpgraded() throws {
        let dsn = try TestCluster.emptyDatabase()
        let db = try PGConnection(dsn: dsn)
        let all = try Migrations.load(from: packageRoot + "/sql")
        let earlier = all.filter { ($0.version ?? 0) < 9 }
        try Migrations.apply(earlier, on: db)
        try db.setAccount("acct", cap: 1_000_000)
        try db.execute(script: """
            INSERT INTO sessions (id, account_id, budget, held, turns) VALUES ('u', 'acct', 5000, 300, 1);
            UPDATE accounts SET held = 300 WHERE id = 'acct';
            INSERT INTO decisions (session_id, turn, decided_at, policy_version, lambda, pool_id, prompt_tokens, features,
                                   budget_state, holds, feasible, model, hold, status)
            VALUES ('u', 1, now() - interval '1 hour', 'v', 0, 'p', 3, '{0.5,-1.25e-3}', '{1,0,5000,0,0,0}', '{300}',
                    '{t}', 'm', 300, 'held');
            INSERT INTO ledger_entries (kind, account_id, session_id, turn, amount) VALUES ('hold', 'acct', 'u', 1, 300);
            """)
        #expect(try Migrations.apply(all, on: db)
                == ["009_hot_reports.sql", "010_binary_features.sql", "011_check_domains.sql"] + definitions)
        #expect(try db.query("SELECT encode(features, 'hex') FROM decisions").first?[0] == "3f000000baa3d70a")
        #expect(try db.query("""
            SELECT swept_to <= (SELECT decided_at FROM decisions) FROM hold_expiry_progress
            """).first?[0] == "t")
        #expect(try db.query("SELECT seqroute_expire_holds(make_interval(secs => 60))").first?[0] == "1")
        #expect(try db.query("SELECT spent, held FROM accounts WHERE id = 'acct'").first?.values == ["300", "0"])
        #expect(try reconciliationRows(db).isEmpty)
        // The audit views were made again over the columns' new types.
        #expect(try db.query("SELECT cap, spent, held FROM audit_budget_status WHERE account_id = 'acct'").first?.values
                == ["1000000", "300", "0"])
    }

    /// The rules that moved from table constraints to domains (011) bind every writer, not only
    /// the batch function: each value they forbid is refused as a check violation, and nothing
    /// changes.
    @Test func theLedgerRefusesWhatItsRulesForbid() throws {
        let db = try PGConnection(dsn: try TestCluster.freshDatabase())
        try db.setAccount("acct", cap: 1_000)
        try db.execute(script: """
            INSERT INTO sessions (id, account_id, budget) VALUES ('s', 'acct', 500);
            INSERT INTO decisions (session_id, turn, policy_version, lambda, pool_id, prompt_tokens, features,
                                   budget_state, holds, feasible, hold, status)
            VALUES ('s', 1, 'v', 0, 'p', 1, '\\x3f000000', '{}', '{}', '{}', 0, 'bankrupt');
            """)
        let entry = "INSERT INTO ledger_entries (kind, account_id, session_id, turn, amount) VALUES "
        let refused = [
            "UPDATE accounts SET cap = -1", "UPDATE accounts SET held = -1", "UPDATE accounts SET period = 'yearly'",
            "UPDATE sessions SET budget = -1", "UPDATE sessions SET held = -1", "UPDATE sessions SET state = 'paused'",
            "UPDATE decisions SET turn = 0", "UPDATE decisions SET hold = -1", "UPDATE decisions SET cost = -1",
            "UPDATE decisions SET quality = 1.5", "UPDATE decisions SET quality = -0.1",
            "UPDATE decisions SET quality = 'NaN'", "UPDATE decisions SET status = 'lost'",
            "UPDATE decisions SET features = '\\x3f0000'",
            entry + "('gift', 'acct', 's', 1, 5)", entry + "('hold', 'acct', 's', 1, 0)",
            entry + "('adjustment', 'acct', 's', 1, 5)",
        ]
        let contents = """
            SELECT (SELECT string_agg(a::text, ';') FROM accounts a), (SELECT string_agg(s::text, ';') FROM sessions s),
                   (SELECT string_agg(d::text, ';') FROM decisions d), (SELECT count(*) FROM ledger_entries)
            """
        let before = try db.query(contents).first?.values
        for statement in refused {
            do {
                try db.execute(script: statement)
                Issue.record("the ledger accepted \(statement)")
            } catch let e as PGError {
                #expect(e.sqlState == "23514", "\(statement): \(e.message)")
            }
        }
        #expect(try db.query(contents).first?.values == before)
    }
}

/// The definition files, applied again after any numbered migration.
private let definitions = ["functions/1_periods.sql", "functions/2_operations.sql", "functions/3_adjustments.sql",
                           "functions/4_audit_views.sql"]

/// A value set on one thread and awaited on another.
private final class Locked<T>: @unchecked Sendable {
    private let cond = NSCondition()
    private var value: T

    init(_ value: T) { self.value = value }

    func set(_ v: T) {
        cond.lock()
        value = v
        cond.broadcast()
        cond.unlock()
    }

    /// The value once `done` holds for it, or after 30 s whatever it is.
    func wait(until done: (T) -> Bool) -> T {
        cond.lock()
        defer { cond.unlock() }
        let deadline = Date().addingTimeInterval(30)
        while !done(value) && cond.wait(until: deadline) {}
        return value
    }
}
