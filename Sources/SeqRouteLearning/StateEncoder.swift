// The state s_t of SPEC section 2 as the network's input vector. Money enters only as ratios
// (to the budget, to the turns left, to the price scale κ), so the same encoder serves the
// simulation (USD) and the daemon (micro-units converted to USD).

import Foundation

public struct StateEncoder: Sendable, Codable, Equatable {
    public let featureDimension: Int
    /// Training task labels, one-hot; an unknown task is all zeros.
    public let tasks: [String]
    public let modelCount: Int
    /// κ: the strongest model's mean cost per turn on training queries, in USD.
    public let priceScaleUSD: Double
    /// The top of the trained λ range (λ is encoded on a log scale up to it).
    public let lambdaMax: Double
    /// Training statistics per task and stage of a session (`priorRow`; the last task row is for
    /// an unknown task): each model's mean quality, and its mean cost over κ. Empty: not encoded.
    public let priorQuality: [[Double]]
    public let priorCost: [[Double]]
    /// How many stages of a session (equal shares of its turns) the priors tell apart: a
    /// session's early queries may be easier than its late ones, and then the models differ
    /// less on them than the task's means say. 1: per task only.
    public let stages: Int

    public init(featureDimension: Int, tasks: [String], modelCount: Int, priceScaleUSD: Double, lambdaMax: Double,
                priorQuality: [[Double]] = [], priorCost: [[Double]] = [], stages: Int = 1) {
        precondition(stages >= 1 && (priorQuality.isEmpty || (priorQuality.count == (tasks.count + 1) * stages
                                                              && priorCost.count == priorQuality.count)),
                     "priors need one row per task and stage, plus one per stage for unknown tasks")
        self.featureDimension = featureDimension
        self.tasks = tasks
        self.modelCount = modelCount
        self.priceScaleUSD = priceScaleUSD
        self.lambdaMax = lambdaMax
        self.priorQuality = priorQuality
        self.priorCost = priorCost
        self.stages = stages
    }

    enum CodingKeys: String, CodingKey {
        case featureDimension, tasks, modelCount, priceScaleUSD, lambdaMax, priorQuality, priorCost, stages
    }

    /// Policy files written before stages existed have priors per task only.
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        featureDimension = try c.decode(Int.self, forKey: .featureDimension)
        tasks = try c.decode([String].self, forKey: .tasks)
        modelCount = try c.decode(Int.self, forKey: .modelCount)
        priceScaleUSD = try c.decode(Double.self, forKey: .priceScaleUSD)
        lambdaMax = try c.decode(Double.self, forKey: .lambdaMax)
        priorQuality = try c.decode([[Double]].self, forKey: .priorQuality)
        priorCost = try c.decode([[Double]].self, forKey: .priorCost)
        stages = try c.decodeIfPresent(Int.self, forKey: .stages) ?? 1
    }

    /// The stage of turn `turn` of `horizon`: 0 for the first share of the turns, up to stages − 1.
    public static func stage(turn: Int, horizon: Int, stages: Int) -> Int {
        min(stages - 1, max(0, stages * (turn - 1) / max(horizon, 1)))
    }

    /// The row of the priors for a task (nil: unknown) at a turn.
    public func priorRow(taskIndex: Int?, turn: Int, horizon: Int) -> Int {
        (taskIndex ?? tasks.count) * stages + StateEncoder.stage(turn: turn, horizon: horizon, stages: stages)
    }

    static let scalarCount = 6
    var priorWidth: Int { priorQuality.isEmpty ? 0 : 2 * modelCount }

    /// features, task one-hot, 6 budget and time scalars, per model (affordability, feasible),
    /// per model priors (mean quality, log(1 + mean cost/κ)) when given, previous action
    /// one-hot (with "none").
    public var width: Int {
        featureDimension + tasks.count + StateEncoder.scalarCount + 2 * modelCount + priorWidth + modelCount + 1
    }

    public func taskIndex(_ task: String?) -> Int? { task.flatMap { tasks.firstIndex(of: $0) } }

    /// Writes one state into `row` (which must be `width` long and zeroed).
    public func encode(into row: UnsafeMutableBufferPointer<Float>, features: ArraySlice<Float>, taskIndex: Int?,
                       turn: Int, horizon: Int, budgetUSD: Double, remainingUSD: Double, holdsUSD: [Double],
                       feasible: UInt32, previous: Int?, lambda: Double) {
        var i = 0
        for f in features.prefix(featureDimension) {
            row[i] = f
            i += 1
        }
        i = featureDimension
        if let taskIndex { row[i + taskIndex] = 1 }
        i += tasks.count
        let turnsLeft = Double(max(1, horizon - turn + 1))
        let allowance = max(remainingUSD, 0) / turnsLeft
        row[i] = Float(min(Double(turn) / Double(max(horizon, 1)), 2))
        row[i + 1] = Float(turnsLeft / 16)
        row[i + 2] = Float(budgetUSD > 0 ? max(remainingUSD, 0) / budgetUSD : 0)
        row[i + 3] = Float(log1p(budgetUSD / (Double(max(horizon, 1)) * priceScaleUSD)))
        row[i + 4] = Float(log1p(allowance / priceScaleUSD))
        // Beyond the trained range the network sees λ_max; the heads with a shadow price still
        // charge the whole λ through their explicit cost term.
        row[i + 5] = Float(log1p(min(lambda, lambdaMax)) / log1p(lambdaMax))
        i += StateEncoder.scalarCount
        for m in 0..<modelCount {
            let ratio = allowance > 0 ? holdsUSD[m] / allowance : 4
            row[i + 2 * m] = Float(min(ratio, 4) / 4)
            row[i + 2 * m + 1] = feasible & (1 << m) != 0 ? 1 : 0
        }
        i += 2 * modelCount
        if !priorQuality.isEmpty {
            let p = priorRow(taskIndex: taskIndex, turn: turn, horizon: horizon)
            for m in 0..<modelCount {
                row[i + 2 * m] = Float(priorQuality[p][m])
                row[i + 2 * m + 1] = Float(log1p(priorCost[p][m]))
            }
            i += priorWidth
        }
        row[i + (previous ?? modelCount)] = 1
    }
}

/// A feasible-action mask as bits (model m feasible when bit m is set); pools of up to 32.
public func feasibleMask(_ feasible: [Bool]) -> UInt32 {
    var mask: UInt32 = 0
    for (m, f) in feasible.enumerated() where f { mask |= 1 << m }
    return mask
}
