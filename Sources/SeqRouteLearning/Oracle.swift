// The hindsight oracle of SPEC section 7: knowing every turn's per-model quality, actual cost
// and hold, it picks one model per turn to maximise the session's total quality, under the
// simulator's own feasibility rule (the chosen model's hold ≤ B − actual costs so far; with no
// feasible model the session is bankrupt from that turn on). It is the upper limit of any
// policy, not a policy one could deploy.

import SeqRouteCore

public struct OraclePlan: Sendable, Equatable {
    /// One entry per turn; nil from the turn the plan goes bankrupt on (if it does).
    public var actions: [Int?]
    public var qualitySum: Double
    public var costUSD: Double
}

public enum HindsightOracle {
    /// Exact dynamic programme over turns. The state after turn t is (spent, quality so far);
    /// a state with no more spent and no less quality than another dominates it, because every
    /// continuation of the other is feasible from it and earns the same, so each turn keeps only
    /// the Pareto frontier. A state with no feasible model is bankrupt and final.
    ///
    /// `qualities[t][m]`, `costsUSD[t][m]` and `holdsUSD[t][m]` are turn t's numbers for model m.
    /// Ties in quality go to the cheaper plan.
    public static func solve(qualities: [[Double]], costsUSD: [[Double]], holdsUSD: [[Double]],
                             budgetUSD: Double) -> OraclePlan {
        let horizon = qualities.count
        precondition(costsUSD.count == horizon && holdsUSD.count == horizon, "one row per turn")
        struct Node {
            var spentUSD: Double
            var quality: Double
            /// Index into the previous turn's frontier, and the model taken to get here.
            var parent: Int
            var action: Int
        }
        var frontiers: [[Node]] = [[Node(spentUSD: 0, quality: 0, parent: -1, action: -1)]]
        // The best final state so far: the frontier it lies in (its turn count) and its index.
        var best: (turns: Int, index: Int, quality: Double, spentUSD: Double)?
        func offer(_ turns: Int, _ index: Int, _ node: Node) {
            if let b = best, b.quality > node.quality || (b.quality == node.quality && b.spentUSD <= node.spentUSD) {
                return
            }
            best = (turns, index, node.quality, node.spentUSD)
        }
        for t in 0..<horizon {
            var next: [Node] = []
            for (i, node) in frontiers[t].enumerated() {
                var any = false
                for m in holdsUSD[t].indices
                where fits(holdUSD: holdsUSD[t][m], budgetUSD: budgetUSD, spentUSD: node.spentUSD) {
                    any = true
                    next.append(Node(spentUSD: node.spentUSD + costsUSD[t][m], quality: node.quality + qualities[t][m],
                                     parent: i, action: m))
                }
                if !any { offer(t, i, node) }
            }
            // Cheapest first, and at equal spend the best first; then keep strict improvements.
            next.sort { $0.spentUSD < $1.spentUSD || ($0.spentUSD == $1.spentUSD && $0.quality > $1.quality) }
            var frontier: [Node] = []
            for node in next where frontier.last.map({ node.quality > $0.quality }) ?? true {
                frontier.append(node)
            }
            frontiers.append(frontier)
        }
        for (i, node) in frontiers[horizon].enumerated() { offer(horizon, i, node) }

        // The initial state always exists, so there is a best one.
        let b = best!
        var actions = [Int?](repeating: nil, count: horizon)
        var index = b.index
        for t in stride(from: b.turns, to: 0, by: -1) {
            let node = frontiers[t][index]
            actions[t - 1] = node.action
            index = node.parent
        }
        return OraclePlan(actions: actions, qualitySum: b.quality, costUSD: b.spentUSD)
    }
}

/// The oracle as a simulator policy: it solves each session when the session starts, from the
/// table's outcomes, and then plays its plan.
public struct OraclePolicy: SimPolicy {
    public let simulator: Simulator
    private var plan: [Int?] = []

    public init(simulator: Simulator) { self.simulator = simulator }

    public mutating func reset(session: Session, budgetUSD: Double, random: inout SplitMix64) {
        let table = simulator.table
        let models = table.models.indices
        plan = HindsightOracle.solve(
            qualities: session.queries.map { q in models.map { table.quality(q, $0) } },
            costsUSD: session.queries.map { q in models.map { table.costUSD(q, $0) } },
            holdsUSD: session.queries.map { simulator.holdsUSD(record: $0) },
            budgetUSD: budgetUSD).actions
    }

    public func choose(_ state: SimState, random: inout SplitMix64) -> Int? {
        plan[state.turn - 1]
    }
}
