// The policy interface and the cold-start policy (SPEC 2 and 6).

/// Everything a policy may know when it chooses a model for one turn.
public struct DecisionContext: Sendable {
    public var features: [Double]
    public var task: String?
    /// 1-based turn index.
    public var turn: Int
    public var horizon: Int?
    public var budget: BudgetState
    public var lambda: Double
    /// The hold of each model of the pool for this turn, in pool order.
    public var holds: [Int64]
    /// Whether each model's hold fits the session and the account.
    public var feasible: [Bool]
    public var previousModel: Int?

    public init(features: [Double], task: String?, turn: Int, horizon: Int?, budget: BudgetState,
                lambda: Double, holds: [Int64], previousModel: Int? = nil) {
        self.features = features
        self.task = task
        self.turn = turn
        self.horizon = horizon
        self.budget = budget
        self.lambda = lambda
        self.holds = holds
        self.feasible = budget.feasible(holds)
        self.previousModel = previousModel
    }

    public var anyFeasible: Bool { feasible.contains(true) }
}

public struct Decision: Sendable, Equatable {
    /// Index into the pool; always a feasible model.
    public var model: Int
    /// The probability with which the policy chose this model (for off-policy evaluation).
    public var propensity: Double
    /// The policy's score of each model, where it has one (Q-values of a learned policy).
    public var scores: [Double]?

    public init(model: Int, propensity: Double, scores: [Double]? = nil) {
        self.model = model
        self.propensity = propensity
        self.scores = scores
    }
}

/// A routing policy: a greedy choice among the feasible models, mixed with uniform
/// exploration at `exploration`. Callers only ask when at least one model is feasible, and the
/// greedy choice must be a feasible one. Off-policy evaluation reads the same two parts, so
/// that a policy is evaluated exactly as the daemon deploys it.
public protocol RoutingPolicy: Sendable {
    var version: String { get }
    var exploration: Double { get }
    /// The greedy model and, where the policy has them, its scores of every model.
    func greedy(_ context: DecisionContext) -> (model: Int, scores: [Double]?)
}

extension RoutingPolicy {
    public func decide(_ context: DecisionContext, random: inout SplitMix64) -> Decision {
        let g = greedy(context)
        return explore(greedy: g.model, feasible: context.feasible, rate: exploration, random: &random, scores: g.scores)
    }

    /// The probability that `decide` picks `model` in `context`.
    public func probability(of model: Int, in context: DecisionContext) -> Double {
        guard context.feasible[model] else { return 0 }
        let share = exploration / Double(context.feasible.filter { $0 }.count)
        return (model == greedy(context).model ? 1 - exploration : 0) + share
    }
}

/// A small seeded generator, so that every policy run is repeatable for a seed.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    public mutating func unit() -> Double { Double(next() >> 11) * 0x1.0p-53 }
}

/// Mixes a greedy choice with uniform exploration over the feasible models and returns the
/// propensity of the model actually chosen: (1-ε)·[a = greedy] + ε/|feasible|.
public func explore(greedy: Int, feasible: [Bool], rate: Double, random: inout SplitMix64,
                    scores: [Double]? = nil) -> Decision {
    let choices = feasible.indices.filter { feasible[$0] }
    precondition(feasible[greedy], "greedy choice must be feasible")
    let share = rate / Double(choices.count)
    var chosen = greedy
    if rate > 0, random.unit() < rate {
        chosen = choices[Int(random.next() % UInt64(choices.count))]
    }
    let p = (chosen == greedy ? 1 - rate : 0) + share
    return Decision(model: chosen, propensity: p, scores: scores)
}

/// Cold-start policy: budget pacing. It spreads the remaining budget evenly over the turns
/// left (from the horizon hint, else a default horizon) and picks the model with the best
/// prior quality for the task whose hold fits that allowance; when none fits, the cheapest
/// feasible model. Exploration is uniform over feasible models.
public struct PacingPolicy: RoutingPolicy {
    public let pool: ModelPool
    public let defaultHorizon: Int
    public let exploration: Double
    public var version: String { "cold-start-pacing" }

    public init(pool: ModelPool, defaultHorizon: Int, exploration: Double) {
        self.pool = pool
        self.defaultHorizon = defaultHorizon
        self.exploration = exploration
    }

    public func greedy(_ c: DecisionContext) -> (model: Int, scores: [Double]?) { (pacedChoice(c), nil) }

    private func pacedChoice(_ c: DecisionContext) -> Int {
        let horizon = c.horizon ?? defaultHorizon
        let turnsLeft = Int64(max(1, horizon - c.turn + 1))
        let allowance = min(c.budget.sessionRemaining, c.budget.accountRemaining) / turnsLeft
        var best: Int?
        for i in pool.models.indices where c.feasible[i] && c.holds[i] <= allowance {
            guard let b = best else { best = i; continue }
            let qi = pool.models[i].priorQuality(task: c.task), qb = pool.models[b].priorQuality(task: c.task)
            if qi > qb || (qi == qb && c.holds[i] < c.holds[b]) { best = i }
        }
        if let best { return best }
        var cheapest = c.feasible.firstIndex(of: true)!
        for i in pool.models.indices where c.feasible[i] && c.holds[i] < c.holds[cheapest] { cheapest = i }
        return cheapest
    }
}
