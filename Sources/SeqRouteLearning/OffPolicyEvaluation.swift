// Off-policy evaluation on logged sessions (SPEC 6): how a policy would have done on traffic it
// did not route, from the propensities the daemon logged with every choice.
//
// Doubly robust, in two parts, with a reward model r̂(s, a) (per task and model means of
// quality and cost on the training split):
//
// - Direct part, a replay: each held-out session's turns (their task, features and logged
//   holds for every model) are played again under the policy, the budget moving by the
//   policy's own expected spending, E_π[r̂_cost]. Each turn adds E_π[r̂(s̃_t, ·)] at the replayed
//   state s̃_t; a turn where no hold fits the replayed budget is a bankruptcy and it and the
//   turns after it add nothing.
// - Correction, per logged decision d with propensity μ_d: ρ_d = π(a_d | s_d) / μ_d and
//     Σ_d ρ_d (x_d − r̂(s_d, a_d)) / Σ_d ρ_d,
//   what the reward model gets wrong about the choices the policy makes, measured on the
//   outcomes the log really saw.
//
// Why not ratios multiplied along the session: with eleven models and ten turns a product of
// ratios rests on a handful of sessions (estimates came out 0.2 off in quality). Why not the
// correction alone at the logged states: a policy that spends more than the logger would be
// judged with the logger's budget left, which flatters it. A paired bootstrap over sessions
// gives the interval of the difference between two policies. The target is evaluated as it is
// deployed, exploration included, which keeps every ratio finite.

import Foundation
import SeqRouteCore

public struct OPEEstimate: Sendable, Codable, Equatable {
    /// Mean quality per turn (an unserved turn counts 0).
    public var quality: Double
    /// Mean cost per session, USD.
    public var cost_usd: Double
    public var bankruptcy_rate: Double
    /// quality − λ · (cost per turn) / κ, the objective a promotion compares.
    public var objective: Double
    /// (Σ ρ)² / Σ ρ² over the decisions, in sessions: how much of the log the estimate rests on.
    public var effective_sessions: Double
}

public struct OPEComparison: Sendable, Codable, Equatable {
    public var sessions: Int
    public var lambda: Double
    public var candidate: OPEEstimate
    public var active: OPEEstimate
    /// candidate.objective − active.objective, and its 95% bootstrap interval.
    public var difference: Double
    public var difference_low: Double
    public var difference_high: Double
}

public enum OffPolicyEvaluation {
    /// Expected quality and cost (USD) of each model for a turn: the direct part of the estimate.
    public struct RewardModel: Sendable {
        let tasks: [String]
        /// Row per task, then the row for an unknown task; a column per model.
        let quality: [[Double]]
        let costUSD: [[Double]]

        public init(tasks: [String], quality: [[Double]], costUSD: [[Double]]) {
            self.tasks = tasks
            self.quality = quality
            self.costUSD = costUSD
        }

        func row(_ task: String?) -> Int { task.flatMap { tasks.firstIndex(of: $0) } ?? tasks.count }
    }

    /// One logged session as the estimator needs it for one target policy.
    public struct Trajectory: Sendable {
        /// The replay: expected quality and cost (USD) of each turn, 0 from a bankruptcy on.
        public var replayQuality: [Double] = []
        public var replayCostUSD: [Double] = []
        public var bankrupt = false
        /// Per served logged turn: π(a | s) / μ, and the outcome minus r̂ of the logged action.
        public var ratios: [Double] = []
        public var qualityResidual: [Double] = []
        public var costResidual: [Double] = []
        public var turns: Int { replayQuality.count }
    }

    /// Replays the session under `policy` and measures the reward model's errors on the logged
    /// choices. Every session must be a complete logged session (turns 1...n, each served turn
    /// reported with its quality).
    public static func trajectory(_ session: [DecisionRecord], policy: some RoutingPolicy,
                                  model: RewardModel) -> Trajectory {
        var t = Trajectory()
        var previous: Int?
        for d in session {
            defer { previous = d.model }
            guard let a = d.model, let mu = d.propensity, mu > 0 else { continue }
            let row = model.row(d.task)
            t.ratios.append(policy.probability(of: a, in: d.context(previousModel: previous)) / mu)
            t.qualityResidual.append((d.quality ?? 0) - model.quality[row][a])
            t.costResidual.append(Double(d.cost ?? 0) / 1_000_000 - model.costUSD[row][a])
        }
        var spent: Int64 = 0
        var replayed: Int?
        for d in session {
            guard !t.bankrupt else {
                t.replayQuality.append(0)
                t.replayCostUSD.append(0)
                continue
            }
            let budget = BudgetState(sessionBudget: d.sessionBudget, sessionSpent: spent, sessionHeld: 0,
                                     accountRemaining: d.accountRemaining)
            let context = DecisionContext(features: d.features, task: d.task, turn: d.turn, horizon: d.horizon,
                                          budget: budget, lambda: d.lambda, holds: d.holds, previousModel: replayed)
            guard context.anyFeasible else {
                t.bankrupt = true
                t.replayQuality.append(0)
                t.replayCostUSD.append(0)
                continue
            }
            let row = model.row(d.task)
            var eq = 0.0, ec = 0.0
            for m in context.feasible.indices where context.feasible[m] {
                let p = policy.probability(of: m, in: context)
                eq += p * model.quality[row][m]
                ec += p * model.costUSD[row][m]
            }
            t.replayQuality.append(eq)
            t.replayCostUSD.append(ec)
            spent += Int64((ec * 1_000_000).rounded())
            replayed = policy.greedy(context).model
        }
        return t
    }

    /// The estimate over the sessions `indices` (repeats allowed, for the bootstrap).
    public static func estimate(_ trajectories: [Trajectory], indices: [Int], lambda: Double,
                                priceScaleUSD: Double) -> OPEEstimate {
        var turns = 0, bankrupt = 0, decisions = 0
        var replayQuality = 0.0, replayCost = 0.0
        var wsum = 0.0, wsquares = 0.0, dq = 0.0, dc = 0.0
        for i in indices {
            let tr = trajectories[i]
            turns += tr.turns
            if tr.bankrupt { bankrupt += 1 }
            replayQuality += tr.replayQuality.reduce(0, +)
            replayCost += tr.replayCostUSD.reduce(0, +)
            for (k, w) in tr.ratios.enumerated() {
                wsum += w
                wsquares += w * w
                dq += w * tr.qualityResidual[k]
                dc += w * tr.costResidual[k]
            }
            decisions += tr.ratios.count
        }
        let n = Double(max(indices.count, 1))
        // The correction is per served decision; scale it to turns and to sessions.
        let served = Double(decisions) / Double(max(turns, 1))
        let quality = replayQuality / Double(max(turns, 1)) + (wsum > 0 ? dq / wsum : 0) * served
        let cost = replayCost / n + (wsum > 0 ? dc / wsum : 0) * Double(decisions) / n
        let meanTurns = Double(turns) / n
        return OPEEstimate(quality: quality, cost_usd: cost, bankruptcy_rate: Double(bankrupt) / n,
                           objective: quality - lambda * cost / max(meanTurns, 1) / priceScaleUSD,
                           effective_sessions: wsquares > 0 ? wsum * wsum / wsquares / max(meanTurns, 1) : 0)
    }

    /// Estimates both policies on the same sessions, with a paired bootstrap interval of the
    /// difference of their objectives.
    public static func compare(candidate: some RoutingPolicy, active: some RoutingPolicy,
                               sessions: [[DecisionRecord]], model: RewardModel, lambda: Double,
                               priceScaleUSD: Double, resamples: Int = 500, seed: UInt64 = 1) -> OPEComparison {
        let c = sessions.map { trajectory($0, policy: candidate, model: model) }
        let a = sessions.map { trajectory($0, policy: active, model: model) }
        let all = Array(sessions.indices)
        let ce = estimate(c, indices: all, lambda: lambda, priceScaleUSD: priceScaleUSD)
        let ae = estimate(a, indices: all, lambda: lambda, priceScaleUSD: priceScaleUSD)
        var random = SplitMix64(seed: seed)
        var differences: [Double] = []
        for _ in 0..<resamples {
            let pick = all.map { _ in Int(random.next() % UInt64(all.count)) }
            differences.append(estimate(c, indices: pick, lambda: lambda, priceScaleUSD: priceScaleUSD).objective
                               - estimate(a, indices: pick, lambda: lambda, priceScaleUSD: priceScaleUSD).objective)
        }
        differences.sort()
        func quantile(_ p: Double) -> Double {
            differences.isEmpty ? ce.objective - ae.objective
                : differences[min(differences.count - 1, Int(p * Double(differences.count)))]
        }
        return OPEComparison(sessions: sessions.count, lambda: lambda, candidate: ce, active: ae,
                             difference: ce.objective - ae.objective, difference_low: quantile(0.025),
                             difference_high: quantile(0.975))
    }
}
