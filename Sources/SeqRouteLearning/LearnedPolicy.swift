// A trained network as a routing policy: the greedy feasible action of its scores (Q-values
// for CQL, logits for behaviour cloning). The same type is what a policy file holds.

import Foundation
import SeqRouteCore

public struct LearnedPolicy: Sendable, Codable {
    public var version: String
    /// "cql" or "bc".
    public var kind: String
    /// The model pool, in the network's output order.
    public var pool: [String]
    /// The featurizer's identity (HashingFeaturizer.identity) the features came from.
    public var featurizer: String
    public var encoder: StateEncoder
    public var scale: RewardScale
    public var lambdaRange: [Double]
    public var network: MLP
    /// How the network's outputs make the scores (always per-action for "bc"). Files written
    /// before the shadow-price head existed lack it: per-action.
    public var head: QHead
    public var training: [String: Double]

    public init(version: String, kind: String, pool: [String], featurizer: String, encoder: StateEncoder,
                scale: RewardScale, lambdaRange: [Double], network: MLP, head: QHead = .perAction,
                training: [String: Double]) {
        self.version = version
        self.kind = kind
        self.pool = pool
        self.featurizer = featurizer
        self.encoder = encoder
        self.scale = scale
        self.lambdaRange = lambdaRange
        self.network = network
        self.head = head
        self.training = training
    }

    enum CodingKeys: String, CodingKey {
        case version, kind, pool, featurizer, encoder, scale, lambdaRange, network, head, training
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        version = try c.decode(String.self, forKey: .version)
        kind = try c.decode(String.self, forKey: .kind)
        pool = try c.decode([String].self, forKey: .pool)
        featurizer = try c.decode(String.self, forKey: .featurizer)
        encoder = try c.decode(StateEncoder.self, forKey: .encoder)
        scale = try c.decode(RewardScale.self, forKey: .scale)
        lambdaRange = try c.decode([Double].self, forKey: .lambdaRange)
        network = try c.decode(MLP.self, forKey: .network)
        head = try c.decodeIfPresent(QHead.self, forKey: .head) ?? .perAction
        training = try c.decode([String: Double].self, forKey: .training)
    }

    /// Scores of every model for one state.
    public func scores(features: ArraySlice<Float>, taskIndex: Int?, turn: Int, horizon: Int, budgetUSD: Double,
                       remainingUSD: Double, holdsUSD: [Double], feasible: UInt32, previous: Int?,
                       lambda: Double) -> [Float] {
        var row = [Float](repeating: 0, count: encoder.width)
        row.withUnsafeMutableBufferPointer {
            encoder.encode(into: $0, features: features, taskIndex: taskIndex, turn: turn, horizon: horizon,
                           budgetUSD: budgetUSD, remainingUSD: remainingUSD, holdsUSD: holdsUSD, feasible: feasible,
                           previous: previous, lambda: lambda)
        }
        let outputs = network.outputs(row, batch: 1)
        guard head != .perAction else { return outputs }
        var q = [Float](repeating: 0, count: encoder.modelCount)
        QFunction(head: head, encoder: encoder, scale: scale)
            .values(outputs, row: 0, priorRow: encoder.priorRow(taskIndex: taskIndex, turn: turn, horizon: horizon),
                    lambda: Float(lambda), into: &q)
        return q
    }

    /// The best-scoring feasible model, or nil when none is feasible.
    public func choose(scores: [Float], feasible: UInt32) -> Int? {
        argmax(scores, row: 0, k: encoder.modelCount, mask: feasible)
    }
}

/// A learned policy playing in the simulator at a fixed λ.
public struct LearnedSimPolicy: SimPolicy {
    public let policy: LearnedPolicy
    public let data: QueryData
    public let lambda: Double

    public init(policy: LearnedPolicy, data: QueryData, lambda: Double) {
        self.policy = policy
        self.data = data
        self.lambda = lambda
    }

    public func choose(_ s: SimState, random: inout SplitMix64) -> Int? {
        let mask = feasibleMask(s.feasible)
        let scores = policy.scores(features: data.features(of: s.queryIndex), taskIndex: data.taskIndex[s.queryIndex],
                                   turn: s.turn, horizon: s.horizon, budgetUSD: s.budgetUSD,
                                   remainingUSD: s.remainingUSD, holdsUSD: s.holdsUSD, feasible: mask,
                                   previous: s.previousAction, lambda: policy.kind == "bc" ? 0 : lambda)
        return policy.choose(scores: scores, feasible: mask)
    }
}
