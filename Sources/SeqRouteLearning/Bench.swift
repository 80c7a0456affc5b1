// `seqroute bench`: every policy on the same sessions built from real router data (SPEC 7).
// Behaviour data on training sessions → HBR → CQL (and the learned baselines) → evaluation of
// every policy and knob at every budget level on test sessions → bench.json, bench.md and
// frontier.svg.

import COpenBLAS
import Foundation
import SeqRouteCore

public struct BenchConfiguration: Sendable {
    public var trainSessions = 10_000
    public var testSessionsPerLevel = 2_000
    /// Training sessions held out to choose knobs (never test sessions).
    public var validationSessions = 500
    public var rhos = BudgetLevels.rhos
    /// The λ sweep before refinement. Dense where one step of λ moved the most spending on
    /// RouterBench: below 0.2, and around 4, where the cheap models take over. 100 lies beyond
    /// the trained range (the network sees λ_max; the shadow-price heads charge all of λ).
    public var lambdas: [Double] = (0...20).map { Double($0) / 100 }
        + [0.22, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6, 0.8, 1, 1.5, 2, 2.5, 3, 3.5, 3.75, 4, 4.25, 4.5, 4.75, 5, 5.5, 6, 7, 8,
           10, 15, 25, 50, 100]
    /// How many λ the sweep may add where one step of λ moves the learned policy's cost or
    /// quality on validation sessions the most (`LambdaSweep.refined`), whatever the data.
    public var lambdaRefinements = 128
    /// How many λ the search on test sessions (step 7b in docs/LEARNING.md) may evaluate
    /// between one pair of neighbouring λ, for one baseline point that the sweep leaves.
    public var lambdaSearchTries = 16
    /// At most this many runs of step 7b (docs/LEARNING.md) per budget level.
    public var lambdaSearchRunsPerLevel = 128
    public var hbr = HBRConfiguration()
    public var cql = CQLConfiguration()
    public var bcSteps = 10_000
    public var behaviourExploration = 0.2
    /// Give the learned policies each query's text features. Off by default: with about 2,000
    /// training queries the networks learn which model succeeded on each of them and carry
    /// that to test queries badly (measured; docs/BENCHMARKS.md). The task label, the budget
    /// state and the holds are always inputs.
    public var queryFeatures = false
    /// Give the learned policies each model's mean quality and mean cost on training queries of
    /// the turn's task (the statistics pacing ranks by), so that they need not rediscover them
    /// from 0/1 outcomes.
    public var taskPriors = true
    /// With task priors: how many stages of a session they tell apart (StateEncoder.stages),
    /// measured over the turns of the training sessions.
    public var priorStages = 8
    public var seed: UInt64 = 1

    public init() {}

    /// Small enough to finish in about a minute, for tests and demos.
    public static var quick: BenchConfiguration {
        var c = BenchConfiguration()
        c.trainSessions = 1_000
        c.testSessionsPerLevel = 200
        c.validationSessions = 200
        c.hbr.logUniformBudgets = 8
        c.cql.steps = 3_000
        c.bcSteps = 1_000
        c.lambdas = [0, 0.3, 1, 2.5, 6, 15, 50]
        c.lambdaRefinements = 6
        return c
    }
}

public struct BenchResult: Sendable, Codable, Equatable {
    public var policy: String
    public var rho: Double
    public var knob: Double?
    public var quality: Double
    public var cost: Double
    public var bankruptcy_rate: Double
    public var unserved: Double
    public var over_budget: Double
    public var violations: Int

    enum CodingKeys: String, CodingKey {
        case policy, rho, knob, quality, cost, bankruptcy_rate, unserved, over_budget, violations
    }

    /// Written by hand so that a policy without a knob says `"knob": null` rather than nothing.
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(policy, forKey: .policy)
        try c.encode(rho, forKey: .rho)
        try c.encode(knob, forKey: .knob)
        try c.encode(quality, forKey: .quality)
        try c.encode(cost, forKey: .cost)
        try c.encode(bankruptcy_rate, forKey: .bankruptcy_rate)
        try c.encode(unserved, forKey: .unserved)
        try c.encode(over_budget, forKey: .over_budget)
        try c.encode(violations, forKey: .violations)
    }
}

extension BenchResult {
    /// One evaluation run's figures.
    init(policy: String, rho: Double, knob: Double?, _ m: SimMetrics) {
        self.init(policy: policy, rho: rho, knob: knob, quality: m.meanTurnQuality, cost: m.meanSessionCostUSD,
                  bankruptcy_rate: m.bankruptcyRate, unserved: m.unservedTurnShare, over_budget: m.overBudgetSessionShare,
                  violations: m.violations)
    }

    /// At least `b`'s quality at no more than its cost: the dominance that issue 3 asks for.
    func reaches(_ b: BenchResult) -> Bool { quality >= b.quality && cost <= b.cost }
}

public struct LevelSummary: Sendable, Codable {
    public var rho: Double
    /// The λ chosen on validation sessions (drawn from training queries) that reaches pacing's
    /// validation quality at the least validation cost; its test figures follow.
    public var matched_lambda: Double?
    public var seqroute_quality: Double?
    public var seqroute_cost: Double?
    public var pacing_quality: Double
    public var pacing_cost: Double
    /// Frontier comparisons on test sessions (every λ of the sweep against one baseline point):
    /// 1 − cost(cheapest λ point of equal or better quality)/cost(baseline).
    public var cost_reduction_vs_strongest: Double?
    public var best_baseline: String
    public var cost_reduction_vs_best_baseline: Double?
    /// Baseline points (heuristics, static models, BC) that no λ reaches at ≥ quality and ≤ cost.
    public var undominated_baseline_points: [String]
    /// The same against the λ of the sweep alone (chosen on validation sessions).
    public var undominated_by_sweep: [String]
    /// The λ that the search on test sessions ran at this level (step 7b in docs/LEARNING.md),
    /// in increasing order.
    public var lambdas_searched_on_test: [Double]
    public var seqroute_max_quality: Double
    public var seqroute_min_bankruptcy: Double
    public var seqroute_max_bankruptcy: Double
    public var cql_no_hbr_max_quality: Double
    public var cql_no_hbr_max_bankruptcy: Double
    public var oracle_quality: Double
    public var oracle_share: Double
}

public struct BenchOutput: Sendable, Codable {
    public var results: [BenchResult]
    public var summary: [LevelSummary]
    public var strongest_unbudgeted: BenchResult
    public var figures: [String: Double]
    public var notes: [String]
}

/// Each model's mean quality and mean cost (USD) per task and stage of a session, over the turns
/// of `sessions`, in the rows `StateEncoder.priorRow` reads. Every query records every model's
/// outcome, so these are exact means, not estimates from logged choices. A task seen on fewer
/// than 30 turns of a stage takes its means over all its queries.
public func stagePriors(sessions: [Session], table: QueryTable, stats: TrainingStats, tasks: [String],
                        stages: Int) -> (quality: [[Double]], costUSD: [[Double]]) {
    let k = table.models.count, rows = (tasks.count + 1) * stages
    var quality = [[Double]](repeating: [Double](repeating: 0, count: k), count: rows), cost = quality
    var turns = [Int](repeating: 0, count: rows)
    let taskIndex = Dictionary(uniqueKeysWithValues: tasks.enumerated().map { ($1, $0) })
    for session in sessions {
        for (t, q) in session.queries.enumerated() {
            let stage = StateEncoder.stage(turn: t + 1, horizon: session.horizon, stages: stages)
            // The task's row, and the row for an unknown task (every task).
            for row in [(taskIndex[table.records[q].task] ?? tasks.count) * stages + stage, tasks.count * stages + stage] {
                turns[row] += 1
                for m in 0..<k {
                    quality[row][m] += table.quality(q, m)
                    cost[row][m] += table.costUSD(q, m)
                }
            }
        }
    }
    for row in 0..<rows {
        if turns[row] >= 30 {
            quality[row] = quality[row].map { $0 / Double(turns[row]) }
            cost[row] = cost[row].map { $0 / Double(turns[row]) }
        } else {
            let task = row / stages < tasks.count ? tasks[row / stages] : nil
            quality[row] = task.map(stats.quality(task:)) ?? stats.meanQuality
            cost[row] = task.map(stats.costUSD(task:)) ?? stats.meanCostUSD
        }
    }
    return (quality, cost)
}

public enum Bench {
    public static func run(train: QueryTable, test: QueryTable, configuration c: BenchConfiguration,
                           progress: @escaping @Sendable (String) -> Void) throws -> (BenchOutput, LearnedPolicy) {
        openblas_set_num_threads(1)
        guard train.models == test.models else {
            throw SimulationError(description: "training models \(train.models) differ from test models \(test.models)")
        }
        guard train.models.count <= 32 else {
            throw SimulationError(description: "pools of more than 32 models are not supported (feasibility masks are 32 bits)")
        }
        guard c.cql.steps >= 1, c.bcSteps >= 1, c.trainSessions >= 1, c.testSessionsPerLevel >= 1 else {
            throw SimulationError(description: "steps and session counts must be at least 1")
        }
        var figures: [String: Double] = [:]
        var notes: [String] = []
        let featurizer = HashingFeaturizer()
        let stats = TrainingStats(training: train)
        let holds = Holds(training: train)
        let levels = BudgetLevels(stats: stats, holds: holds)
        let kappa = levels.strongestMeanCostUSD
        let scale = RewardScale(priceScaleUSD: kappa, cheapRatio: stats.meanCostUSD[stats.cheapestModel] / kappa)
        let tasks = stats.taskCounts.keys.sorted()
        let generator = SessionGenerator()
        let trainSessions = generator.sessions(count: c.trainSessions, from: train, seed: c.seed)
        let stages = c.taskPriors ? max(1, c.priorStages) : 1
        // One stage: the task's means over all its training queries, as pacing ranks by.
        let priors = stages > 1
            ? stagePriors(sessions: trainSessions, table: train, stats: stats, tasks: tasks, stages: stages)
            : (quality: tasks.map(stats.quality(task:)) + [stats.meanQuality], costUSD: tasks.map(stats.costUSD(task:)) + [stats.meanCostUSD])
        let encoder = StateEncoder(featureDimension: c.queryFeatures ? featurizer.dimension : 0, tasks: tasks,
                                   modelCount: train.models.count, priceScaleUSD: kappa, lambdaMax: c.hbr.lambdaMax,
                                   priorQuality: c.taskPriors ? priors.quality : [],
                                   priorCost: c.taskPriors ? priors.costUSD.map { $0.map { $0 / kappa } } : [],
                                   stages: stages)
        let trainData = QueryData(table: train, holds: holds, encoder: encoder, featurizer: featurizer)
        let testData = QueryData(table: test, holds: holds, encoder: encoder, featurizer: featurizer)
        let trainSim = try Simulator(table: train, holds: holds)
        let testSim = try Simulator(table: test, holds: holds)

        // 1. Logged data: the behaviour policy on training sessions at random budget levels.
        progress("behaviour: \(c.trainSessions) training sessions")
        var budgetRandom = SplitMix64(seed: c.seed &+ 101)
        let trainBudgets = trainSessions.map {
            levels.budgetUSD(turns: $0.horizon, rho: 0.02 + 1.18 * budgetRandom.unit())
        }
        let behaviour = BehaviourPolicy(components: BehaviourPolicy.defaultComponents(stats),
                                        exploration: c.behaviourExploration)
        let logged = trainSim.run(behaviour, sessions: trainSessions, budgetsUSD: trainBudgets, seed: c.seed, logging: true)
        notes.append(String(format: "behaviour policy on training sessions: quality %.3f, bankruptcy %.3f",
                            logged.metrics.meanTurnQuality, logged.metrics.bankruptcyRate))

        // 2. HBR, streamed into the one training buffer.
        progress("HBR: relabelling \(logged.logs.count) logged sessions")
        var buffer: [Transition] = []
        buffer.reserveCapacity(c.trainSessions * 10 * (c.hbr.logUniformBudgets + 8))
        let hbrStart = Date()
        let counts = HindsightBudgetRelabeling.expand(logged.logs, configuration: c.hbr) { buffer.append($0) }
        let hbrSeconds = Date().timeIntervalSince(hbrStart)
        figures["hbr_transitions"] = Double(counts.transitions)
        figures["hbr_bankruptcy_transitions"] = Double(counts.bankruptcies)
        figures["hbr_seconds"] = hbrSeconds
        figures["hbr_transitions_per_second"] = Double(counts.transitions) / max(hbrSeconds, 1e-9)
        progress(String(format: "HBR: %d transitions (%d bankruptcies) from %d copies in %.1f s",
                        counts.transitions, counts.bankruptcies, counts.copies, hbrSeconds))

        // The logged steps alone (the logged budget, one λ each): CQL without HBR, and BC.
        var original: [Transition] = []
        for (i, s) in logged.logs.enumerated() {
            var random = SplitMix64(seed: c.hbr.seed ^ (UInt64(i) &* 0x9E37_79B9_7F4A_7C15) ^ 0xB0)
            let lambda = HindsightBudgetRelabeling.drawLambda(c.hbr, random: &random)
            _ = HindsightBudgetRelabeling.replay(s, budgetUSD: s.budgetUSD, lambda: lambda) { original.append($0) }
        }
        figures["logged_transitions"] = Double(original.count)
        guard !buffer.isEmpty, !original.isEmpty else {
            throw SimulationError(description: "the behaviour policy logged no transition to learn from")
        }

        // 3. Training.
        progress("CQL with HBR: \(c.cql.steps) steps on \(buffer.count) transitions")
        let trainer = CQLTrainer(encoder: encoder, scale: scale, configuration: c.cql)
        let (network, report) = trainer.train(buffer, data: trainData) { step, loss in
            progress(String(format: "CQL with HBR: step %d/%d, TD loss %.4f", step, c.cql.steps, loss))
        }
        figures["cql_steps_per_second"] = Double(report.steps) / max(report.seconds, 1e-9)
        figures["cql_seconds"] = report.seconds
        buffer = []  // the expanded set is not needed past training

        progress("CQL without HBR: \(c.cql.steps) steps on \(original.count) transitions")
        let (noHBR, _) = trainer.train(original, data: trainData) { step, loss in
            progress(String(format: "CQL without HBR: step %d/%d, TD loss %.4f", step, c.cql.steps, loss))
        }
        progress("behaviour cloning: \(c.bcSteps) steps")
        var bc = BehaviourCloning(encoder: encoder)
        bc.steps = c.bcSteps
        let bcNetwork = bc.train(original, data: trainData)

        func learned(_ kind: String, _ net: MLP, _ version: String) -> LearnedPolicy {
            LearnedPolicy(version: version, kind: kind, pool: train.models, featurizer: featurizer.identity,
                          encoder: encoder, scale: scale, lambdaRange: [0, c.hbr.lambdaMax], network: net,
                          head: kind == "cql" ? trainer.head : .perAction,
                          training: ["transitions": Double(counts.transitions), "steps": Double(report.steps),
                                     "td_loss": report.finalTDLoss])
        }
        let seqroute = learned("cql", network, "bench-cql-hbr")
        let cqlNoHBR = learned("cql", noHBR, "bench-cql-no-hbr")
        let cloned = learned("bc", bcNetwork, "bench-bc")

        // 4. The λ sweep, refined on validation sessions (drawn from training queries; the test
        // sessions play no part) where one step of λ moves cost or quality the most.
        let testSessions = generator.sessions(count: c.testSessionsPerLevel, from: test, seed: c.seed &+ 2)
        let validation = generator.sessions(count: c.validationSessions, from: train, seed: c.seed &+ 3)
        // Each λ's validation figures per level, kept for matching λ to pacing (step 6).
        var onValidation: [Double: [SimMetrics]] = [:]
        let sweep = LambdaSweep.refined(c.lambdas, adding: c.lambdaRefinements, relative: c.rhos.count) { l in
            let runs = Slots<SimMetrics>(count: c.rhos.count)
            DispatchQueue.concurrentPerform(iterations: c.rhos.count) { i in
                runs.set(i, trainSim.run(LearnedSimPolicy(policy: seqroute, data: trainData, lambda: l), sessions: validation,
                                         budgetsUSD: levels.budgetsUSD(for: validation, rho: c.rhos[i]),
                                         seed: c.seed &+ 6).metrics)
            }
            let metrics = runs.values
            onValidation[l] = metrics
            return metrics.map(\.meanSessionCostUSD) + metrics.map(\.meanTurnQuality)
        }
        figures["lambda_sweep_size"] = Double(sweep.count)
        progress("λ sweep: \(sweep.count) values (\(sweep.count - Set(c.lambdas).count) added on validation sessions)")

        // 5. Evaluation: the same test sessions at every level, every policy and knob.
        struct Job: Sendable {
            var name: String
            var knob: Double?
            var make: @Sendable () -> any SimPolicy
        }
        var jobs: [Job] = []
        for (m, name) in train.models.enumerated() {
            jobs.append(Job(name: "model:\(name)", knob: nil) { SingleModelHeuristic(model: m, stats: stats) })
        }
        jobs.append(Job(name: "cheapest", knob: nil) { SingleModelHeuristic.cheapest(stats) })
        jobs.append(Job(name: "strongest", knob: nil) { SingleModelHeuristic.strongest(stats) })
        jobs.append(Job(name: "random", knob: nil) { RandomHeuristic() })
        for k in PacingHeuristic.knobs { jobs.append(Job(name: "pacing", knob: k) { PacingHeuristic(knob: k, stats: stats) }) }
        for k in ThresholdHeuristic.knobs { jobs.append(Job(name: "threshold", knob: k) { ThresholdHeuristic(knob: k, stats: stats) }) }
        for k in ReserveHeuristic.knobs { jobs.append(Job(name: "greedy-reserve", knob: k) { ReserveHeuristic(knob: k, stats: stats) }) }
        for k in MyopicRouter.knobs { jobs.append(Job(name: "myopic", knob: k) { MyopicRouter(knob: k, stats: stats) }) }
        jobs.append(Job(name: "bc", knob: nil) { LearnedSimPolicy(policy: cloned, data: testData, lambda: 0) })
        for l in sweep {
            jobs.append(Job(name: "seqroute", knob: l) { LearnedSimPolicy(policy: seqroute, data: testData, lambda: l) })
            jobs.append(Job(name: "cql-no-hbr", knob: l) { LearnedSimPolicy(policy: cqlNoHBR, data: testData, lambda: l) })
        }
        jobs.append(Job(name: "oracle", knob: nil) { OraclePolicy(simulator: testSim) })

        progress("evaluation: \(jobs.count) policies × \(c.rhos.count) budget levels × \(testSessions.count) sessions")
        let evalStart = Date()
        let runs = c.rhos.flatMap { rho in jobs.map { (rho, $0) } }
        let results = Slots<BenchResult>(count: runs.count)
        let done = Counter()
        DispatchQueue.concurrentPerform(iterations: runs.count) { i in
            let (rho, job) = runs[i]
            let budgets = levels.budgetsUSD(for: testSessions, rho: rho)
            let m = testSim.run(job.make(), sessions: testSessions, budgetsUSD: budgets, seed: c.seed &+ 5).metrics
            results.set(i, BenchResult(policy: job.name, rho: rho, knob: job.knob, m))
            let n = done.increment()
            if n % 50 == 0 || n == runs.count { progress("evaluation: \(n)/\(runs.count) runs") }
        }
        figures["evaluation_seconds"] = Date().timeIntervalSince(evalStart)

        // Step 7b of docs/LEARNING.md. Between two λ of the sweep, on the test sessions: for each
        // baseline point that no λ of the sweep reaches, bisect λ across its cost. This only
        // answers whether some λ reaches the point; every other figure keeps to the sweep.
        let swept = results.values
        let searched = Slots<[BenchResult]>(count: c.rhos.count)
        let searchStart = Date()
        DispatchQueue.concurrentPerform(iterations: c.rhos.count) { i in
            let rho = c.rhos[i]
            let budgets = levels.budgetsUSD(for: testSessions, rho: rho)
            searched.set(i, searchLambdas(level: swept.filter { $0.rho == rho }, triesPerPair: c.lambdaSearchTries,
                                          runsAtMost: c.lambdaSearchRunsPerLevel) { l in
                BenchResult(policy: "seqroute", rho: rho, knob: l,
                            testSim.run(LearnedSimPolicy(policy: seqroute, data: testData, lambda: l), sessions: testSessions,
                                        budgetsUSD: budgets, seed: c.seed &+ 5).metrics)
            })
        }
        let extra = searched.values
        let searchRuns = extra.map(\.count).reduce(0, +)
        figures["lambda_test_search_runs"] = Double(searchRuns)
        figures["lambda_test_search_seconds"] = Date().timeIntervalSince(searchStart)
        progress("λ search on test sessions: \(searchRuns) runs")
        let all = c.rhos.enumerated().flatMap { i, rho in swept.filter { $0.rho == rho } + extra[i] }

        // The strongest model with no budget at all: what most services do today.
        let unlimited = testSim.run(SingleModelHeuristic.strongest(stats), sessions: testSessions,
                                    budgetsUSD: testSessions.map { _ in Double.greatestFiniteMagnitude / 4 },
                                    seed: c.seed &+ 5).metrics
        let strongestUnbudgeted = BenchResult(policy: "strongest (no budget)", rho: 0, knob: nil,
                                              quality: unlimited.meanTurnQuality, cost: unlimited.meanSessionCostUSD,
                                              bankruptcy_rate: 0, unserved: 0, over_budget: 0,
                                              violations: unlimited.violations)

        // 6. Knobs chosen on validation (training) sessions: the λ matching pacing's quality.
        progress("choosing λ on \(validation.count) training sessions")
        var matched: [Double: Double] = [:]
        for (level, rho) in c.rhos.enumerated() {
            let budgets = levels.budgetsUSD(for: validation, rho: rho)
            let pacingQ = trainSim.run(PacingHeuristic(knob: 1, stats: stats), sessions: validation,
                                       budgetsUSD: budgets, seed: c.seed &+ 6).metrics.meanTurnQuality
            var best: (lambda: Double, cost: Double)?
            for l in sweep {
                let m = onValidation[l]![level]
                if m.meanTurnQuality >= pacingQ && m.meanSessionCostUSD < (best?.cost ?? .infinity) {
                    best = (l, m.meanSessionCostUSD)
                }
            }
            matched[rho] = best?.lambda
        }

        // Decision latency: features to chosen model, one state at a time.
        let probe = LearnedSimPolicy(policy: seqroute, data: testData, lambda: 1)
        var probeRandom = SplitMix64(seed: 1)
        let q0 = testSessions[0].queries[0]
        let state = SimState(queryIndex: q0, features: [], task: test.records[q0].task, turn: 1, horizon: 8,
                             budgetUSD: 0.01, remainingUSD: 0.01, holdsUSD: testData.holdsUSD[q0],
                             feasible: testData.holdsUSD[q0].map { $0 <= 0.01 }, previousAction: nil)
        let latencyStart = DispatchTime.now().uptimeNanoseconds
        for _ in 0..<2_000 { _ = probe.choose(state, random: &probeRandom) }
        figures["decision_microseconds"] = Double(DispatchTime.now().uptimeNanoseconds - latencyStart) / 2_000 / 1_000

        let summary = c.rhos.map { rho in
            summarize(rho: rho, all.filter { $0.rho == rho }, matched: matched[rho] ?? nil, sweep: Set(sweep))
        }
        return (BenchOutput(results: all, summary: summary, strongest_unbudgeted: strongestUnbudgeted,
                            figures: figures, notes: notes), seqroute)
    }

    static let baselineNames: Set<String> = ["pacing", "threshold", "greedy-reserve", "myopic", "random", "cheapest",
                                             "strongest", "bc"]
    static func isBaseline(_ r: BenchResult) -> Bool { baselineNames.contains(r.policy) || r.policy.hasPrefix("model:") }

    /// Step 7b at one level (`level`, its results): for each baseline point that no `seqroute`
    /// point reaches, the pairs of neighbouring λ (in order of λ) whose costs lie either side of
    /// the point's and whose dearer end has at least its quality are searched until one reaches
    /// it, `triesPerPair` runs a pair, `runsAtMost` in all. `run(λ)` evaluates `seqroute` at λ.
    /// Returns the results it ran, in increasing λ.
    static func searchLambdas(level: [BenchResult], triesPerPair: Int, runsAtMost: Int,
                              run: (Double) -> BenchResult) -> [BenchResult] {
        var added: [BenchResult] = []
        for b in level.filter(isBaseline) {
            let sr = (level + added).filter { $0.policy == "seqroute" }.sorted { $0.knob! < $1.knob! }
            guard !sr.contains(where: { $0.reaches(b) }) else { continue }
            for (x, y) in zip(sr, sr.dropFirst()) where (x.cost > b.cost) != (y.cost > b.cost) {
                let (dear, cheap) = x.cost > b.cost ? (x, y) : (y, x)
                let tries = min(triesPerPair, runsAtMost - added.count)
                guard dear.quality >= b.quality, tries > 0 else { continue }
                _ = LambdaSweep.search(dear: dear.knob!, cheap: cheap.knob!, reaching: (b.quality, b.cost), tries: tries) { l in
                    let r = run(l)
                    added.append(r)
                    return (r.quality, r.cost)
                }
                if added.last?.reaches(b) == true { break }
            }
        }
        return added.sorted { $0.knob! < $1.knob! }
    }

    static func summarize(rho: Double, _ rs: [BenchResult], matched: Double?, sweep: Set<Double>) -> LevelSummary {
        // Every figure but the dominance lists and the bankruptcy rates keeps to the sweep's λ.
        let all = rs.filter { $0.policy == "seqroute" }
        let sr = all.filter { sweep.contains($0.knob!) }
        let noHBR = rs.filter { $0.policy == "cql-no-hbr" }
        let pacing = rs.first { $0.policy == "pacing" && $0.knob == 1 }!
        let strongest = rs.first { $0.policy == "strongest" }!
        let oracle = rs.first { $0.policy == "oracle" }!
        let baselines = rs.filter(isBaseline)
        let best = baselines.max { $0.quality < $1.quality }!
        func cheapestReaching(_ q: Double) -> BenchResult? {
            sr.filter { $0.quality >= q }.min { $0.cost < $1.cost }
        }
        func reduction(vs b: BenchResult) -> Double? {
            guard b.cost > 0 else { return nil }
            return cheapestReaching(b.quality).map { 1 - $0.cost / b.cost }
        }
        func undominated(by points: [BenchResult]) -> [String] {
            baselines.filter { b in !points.contains { $0.reaches(b) } }
                .map { $0.policy + ($0.knob.map { "(\($0))" } ?? "") }
        }
        let matchedPoint = matched.flatMap { l in sr.first { $0.knob == l } }
        let srBest = sr.map(\.quality).max() ?? 0
        return LevelSummary(
            rho: rho, matched_lambda: matched, seqroute_quality: matchedPoint?.quality, seqroute_cost: matchedPoint?.cost,
            pacing_quality: pacing.quality, pacing_cost: pacing.cost,
            cost_reduction_vs_strongest: reduction(vs: strongest),
            best_baseline: best.policy + (best.knob.map { "(\($0))" } ?? ""),
            cost_reduction_vs_best_baseline: reduction(vs: best),
            undominated_baseline_points: undominated(by: all),
            undominated_by_sweep: undominated(by: sr),
            lambdas_searched_on_test: all.compactMap(\.knob).filter { !sweep.contains($0) }.sorted(),
            seqroute_max_quality: srBest,
            seqroute_min_bankruptcy: all.map(\.bankruptcy_rate).min() ?? 0,
            seqroute_max_bankruptcy: all.map(\.bankruptcy_rate).max() ?? 0,
            cql_no_hbr_max_quality: noHBR.map(\.quality).max() ?? 0,
            cql_no_hbr_max_bankruptcy: noHBR.map(\.bankruptcy_rate).max() ?? 0,
            oracle_quality: oracle.quality, oracle_share: oracle.quality > 0 ? srBest / oracle.quality : 0)
    }
}

/// Results written from concurrent evaluation runs, each into its own slot.
/// One slot per parallel run, filled in any order, read in slot order.
final class Slots<T>: @unchecked Sendable {
    private let lock = NSLock()
    private var slots: [T?]
    init(count: Int) { slots = Array(repeating: nil, count: count) }
    func set(_ i: Int, _ r: T) { lock.withLock { slots[i] = r } }
    var values: [T] { lock.withLock { slots.compactMap { $0 } } }
}

final class Counter: @unchecked Sendable {
    private let lock = NSLock()
    private var n = 0
    func increment() -> Int { lock.withLock { n += 1; return n } }
}
