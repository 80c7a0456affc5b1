// Discrete Conservative Q-Learning (CQL(H)) with a double-DQN target, λ as an input (SPEC 2):
//
//   L = Huber(Q(s,a) − y) + α_λ · (logsumexp_{a′ feasible in s} Q(s,a′) − Q(s,a)),
//   y = r_λ + γ (1 − done) Q̄(s′, argmax_{a′ feasible in s′} Q(s′,a′)),
//   r_λ = (q − λ c/κ − P·bankrupt) / (1 + λ κ_cheap/κ),  α_λ = α / (1 + λ κ_cheap/κ).
//
// Rewards are divided by 1 + λ·κ_cheap/κ so that their scale stays put across the λ range
// while the small cost differences among cheap models still count, and the conservative term
// is weighted on that same scale (docs/LEARNING.md says why).
//
// How the network's outputs make Q(s,·) is its head (`QHead`): one output per model, or the
// shadow-price form, in which the network learns only the state's value and what money is
// worth for the rest of the session, and the models are ranked by their expected reward net of
// that price.

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

/// How a network's outputs make Q(s,·).
public enum QHead: String, Sendable, Codable {
    /// One output per model: Q(s,a) is output a.
    case perAction = "per-action"
    /// Two outputs (v, u):
    ///   Q(s,a) = (q̄_a − λ c̄_a)/(1 + λ κ_cheap/κ) + v − softplus(u)·c̄_a,
    /// q̄_a and c̄_a (cost over κ) being the encoder's training means of model a for the turn's
    /// task. v is the value of the state; softplus(u) ≥ 0 is the shadow price of money: what one
    /// κ of spending now costs the rest of the session. Needs an encoder with priors.
    case shadowPrice = "shadow-price"
    /// The shadow-price form plus one free output per model: K + 2 outputs (v, u, A_1…A_K),
    /// Q(s,a) = shadow-price Q(s,a) + A_a.
    case shadowPriceAndAdvantage = "shadow-price+advantage"
    /// The shadow-price form with a third output s, the stakes of the turn:
    ///   Q(s,a) = (g·q̄_a − λ c̄_a)/(1 + λ κ_cheap/κ) + v − softplus(u)·c̄_a,  g = softplus(s)/ln 2,
    /// so that the quality the models differ by can count more on some turns (hard ones) than
    /// the task's means say, and less on others; g = 1 at s = 0.
    case shadowPriceAndStakes = "shadow-price+stakes"
}

/// Q-values from a network's outputs, and the outputs' gradient from the Q-values' gradient.
public struct QFunction: Sendable {
    public let head: QHead
    public let encoder: StateEncoder
    public let scale: RewardScale

    public init(head: QHead, encoder: StateEncoder, scale: RewardScale) {
        precondition(head == .perAction || !encoder.priorQuality.isEmpty,
                     "the shadow-price head needs an encoder with per-task priors")
        self.head = head
        self.encoder = encoder
        self.scale = scale
    }

    public var outputWidth: Int {
        switch head {
        case .perAction: encoder.modelCount
        case .shadowPrice: 2
        case .shadowPriceAndAdvantage: 2 + encoder.modelCount
        case .shadowPriceAndStakes: 3
        }
    }

    /// Q(s,·) of row `row` of `outputs` into `q` from `q[row * k]`.
    public func values(_ outputs: [Float], row: Int, priorRow p: Int, lambda: Float, into q: inout [Float]) {
        let k = encoder.modelCount
        switch head {
        case .perAction:
            for m in 0..<k { q[row * k + m] = outputs[row * k + m] }
        case .shadowPrice, .shadowPriceAndAdvantage, .shadowPriceAndStakes:
            let w = outputWidth, free = head == .shadowPriceAndAdvantage
            let v = outputs[w * row], price = softplus(outputs[w * row + 1])
            let stakes = head == .shadowPriceAndStakes ? softplus(outputs[w * row + 2]) / log(2) : 1
            let d = scale.divisor(lambda)
            for m in 0..<k {
                let quality = Float(encoder.priorQuality[p][m]), cost = Float(encoder.priorCost[p][m])
                q[row * k + m] = (stakes * quality - lambda * cost) / d + v - price * cost
                    + (free ? outputs[w * row + 2 + m] : 0)
            }
        }
    }

    /// Adds to `gradient` (rows of `outputWidth`) the loss's gradient with respect to row
    /// `row`'s outputs, given its gradient `gq` with respect to that row's Q-values.
    public func backward(_ gq: ArraySlice<Float>, outputs: [Float], row: Int, priorRow p: Int, lambda: Float,
                         into gradient: inout [Float]) {
        let k = encoder.modelCount
        switch head {
        case .perAction:
            for (m, g) in gq.enumerated() { gradient[row * k + m] += g }
        case .shadowPrice, .shadowPriceAndAdvantage, .shadowPriceAndStakes:
            let w = outputWidth, free = head == .shadowPriceAndAdvantage, staked = head == .shadowPriceAndStakes
            var gv: Float = 0, gc: Float = 0, gquality: Float = 0
            for (m, g) in gq.enumerated() {
                gv += g
                gc += g * Float(encoder.priorCost[p][m])
                if staked { gquality += g * Float(encoder.priorQuality[p][m]) }
                if free { gradient[w * row + 2 + m] += g }
            }
            gradient[w * row] += gv
            gradient[w * row + 1] -= logistic(outputs[w * row + 1]) * gc  // softplus′ = logistic
            if staked {
                gradient[w * row + 2] += logistic(outputs[w * row + 2]) / log(2) * gquality / scale.divisor(lambda)
            }
        }
    }

    private func logistic(_ u: Float) -> Float { 1 / (1 + exp(-u)) }

    private func softplus(_ u: Float) -> Float { u > 20 ? u : log1p(exp(u)) }
}

public struct CQLConfiguration: Sendable {
    /// The shadow-price head with stakes when the encoder has priors (docs/LEARNING.md:
    /// measured best); `perAction` otherwise.
    public var head = QHead.shadowPriceAndStakes
    public var hidden = [256, 256]
    public var batch = 256
    public var steps = 60_000
    public var learningRate: Float = 3e-4
    /// α on the scale of the rewards trained on.
    public var alpha: Float = 0.01
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

    /// The head trained: the configured one, or per-action when the encoder has no priors.
    public var head: QHead { encoder.priorQuality.isEmpty ? .perAction : configuration.head }

    /// Trains on `transitions`; `progress` is called every 1,000 steps with (step, mean TD loss).
    public func train(_ transitions: [Transition], data: QueryData,
                      progress: (Int, Double) -> Void = { _, _ in }) -> (MLP, TrainingReport) {
        let c = configuration
        let k = encoder.modelCount
        let qf = QFunction(head: head, encoder: encoder, scale: scale)
        var online = MLP(sizes: [encoder.width] + c.hidden + [qf.outputWidth], seed: c.seed)
        var target = online
        var adam = Adam(for: online, learningRate: c.learningRate)
        var random = SplitMix64(seed: c.seed &+ 1)
        let started = Date()
        var lossSum = 0.0, lossCount = 0, lastLoss = 0.0
        let width = encoder.width
        var x = [Float](repeating: 0, count: c.batch * width)
        var xNext = [Float](repeating: 0, count: c.batch * width)
        var picked = [Transition](repeating: transitions[0], count: c.batch)
        var q = [Float](repeating: 0, count: c.batch * k)
        var qNextOnline = q, qNextTarget = q, gq = q
        for step in 1...c.steps {
            for i in 0..<c.batch { picked[i] = transitions[Int(random.next() % UInt64(transitions.count))] }
            fill(&x, &xNext, picked, data)
            let values = online.forward(x, batch: c.batch)
            let out = values.last!
            let outNextOnline = online.outputs(xNext, batch: c.batch)
            let outNextTarget = target.outputs(xNext, batch: c.batch)
            for i in 0..<c.batch {
                let t = picked[i]
                qf.values(out, row: i, priorRow: priorRow(t, data), lambda: t.lambda, into: &q)
                if !t.done {
                    let next = encoder.priorRow(taskIndex: data.taskIndex[Int(t.nextQuery)], turn: Int(t.turn) + 1,
                                                horizon: Int(t.horizon))
                    qf.values(outNextOnline, row: i, priorRow: next, lambda: t.lambda, into: &qNextOnline)
                    qf.values(outNextTarget, row: i, priorRow: next, lambda: t.lambda, into: &qNextTarget)
                }
            }
            for i in gq.indices { gq[i] = 0 }
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
                gq[i * k + a] += max(-1, min(1, delta)) * inv
                if c.conservative {
                    let alpha = c.alpha / scale.divisor(t.lambda)
                    var top = -Float.infinity
                    for m in 0..<k where t.feasible & (1 << m) != 0 { top = max(top, q[i * k + m]) }
                    var sum: Float = 0
                    for m in 0..<k where t.feasible & (1 << m) != 0 { sum += exp(q[i * k + m] - top) }
                    for m in 0..<k where t.feasible & (1 << m) != 0 {
                        gq[i * k + m] += alpha * exp(q[i * k + m] - top) / sum * inv
                    }
                    gq[i * k + a] -= alpha * inv
                }
            }
            var grad = [Float](repeating: 0, count: c.batch * qf.outputWidth)
            for i in 0..<c.batch {
                qf.backward(gq[(i * k)..<((i + 1) * k)], outputs: out, row: i,
                            priorRow: priorRow(picked[i], data), lambda: picked[i].lambda, into: &grad)
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

    private func priorRow(_ t: Transition, _ data: QueryData) -> Int {
        encoder.priorRow(taskIndex: data.taskIndex[Int(t.query)], turn: Int(t.turn), horizon: Int(t.horizon))
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
