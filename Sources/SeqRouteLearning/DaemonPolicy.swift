// A trained policy in the daemon: the RoutingPolicy the server calls, reading the same state
// encoding as training did. Money arrives in micro-units and is turned into USD, the unit the
// policy was trained in; the encoder only sees ratios of it.

import Foundation
import SeqRouteCore

public struct PolicyFileError: Error, CustomStringConvertible, Sendable {
    public var description: String
}

extension LearnedPolicy {
    /// Reads a policy file and checks that it fits the daemon: same model pool in the same
    /// order, same featurizer. A truncated or corrupt file is refused with the reason.
    public static func load(path: String, pool: ModelPool, featurizer: HashingFeaturizer) throws -> LearnedPolicy {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw PolicyFileError(description: "cannot read policy file \(path)")
        }
        let policy: LearnedPolicy
        do { policy = try JSONDecoder().decode(LearnedPolicy.self, from: data) } catch {
            throw PolicyFileError(description: "policy file \(path) is not a valid policy (\(error))")
        }
        guard policy.pool == pool.names else {
            throw PolicyFileError(description: "policy \(policy.version) was trained for the pool \(policy.pool), not the configured \(pool.names)")
        }
        guard policy.featurizer == featurizer.identity else {
            throw PolicyFileError(description: "policy \(policy.version) was trained with featurizer \(policy.featurizer), the daemon uses \(featurizer.identity)")
        }
        let e = policy.encoder
        let priorsFit = (e.priorQuality.isEmpty && e.priorCost.isEmpty)
            || (e.stages >= 1 && e.priorQuality.count / (e.tasks.count + 1) == e.stages
                && e.priorQuality.count.isMultiple(of: e.tasks.count + 1) && e.priorCost.count == e.priorQuality.count
                && (e.priorQuality + e.priorCost).allSatisfy { $0.count == e.modelCount })
        guard e.modelCount == pool.count, priorsFit else {
            throw PolicyFileError(description: "policy \(policy.version) has an encoder that does not fit its pool")
        }
        guard policy.head == .perAction || (policy.kind == "cql" && !e.priorQuality.isEmpty) else {
            throw PolicyFileError(description: "policy \(policy.version): the shadow-price head needs a cql policy with priors")
        }
        let n = policy.network
        let outputs = QFunction(head: policy.head, encoder: e, scale: policy.scale).outputWidth
        guard n.inputWidth == e.width, n.outputWidth == outputs,
              n.weights.indices.allSatisfy({ n.weights[$0].count == n.sizes[$0] * n.sizes[$0 + 1] && n.biases[$0].count == n.sizes[$0 + 1] })
        else {
            throw PolicyFileError(description: "policy \(policy.version) has a network whose shape does not match its encoder and pool")
        }
        return policy
    }
}

/// The learned policy as the daemon runs it: greedy on the network's scores among feasible
/// models, exploring at the configured rate, with propensities and scores logged.
public struct LearnedRoutingPolicy: RoutingPolicy {
    public let learned: LearnedPolicy
    public let exploration: Double
    public let defaultHorizon: Int
    public var version: String { learned.version }

    public init(learned: LearnedPolicy, exploration: Double, defaultHorizon: Int) {
        self.learned = learned
        self.exploration = exploration
        self.defaultHorizon = defaultHorizon
    }

    public func greedy(_ c: DecisionContext) -> (model: Int, scores: [Double]?) {
        let mask = feasibleMask(c.feasible)
        let budgetUSD = Double(c.budget.sessionBudget) / 1_000_000
        let remainingUSD = Double(min(c.budget.sessionRemaining, c.budget.accountRemaining)) / 1_000_000
        let scores = learned.scores(features: ArraySlice(c.features.map(Float.init)),
                                    taskIndex: learned.encoder.taskIndex(c.task), turn: c.turn,
                                    horizon: max(c.horizon ?? defaultHorizon, c.turn), budgetUSD: budgetUSD,
                                    remainingUSD: remainingUSD, holdsUSD: c.holds.map { Double($0) / 1_000_000 },
                                    feasible: mask, previous: c.previousModel,
                                    lambda: learned.kind == "bc" ? 0 : c.lambda)
        return (learned.choose(scores: scores, feasible: mask)!, scores.map(Double.init))
    }
}
