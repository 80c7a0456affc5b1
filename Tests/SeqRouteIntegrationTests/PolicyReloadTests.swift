import Foundation
import SeqRouteCore
import SeqRouteLearning
import SeqRouteLedger
import SeqRouteServer
import Testing

@Suite(.serialized) struct PolicyReloadTests {
    /// A policy file; `priors` gives the encoder per-task means (the shadow-price heads need them).
    func policyFile(_ path: String, version: String, pool: [String] = ["big", "mid", "small"], head: QHead = .perAction,
                    priors: Bool = false, stages: Int = 1) throws {
        let row = pool.indices.map { Double($0 + 1) / Double(pool.count) }
        // One task and the unknown task, each with a row per stage.
        let rows = priors ? [[Double]](repeating: row, count: 2 * stages) : []
        let encoder = StateEncoder(featureDimension: 64, tasks: ["qa"], modelCount: pool.count, priceScaleUSD: 0.01,
                                   lambdaMax: 50, priorQuality: rows, priorCost: rows, stages: stages)
        let scale = RewardScale(priceScaleUSD: 0.01, cheapRatio: 0.05)
        // Sized for the head; a head that needs priors is given them or refused before it is used.
        let outputs = priors || head == .perAction ? QFunction(head: head, encoder: encoder, scale: scale).outputWidth : 2
        let policy = LearnedPolicy(version: version, kind: "cql", pool: pool, featurizer: HashingFeaturizer().identity,
                                   encoder: encoder, scale: scale,
                                   lambdaRange: [0, 50], network: MLP(sizes: [encoder.width, 8, outputs], seed: 1),
                                   head: head, training: [:])
        try JSONEncoder().encode(policy).write(to: URL(fileURLWithPath: path))
    }

    /// RELOAD swaps in a trained policy; a policy for another pool, or a corrupt file, is
    /// refused with its reason and the policy in force stays.
    @Test func reloadLoadsAPolicyFileAndRefusesBadOnes() throws {
        let dsn = try TestCluster.freshDatabase()
        let daemon = try DaemonProcess(dsn: dsn)
        try daemon.start()
        let c = try daemon.client()
        _ = try c.request("OPEN p1 budget=10000000 horizon=10")
        #expect(LineClient.fields(try c.request("ROUTE p1 tokens=10"))["policy"] == "cold-start-pacing")

        let good = daemon.directory + "/policy.json"
        try policyFile(good, version: "test-policy-1")
        try (testConfig.replacingOccurrences(of: "[routing]\n", with: "[routing]\npolicy_file = \"\(good)\"\n"))
            .write(toFile: daemon.configPath, atomically: true, encoding: .utf8)
        #expect(try c.request("RELOAD") == "OK policy=test-policy-1")
        let routed = LineClient.fields(try c.request("ROUTE p1 tokens=10 task=qa"))
        #expect(routed["policy"] == "test-policy-1")

        // A policy trained for another pool.
        try policyFile(good, version: "test-policy-2", pool: ["a", "b", "c"])
        let refused = try c.request("RELOAD")
        #expect(refused.hasPrefix("ERR reload_failed ") && refused.contains("pool"), "\(refused)")
        // A truncated file.
        try policyFile(good, version: "test-policy-3")
        let bytes = try Data(contentsOf: URL(fileURLWithPath: good))
        try bytes.prefix(bytes.count / 2).write(to: URL(fileURLWithPath: good))
        #expect(try c.request("RELOAD").hasPrefix("ERR reload_failed "))
        #expect(LineClient.fields(try c.request("ROUTE p1 tokens=10"))["policy"] == "test-policy-1")
        // A shadow-price head without the priors it needs.
        try policyFile(good, version: "test-policy-4", head: .shadowPrice)
        let headless = try c.request("RELOAD")
        #expect(headless.hasPrefix("ERR reload_failed ") && headless.contains("shadow-price"), "\(headless)")

        let db = try PGConnection(dsn: dsn)
        let row = try db.query("SELECT policy_version, array_length(scores, 1), propensity FROM decisions WHERE session_id = 'p1' AND turn = 2")[0]
        #expect(row[0] == "test-policy-1" && row.int(1) == 3 && (row.double(2) ?? 0) > 0)

        // A shadow-price policy routes, and logs one score per model.
        try policyFile(good, version: "test-policy-5", head: .shadowPrice, priors: true)
        #expect(try c.request("RELOAD") == "OK policy=test-policy-5")
        #expect(LineClient.fields(try c.request("ROUTE p1 tokens=10 task=qa"))["policy"] == "test-policy-5")
        let shadow = try db.query("SELECT array_length(scores, 1) FROM decisions WHERE session_id = 'p1' AND policy_version = 'test-policy-5'")
        #expect(shadow.count == 1 && shadow[0].int(0) == 3)
        // So does one with stakes and priors per stage, as the benchmark writes, at a λ beyond
        // its trained range.
        try policyFile(good, version: "test-policy-6", head: .shadowPriceAndStakes, priors: true, stages: 4)
        #expect(try c.request("RELOAD") == "OK policy=test-policy-6")
        #expect(LineClient.fields(try c.request("ROUTE p1 tokens=10 task=qa lambda=80"))["policy"] == "test-policy-6")
        let staked = try db.query("SELECT array_length(scores, 1), lambda FROM decisions WHERE session_id = 'p1' AND policy_version = 'test-policy-6'")
        #expect(staked.count == 1 && staked[0].int(0) == 3 && staked[0].double(1) == 80)
        // A hand-edited stage count that no prior table fits, however large, is refused.
        var edited = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: good))) as? [String: Any])
        var encoder = try #require(edited["encoder"] as? [String: Any])
        encoder["stages"] = Int.max / 2
        edited["encoder"] = encoder
        try JSONSerialization.data(withJSONObject: edited).write(to: URL(fileURLWithPath: good))
        let absurd = try c.request("RELOAD")
        #expect(absurd.hasPrefix("ERR reload_failed ") && absurd.contains("does not fit"), "\(absurd)")
        #expect(LineClient.fields(try c.request("ROUTE p1 tokens=10 task=qa"))["policy"] == "test-policy-6")
        #expect(daemon.terminate() == 0)
    }

    /// λ: the configured default changes on RELOAD without a restart, OPEN and ROUTE may set
    /// their own, and every decision logs the λ it was made with.
    @Test func lambdaDefaultChangesOnReloadAndRequestsOverrideIt() throws {
        let dsn = try TestCluster.freshDatabase()
        let daemon = try DaemonProcess(dsn: dsn)
        try daemon.start()
        let c = try daemon.client()
        _ = try c.request("OPEN l1 budget=10000000 horizon=10")
        _ = try c.request("ROUTE l1 tokens=10")
        try testConfig.replacingOccurrences(of: "[routing]\n", with: "[routing]\nlambda = 2.5\n")
            .write(toFile: daemon.configPath, atomically: true, encoding: .utf8)
        #expect(try c.request("RELOAD").hasPrefix("OK policy="))
        _ = try c.request("ROUTE l1 tokens=10")
        _ = try c.request("ROUTE l1 tokens=10 lambda=0.7")
        _ = try c.request("OPEN l2 budget=10000000 lambda=1.25")
        _ = try c.request("ROUTE l2 tokens=10")
        let db = try PGConnection(dsn: dsn)
        let logged = try db.query("SELECT session_id || ':' || turn || '=' || lambda FROM decisions ORDER BY session_id, turn")
            .map { $0[0] ?? "" }
        #expect(logged == ["l1:1=0", "l1:2=2.5", "l1:3=0.7", "l2:1=1.25"])
        #expect(daemon.terminate() == 0)
    }
}
