import Foundation
import SeqRouteCore
import SeqRouteLearning
import SeqRouteLedger
import SeqRouteServer
import Testing

/// The learning loop against the real daemon and ledger: simulated users, refit from the log
/// (COPY), promotion, reload, rollback. The promotion rule itself is tested in LearningTests;
/// here it admits any candidate, so that the mechanics are what is checked.
@Suite(.serialized) struct RefitLoopTests {
    static let config = testConfig.replacingOccurrences(of: "\n[[models]]", with: """

        [refit]
        min_sessions = 60
        steps = 200
        tolerance = 1
        max_bankruptcy_rate = 1
        min_effective_sessions = 1

        [[models]]
        """, range: testConfig.range(of: "\n[[models]]"))

    /// Two tasks where the pool's prior ranking (big > mid > small) is wrong for one of them.
    static func table() throws -> QueryTable {
        var records: [QueryRecord] = []
        for i in 0..<120 {
            let qa = i % 2 == 0
            records.append(QueryRecord(
                id: "q\(i)", task: qa ? "qa" : "code", text: "question number \(i) " + String(repeating: "word ", count: i % 7),
                models: ["big": ModelOutcome(quality: qa ? 0.8 : 0.95, costUSD: 0.004),
                         "mid": ModelOutcome(quality: qa ? 0.85 : 0.6, costUSD: 0.0004),
                         "small": ModelOutcome(quality: qa ? 0.8 : 0.2, costUSD: 0.0001)]))
        }
        return try QueryTable(records: records)
    }

    @Test func refitPromotesReloadsAndRollsBack() throws {
        let dsn = try TestCluster.freshDatabase()
        let daemon = try DaemonProcess(dsn: dsn, config: Self.config)
        try daemon.start()
        let config = try daemon.configuration()
        let db = try PGConnection(dsn: dsn)
        let policyDir = daemon.directory + "/policies"

        // Too little data: said so, nothing written or registered.
        let early = try RefitJob.run(configuration: config, db: db, log: { _ in })
        #expect(early.tooLittleData && !early.promoted)
        #expect(try db.policies().isEmpty)
        #expect(!FileManager.default.fileExists(atPath: policyDir))

        // Phase 1 on the cold-start policy, and one session whose id needs COPY's escapes.
        let users = try UserSimulation(table: try Self.table(), pool: config.pool)
        let phase1 = users.run(SimulationOptions(socketPath: daemon.socketPath, sessions: 80, connections: 4,
                                                 rho: 0.2...0.6, account: nil, lambda: nil, seed: 3, prefix: "p1"))
        #expect(phase1.failedRequests == 0, "\(phase1.firstFailures)")
        #expect(phase1.sessions == 80 && phase1.policies.keys.sorted() == ["cold-start-pacing"])
        let c = try daemon.client()
        #expect(try c.request("OPEN we%5Cird%20id%20%C3%A9 budget=1000000 horizon=1").hasPrefix("OK"))
        #expect(try c.request("ROUTE we%5Cird%20id%20%C3%A9 task=qa tokens=10").hasPrefix("OK"))
        #expect(try c.request("REPORT we%5Cird%20id%20%C3%A9 1 cost=50 quality=0.5").hasPrefix("OK"))
        #expect(try c.request("CLOSE we%5Cird%20id%20%C3%A9").hasPrefix("OK"))

        // COPY reads back exactly the decisions of closed sessions, escapes undone.
        let logged = try db.readDecisions(poolID: config.pool.identity, pool: config.pool.names)
        let expected = try db.query("""
            SELECT count(*) FROM decisions d JOIN sessions s ON s.id = d.session_id WHERE s.state <> 'open'
            """)[0].int(0)
        #expect(logged.count == expected && logged.count == phase1.turns + 1)
        let odd = logged.first { $0.sessionID == "we\\ird id é" }
        #expect(odd?.cost == 50 && odd?.quality == 0.5 && odd?.task == "qa" && odd?.holds.count == 3)
        #expect(logged.allSatisfy { $0.features.count == 64 && $0.propensity.map { $0 > 0 } ?? ($0.model == nil) })

        // Refit: candidate trained, registered, promoted, the daemon reloaded onto it.
        let first = try RefitJob.run(configuration: config, db: db, log: { _ in })
        let v1 = try #require(first.version)
        #expect(first.promoted, "\(first.lines)")
        #expect(try c.request("OPEN after1 budget=1000000 horizon=2").hasPrefix("OK"))
        #expect(LineClient.fields(try c.request("ROUTE after1 task=code tokens=10"))["policy"] == v1)
        #expect(try FileManager.default.destinationOfSymbolicLink(atPath: config.activePolicyLink) == policyDir + "/\(v1).json")
        let row = try #require(try db.policy(v1))
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: policyDir + "/\(v1).json")))
        #expect(row.status == "active" && row.sha256 == SHA256.hex(bytes))
        #expect(row.evaluation.contains("\"promoted\": true") && row.training.contains("transitions"))

        // A second refit retires the first; activating the first again is the rollback.
        let second = try RefitJob.run(configuration: config, db: db, seed: 2, log: { _ in })
        let v2 = try #require(second.version)
        #expect(second.promoted && v2 != v1)
        #expect(try db.policies().map(\.status) == ["retired", "active"])
        let store = PolicyStore(directory: config.policyDirectory, activeLink: config.activePolicyLink)
        let back = try PolicyActivation.activate(v1, db: db, store: store, socketPath: daemon.socketPath)
        #expect(back.contains("OK policy=\(v1)"))
        #expect(LineClient.fields(try c.request("ROUTE after1 task=code tokens=10"))["policy"] == v1)
        #expect(try db.policies().map(\.status) == ["active", "retired"])

        // A policy file changed since it was registered is refused; nothing moves.
        try Data("{}".utf8).write(to: URL(fileURLWithPath: policyDir + "/\(v2).json"))
        #expect(throws: PolicyActivation.Failure.self) {
            try PolicyActivation.activate(v2, db: db, store: store, socketPath: daemon.socketPath)
        }
        #expect(try FileManager.default.destinationOfSymbolicLink(atPath: config.activePolicyLink) == policyDir + "/\(v1).json")
        #expect(try db.policies().map(\.status) == ["active", "retired"])

        // The CLI shows the registry.
        let (status, out) = try runSeqroute(["policy", "list", "--config", daemon.configPath, "--dsn", dsn])
        #expect(status == 0 && out.contains("\(v1)\tactive") && out.contains("\(v2)\tretired"), "\(out)")
        #expect(try reconciliationRows(db).isEmpty)
        #expect(daemon.terminate() == 0)
    }

    /// `seqroute simulate` end to end in its small form: phase 1 on the cold start, refit,
    /// reload under traffic, phase 2 on the new policy, no failed request.
    @Test func simulateCommandRunsBothPhasesAcrossTheReload() throws {
        let dsn = try TestCluster.freshDatabase()
        let daemon = try DaemonProcess(dsn: dsn, config: Self.config)
        try daemon.start()
        let table = daemon.directory + "/table.jsonl"
        try Self.table().write(to: URL(fileURLWithPath: table))
        let (status, out) = try runSeqroute(["simulate", "--config", daemon.configPath, "--dsn", dsn,
                                             "--socket", daemon.socketPath, "--data-dir", daemon.directory,
                                             "--data", table, "--sessions", "70", "--connections", "3",
                                             "--steps", "100"])
        #expect(status == 0, "\(out)")
        let phase2 = try #require(out.split(separator: "\n").first { $0.hasPrefix("phase 2: ") })
        #expect(phase2.contains("sessions=70 ") && phase2.contains("failed_requests=0") && phase2.contains("policies=refit-"))
        #expect(out.contains("refit: promoted: ") && out.contains("failed requests 0"), "\(out)")
        #expect(try reconciliationRows(try PGConnection(dsn: dsn)).isEmpty)
        #expect(daemon.terminate() == 0)
    }

    /// A refit that cannot write its policy file says why and changes nothing.
    @Test func refitThatCannotWriteChangesNothing() throws {
        let dsn = try TestCluster.freshDatabase()
        let daemon = try DaemonProcess(dsn: dsn, config: Self.config)
        try daemon.start()
        let users = try UserSimulation(table: try Self.table(), pool: try daemon.configuration().pool)
        #expect(users.run(SimulationOptions(socketPath: daemon.socketPath, sessions: 70, connections: 2, rho: 0.2...0.6,
                                            account: nil, lambda: nil, seed: 4, prefix: "w")).failedRequests == 0)
        var config = try daemon.configuration()
        // A regular file where the policy folder should be: no write can succeed (even as root).
        let blocker = daemon.directory + "/not-a-folder"
        try Data("x".utf8).write(to: URL(fileURLWithPath: blocker))
        config.refit.policyDirectory = blocker
        let db = try PGConnection(dsn: dsn)
        #expect {
            try RefitJob.run(configuration: config, db: db, log: { _ in })
        } throws: { "\($0)".contains(blocker) }
        #expect(try db.policies().isEmpty)
        #expect(!FileManager.default.fileExists(atPath: config.activePolicyLink))
        #expect(try daemon.client().request("OPEN w-after budget=1000000").hasPrefix("OK"))
        #expect(LineClient.fields(try daemon.client().request("ROUTE w-after tokens=10"))["policy"] == "cold-start-pacing")
        #expect(daemon.terminate() == 0)
    }
}
