// Numbered SQL migrations from sql/, applied in order, each once (recorded in
// schema_migrations). Several migrators at once serialize on an advisory lock.

import Foundation

public struct Migration: Sendable {
    public var version: Int
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
        let names = try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.hasSuffix(".sql") }.sorted()
        return try names.map { name in
            guard let version = Int(name.prefix(while: \.isNumber)) else {
                throw PGError(sqlState: nil, message: "migration \(name) does not start with a number", connectionLost: false)
            }
            let sql = try String(contentsOfFile: directory + "/" + name, encoding: .utf8)
            return Migration(version: version, name: name, sql: sql)
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
        let done = Set(try db.query("SELECT version FROM schema_migrations").compactMap { $0.int(0) })
        var applied: [String] = []
        for m in migrations.sorted(by: { $0.version < $1.version }) where !done.contains(m.version) {
            do {
                try db.execute(script: "BEGIN")
                try db.execute(script: m.sql)
                try db.query("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", [String(m.version), m.name])
                try db.execute(script: "COMMIT")
            } catch {
                _ = try? db.execute(script: "ROLLBACK")
                throw PGError(sqlState: (error as? PGError)?.sqlState, message: "migration \(m.name) failed: \(error)",
                              connectionLost: (error as? PGError)?.connectionLost ?? false)
            }
            applied.append(m.name)
        }
        return applied
    }
}
