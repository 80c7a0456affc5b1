// Hindsight Budget Relabeling (SPEC section 2): each logged session's action sequence is
// replayed under budgets B′ it was not logged with, and under a λ drawn per copy, so that one
// logged session teaches the value of money at many budget levels, bankruptcy included.

import Foundation
import SeqRouteCore

/// One relabelled step, compact: queries are referred to by index, masks are bits.
public struct Transition: Sendable, Equatable {
    public var query: Int32
    /// The next turn's query; -1 when `done`.
    public var nextQuery: Int32
    public var turn: UInt8
    public var horizon: UInt8
    public var action: UInt8
    /// The previous turn's action; `Transition.none` on the first turn.
    public var previous: UInt8
    public var budgetUSD: Float
    public var remainingUSD: Float
    public var nextRemainingUSD: Float
    public var quality: Float
    public var costUSD: Float
    public var lambda: Float
    public var feasible: UInt32
    public var nextFeasible: UInt32
    /// The end of the replay: the session's last turn, or a bankruptcy.
    public var done: Bool
    /// This step's spending left the next turn with no feasible model.
    public var bankrupt: Bool

    public static let none: UInt8 = 255
}

public struct HBRConfiguration: Sendable {
    /// Budgets drawn log-uniformly per logged session.
    public var logUniformBudgets = 42
    /// Also one budget placed at each stage where a bankruptcy can happen.
    public var bankruptcyBudgets = true
    /// λ range of the relabelled copies: 0 with probability `zeroLambdaShare`, else
    /// log-uniform in [lambdaMin, lambdaMax].
    public var lambdaMin = 0.01
    public var lambdaMax = 50.0
    public var zeroLambdaShare = 0.1
    public var seed: UInt64 = 7
    public init() {}
}

public struct HBRCounts: Sendable, Equatable {
    public var sessions = 0
    public var copies = 0
    public var transitions = 0
    public var bankruptcies = 0
}

public enum HindsightBudgetRelabeling {
    /// Replays the logged actions under `budgetUSD`, emitting one transition per step taken.
    /// Replay stops at the first turn whose logged action does not fit: if no model fits
    /// there, the step before it is the bankruptcy (terminal); otherwise the step before it
    /// ends normally, its next state being that turn, and nothing follows.
    public static func replay(_ s: LoggedSession, budgetUSD: Double, lambda: Float,
                              emit: (Transition) -> Void) -> (transitions: Int, bankrupt: Bool) {
        var spent = 0.0
        var pending: Transition?
        var previous = Transition.none
        var count = 0
        let horizon = UInt8(min(s.turns.count, 255))
        for (t, turn) in s.turns.enumerated() {
            let remaining = budgetUSD - spent
            let mask = feasibleMask(turn.holdsUSD.map { fits(holdUSD: $0, budgetUSD: budgetUSD, spentUSD: spent) })
            if var p = pending {
                if mask == 0 {
                    p.done = true
                    p.bankrupt = true
                    emit(p)
                    return (count + 1, true)
                }
                p.nextQuery = Int32(turn.queryIndex)
                p.nextRemainingUSD = Float(remaining)
                p.nextFeasible = mask
                emit(p)
                count += 1
                pending = nil
            }
            guard let a = turn.action, mask & (1 << a) != 0 else { return (count, false) }
            pending = Transition(query: Int32(turn.queryIndex), nextQuery: -1, turn: UInt8(min(t + 1, 255)),
                                 horizon: horizon, action: UInt8(a), previous: previous,
                                 budgetUSD: Float(budgetUSD), remainingUSD: Float(remaining), nextRemainingUSD: 0,
                                 quality: Float(turn.quality), costUSD: Float(turn.costUSD), lambda: lambda,
                                 feasible: mask, nextFeasible: 0, done: false, bankrupt: false)
            spent += turn.costUSD
            previous = UInt8(a)
        }
        if var p = pending {
            p.done = true
            emit(p)
            count += 1
        }
        return (count, false)
    }

    /// The budgets one logged session is replayed under: the logged one; log-uniform ones
    /// between the cheapest completion (the sum of each turn's smallest hold) and 1.5 × the
    /// holds of the logged actions; and, per stage where it can happen, one just too small for
    /// the next turn (the logged action before it still fits, no model fits after it).
    public static func budgets(for s: LoggedSession, configuration c: HBRConfiguration,
                               random: inout SplitMix64) -> [Double] {
        var out = [s.budgetUSD]
        let served = s.turns.prefix { $0.action != nil }
        let cheapest = s.turns.reduce(0) { $0 + ($1.holdsUSD.min() ?? 0) }
        let loggedHolds = served.reduce(0) { $0 + $1.holdUSD }
        let lo = max(cheapest, 1e-9)
        let hi = max(1.5 * loggedHolds, lo * 1.5)
        for _ in 0..<c.logUniformBudgets {
            out.append(exp(log(lo) + random.unit() * (log(hi) - log(lo))))
        }
        if c.bankruptcyBudgets && s.turns.count > 1 {
            // Stage t: every logged action up to turn t-1 fits (B′ ≥ low, the largest of
            // spend-before-s + hold-at-s over s < t) and, after turn t-1's cost, not even the
            // cheapest model fits turn t (B′ < high).
            let turns = Array(served)
            var spentBefore = 0.0
            var low = 0.0
            for t in 1..<s.turns.count where t <= turns.count {
                let prev = turns[t - 1]
                low = max(low, spentBefore + prev.holdUSD)
                let high = spentBefore + prev.costUSD + (s.turns[t].holdsUSD.min() ?? 0)
                if high > low { out.append(low + random.unit() * (high - low) * 0.999) }
                spentBefore += prev.costUSD
            }
        }
        return out
    }

    public static func drawLambda(_ c: HBRConfiguration, random: inout SplitMix64) -> Float {
        if random.unit() < c.zeroLambdaShare { return 0 }
        return Float(exp(log(c.lambdaMin) + random.unit() * (log(c.lambdaMax) - log(c.lambdaMin))))
    }

    /// Streams every relabelled transition of `sessions` to `emit`, deterministically for the
    /// seed: each session draws from its own stream, so the output does not depend on what
    /// else is expanded.
    public static func expand(_ sessions: [LoggedSession], configuration c: HBRConfiguration,
                              emit: (Transition) -> Void) -> HBRCounts {
        var counts = HBRCounts()
        for (i, s) in sessions.enumerated() {
            var random = SplitMix64(seed: c.seed ^ (UInt64(i) &* 0x9E37_79B9_7F4A_7C15))
            counts.sessions += 1
            for budget in budgets(for: s, configuration: c, random: &random) {
                let lambda = drawLambda(c, random: &random)
                let r = replay(s, budgetUSD: budget, lambda: lambda, emit: emit)
                counts.copies += 1
                counts.transitions += r.transitions
                if r.bankrupt { counts.bankruptcies += 1 }
            }
        }
        return counts
    }
}
