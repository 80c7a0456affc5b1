import Foundation
import SeqRouteCore
import Testing
@testable import SeqRouteLearning

/// Always answers the same model, feasible or not: a buggy policy.
private struct Stubborn: SimPolicy {
    let model: Int?
    func choose(_ state: SimState, random: inout SplitMix64) -> Int? { model }
}

/// Where `Recorder` writes what it was shown (the simulator works on its own copy of a policy).
private final class StateLog: @unchecked Sendable {
    let lock = NSLock()
    var states: [SimState] = []
    var budgets: [Double] = []
}

/// Picks the first feasible model and records every state and reset.
private struct Recorder: SimPolicy {
    let log: StateLog
    func reset(session: Session, budgetUSD: Double, random: inout SplitMix64) {
        log.lock.withLock { log.budgets.append(budgetUSD) }
    }
    func choose(_ state: SimState, random: inout SplitMix64) -> Int? {
        log.lock.withLock { log.states.append(state) }
        return state.feasible.firstIndex(of: true)
    }
}

@Suite struct SimulatorTests {
    // Model "big" is good and dear, "small" cheap; task "u" has much smaller holds for "small".
    let train = try! QueryTable(records: [
        QueryRecord(id: "t", task: "t", text: "", models: ["big": outcome(1, 0.5), "small": outcome(0.5, 0.1)]),
        QueryRecord(id: "u", task: "u", text: "", models: ["big": outcome(1, 0.5), "small": outcome(0.5, 0.01)]),
    ])
    var test: QueryTable {
        try! QueryTable(records: [
            QueryRecord(id: "t1", task: "t", text: "", models: ["big": outcome(1, 0.5), "small": outcome(0.5, 0.1)],
                        features: [1, 2]),
            QueryRecord(id: "t2", task: "t", text: "", models: ["big": outcome(0.9, 0.4), "small": outcome(0.2, 0.1)]),
            QueryRecord(id: "u1", task: "u", text: "", models: ["big": outcome(1, 0.5), "small": outcome(0.7, 0.01)]),
            // Dearer than anything in training: an overrun.
            QueryRecord(id: "t3", task: "t", text: "", models: ["big": outcome(1, 0.9), "small": outcome(0.5, 0.1)]),
        ])
    }
    var simulator: Simulator { try! Simulator(table: test, holds: Holds(training: train)) }

    @Test func statesCarryTheBudgetAndTheHolds() {
        // Holds: t → big 0.625, small 0.125; u → big 0.625, small 0.0125.
        let log = StateLog()
        let run = simulator.run(Recorder(log: log), sessions: [Session(queries: [0, 2, 1])], budgetsUSD: [1.2], seed: 3)
        #expect(log.budgets == [1.2])
        let s = log.states
        #expect(s.map(\.turn) == [1, 2, 3] && s.allSatisfy { $0.horizon == 3 && $0.budgetUSD == 1.2 })
        #expect(s.map(\.queryIndex) == [0, 2, 1] && s.map(\.task) == ["t", "u", "t"])
        #expect(s.map(\.features) == [[1, 2], [], []])
        #expect(zip(s.map(\.remainingUSD), [1.2, 0.7, 0.2]).allSatisfy { abs($0 - $1) < 1e-12 })
        #expect(s.map(\.holdsUSD) == [[0.625, 0.125], [0.625, 0.0125], [0.625, 0.125]])
        #expect(s.map(\.feasible) == [[true, true], [true, true], [false, true]])
        #expect(s.map(\.previousAction) == [nil, 0, 0])
        #expect(s.map(\.turnsLeft) == [3, 2, 1] && abs(s[2].budgetFraction - 0.2 / 1.2) < 1e-12)
        #expect(run.metrics.violations == 0 && run.metrics.bankruptcyRate == 0)
        #expect(abs(run.outcomes[0].costUSD - 1.1) < 1e-12 && abs(run.metrics.meanTurnQuality - 2.2 / 3) < 1e-12)
    }

    @Test func bankruptcyLeavesTheRestOfTheSessionUnserved() {
        // Budget 0.2: turn 1 serves "small" (0.1), then 0.1 is left, below t's small hold 0.125.
        // Turn 3 (task u) would fit 0.0125, but a bankrupt session stays bankrupt.
        let run = simulator.run(SingleModelHeuristic(model: 1, stats: TrainingStats(training: train)),
                                sessions: [Session(queries: [0, 1, 2])], budgetsUSD: [0.2], seed: 1, logging: true)
        let o = run.outcomes[0]
        #expect(o.unservedTurns == 2 && o.qualitySum == 0.5 && o.costUSD == 0.1)
        #expect(run.metrics.bankruptcyRate == 1 && run.metrics.violations == 0)
        #expect(abs(run.metrics.unservedTurnShare - 2.0 / 3) < 1e-12)
        let turns = run.logs[0].turns
        #expect(turns.map(\.action) == [1, nil, nil])
        #expect(turns[0].feasible == [false, true] && turns[0].holdUSD == 0.125 && turns[0].propensity == 1)
        #expect(turns[1].feasible == [false, false] && turns[2].feasible == [false, false])
        #expect(turns[2].holdsUSD == [0.625, 0.0125] && turns[2].quality == 0 && turns[2].costUSD == 0)
    }

    @Test func infeasibleAnswersAreViolationsAndServeNothing() {
        // "big" fits on turn 1 only; afterwards the stubborn policy keeps asking for it.
        let run = simulator.run(Stubborn(model: 0), sessions: [Session(queries: [0, 1, 2])], budgetsUSD: [0.8], seed: 1)
        #expect(run.metrics.violations == 2)
        #expect(run.outcomes[0].unservedTurns == 2 && run.outcomes[0].costUSD == 0.5)
        let declined = simulator.run(Stubborn(model: nil), sessions: [Session(queries: [0])], budgetsUSD: [5], seed: 1)
        #expect(declined.metrics.violations == 1 && declined.metrics.meanTurnQuality == 0)
        let outOfRange = simulator.run(Stubborn(model: 7), sessions: [Session(queries: [0])], budgetsUSD: [5], seed: 1)
        #expect(outOfRange.metrics.violations == 1)
    }

    @Test func overrunsAndOverBudgetSessionsAreCounted() {
        // t3's big costs 0.9 against a hold of 0.625; with B = 0.7 that ends over budget.
        let run = simulator.run(Stubborn(model: 0), sessions: [Session(queries: [3]), Session(queries: [0])],
                                budgetsUSD: [0.7, 0.7], seed: 1)
        #expect(run.outcomes.map(\.overrunTurns) == [1, 0])
        #expect(run.outcomes.map(\.overBudget) == [true, false])
        #expect(run.metrics.overBudgetSessionShare == 0.5 && run.metrics.overrunTurnShare == 0.5)
        #expect(run.metrics.meanSessionCostUSD == 0.7 && run.metrics.meanTurnQuality == 1)
    }

    @Test func refusesTablesWithOtherModels() throws {
        let other = try QueryTable(records: [QueryRecord(id: "1", task: "t", text: "", models: ["z": outcome(1, 1)])])
        #expect(throws: SimulationError.self) { try Simulator(table: other, holds: Holds(training: train)) }
    }

    @Test func randomPolicyLogsItsPropensity() throws {
        let run = simulator.run(RandomHeuristic(), sessions: [Session(queries: [0, 2, 1])], budgetsUSD: [10], seed: 4,
                                logging: true)
        #expect(run.logs[0].turns.allSatisfy { $0.propensity == 0.5 && $0.action != nil })
        #expect(run.logs[0].budgetUSD == 10 && run.logs[0].session.queries == [0, 2, 1])
        // Same seed, same run.
        let again = simulator.run(RandomHeuristic(), sessions: [Session(queries: [0, 2, 1])], budgetsUSD: [10], seed: 4,
                                  logging: true)
        #expect(again.logs == run.logs)
    }
}

@Suite struct OracleTests {
    /// Every action sequence under the simulator's rules; the best total quality.
    private func bruteForce(_ q: [[Double]], _ c: [[Double]], _ h: [[Double]], _ budget: Double) -> Double {
        func go(_ t: Int, _ spent: Double) -> Double {
            guard t < q.count else { return 0 }
            let feasible = h[t].indices.filter { fits(holdUSD: h[t][$0], budgetUSD: budget, spentUSD: spent) }
            return feasible.map { q[t][$0] + go(t + 1, spent + c[t][$0]) }.max() ?? 0
        }
        return go(0, 0)
    }

    /// The best total quality if only the total actual cost had to fit the budget.
    private func ignoringHolds(_ q: [[Double]], _ c: [[Double]], _ budget: Double) -> Double {
        func go(_ t: Int, _ spent: Double) -> Double {
            guard t < q.count else { return spent <= budget ? 0 : -.infinity }
            return q[t].indices.map { q[t][$0] + go(t + 1, spent + c[t][$0]) }.max()!
        }
        return go(0, 0)
    }

    @Test func holdsBindEvenWhenTheTotalCostFits() {
        // A is perfect but reserves 1.0; B is worse and reserves 0.2; both cost 0.1.
        let q = [[1.0, 0.6], [1.0, 0.6]], c = [[0.1, 0.1], [0.1, 0.1]], h = [[1.0, 0.2], [1.0, 0.2]]
        let plan = HindsightOracle.solve(qualities: q, costsUSD: c, holdsUSD: h, budgetUSD: 1.05)
        #expect(plan.qualitySum == 1.6 && plan.costUSD == 0.2)
        #expect(ignoringHolds(q, c, 1.05) == 2)
        // Too little for anything: bankrupt from turn 1.
        let none = HindsightOracle.solve(qualities: q, costsUSD: c, holdsUSD: h, budgetUSD: 0.1)
        #expect(none.actions == [nil, nil] && none.qualitySum == 0)
    }

    @Test func equalsBruteForceOnSmallSessions() {
        var random = SplitMix64(seed: 2024)
        var holdBound = 0, bankrupt = 0
        for trial in 0..<400 {
            let turns = 1 + Int(random.next() % 5), models = 1 + Int(random.next() % 4)
            let binary = trial % 2 == 0
            var q: [[Double]] = [], c: [[Double]] = [], h: [[Double]] = []
            for _ in 0..<turns {
                q.append((0..<models).map { _ in binary ? Double(random.next() % 2) : (random.unit() * 10).rounded() / 10 })
                let costs = (0..<models).map { _ in 0.01 + random.unit() }
                c.append(costs)
                // Mostly above the cost (as a hold should be), now and then below (an overrun).
                h.append(costs.map { $0 * (0.7 + 3 * random.unit()) })
            }
            let budget = random.unit() * Double(turns) * 2.5
            let plan = HindsightOracle.solve(qualities: q, costsUSD: c, holdsUSD: h, budgetUSD: budget)
            let best = bruteForce(q, c, h, budget)
            #expect(abs(plan.qualitySum - best) < 1e-9, "trial \(trial)")
            if ignoringHolds(q, c, budget) > best + 1e-9 { holdBound += 1 }
            if plan.actions.contains(nil) { bankrupt += 1 }

            // The plan is playable: each action fits when it is taken, and it earns what it says.
            var spent = 0.0, quality = 0.0, stopped = false
            for t in 0..<turns {
                let anyFits = h[t].indices.contains { fits(holdUSD: h[t][$0], budgetUSD: budget, spentUSD: spent) }
                if let a = plan.actions[t] {
                    #expect(!stopped && fits(holdUSD: h[t][a], budgetUSD: budget, spentUSD: spent))
                    spent += c[t][a]
                    quality += q[t][a]
                } else {
                    #expect(!anyFits || stopped)
                    stopped = true
                }
            }
            #expect(abs(quality - plan.qualitySum) < 1e-12 && spent == plan.costUSD)
        }
        // The random cases include ones where the hold rule, not the total, decides.
        #expect(holdBound > 20 && bankrupt > 20)
    }

    @Test func oraclePolicyPlaysItsPlanInTheSimulator() throws {
        let bench = try routerBenchSim.get()
        let sessions = SessionGenerator().sessions(count: 100, from: bench.test, seed: 77)
        let budgets = bench.levels.budgetsUSD(for: sessions, rho: 0.05)
        let run = bench.simulator.run(OraclePolicy(simulator: bench.simulator), sessions: sessions,
                                      budgetsUSD: budgets, seed: 1)
        #expect(run.metrics.violations == 0)
        for (i, s) in sessions.enumerated() {
            let plan = HindsightOracle.solve(
                qualities: s.queries.map { r in bench.test.models.indices.map { bench.test.quality(r, $0) } },
                costsUSD: s.queries.map { r in bench.test.models.indices.map { bench.test.costUSD(r, $0) } },
                holdsUSD: s.queries.map { bench.simulator.holdsUSD(record: $0) }, budgetUSD: budgets[i])
            #expect(run.outcomes[i].qualitySum == plan.qualitySum && run.outcomes[i].costUSD == plan.costUSD)
        }
    }
}
