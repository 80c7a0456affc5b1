// One row of the decision log as the learner reads it back (SPEC 4, decisions), joined with
// its session. Money stays in micro-units here; the learner converts.

public struct DecisionRecord: Sendable, Equatable {
    public var sessionID: String
    public var turn: Int
    /// Seconds since 1970 of the decision.
    public var decidedAt: Double
    public var policyVersion: String
    public var lambda: Double
    public var task: String?
    public var features: [Double]
    /// Before the decision: the horizon hint (nil when none), session spent and held, and the
    /// account's remaining budget.
    public var horizon: Int?
    public var spent: Int64
    public var held: Int64
    public var accountRemaining: Int64
    public var holds: [Int64]
    public var feasible: [Bool]
    /// The chosen model's index in the pool; nil for a bankrupt turn.
    public var model: Int?
    public var propensity: Double?
    /// held, reported, expired, released or bankrupt.
    public var status: String
    public var cost: Int64?
    public var quality: Double?
    public var sessionBudget: Int64
    /// open, closed or bankrupt.
    public var sessionState: String

    public init(sessionID: String, turn: Int, decidedAt: Double, policyVersion: String, lambda: Double, task: String?,
                features: [Double], horizon: Int?, spent: Int64, held: Int64, accountRemaining: Int64, holds: [Int64],
                feasible: [Bool], model: Int?, propensity: Double?, status: String, cost: Int64?, quality: Double?,
                sessionBudget: Int64, sessionState: String) {
        self.sessionID = sessionID
        self.turn = turn
        self.decidedAt = decidedAt
        self.policyVersion = policyVersion
        self.lambda = lambda
        self.task = task
        self.features = features
        self.horizon = horizon
        self.spent = spent
        self.held = held
        self.accountRemaining = accountRemaining
        self.holds = holds
        self.feasible = feasible
        self.model = model
        self.propensity = propensity
        self.status = status
        self.cost = cost
        self.quality = quality
        self.sessionBudget = sessionBudget
        self.sessionState = sessionState
    }

    /// The state the policy saw, rebuilt, so that another policy can be asked what it would
    /// have done.
    public func context(previousModel: Int?) -> DecisionContext {
        DecisionContext(features: features, task: task, turn: turn, horizon: horizon,
                        budget: BudgetState(sessionBudget: sessionBudget, sessionSpent: spent, sessionHeld: held,
                                            accountRemaining: accountRemaining),
                        lambda: lambda, holds: holds, previousModel: previousModel)
    }
}
