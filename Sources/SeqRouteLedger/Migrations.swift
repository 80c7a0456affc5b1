// Numbered SQL migrations from sql/, applied in order, each once (recorded in
// schema_migrations); then the definitions in sql/functions/, each applied again whenever its
// text changed (its SHA-256 is recorded in schema_definitions), so that a function is changed
// by editing it rather than by copying it into a new migration, and after any numbered
// migration. Whatever is pending is applied in one transaction. Several migrators at once
// serialize on an advisory lock.

import Foundation

public struct Migration: Sendable {
    /// nil for a definition from sql/functions/.
    public var version: Int?
    public var name: String
    public var sql: String
}

public enum Migrations {
    /// Where the SQL files are: an explicit folder, else $SEQROUTE_SQL_DIR, else
    /// <binary>/../share/seqroute/sql (an installed binary), else ./sql (a checkout).
    public static func locate(_ explicit: String?) throws -> String {
        var candidates: [String] = []
        if let explicit { candidates.append(explicit) }
        if let env = ProcessInfo.processInfo.environment["SEQROUTE_SQL_DIR"] { candidates.append(env) }
        let exe = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        candidates.append(exe.deletingLastPathComponent().appendingPathComponent("../share/seqroute/sql").path)
        candidates.append(FileManager.default.currentDirectoryPath + "/sql")
        for c in candidates where FileManager.default.fileExists(atPath: c + "/001_schema.sql") {
            return URL(fileURLWithPath: c).standardizedFileURL.path
        }
        throw PGError(sqlState: nil, message: "cannot find the SQL migrations (looked in \(candidates.joined(separator: ", "))); pass --sql-dir",
                      connectionLost: false)
    }

    public static func load(from directory: String) throws -> [Migration] {
        let fm = FileManager.default
        let names = try fm.contentsOfDirectory(atPath: directory).filter { $0.hasSuffix(".sql") }.sorted()
        let numbered = try names.map { name in
            guard let version = Int(name.prefix(while: \.isNumber)) else {
                throw PGError(sqlState: nil, message: "migration \(name) does not start with a number", connectionLost: false)
            }
            let sql = try String(contentsOfFile: directory + "/" + name, encoding: .utf8)
            return Migration(version: version, name: name, sql: sql)
        }
        let folder = directory + "/functions"
        let definitions = ((try? fm.contentsOfDirectory(atPath: folder)) ?? []).filter { $0.hasSuffix(".sql") }.sorted()
        return try numbered + definitions.map {
            Migration(version: nil, name: "functions/" + $0, sql: try String(contentsOfFile: folder + "/" + $0, encoding: .utf8))
        }
    }

    /// Applies what has not run yet; returns the names applied now.
    @discardableResult
    public static func apply(_ migrations: [Migration], on db: PGConnection) throws -> [String] {
        try db.query("SELECT pg_advisory_lock(727274)")
        defer { _ = try? db.query("SELECT pg_advisory_unlock(727274)") }
        try db.execute(script: """
            CREATE TABLE IF NOT EXISTS schema_migrations (
                version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())
            """)
        try db.execute(script: """
            CREATE TABLE IF NOT EXISTS schema_definitions (
                name text PRIMARY KEY, sha256 text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())
            """)
        let done = Set(try db.query("SELECT version FROM schema_migrations").compactMap { $0.int(0) })
        let recorded = Dictionary(uniqueKeysWithValues: try db.query("SELECT name, sha256 FROM schema_definitions")
            .map { ($0[0] ?? "", $0[1] ?? "") })
        var steps: [(name: String, run: () throws -> Void)] = []
        let numbered = migrations.compactMap { m in m.version.map { ($0, m) } }.sorted { $0.0 < $1.0 }
        for (version, m) in numbered where !done.contains(version) {
            steps.append((m.name, {
                try db.execute(script: m.sql)
                try db.query("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", [String(version), m.name])
            }))
        }
        // A numbered migration may drop what a definition made (011 drops the views to change
        // their columns' types), so after one every definition is applied again.
        let schemaChanges = !steps.isEmpty
        for m in migrations where m.version == nil {
            let sum = try db.query("SELECT encode(sha256(convert_to($1, 'UTF8')), 'hex')", [m.sql])[0][0] ?? ""
            guard schemaChanges || recorded[m.name] != sum else { continue }
            steps.append((m.name, {
                try db.execute(script: m.sql)
                try db.query("""
                    INSERT INTO schema_definitions (name, sha256) VALUES ($1, $2)
                    ON CONFLICT (name) DO UPDATE SET sha256 = EXCLUDED.sha256, applied_at = now()
                    """, [m.name, sum])
            }))
        }
        guard !steps.isEmpty else { return [] }
        let applied = steps.map(\.name)
        // Schema changes keep their tables' locks to the end of the transaction below. Taken up
        // front, a serving daemon's batch waits for the migration instead of holding one table
        // the migration needs while it waits for another; sessions first, as a batch's first
        // statement reads sessions and its next locks accounts.
        if steps.contains(where: { !$0.name.hasPrefix("functions/") }),
           try db.query("SELECT to_regclass('accounts') IS NOT NULL").first?[0] == "t" {
            steps.insert(("the lock of the ledger's tables", {
                try db.execute(script: "LOCK TABLE sessions, accounts, decisions, ledger_entries IN ACCESS EXCLUSIVE MODE")
            }), at: 0)
        }
        // Everything pending commits at once: a release's schema changes and the functions written
        // for them appear together, so no batch runs an old function on a new table. A transaction
        // that already held one of the tables when the lock came (an expiry sweep, a correction)
        // can still deadlock with it; PostgreSQL then rolls one of the two back, and a migration
        // rolled back so is run again (a batch is too, by its committer).
        var attempt = 1
        while true {
            do {
                try applyAtOnce(steps, on: db)
                break
            } catch let e as PGError where e.sqlState == "40P01" && attempt < 5 {
                attempt += 1
            }
        }
        return applied
    }

    private static func applyAtOnce(_ steps: [(name: String, run: () throws -> Void)], on db: PGConnection) throws {
        try db.execute(script: "BEGIN")
        for step in steps {
            do {
                try step.run()
            } catch {
                _ = try? db.execute(script: "ROLLBACK")
                throw PGError(sqlState: (error as? PGError)?.sqlState, message: "migration \(step.name) failed: \(error)",
                              connectionLost: (error as? PGError)?.connectionLost ?? false)
            }
        }
        do {
            try db.execute(script: "COMMIT")
        } catch {
            throw PGError(sqlState: (error as? PGError)?.sqlState, message: "migration commit failed: \(error)",
                          connectionLost: (error as? PGError)?.connectionLost ?? false)
        }
    }
}
