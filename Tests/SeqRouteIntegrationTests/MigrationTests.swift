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
}
