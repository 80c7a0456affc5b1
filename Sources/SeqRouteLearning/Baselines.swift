// The baseline policies of SPEC section 7 and the behaviour policy that logs training data.
// Each knows only training statistics (per task and model: mean quality and mean cost) and the
// state; "best model" means the highest training mean quality for the query's task. None of
// them uses its random stream except `RandomHeuristic` and `BehaviourPolicy`.

import SeqRouteCore

/// Means over training queries, per task and overall, in table model order.
public struct TrainingStats: Sendable {
    public let models: [String]
    public let taskCounts: [String: Int]
    public let meanQualityByTask: [String: [Double]]
    public let meanCostUSDByTask: [String: [Double]]
    public let meanQuality: [Double]
    public let meanCostUSD: [Double]
    /// Lowest overall mean cost (first in name order on a tie).
    public let cheapestModel: Int
    /// Highest overall mean quality (first in name order on a tie).
    public let strongestModel: Int

    public init(training: QueryTable) {
        precondition(training.count > 0 && !training.models.isEmpty, "empty training table")
        let k = training.models.count
        var counts: [String: Int] = [:]
        var quality: [String: [Double]] = [:], cost: [String: [Double]] = [:]
        var totalQuality = [Double](repeating: 0, count: k), totalCost = totalQuality
        for (i, r) in training.records.enumerated() {
            counts[r.task, default: 0] += 1
            var q = quality[r.task] ?? [Double](repeating: 0, count: k), c = cost[r.task] ?? q
            for m in 0..<k {
                q[m] += training.quality(i, m)
                c[m] += training.costUSD(i, m)
                totalQuality[m] += training.quality(i, m)
                totalCost[m] += training.costUSD(i, m)
            }
            quality[r.task] = q
            cost[r.task] = c
        }
        let n = Double(training.count)
        models = training.models
        taskCounts = counts
        func means(_ sums: [String: [Double]]) -> [String: [Double]] {
            sums.reduce(into: [:]) { out, e in out[e.key] = e.value.map { $0 / Double(counts[e.key]!) } }
        }
        meanQualityByTask = means(quality)
        meanCostUSDByTask = means(cost)
        meanQuality = totalQuality.map { $0 / n }
        meanCostUSD = totalCost.map { $0 / n }
        let mq = meanQuality, mc = meanCostUSD
        cheapestModel = mc.indices.min { mc[$0] < mc[$1] }!
        strongestModel = mq.indices.max { mq[$0] < mq[$1] }!
    }

    /// Per-model mean quality for a task, or over all tasks when training never saw it.
    public func quality(task: String) -> [Double] { meanQualityByTask[task] ?? meanQuality }
    public func costUSD(task: String) -> [Double] { meanCostUSDByTask[task] ?? meanCostUSD }
}

/// A heuristic with one knob, swept into a cost-quality frontier over `knobs`.
public protocol KnobbedHeuristic: SimPolicy {
    static var knobs: [Double] { get }
    init(knob: Double, stats: TrainingStats)
}

// MARK: - Shared choices

/// The feasible model with the smallest hold for this query (then the lower training mean cost
/// for the task): the choice that keeps the most budget for later turns.
func cheapestFeasible(_ s: SimState, _ stats: TrainingStats) -> Int {
    let cost = stats.costUSD(task: s.task)
    var best = -1
    for m in s.feasible.indices where s.feasible[m] {
        if best < 0 || s.holdsUSD[m] < s.holdsUSD[best]
            || (s.holdsUSD[m] == s.holdsUSD[best] && cost[m] < cost[best]) {
            best = m
        }
    }
    return best
}

/// The best model for the task among feasible models that `allowed` accepts, the smaller hold
/// winning a tie; nil when none qualifies.
func bestFeasible(_ s: SimState, _ stats: TrainingStats, where allowed: (Int) -> Bool) -> Int? {
    let quality = stats.quality(task: s.task)
    var best: Int?
    for m in s.feasible.indices where s.feasible[m] && allowed(m) {
        guard let b = best else { best = m; continue }
        if quality[m] > quality[b] || (quality[m] == quality[b] && s.holdsUSD[m] < s.holdsUSD[b]) { best = m }
    }
    return best
}

/// The even share of what is left: remaining budget over the turns left, this one included.
func pacingAllowanceUSD(_ s: SimState) -> Double { s.remainingUSD / Double(s.turnsLeft) }

// MARK: - Static policies

/// Always the same model; when its hold does not fit, the cheapest feasible model instead (so
/// that the turn is still served and the comparison with budget-aware policies is fair).
/// `cheapest(_:)` and `strongest(_:)` are the named single models of the benchmark.
public struct SingleModelHeuristic: SimPolicy {
    public let model: Int
    public let stats: TrainingStats

    public init(model: Int, stats: TrainingStats) {
        self.model = model
        self.stats = stats
    }

    public static func cheapest(_ stats: TrainingStats) -> SingleModelHeuristic {
        SingleModelHeuristic(model: stats.cheapestModel, stats: stats)
    }

    public static func strongest(_ stats: TrainingStats) -> SingleModelHeuristic {
        SingleModelHeuristic(model: stats.strongestModel, stats: stats)
    }

    public func choose(_ s: SimState, random: inout SplitMix64) -> Int? {
        s.feasible[model] ? model : cheapestFeasible(s, stats)
    }
}

/// Uniform over the feasible models.
public struct RandomHeuristic: SimPolicy {
    public private(set) var lastPropensity = 1.0

    public init() {}

    public mutating func choose(_ s: SimState, random: inout SplitMix64) -> Int? {
        let feasible = s.feasible.indices.filter { s.feasible[$0] }
        lastPropensity = 1 / Double(feasible.count)
        return feasible[Int(random.next() % UInt64(feasible.count))]
    }
}

// MARK: - Budget-aware heuristics

/// Pacing: the best model whose hold fits the allowance `knob` × remaining / turns left; when none
/// does, the cheapest feasible model. Knob 1 spreads the budget evenly; above 1 it spends
/// earlier, below 1 it saves.
public struct PacingHeuristic: KnobbedHeuristic {
    public static let knobs: [Double] = [0.5, 0.75, 1, 1.25, 1.5, 2, 3]
    public let allowanceFactor: Double
    public let stats: TrainingStats

    public init(knob: Double = 1, stats: TrainingStats) {
        allowanceFactor = knob
        self.stats = stats
    }

    public func choose(_ s: SimState, random: inout SplitMix64) -> Int? {
        let allowance = allowanceFactor * pacingAllowanceUSD(s)
        return bestFeasible(s, stats) { s.holdsUSD[$0] <= allowance } ?? cheapestFeasible(s, stats)
    }
}

/// Threshold: the best feasible model while the remaining budget fraction is above τ (the
/// knob), then pacing's choice (knob 1) for the rest of the session.
public struct ThresholdHeuristic: KnobbedHeuristic {
    public static let knobs: [Double] = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    public let tau: Double
    public let stats: TrainingStats

    public init(knob: Double, stats: TrainingStats) {
        tau = knob
        self.stats = stats
    }

    public func choose(_ s: SimState, random: inout SplitMix64) -> Int? {
        if s.budgetFraction > tau, let best = bestFeasible(s, stats, where: { _ in true }) { return best }
        return PacingHeuristic(knob: 1, stats: stats).choose(s, random: &random)
    }
}

/// Greedy with a reserve: the best model whose hold leaves at least r (the knob) × the
/// smallest hold of this query × the turns after this one; when none does, the cheapest
/// feasible model. This query's smallest hold stands in for what a cheap later turn will need.
public struct ReserveHeuristic: KnobbedHeuristic {
    public static let knobs: [Double] = [0, 0.5, 1, 1.5, 2, 3, 5]
    public let reserveFactor: Double
    public let stats: TrainingStats

    public init(knob: Double, stats: TrainingStats) {
        reserveFactor = knob
        self.stats = stats
    }

    public func choose(_ s: SimState, random: inout SplitMix64) -> Int? {
        let reserve = reserveFactor * s.holdsUSD.min()! * Double(s.turnsLeft - 1)
        return bestFeasible(s, stats) { s.remainingUSD - s.holdsUSD[$0] >= reserve } ?? cheapestFeasible(s, stats)
    }
}

/// A myopic per-query router: relative to the task's cheapest model (by training mean cost) a
/// model qualifies when its predicted quality gain per extra cost is at least θ (the knob), or
/// when it is no dearer and no worse. Cost is measured in units of the strongest model's mean
/// cost, so θ is unitless: θ = 0.3 asks for 0.3 quality per strongest-model call's worth of money.
/// Among qualifying feasible models whose hold fits pacing's allowance (the budget guard) it
/// takes the best; when none fits, the cheapest feasible model.
public struct MyopicRouter: KnobbedHeuristic {
    public static let knobs: [Double] = [0, 0.1, 0.2, 0.3, 0.5, 1, 2, 4, 8]
    public let theta: Double
    public let stats: TrainingStats

    public init(knob: Double, stats: TrainingStats) {
        theta = knob
        self.stats = stats
    }

    public func choose(_ s: SimState, random: inout SplitMix64) -> Int? {
        let quality = stats.quality(task: s.task), cost = stats.costUSD(task: s.task)
        let scale = stats.meanCostUSD[stats.strongestModel]
        let base = cost.indices.min { cost[$0] < cost[$1] }!
        let allowance = pacingAllowanceUSD(s)
        let pick = bestFeasible(s, stats) { m in
            guard s.holdsUSD[m] <= allowance else { return false }
            let gain = quality[m] - quality[base], extraUSD = cost[m] - cost[base]
            return extraUSD <= 0 ? gain >= 0 : gain / (extraUSD / scale) >= theta
        }
        return pick ?? cheapestFeasible(s, stats)
    }
}

// MARK: - Behaviour policy

/// The policy that produces the logged training data: per session it picks one component
/// heuristic uniformly, and per turn it explores around that component's choice with rate ε,
/// uniformly over the feasible models (SeqRouteCore's `explore`). The propensity it reports is
/// the probability of the action under the component used for the session:
/// (1 − ε)·[a = greedy] + ε / |feasible|. Components must be deterministic.
public struct BehaviourPolicy: SimPolicy {
    /// Each component is reset and asked in place, so one may keep per-session state.
    public private(set) var components: [any SimPolicy]
    public let exploration: Double
    private var current = 0
    public private(set) var lastPropensity = 1.0

    public init(components: [any SimPolicy], exploration: Double = 0.2) {
        precondition(!components.isEmpty, "a behaviour policy needs components")
        self.components = components
        self.exploration = exploration
    }

    /// Every knob of pacing, threshold, reserve and the myopic router, plus the cheapest and the
    /// strongest model.
    public static func defaultComponents(_ stats: TrainingStats) -> [any SimPolicy] {
        var out: [any SimPolicy] = []
        out += PacingHeuristic.knobs.map { PacingHeuristic(knob: $0, stats: stats) }
        out += ThresholdHeuristic.knobs.map { ThresholdHeuristic(knob: $0, stats: stats) }
        out += ReserveHeuristic.knobs.map { ReserveHeuristic(knob: $0, stats: stats) }
        out += MyopicRouter.knobs.map { MyopicRouter(knob: $0, stats: stats) }
        out.append(SingleModelHeuristic.cheapest(stats))
        out.append(SingleModelHeuristic.strongest(stats))
        return out
    }

    public mutating func reset(session: Session, budgetUSD: Double, random: inout SplitMix64) {
        current = Int(random.next() % UInt64(components.count))
        components[current].reset(session: session, budgetUSD: budgetUSD, random: &random)
    }

    public mutating func choose(_ s: SimState, random: inout SplitMix64) -> Int? {
        guard let greedy = components[current].choose(s, random: &random), s.feasible.indices.contains(greedy),
              s.feasible[greedy] else { return nil }
        let d = explore(greedy: greedy, feasible: s.feasible, rate: exploration, random: &random)
        lastPropensity = d.propensity
        return d.model
    }
}
