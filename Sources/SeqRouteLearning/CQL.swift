// Discrete Conservative Q-Learning (CQL(H)) with a double-DQN target, λ as an input (SPEC 2):
//
//   L = Huber(Q(s,a) − y) + α_λ · (logsumexp_{a′ feasible in s} Q(s,a′) − Q(s,a)),
//   y = r_λ + γ (1 − done) Q̄(s′, argmax_{a′ feasible in s′} Q(s′,a′)),
//   r_λ = (q − λ c/κ − P·bankrupt) / (1 + λ κ_cheap/κ),  α_λ = α / (1 + λ κ_cheap/κ).
//
// Rewards are divided by 1 + λ·κ_cheap/κ so that their scale stays put across the λ range
// while the small cost differences among cheap models still count, and the conservative term
// is weighted on that same scale (docs/LEARNING.md says why).

import Foundation
import SeqRouteCore

/// Per-query arrays the learner and the learned policy read, built once per table (or, for a
/// refit, once per logged decision).
public struct QueryData: Sendable {
    public let dimension: Int
    /// Row-major `records × dimension`.
    public let features: [Float]
    public let taskIndex: [Int?]
    public let holdsUSD: [[Double]]

    public init(dimension: Int, features: [Float], taskIndex: [Int?], holdsUSD: [[Double]]) {
        precondition(features.count == taskIndex.count * dimension && holdsUSD.count == taskIndex.count)
        self.dimension = dimension
        self.features = features
        self.taskIndex = taskIndex
        self.holdsUSD = holdsUSD
    }

    public init(table: QueryTable, holds: Holds, encoder: StateEncoder, featurizer: HashingFeaturizer) {
        let dimension = encoder.featureDimension
        var f = [Float](repeating: 0, count: table.records.count * dimension)
        for (r, record) in table.records.enumerated() {
            let v = record.features ?? featurizer.features(of: record.text)
            for (j, x) in v.prefix(dimension).enumerated() { f[r * dimension + j] = Float(x) }
        }
        self.init(dimension: dimension, features: f, taskIndex: table.records.map { encoder.taskIndex($0.task) },
                  holdsUSD: table.records.map { holds.holdsUSD(task: $0.task) })
    }

    public func features(of record: Int) -> ArraySlice<Float> {
        features[(record * dimension)..<((record + 1) * dimension)]
    }

    /// Writes the state of a transition (its next state when `next`) into row `row` of a
    /// zeroed batch matrix, with λ replaced by `lambda` when given.
    func encode(_ t: Transition, next: Bool = false, row: Int, of matrix: UnsafeMutableBufferPointer<Float>,
                encoder: StateEncoder, lambda: Float? = nil) {
        let q = Int(next ? t.nextQuery : t.query)
        let width = encoder.width
        encoder.encode(into: UnsafeMutableBufferPointer(rebasing: matrix[(row * width)..<((row + 1) * width)]),
                       features: features(of: q), taskIndex: taskIndex[q], turn: Int(t.turn) + (next ? 1 : 0),
                       horizon: Int(t.horizon), budgetUSD: Double(t.budgetUSD),
                       remainingUSD: Double(next ? t.nextRemainingUSD : t.remainingUSD), holdsUSD: holdsUSD[q],
                       feasible: next ? t.nextFeasible : t.feasible,
                       previous: next ? Int(t.action) : (t.previous == Transition.none ? nil : Int(t.previous)),
                       lambda: Double(lambda ?? t.lambda))
    }
}

public struct CQLConfiguration: Sendable {
    public var hidden = [256, 256]
    public var batch = 256
    public var steps = 60_000
    public var learningRate: Float = 3e-4
    /// α on the scale of the rewards trained on.
    public var alpha: Float = 0.05
    public var gamma: Float = 1
    /// Soft target update rate per step.
    public var tau: Float = 0.005
    /// P: the reward lost by a bankruptcy.
    public var bankruptcyPenalty: Float = 1
    /// Off: plain double DQN with the Huber loss (for comparison only).
    public var conservative = true
    public var seed: UInt64 = 11
    public init() {}
}

/// The reward of a transition under its own λ, and the matching weight of the conservative term.
public struct RewardScale: Sendable, Codable, Equatable {
    /// κ: the strongest model's mean cost per turn (USD).
    public let priceScaleUSD: Double
    /// κ_cheap/κ: the cheapest model's mean cost over the strongest's.
    public let cheapRatio: Double

    public init(priceScaleUSD: Double, cheapRatio: Double) {
        self.priceScaleUSD = priceScaleUSD
        self.cheapRatio = cheapRatio
    }

    public func divisor(_ lambda: Float) -> Float { 1 + lambda * Float(cheapRatio) }

    public func reward(_ t: Transition, penalty: Float) -> Float {
        let r = t.quality - t.lambda * t.costUSD / Float(priceScaleUSD) - (t.bankrupt ? penalty : 0)
        return r / divisor(t.lambda)
    }
}

public struct TrainingReport: Sendable, Codable {
    public var steps: Int
    public var seconds: Double
    public var finalTDLoss: Double
}

public struct CQLTrainer: Sendable {
    public let encoder: StateEncoder
    public let scale: RewardScale
    public let configuration: CQLConfiguration

    public init(encoder: StateEncoder, scale: RewardScale, configuration: CQLConfiguration) {
        self.encoder = encoder
        self.scale = scale
        self.configuration = configuration
    }

    /// Trains on `transitions`; `progress` is called every 1,000 steps with (step, mean TD loss).
    public func train(_ transitions: [Transition], data: QueryData,
                      progress: (Int, Double) -> Void = { _, _ in }) -> (MLP, TrainingReport) {
        let c = configuration
        let k = encoder.modelCount
        var online = MLP(sizes: [encoder.width] + c.hidden + [k], seed: c.seed)
        var target = online
        var adam = Adam(for: online, learningRate: c.learningRate)
        var random = SplitMix64(seed: c.seed &+ 1)
        let started = Date()
        var lossSum = 0.0, lossCount = 0, lastLoss = 0.0
        let width = encoder.width
        var x = [Float](repeating: 0, count: c.batch * width)
        var xNext = [Float](repeating: 0, count: c.batch * width)
        var picked = [Transition](repeating: transitions[0], count: c.batch)
        for step in 1...c.steps {
            for i in 0..<c.batch { picked[i] = transitions[Int(random.next() % UInt64(transitions.count))] }
            fill(&x, &xNext, picked, data)
            let values = online.forward(x, batch: c.batch)
            let q = values.last!
            let qNextOnline = online.outputs(xNext, batch: c.batch)
            let qNextTarget = target.outputs(xNext, batch: c.batch)
            var grad = [Float](repeating: 0, count: c.batch * k)
            let inv = 1 / Float(c.batch)
            for i in 0..<c.batch {
                let t = picked[i]
                var y = scale.reward(t, penalty: c.bankruptcyPenalty)
                if !t.done, let best = argmax(qNextOnline, row: i, k: k, mask: t.nextFeasible) {
                    y += c.gamma * qNextTarget[i * k + best]
                }
                let a = Int(t.action)
                let delta = q[i * k + a] - y
                lossSum += Double(abs(delta) <= 1 ? 0.5 * delta * delta : abs(delta) - 0.5)
                lossCount += 1
                grad[i * k + a] += max(-1, min(1, delta)) * inv
                if c.conservative {
                    let alpha = c.alpha / scale.divisor(t.lambda)
                    var top = -Float.infinity
                    for m in 0..<k where t.feasible & (1 << m) != 0 { top = max(top, q[i * k + m]) }
                    var sum: Float = 0
                    for m in 0..<k where t.feasible & (1 << m) != 0 { sum += exp(q[i * k + m] - top) }
                    for m in 0..<k where t.feasible & (1 << m) != 0 {
                        grad[i * k + m] += alpha * exp(q[i * k + m] - top) / sum * inv
                    }
                    grad[i * k + a] -= alpha * inv
                }
            }
            let g = online.backward(values: values, outputGradient: grad, batch: c.batch)
            adam.apply(g, to: &online)
            target.blend(toward: online, rate: c.tau)
            if step % 1_000 == 0 {
                lastLoss = lossSum / Double(max(lossCount, 1))
                progress(step, lastLoss)
                lossSum = 0
                lossCount = 0
            }
        }
        return (online, TrainingReport(steps: c.steps, seconds: Date().timeIntervalSince(started), finalTDLoss: lastLoss))
    }

    private func fill(_ x: inout [Float], _ xNext: inout [Float], _ batch: [Transition], _ data: QueryData) {
        for i in x.indices { x[i] = 0 }
        for i in xNext.indices { xNext[i] = 0 }
        x.withUnsafeMutableBufferPointer { xs in
            xNext.withUnsafeMutableBufferPointer { xn in
                for (i, t) in batch.enumerated() {
                    data.encode(t, row: i, of: xs, encoder: encoder)
                    if !t.done { data.encode(t, next: true, row: i, of: xn, encoder: encoder) }
                }
            }
        }
    }
}

/// The index of the largest value among the masked entries of one row, or nil if none.
func argmax(_ values: [Float], row: Int, k: Int, mask: UInt32) -> Int? {
    var best: Int?
    for m in 0..<k where mask & (1 << m) != 0 {
        if best == nil || values[row * k + m] > values[row * k + best!] { best = m }
    }
    return best
}
