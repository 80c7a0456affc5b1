// Refit (SPEC 6): the daemon's own decision log → logged sessions → HBR → CQL → a candidate,
// judged against the active policy by off-policy evaluation on held-out sessions. The ledger
// reading and the file handling are the caller's; this is the pure part.

import COpenBLAS
import Foundation
import SeqRouteCore

public struct RefitError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// Complete logged sessions, split into the part trained on and the part held out.
public struct RefitData: Sendable {
    public var training: [[DecisionRecord]]
    public var heldOut: [[DecisionRecord]]
    /// Sessions left out, by reason.
    public var skipped: [String: Int]
    public var decisions: Int
    /// First and last decision time of the sessions used, seconds since 1970.
    public var from: Double?
    public var to: Double?

    /// Groups decisions (ordered by session and turn) into sessions and keeps those a learner
    /// can use: turns 1...n with no gap, every served turn reported with cost and quality, the
    /// pool's shape. The split is a seeded hash of the session id, so it does not depend on order.
    public init(decisions: [DecisionRecord], poolSize: Int, heldOutShare: Double, seed: UInt64) {
        training = []
        heldOut = []
        skipped = [:]
        self.decisions = 0
        var start = 0
        while start < decisions.count {
            var end = start + 1
            while end < decisions.count && decisions[end].sessionID == decisions[start].sessionID { end += 1 }
            let session = Array(decisions[start..<end])
            start = end
            if let reason = Self.unusable(session, poolSize: poolSize) {
                skipped[reason, default: 0] += 1
                continue
            }
            self.decisions += session.count
            from = min(from ?? session[0].decidedAt, session[0].decidedAt)
            to = max(to ?? session[session.count - 1].decidedAt, session[session.count - 1].decidedAt)
            var h = SplitMix64(seed: seed ^ Self.hash(session[0].sessionID))
            if h.unit() < heldOutShare { heldOut.append(session) } else { training.append(session) }
        }
    }

    public var sessions: Int { training.count + heldOut.count }

    static func unusable(_ s: [DecisionRecord], poolSize: Int) -> String? {
        for (i, d) in s.enumerated() {
            if d.turn != i + 1 { return "turns_missing" }
            if d.holds.count != poolSize || d.feasible.count != poolSize { return "pool_shape" }
            if d.features.count != s[0].features.count { return "feature_shape" }
            switch d.status {
            case "bankrupt": continue
            case "reported":
                guard d.cost != nil, d.propensity.map({ $0 > 0 && $0 <= 1 }) == true, d.model != nil else {
                    return "incomplete_row"
                }
                if d.quality == nil { return "no_quality" }
            default: return "not_reported"  // expired, released, or still held
            }
        }
        return nil
    }

    /// FNV-1a, so that the split is stable across runs and platforms.
    static func hash(_ s: String) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in s.utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
        return h
    }
}

public struct RefitConfiguration: Sendable {
    /// The per-action head and α = 0.05: the shadow-price heads, best in the benchmark, rest
    /// on the per-task means as priors, and the log's means of seldom-chosen models are too
    /// rough for them (measured: docs/BENCHMARKS.md, the learning loop).
    public var cql: CQLConfiguration = {
        var c = CQLConfiguration()
        c.head = .perAction
        c.alpha = 0.05
        return c
    }()
    public var hbr = HBRConfiguration()
    /// Give the network each query's feature vector (off: task label, priors and budget state).
    public var queryFeatures = false
    /// Pseudo-count pulling sparse per-task and per-model means towards broader ones.
    public var shrinkage = 10.0
    public init() {}
}

/// Per-model and per-task means of what the log shows, for the encoder's priors and κ. A model
/// seldom chosen borrows from its logged holds (times the log's cost-to-hold ratio) and from the
/// overall mean quality, so that it is neither ignored nor trusted on a handful of turns.
struct LogStatistics {
    let tasks: [String]
    /// Row per task, then a row for an unknown task.
    let quality: [[Double]]
    let costUSD: [[Double]]
    let strongest: Int
    let cheapest: Int

    init(_ sessions: [[DecisionRecord]], modelCount k: Int, shrinkage: Double) {
        var n = [Double](repeating: 0, count: k), q = n, c = n, holdSum = n
        var byTask: [String: (n: [Double], q: [Double], c: [Double])] = [:]
        var decisions = 0.0, qualityAll = 0.0, costAll = 0.0, heldAll = 0.0, served = 0.0
        for d in sessions.joined() {
            decisions += 1
            for m in 0..<k { holdSum[m] += Double(d.holds[m]) / 1_000_000 }
            guard let a = d.model, let quality = d.quality, let cost = d.cost else { continue }
            let usd = Double(cost) / 1_000_000
            n[a] += 1; q[a] += quality; c[a] += usd
            served += 1; qualityAll += quality; costAll += usd; heldAll += Double(d.holds[a]) / 1_000_000
            let task = d.task ?? ""
            var entry = byTask[task] ?? ([Double](repeating: 0, count: k), [Double](repeating: 0, count: k),
                                         [Double](repeating: 0, count: k))
            entry.n[a] += 1; entry.q[a] += quality; entry.c[a] += usd
            byTask[task] = entry
        }
        let meanQuality = served > 0 ? qualityAll / served : 0.5
        let costPerHold = heldAll > 0 ? costAll / heldAll : 1
        let s = shrinkage
        let modelQuality = (0..<k).map { (q[$0] + s * meanQuality) / (n[$0] + s) }
        let modelCost = (0..<k).map { (c[$0] + s * costPerHold * holdSum[$0] / max(decisions, 1)) / (n[$0] + s) }
        tasks = byTask.keys.filter { !$0.isEmpty }.sorted()
        quality = tasks.map { t in
            let e = byTask[t]!
            return (0..<k).map { (e.q[$0] + s * modelQuality[$0]) / (e.n[$0] + s) }
        } + [modelQuality]
        costUSD = tasks.map { t in
            let e = byTask[t]!
            return (0..<k).map { (e.c[$0] + s * modelCost[$0]) / (e.n[$0] + s) }
        } + [modelCost]
        strongest = modelQuality.indices.max { modelQuality[$0] < modelQuality[$1] }!
        cheapest = modelCost.indices.min { modelCost[$0] < modelCost[$1] }!
    }
}

public enum Refit {
    /// Trains a candidate on `data.training`: logged sessions → HBR → CQL with λ as an input.
    public static func train(_ data: RefitData, pool: [String], featurizer: HashingFeaturizer, version: String,
                             configuration c: RefitConfiguration,
                             progress: (String) -> Void = { _ in }) throws -> LearnedPolicy {
        guard pool.count <= 32 else { throw RefitError("pools of more than 32 models are not supported") }
        guard !data.training.isEmpty else { throw RefitError("no logged session to train on") }
        openblas_set_num_threads(1)
        let k = pool.count
        let stats = LogStatistics(data.training, modelCount: k, shrinkage: c.shrinkage)
        let kappa = max(stats.costUSD[stats.tasks.count][stats.strongest], 1e-9)
        let scale = RewardScale(priceScaleUSD: kappa, cheapRatio: stats.costUSD[stats.tasks.count][stats.cheapest] / kappa)
        let dimension = c.queryFeatures ? featurizer.dimension : 0
        let encoder = StateEncoder(featureDimension: dimension, tasks: stats.tasks, modelCount: k,
                                   priceScaleUSD: kappa, lambdaMax: c.hbr.lambdaMax, priorQuality: stats.quality,
                                   priorCost: stats.costUSD.map { $0.map { $0 / kappa } })

        // Every logged decision is one "query" of the learner: its features, task and holds.
        var features: [Float] = [], taskIndex: [Int?] = [], holdsUSD: [[Double]] = []
        var logged: [LoggedSession] = []
        for session in data.training {
            var turns: [LoggedTurn] = []
            for d in session {
                let index = taskIndex.count
                if dimension > 0 {
                    guard d.features.count == dimension else {
                        throw RefitError("logged features have \(d.features.count) values, the featurizer \(dimension)")
                    }
                    features += d.features.map(Float.init)
                }
                taskIndex.append(encoder.taskIndex(d.task))
                let holds = d.holds.map { Double($0) / 1_000_000 }
                holdsUSD.append(holds)
                turns.append(LoggedTurn(queryIndex: index, action: d.model, holdUSD: d.model.map { holds[$0] } ?? 0,
                                        costUSD: Double(d.cost ?? 0) / 1_000_000, quality: d.quality ?? 0,
                                        propensity: d.propensity ?? 1, holdsUSD: holds, feasible: d.feasible))
            }
            logged.append(LoggedSession(session: Session(queries: turns.map(\.queryIndex)),
                                        budgetUSD: Double(session[0].sessionBudget) / 1_000_000, turns: turns))
        }
        let queries = QueryData(dimension: dimension, features: features, taskIndex: taskIndex, holdsUSD: holdsUSD)

        progress("HBR: relabelling \(logged.count) logged sessions")
        var buffer: [Transition] = []
        let counts = HindsightBudgetRelabeling.expand(logged, configuration: c.hbr) { buffer.append($0) }
        guard !buffer.isEmpty else { throw RefitError("the logged sessions gave no transition to learn from") }
        progress("HBR: \(counts.transitions) transitions (\(counts.bankruptcies) bankruptcies); CQL: \(c.cql.steps) steps")
        let trainer = CQLTrainer(encoder: encoder, scale: scale, configuration: c.cql)
        let (network, report) = trainer.train(buffer, data: queries) { step, loss in
            if step % 5_000 == 0 { progress(String(format: "CQL: step %d/%d, TD loss %.4f", step, c.cql.steps, loss)) }
        }
        return LearnedPolicy(version: version, kind: "cql", pool: pool, featurizer: featurizer.identity,
                             encoder: encoder, scale: scale, lambdaRange: [0, c.hbr.lambdaMax], network: network,
                             head: trainer.head,
                             training: ["sessions": Double(data.training.count), "decisions": Double(taskIndex.count),
                                        "transitions": Double(counts.transitions),
                                        "bankruptcy_transitions": Double(counts.bankruptcies),
                                        "steps": Double(report.steps), "seconds": report.seconds,
                                        "td_loss": report.finalTDLoss])
    }

    /// The evaluation's reward model: per task and model means of the training split, so that
    /// the held-out sessions judge it rather than feed it.
    public static func rewardModel(_ data: RefitData, modelCount: Int,
                                   configuration c: RefitConfiguration) -> OffPolicyEvaluation.RewardModel {
        let stats = LogStatistics(data.training, modelCount: modelCount, shrinkage: c.shrinkage)
        return OffPolicyEvaluation.RewardModel(tasks: stats.tasks, quality: stats.quality, costUSD: stats.costUSD)
    }

    /// The promotion rule (docs/LEARNING.md): enough evidence, not worse beyond the tolerance at
    /// the 95% level, and no more bankruptcies than the active policy beyond the bound.
    public static func verdict(_ e: OPEComparison, settings: Configuration.RefitSettings) -> (promote: Bool, reason: String) {
        let figures = [e.difference, e.difference_low, e.difference_high, e.candidate.bankruptcy_rate,
                       e.active.bankruptcy_rate, e.candidate.effective_sessions]
        if !figures.allSatisfy(\.isFinite) {
            return (false, "the evaluation gave a figure that is not a number (the candidate's network diverged?)")
        }
        if e.candidate.effective_sessions < settings.minEffectiveSessions {
            return (false, String(format: "evaluation rests on %.1f effective sessions, fewer than %.0f: the log explores too little where the candidate differs",
                                  e.candidate.effective_sessions, settings.minEffectiveSessions))
        }
        if e.difference_low < -settings.tolerance {
            return (false, String(format: "may be worse: objective difference %.4f, 95%% interval [%.4f, %.4f] reaches below -%.4f",
                                  e.difference, e.difference_low, e.difference_high, settings.tolerance))
        }
        if e.candidate.bankruptcy_rate > e.active.bankruptcy_rate + settings.maxBankruptcyRate {
            return (false, String(format: "bankruptcy rate %.4f exceeds the active policy's %.4f by more than %.4f",
                                  e.candidate.bankruptcy_rate, e.active.bankruptcy_rate, settings.maxBankruptcyRate))
        }
        return (true, String(format: "not worse: objective difference %.4f, 95%% interval [%.4f, %.4f]; bankruptcy %.4f vs %.4f",
                             e.difference, e.difference_low, e.difference_high, e.candidate.bankruptcy_rate,
                             e.active.bankruptcy_rate))
    }
}
