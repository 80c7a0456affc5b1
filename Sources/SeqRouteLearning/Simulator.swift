// The offline session simulator of SPEC section 7: a policy routes each turn of each session
// under a budget; holds decide feasibility, actual costs are charged. Money is USD as a Double.

import SeqRouteCore

/// What a policy sees at one turn. It never includes the query's outcomes.
public struct SimState: Sendable {
    /// Index of this turn's query in the simulator's table.
    public var queryIndex: Int
    /// The query's feature vector (empty when the table has none).
    public var features: [Double]
    public var task: String
    /// 1-based turn index t.
    public var turn: Int
    /// T, the session's number of turns.
    public var horizon: Int
    /// B.
    public var budgetUSD: Double
    /// B minus the actual costs charged so far (negative after an overrun).
    public var remainingUSD: Double
    /// Every model's hold for this query, in table model order.
    public var holdsUSD: [Double]
    /// holdsUSD[m] ≤ remainingUSD; at least one is true whenever a policy is asked.
    public var feasible: [Bool]
    /// The model of the previous turn; nil on turn 1 or after an unserved turn.
    public var previousAction: Int?

    /// Turns from this one to the end, this one included.
    public var turnsLeft: Int { horizon - turn + 1 }
    public var budgetFraction: Double { budgetUSD > 0 ? remainingUSD / budgetUSD : 0 }
}

/// A routing policy in simulation. The simulator asks `choose` only when at least one model is
/// feasible; the answer must be a feasible model. Anything else (nil, out of range, infeasible)
/// is a bug of the policy: the simulator counts it as a violation and serves nothing that turn.
public protocol SimPolicy: Sendable {
    /// Called before each session's first turn.
    mutating func reset(session: Session, budgetUSD: Double, random: inout SplitMix64)
    mutating func choose(_ state: SimState, random: inout SplitMix64) -> Int?
    /// The probability with which the last `choose` picked its answer (for logged data).
    var lastPropensity: Double { get }
}

extension SimPolicy {
    public mutating func reset(session: Session, budgetUSD: Double, random: inout SplitMix64) {}
    /// Deterministic policies pick their answer with certainty.
    public var lastPropensity: Double { 1 }
}

/// The feasibility rule, shared by the simulator and the oracle so that both compute the
/// remaining budget with the same floating-point operations.
@inline(__always)
public func fits(holdUSD: Double, budgetUSD: Double, spentUSD: Double) -> Bool {
    holdUSD <= budgetUSD - spentUSD
}

/// One simulated turn, as the behaviour policy's log keeps it for Hindsight Budget Relabeling.
public struct LoggedTurn: Sendable, Equatable, Codable {
    public var queryIndex: Int
    /// nil when the turn was unserved.
    public var action: Int?
    /// The chosen model's hold (0 when unserved).
    public var holdUSD: Double
    public var costUSD: Double
    public var quality: Double
    public var propensity: Double
    public var holdsUSD: [Double]
    /// All false from the turn the session went bankrupt on.
    public var feasible: [Bool]
}

public struct LoggedSession: Sendable, Equatable, Codable {
    public var session: Session
    public var budgetUSD: Double
    public var turns: [LoggedTurn]
}

/// The result of one session.
public struct SessionOutcome: Sendable, Equatable {
    public var turns: Int
    /// Σ quality over turns (unserved count 0).
    public var qualitySum: Double
    public var costUSD: Double
    public var unservedTurns: Int
    public var overrunTurns: Int
    public var overBudget: Bool
}

public struct SimMetrics: Sendable, Equatable {
    public var sessions: Int
    public var turns: Int
    /// Σ quality / Σ turns over all sessions, unserved turns counting 0.
    public var meanTurnQuality: Double
    public var meanSessionCostUSD: Double
    /// Share of sessions with at least one unserved turn.
    public var bankruptcyRate: Double
    public var unservedTurnShare: Double
    /// Share of sessions whose actual spend ended above B.
    public var overBudgetSessionShare: Double
    /// Share of served turns whose actual cost exceeded the hold.
    public var overrunTurnShare: Double
    /// Answers that were nil, out of range or infeasible while a model was feasible.
    public var violations: Int

    public init(_ outcomes: [SessionOutcome], violations: Int) {
        let turns = outcomes.reduce(0) { $0 + $1.turns }
        let served = turns - outcomes.reduce(0) { $0 + $1.unservedTurns }
        let n = Double(max(outcomes.count, 1))
        sessions = outcomes.count
        self.turns = turns
        meanTurnQuality = outcomes.reduce(0) { $0 + $1.qualitySum } / Double(max(turns, 1))
        meanSessionCostUSD = outcomes.reduce(0) { $0 + $1.costUSD } / n
        bankruptcyRate = Double(outcomes.filter { $0.unservedTurns > 0 }.count) / n
        unservedTurnShare = Double(turns - served) / Double(max(turns, 1))
        overBudgetSessionShare = Double(outcomes.filter(\.overBudget).count) / n
        overrunTurnShare = Double(outcomes.reduce(0) { $0 + $1.overrunTurns }) / Double(max(served, 1))
        self.violations = violations
    }
}

public struct SimRun: Sendable {
    public var metrics: SimMetrics
    /// In session order, for paired comparisons between policies.
    public var outcomes: [SessionOutcome]
    /// Filled only when logging was asked for.
    public var logs: [LoggedSession]
}

public struct SimulationError: Error, Sendable, CustomStringConvertible {
    public var description: String
}

public struct Simulator: Sendable {
    public let table: QueryTable
    /// Row-major: record r, model m at r * K + m.
    private let holdGridUSD: [Double]

    /// `holds` must come from a training table with the same models as `table`.
    public init(table: QueryTable, holds: Holds) throws {
        guard holds.models == table.models else {
            throw SimulationError(description: "the table's models \(table.models) differ from the holds' \(holds.models)")
        }
        self.table = table
        holdGridUSD = table.records.flatMap { holds.holdsUSD(task: $0.task) }
    }

    public var modelCount: Int { table.models.count }

    public func holdsUSD(record: Int) -> [Double] {
        Array(holdGridUSD[(record * modelCount)..<((record + 1) * modelCount)])
    }

    /// Runs `policy` on every session at its budget (`budgetsUSD[i]` for `sessions[i]`). Each
    /// session gets its own random stream derived from `seed` and its index, so a session's
    /// result does not depend on the others.
    public func run<P: SimPolicy>(_ policy: P, sessions: [Session], budgetsUSD: [Double], seed: UInt64,
                                  logging: Bool = false) -> SimRun {
        precondition(budgetsUSD.count == sessions.count, "one budget per session")
        var policy = policy
        var outcomes: [SessionOutcome] = []
        outcomes.reserveCapacity(sessions.count)
        var logs: [LoggedSession] = []
        var violations = 0
        let k = modelCount
        for (s, session) in sessions.enumerated() {
            var seeder = SplitMix64(seed: seed ^ UInt64(s))
            var random = SplitMix64(seed: seeder.next())
            let budget = budgetsUSD[s]
            policy.reset(session: session, budgetUSD: budget, random: &random)
            var outcome = SessionOutcome(turns: session.horizon, qualitySum: 0, costUSD: 0, unservedTurns: 0,
                                         overrunTurns: 0, overBudget: false)
            var logged: [LoggedTurn] = []
            var previous: Int?
            var bankrupt = false
            for (t, q) in session.queries.enumerated() {
                let holds = holdsUSD(record: q)
                var feasible = holds.map { fits(holdUSD: $0, budgetUSD: budget, spentUSD: outcome.costUSD) }
                if bankrupt || !feasible.contains(true) {
                    bankrupt = true
                    feasible = [Bool](repeating: false, count: k)
                }
                var action: Int?
                var propensity = 1.0
                if !bankrupt {
                    let record = table.records[q]
                    let state = SimState(queryIndex: q, features: record.features ?? [], task: record.task,
                                         turn: t + 1, horizon: session.horizon, budgetUSD: budget,
                                         remainingUSD: budget - outcome.costUSD, holdsUSD: holds,
                                         feasible: feasible, previousAction: previous)
                    if let a = policy.choose(state, random: &random), a >= 0, a < k, feasible[a] {
                        action = a
                        propensity = policy.lastPropensity
                    } else {
                        violations += 1
                    }
                }
                var cost = 0.0, quality = 0.0
                if let a = action {
                    cost = table.costUSD(q, a)
                    quality = table.quality(q, a)
                    outcome.costUSD += cost
                    outcome.qualitySum += quality
                    if cost > holds[a] { outcome.overrunTurns += 1 }
                } else {
                    outcome.unservedTurns += 1
                }
                previous = action
                if logging {
                    logged.append(LoggedTurn(queryIndex: q, action: action, holdUSD: action.map { holds[$0] } ?? 0,
                                             costUSD: cost, quality: quality, propensity: propensity,
                                             holdsUSD: holds, feasible: feasible))
                }
            }
            outcome.overBudget = outcome.costUSD > budget
            outcomes.append(outcome)
            if logging { logs.append(LoggedSession(session: session, budgetUSD: budget, turns: logged)) }
        }
        return SimRun(metrics: SimMetrics(outcomes, violations: violations), outcomes: outcomes, logs: logs)
    }
}
