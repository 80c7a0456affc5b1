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
        #expect(try result.get() == ["010_binary_features.sql"])
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
        #expect(try Migrations.apply(all, on: db) == ["009_hot_reports.sql", "010_binary_features.sql"])
        #expect(try db.query("SELECT encode(features, 'hex') FROM decisions").first?[0] == "3f000000baa3d70a")
        #expect(try db.query("""
            SELECT swept_to <= (SELECT decided_at FROM decisions) FROM hold_expiry_progress
            """).first?[0] == "t")
        #expect(try db.query("SELECT seqroute_expire_holds(make_interval(secs => 60))").first?[0] == "1")
        #expect(try db.query("SELECT spent, held FROM accounts WHERE id = 'acct'").first?.values == ["300", "0"])
        #expect(try reconciliationRows(db).isEmpty)
    }
}

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
