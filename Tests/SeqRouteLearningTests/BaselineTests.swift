import Foundation
import SeqRouteCore
import Testing
@testable import SeqRouteLearning

@Suite struct BaselineTests {
    /// Every baseline at every knob, plus the behaviour policy.
    private func everyPolicy(_ stats: TrainingStats) -> [(String, any SimPolicy)] {
        var out: [(String, any SimPolicy)] = stats.models.indices.map {
            ("single \(stats.models[$0])", SingleModelHeuristic(model: $0, stats: stats))
        }
        out.append(("random", RandomHeuristic()))
        let knobbed: [any KnobbedHeuristic.Type] = [PacingHeuristic.self, ThresholdHeuristic.self,
                                                    ReserveHeuristic.self, MyopicRouter.self]
        for heuristic in knobbed {
            out += heuristic.knobs.map { ("\(heuristic) \($0)", heuristic.init(knob: $0, stats: stats)) }
        }
        out.append(("behaviour", BehaviourPolicy(components: BehaviourPolicy.defaultComponents(stats))))
        return out
    }

    private func run(_ sim: Simulator, _ policy: any SimPolicy, _ sessions: [Session], _ budgets: [Double],
                     logging: Bool = false) -> SimRun {
        sim.run(policy, sessions: sessions, budgetsUSD: budgets, seed: 11, logging: logging)
    }

    @Test func noBaselineEverChoosesAnInfeasibleModel() throws {
        let bench = try routerBenchSim.get()
        let sessions = SessionGenerator().sessions(count: 300, from: bench.test, seed: 3)
        var bankruptSomewhere = false
        // ρ = 0 and below make bankruptcy common, so the no-feasible path is exercised too.
        for rho in [-0.5, 0] + BudgetLevels.rhos {
            let budgets = bench.levels.budgetsUSD(for: sessions, rho: rho)
            for (name, policy) in everyPolicy(bench.stats) {
                let m = run(bench.simulator, policy, sessions, budgets).metrics
                #expect(m.violations == 0, "\(name) at ρ = \(rho)")
                if m.bankruptcyRate > 0 { bankruptSomewhere = true }
            }
        }
        #expect(bankruptSomewhere)
    }

    @Test func behaviourPolicyLogsTheMixturePropensity() throws {
        let bench = try routerBenchSim.get()
        let sessions = SessionGenerator().sessions(count: 200, from: bench.test, seed: 8)
        let budgets = bench.levels.budgetsUSD(for: sessions, rho: 0.35)
        let epsilon = 0.2
        let logs = run(bench.simulator, BehaviourPolicy(components: BehaviourPolicy.defaultComponents(bench.stats),
                                                        exploration: epsilon),
                       sessions, budgets, logging: true).logs
        var explored = 0, served = 0
        for log in logs {
            var spent = 0.0
            for turn in log.turns {
                guard let a = turn.action else { continue }
                served += 1
                #expect(turn.feasible[a] && fits(holdUSD: turn.holdsUSD[a], budgetUSD: log.budgetUSD, spentUSD: spent))
                #expect(turn.costUSD == bench.test.costUSD(turn.queryIndex, a))
                #expect(turn.quality == bench.test.quality(turn.queryIndex, a) && turn.holdUSD == turn.holdsUSD[a])
                let share = epsilon / Double(turn.feasible.filter { $0 }.count)
                let greedy = abs(turn.propensity - (1 - epsilon + share)) < 1e-12
                #expect(greedy || abs(turn.propensity - share) < 1e-12)
                if !greedy { explored += 1 }
                spent += turn.costUSD
            }
        }
        // About ε × (1 − 1/|feasible|) of the turns leave the component's choice.
        let rate = Double(explored) / Double(served)
        #expect(rate > 0.1 && rate < 0.25)
        // Pure greedy: every propensity is 1.
        let greedy = run(bench.simulator, BehaviourPolicy(components: BehaviourPolicy.defaultComponents(bench.stats),
                                                          exploration: 0),
                         sessions, budgets, logging: true).logs
        #expect(greedy.allSatisfy { $0.turns.allSatisfy { $0.action == nil || $0.propensity == 1 } })
    }

    /// RESEARCH.md measured pacing and the oracle on 2,000 sessions per level; 300 sessions here
    /// keep the debug build quick, within the tolerance.
    @Test func pacingAndOracleLandNearTheReferencePoints() throws {
        let bench = try routerBenchSim.get()
        let sessions = SessionGenerator().sessions(count: 300, from: bench.test, seed: 2026)
        let reference: [(rho: Double, pacing: Double, oracle: Double)] = [(0.2, 0.824, 0.974), (1.0, 0.867, 0.975)]
        for r in reference {
            let budgets = bench.levels.budgetsUSD(for: sessions, rho: r.rho)
            let pacing = run(bench.simulator, PacingHeuristic(stats: bench.stats), sessions, budgets).metrics
            let oracle = run(bench.simulator, OraclePolicy(simulator: bench.simulator), sessions, budgets).metrics
            for (name, m) in [("pacing", pacing), ("oracle", oracle)] {
                print(String(format: "ρ = %.2f %@: quality %.4f, cost %.3f mUSD/session, bankrupt %.3f, over budget %.3f, overrun turns %.4f",
                             r.rho, name, m.meanTurnQuality, m.meanSessionCostUSD * 1000, m.bankruptcyRate,
                             m.overBudgetSessionShare, m.overrunTurnShare))
                #expect(m.violations == 0)
            }
            #expect(abs(pacing.meanTurnQuality - r.pacing) <= 0.03, "pacing at ρ = \(r.rho)")
            #expect(abs(oracle.meanTurnQuality - r.oracle) <= 0.02, "oracle at ρ = \(r.rho)")
        }
    }
}
