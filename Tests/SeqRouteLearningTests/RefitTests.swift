import Foundation
import SeqRouteCore
@testable import SeqRouteLearning
import Testing

/// A policy that always prefers one model, exploring at `exploration`.
struct Prefers: RoutingPolicy {
    var model: Int
    var exploration: Double
    var version: String { "prefers-\(model)" }
    func greedy(_ c: DecisionContext) -> (model: Int, scores: [Double]?) {
        (c.feasible[model] ? model : c.feasible.firstIndex(of: true)!, nil)
    }
}

/// One logged turn of a two-model pool; model 1 always has quality 0.9, model 0 quality 0.3.
func loggedTurn(session: String, turn: Int, model: Int?, propensity: Double?, budget: Int64 = 1_000_000,
                spent: Int64 = 0, holds: [Int64] = [100, 1_000], task: String? = "qa") -> DecisionRecord {
    DecisionRecord(sessionID: session, turn: turn, decidedAt: Double(turn), policyVersion: "logger", lambda: 0,
                   task: task, features: [0, 0], horizon: 4, spent: spent, held: 0, accountRemaining: 1 << 40,
                   holds: holds, feasible: holds.map { spent + $0 <= budget }, model: model, propensity: propensity,
                   status: model == nil ? "bankrupt" : "reported", cost: model.map { [50, 500][$0] },
                   quality: model.map { [0.3, 0.9][$0] }, sessionBudget: budget, sessionState: "closed")
}

@Suite struct RefitTests {
    @Test func sha256MatchesKnownDigests() {
        #expect(SHA256.hex([]) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(SHA256.hex(Array("abc".utf8)) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        let long = Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8)
        #expect(SHA256.hex(long) == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
    }

    /// Logged by a uniform policy; the target always picks model 1. The estimate must find model
    /// 1's quality even with a reward model that is wrong everywhere.
    @Test func doublyRobustEstimateRecoversTheTargetsValue() {
        var random = SplitMix64(seed: 5)
        var sessions: [[DecisionRecord]] = []
        for s in 0..<400 {
            sessions.append((1...4).map { t in
                loggedTurn(session: "s\(s)", turn: t, model: Int(random.next() % 2), propensity: 0.5)
            })
        }
        let wrong = OffPolicyEvaluation.RewardModel(tasks: ["qa"], quality: [[0.5, 0.5], [0.5, 0.5]],
                                                    costUSD: [[0.001, 0.001], [0.001, 0.001]])
        let target = Prefers(model: 1, exploration: 0)
        let uniform = Prefers(model: 0, exploration: 1)
        let e = OffPolicyEvaluation.compare(candidate: target, active: uniform, sessions: sessions, model: wrong,
                                            lambda: 0, priceScaleUSD: 0.001, resamples: 200)
        #expect(abs(e.candidate.quality - 0.9) < 1e-9)
        #expect(abs(e.candidate.cost_usd - 4 * 0.0005) < 1e-9)
        #expect(abs(e.active.quality - 0.6) < 0.03)
        #expect(e.difference_low > 0.2 && e.difference_low <= e.difference && e.difference <= e.difference_high)
        #expect(e.candidate.effective_sessions > 150 && e.candidate.effective_sessions < 250)
    }

    /// The bankruptcy check replays a session's holds under the policy's own choices: spending
    /// model 1's 1,000 on the first turn leaves 50 of 1,050, where not even model 0's hold of
    /// 100 fits.
    @Test func replayFindsTheBankruptcyOfAnExpensivePolicy() {
        let session = (1...3).map { t in loggedTurn(session: "b", turn: t, model: 0, propensity: 1, budget: 1_050) }
        let model = OffPolicyEvaluation.RewardModel(tasks: [], quality: [[0.3, 0.9]], costUSD: [[0.00005, 0.001]])
        #expect(OffPolicyEvaluation.trajectory(session, policy: Prefers(model: 1, exploration: 0), model: model).bankrupt)
        #expect(!OffPolicyEvaluation.trajectory(session, policy: Prefers(model: 0, exploration: 0), model: model).bankrupt)
    }

    @Test func refitDataKeepsCompleteSessionsAndSplitsStably() {
        var rows: [DecisionRecord] = []
        for s in 0..<200 { rows += (1...3).map { loggedTurn(session: "s\(s)", turn: $0, model: 1, propensity: 0.9) } }
        let gap = [loggedTurn(session: "gap", turn: 1, model: 1, propensity: 0.9),
                   loggedTurn(session: "gap", turn: 3, model: 1, propensity: 0.9)]
        var noQuality = loggedTurn(session: "nq", turn: 1, model: 1, propensity: 0.9)
        noQuality.quality = nil
        var expired = loggedTurn(session: "ex", turn: 1, model: 1, propensity: 0.9)
        expired.status = "expired"
        rows += gap + [noQuality, expired]
        let data = RefitData(decisions: rows, poolSize: 2, heldOutShare: 0.25, seed: 9)
        #expect(data.sessions == 200 && data.decisions == 600)
        #expect(data.skipped == ["turns_missing": 1, "no_quality": 1, "not_reported": 1])
        #expect(data.heldOut.count > 30 && data.heldOut.count < 70)
        let reversed = RefitData(decisions: Array(rows.reversed().sorted { ($0.sessionID, $0.turn) < ($1.sessionID, $1.turn) }),
                                 poolSize: 2, heldOutShare: 0.25, seed: 9)
        #expect(Set(reversed.heldOut.map { $0[0].sessionID }) == Set(data.heldOut.map { $0[0].sessionID }))
    }

    @Test func promotionRuleNamesWhatFailed() {
        let base = OPEEstimate(quality: 0.8, cost_usd: 0.01, bankruptcy_rate: 0.0, objective: 0.8, effective_sessions: 500)
        var e = OPEComparison(sessions: 500, lambda: 0, candidate: base, active: base, difference: 0.0,
                              difference_low: -0.005, difference_high: 0.005)
        var settings = Configuration.RefitSettings()
        #expect(Refit.verdict(e, settings: settings).promote)
        e.difference_low = -0.02
        let worse = Refit.verdict(e, settings: settings)
        #expect(!worse.promote && worse.reason.contains("may be worse"))
        e.difference_low = 0
        e.candidate.bankruptcy_rate = 0.02
        let broke = Refit.verdict(e, settings: settings)
        #expect(!broke.promote && broke.reason.contains("bankruptcy"))
        e.candidate.bankruptcy_rate = 0
        e.candidate.effective_sessions = 10
        let thin = Refit.verdict(e, settings: settings)
        #expect(!thin.promote && thin.reason.contains("effective sessions"))
        settings.minEffectiveSessions = 5
        #expect(Refit.verdict(e, settings: settings).promote)
    }

    /// A refit on a small log trains a policy the daemon can load, written atomically.
    @Test func trainedCandidateIsALoadablePolicyFile() throws {
        var rows: [DecisionRecord] = []
        var random = SplitMix64(seed: 2)
        for s in 0..<60 {
            rows += (1...4).map { loggedTurn(session: "s\(s)", turn: $0, model: Int(random.next() % 2), propensity: 0.5) }
        }
        let data = RefitData(decisions: rows, poolSize: 2, heldOutShare: 0.2, seed: 1)
        var c = RefitConfiguration()
        c.cql.steps = 50
        c.cql.hidden = [16]
        c.hbr.logUniformBudgets = 3
        let policy = try Refit.train(data, pool: ["a", "b"], featurizer: HashingFeaturizer(), version: "v-test",
                                     configuration: c)
        #expect(policy.training["sessions"] == Double(data.training.count) && (policy.training["transitions"] ?? 0) > 0)
        let dir = try makeTempDirectory().path + "/policies"
        let store = PolicyStore(directory: dir, activeLink: dir + "/active.json")
        let (path, sum) = try store.write(policy)
        #expect(try store.checksum(of: path) == sum)
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == ["v-test.json"])
        try store.activate(path: path)
        let pool = ModelPool(models: ["a", "b"].map {
            ModelSpec(name: $0, inputPrice: 1, outputPrice: 1, maxOutputTokens: 1, quality: 0.5, taskQuality: [:])
        })
        let loaded = try LearnedPolicy.load(path: dir + "/active.json", pool: pool, featurizer: HashingFeaturizer())
        #expect(loaded.version == "v-test")
    }

    /// The active link never replaces a regular file, and a refused activation puts back the
    /// previous link exactly as it was, relative target included.
    @Test func activeLinkKeepsRegularFilesAndRestoresVerbatim() throws {
        let dir = try makeTempDirectory().path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let store = PolicyStore(directory: dir, activeLink: dir + "/active.json")
        try Data("hand-made policy".utf8).write(to: URL(fileURLWithPath: dir + "/active.json"))
        #expect(throws: RefitError.self) { try store.activate(path: dir + "/v1.json") }
        #expect(try String(contentsOfFile: dir + "/active.json", encoding: .utf8) == "hand-made policy")

        unlink(dir + "/active.json")
        symlink("v0.json", dir + "/active.json")  // relative, as an operator may make it
        let previous = try store.activate(path: dir + "/v1.json")
        #expect(try FileManager.default.destinationOfSymbolicLink(atPath: dir + "/active.json") == dir + "/v1.json")
        try store.restore(previous)
        #expect(try FileManager.default.destinationOfSymbolicLink(atPath: dir + "/active.json") == "v0.json")
        #expect(try store.exclusively { 42 } == 42)
    }
}
