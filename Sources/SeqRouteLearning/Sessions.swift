// Sessions built from a query table, and the money of the simulation: holds and budget levels
// (SPEC section 7). Money is USD as a Double, like the query table: this is an offline
// benchmark, not the ledger.

import Foundation
import SeqRouteCore

/// The turns of one session: indices into a QueryTable, in turn order.
public struct Session: Sendable, Equatable, Codable {
    public var queries: [Int]
    public init(queries: [Int]) { self.queries = queries }
    /// T, the number of turns.
    public var horizon: Int { queries.count }
}

/// Draws sessions whose queries mostly share a task and tend to get harder, repeatably for a
/// seed.
public struct SessionGenerator: Sendable {
    /// T is uniform over this range.
    public var lengths: ClosedRange<Int>
    /// The chance that each query comes from the session's main task rather than another task.
    public var mainTaskProbability: Double
    /// Standard deviation of the Gaussian noise added to each query's difficulty before the
    /// session is sorted by it; 0 sorts strictly easiest first.
    public var difficultyNoise: Double

    public init(lengths: ClosedRange<Int> = 4...16, mainTaskProbability: Double = 0.8,
                difficultyNoise: Double = 0.15) {
        precondition(lengths.lowerBound >= 1, "a session has at least one turn")
        self.lengths = lengths
        self.mainTaskProbability = mainTaskProbability
        self.difficultyNoise = difficultyNoise
    }

    /// `count` sessions over `table`. The main task is the task of a uniformly drawn query, so
    /// tasks are as common among sessions as among queries. A query already in the session is
    /// redrawn a few times, so repeats are rare unless a task has few queries.
    public func sessions(count: Int, from table: QueryTable, seed: UInt64) -> [Session] {
        precondition(table.count > 0, "no queries to draw sessions from")
        var byTask: [String: [Int]] = [:]
        for (i, r) in table.records.enumerated() { byTask[r.task, default: []].append(i) }
        // Queries outside each task, for the off-task draws.
        var otherThan: [String: [Int]] = [:]
        for task in byTask.keys {
            otherThan[task] = table.records.indices.filter { table.records[$0].task != task }
        }
        let difficulty = table.records.indices.map(table.difficulty)
        var random = SplitMix64(seed: seed)
        var out: [Session] = []
        out.reserveCapacity(count)
        for _ in 0..<count {
            let length = lengths.lowerBound + Int(random.next() % UInt64(lengths.count))
            let mainTask = table.records[Int(random.next() % UInt64(table.count))].task
            let main = byTask[mainTask]!, others = otherThan[mainTask]!
            var queries: [Int] = []
            for _ in 0..<length {
                let pool = others.isEmpty || random.unit() < mainTaskProbability ? main : others
                var q = pool[Int(random.next() % UInt64(pool.count))]
                // A few redraws make repeats vanishingly rare without looping on a small task.
                var tries = 0
                while queries.contains(q), tries < 8 {
                    q = pool[Int(random.next() % UInt64(pool.count))]
                    tries += 1
                }
                queries.append(q)
            }
            let keys = queries.map { difficulty[$0] + difficultyNoise * gaussian(&random) }
            let order = queries.indices.sorted { keys[$0] < keys[$1] }
            out.append(Session(queries: order.map { queries[$0] }))
        }
        return out
    }
}

/// A standard normal draw (Box-Muller).
func gaussian(_ random: inout SplitMix64) -> Double {
    let u = 1 - random.unit()  // in (0, 1], so the logarithm is finite
    let v = random.unit()
    return (-2 * log(u)).squareRoot() * cos(2 * Double.pi * v)
}

/// The simulation's holds: for a model and a task, `factor` (1.25) × the highest cost that model
/// had on training queries of that task, the upper estimate a daemon would reserve. A task
/// unseen in training falls back to the model's highest training cost over all tasks.
public struct Holds: Sendable {
    public static let defaultFactor = 1.25
    /// Model order of the training table.
    public let models: [String]
    public let byTaskUSD: [String: [Double]]
    public let fallbackUSD: [Double]

    public init(training: QueryTable, factor: Double = Holds.defaultFactor) {
        let k = training.models.count
        var highest: [String: [Double]] = [:]
        var overall = [Double](repeating: 0, count: k)
        for (i, r) in training.records.enumerated() {
            var row = highest[r.task] ?? [Double](repeating: 0, count: k)
            for m in 0..<k {
                row[m] = max(row[m], training.costUSD(i, m))
                overall[m] = max(overall[m], training.costUSD(i, m))
            }
            highest[r.task] = row
        }
        models = training.models
        byTaskUSD = highest.mapValues { $0.map { $0 * factor } }
        fallbackUSD = overall.map { $0 * factor }
    }

    public func holdsUSD(task: String) -> [Double] { byTaskUSD[task] ?? fallbackUSD }
}

/// Session budgets B = T · (h̄ + ρ · (c̄ − h̄)): h̄ is the cheapest model's mean hold and c̄ the
/// strongest model's mean cost over training queries, so ρ = 0 affords the cheapest model's
/// holds on an average turn and ρ = 1 the strongest model's average cost.
public struct BudgetLevels: Sendable {
    /// The budget levels of the benchmark.
    public static let rhos: [Double] = [0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0]
    /// TrainingStats' cheapest (lowest mean cost) and strongest (highest mean quality) models.
    public let cheapestModel: Int
    public let strongestModel: Int
    /// h̄.
    public let cheapestMeanHoldUSD: Double
    /// c̄.
    public let strongestMeanCostUSD: Double

    public init(stats: TrainingStats, holds: Holds) {
        cheapestModel = stats.cheapestModel
        strongestModel = stats.strongestModel
        let n = Double(stats.taskCounts.values.reduce(0, +))
        // Sorted, so that the sum is the same bits in every process.
        cheapestMeanHoldUSD = stats.taskCounts.keys.sorted().reduce(0) { sum, task in
            sum + Double(stats.taskCounts[task]!) * holds.holdsUSD(task: task)[stats.cheapestModel]
        } / n
        strongestMeanCostUSD = stats.meanCostUSD[stats.strongestModel]
    }

    public func budgetUSD(turns: Int, rho: Double) -> Double {
        Double(turns) * (cheapestMeanHoldUSD + rho * (strongestMeanCostUSD - cheapestMeanHoldUSD))
    }

    public func budgetsUSD(for sessions: [Session], rho: Double) -> [Double] {
        sessions.map { budgetUSD(turns: $0.horizon, rho: rho) }
    }
}
