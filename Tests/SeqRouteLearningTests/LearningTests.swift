import Foundation
import SeqRouteCore
import Testing
@testable import SeqRouteLearning

@Suite struct NetworkTests {
    /// Backpropagation against central finite differences of L = Σ w_ij · out_ij, on a small
    /// network whose pre-activations stay away from the ReLU kink.
    @Test func gradientsMatchFiniteDifferences() {
        var net = MLP(sizes: [5, 7, 6, 3], seed: 42)
        for l in 0..<net.layers { for i in net.biases[l].indices { net.biases[l][i] = 0.3 } }
        let batch = 4
        var random = SplitMix64(seed: 9)
        let x = (0..<(batch * 5)).map { _ in Float(random.unit() * 2 - 1) }
        let w = (0..<(batch * 3)).map { _ in Float(random.unit() * 2 - 1) }
        func loss(_ n: MLP) -> Double {
            zip(n.outputs(x, batch: batch), w).reduce(0) { $0 + Double($1.0 * $1.1) }
        }
        let g = net.backward(values: net.forward(x, batch: batch), outputGradient: w, batch: batch)
        var checked = 0, worst = 0.0
        for l in 0..<net.layers {
            for i in stride(from: 0, to: net.weights[l].count, by: 3) {
                let eps: Float = 1e-2
                var plus = net, minus = net
                plus.weights[l][i] += eps
                minus.weights[l][i] -= eps
                let numeric = (loss(plus) - loss(minus)) / Double(2 * eps)
                let analytic = Double(g.weights[l][i])
                worst = max(worst, abs(numeric - analytic) / max(1e-2, abs(numeric) + abs(analytic)))
                checked += 1
            }
            for i in net.biases[l].indices {
                let eps: Float = 1e-2
                var plus = net, minus = net
                plus.biases[l][i] += eps
                minus.biases[l][i] -= eps
                let numeric = (loss(plus) - loss(minus)) / Double(2 * eps)
                worst = max(worst, abs(numeric - Double(g.biases[l][i])) / max(1e-2, abs(numeric) + abs(Double(g.biases[l][i]))))
                checked += 1
            }
        }
        #expect(checked > 30)
        #expect(worst < 2e-2, "worst relative error \(worst)")
    }

    /// The backward pass of the heads with a shadow price against central finite differences
    /// of L = Σ w_a · Q(s,a) with respect to their outputs: (v, u), and (v, u, s) with stakes.
    @Test(arguments: [QHead.shadowPrice, .shadowPriceAndStakes])
    func shadowPriceHeadGradientMatchesFiniteDifferences(head: QHead) {
        let encoder = StateEncoder(featureDimension: 0, tasks: ["a", "b"], modelCount: 3, priceScaleUSD: 2, lambdaMax: 50,
                                   priorQuality: [[0.2, 0.5, 0.9], [0.1, 0.6, 0.7], [0.15, 0.55, 0.8]],
                                   priorCost: [[0.05, 0.3, 1.2], [0.1, 0.4, 0.9], [0.07, 0.35, 1]])
        let qf = QFunction(head: head, encoder: encoder, scale: RewardScale(priceScaleUSD: 2, cheapRatio: 0.05))
        let width = qf.outputWidth
        let w: [Float] = [0.7, -1.3, 0.4]
        // Rows 0 and 1 are the tasks', row 2 the one for an unknown task.
        for (row, lambda, all) in [(0, Float(0), [Float(0.2), -0.5, 0.8]), (1, 3, [-1, 1.5, -0.6]), (2, 0.4, [0.3, 0, 0.1])] {
            let outputs = Array(all.prefix(width))
            func loss(_ o: [Float]) -> Double {
                var q = [Float](repeating: 0, count: 3)
                qf.values(o, row: 0, priorRow: row, lambda: lambda, into: &q)
                return zip(q, w).reduce(0) { $0 + Double($1.0 * $1.1) }
            }
            var g = [Float](repeating: 0, count: width)
            qf.backward(ArraySlice(w), outputs: outputs, row: 0, priorRow: row, lambda: lambda, into: &g)
            for j in 0..<width {
                var plus = outputs, minus = outputs
                plus[j] += 1e-2
                minus[j] -= 1e-2
                let numeric = (loss(plus) - loss(minus)) / 2e-2
                #expect(abs(numeric - Double(g[j])) < 1e-3, "output \(j): numeric \(numeric), analytic \(g[j])")
            }
        }
    }

    @Test func adamFitsALinearMap() {
        var net = MLP(sizes: [2, 16, 1], seed: 1)
        var adam = Adam(for: net, learningRate: 1e-2)
        var random = SplitMix64(seed: 2)
        var last = Float.infinity
        for _ in 0..<400 {
            let x = (0..<64).map { _ in Float(random.unit() * 2 - 1) }
            let y = (0..<32).map { 2 * x[2 * $0] - x[2 * $0 + 1] }
            let values = net.forward(x, batch: 32)
            let out = values.last!
            let grad = (0..<32).map { (out[$0] - y[$0]) / 32 }
            last = zip(out, y).reduce(0) { $0 + ($1.0 - $1.1) * ($1.0 - $1.1) } / 32
            adam.apply(net.backward(values: values, outputGradient: grad, batch: 32), to: &net)
        }
        #expect(last < 0.01)
    }
}

/// A two-turn problem where saving early is right: turn 1 is easy (the cheap model scores 0.9,
/// the dear one 1.0), turn 2 is hard (cheap 0, dear 1). The budget affords the dear model once
/// plus the cheap one, but only in that order of holds: dear first leaves too little for it.
struct ToyMDP {
    static func record(_ id: String, _ task: String, cheap: Double, dear: Double) -> QueryRecord {
        QueryRecord(id: id, task: task, text: task == "easy" ? "what is two plus two" : "prove the theorem in full",
                    models: ["cheap": ModelOutcome(quality: cheap, costUSD: 1), "dear": ModelOutcome(quality: dear, costUSD: 10)])
    }
    // Holds are 1.25 × the highest training cost: cheap 1.25, dear 12.5.
    static let table = try! QueryTable(records: [
        record("e1", "easy", cheap: 0.9, dear: 1), record("e2", "easy", cheap: 0.9, dear: 1),
        record("h1", "hard", cheap: 0, dear: 1), record("h2", "hard", cheap: 0, dear: 1),
    ])
    static let budget = 14.0
    static let sessions = (0..<40).map { Session(queries: [$0 % 2, 2 + ($0 / 2) % 2]) }
    static var simulator: Simulator { try! Simulator(table: table, holds: Holds(training: table)) }
}

@Suite struct ToyMDPTests {
    /// The plain head and the two shadow-price heads, which get the toy's per-task means as
    /// priors (they need them).
    @Test(arguments: [QHead.perAction, .shadowPrice, .shadowPriceAndStakes])
    func cqlWithHBRLearnsToSaveAndMyopicDoesNot(head: QHead) throws {
        let table = ToyMDP.table, holds = Holds(training: table), stats = TrainingStats(training: table)
        let sim = ToyMDP.simulator
        let budgets = ToyMDP.sessions.map { _ in ToyMDP.budget }
        // Logged by a uniformly random policy (all four action sequences appear).
        let logged = sim.run(RandomHeuristic(), sessions: ToyMDP.sessions, budgetsUSD: budgets, seed: 3, logging: true)
        var hbr = HBRConfiguration()
        hbr.logUniformBudgets = 6
        hbr.zeroLambdaShare = 1  // λ = 0: quality alone
        var buffer: [Transition] = []
        let counts = HindsightBudgetRelabeling.expand(logged.logs, configuration: hbr) { buffer.append($0) }
        #expect(counts.transitions == buffer.count && counts.bankruptcies > 0)

        let featurizer = HashingFeaturizer(dimension: 16)
        let priors = head != .perAction
        let encoder = StateEncoder(featureDimension: 16, tasks: ["easy", "hard"], modelCount: 2, priceScaleUSD: 10, lambdaMax: 50,
                                   priorQuality: priors ? [[0.9, 1], [0, 1], [0.45, 1]] : [],
                                   priorCost: priors ? [[0.1, 1], [0.1, 1], [0.1, 1]] : [])
        let data = QueryData(table: table, holds: holds, encoder: encoder, featurizer: featurizer)
        var config = CQLConfiguration()
        config.head = head
        config.hidden = [32, 32]
        config.batch = 64
        config.steps = 1_500
        config.learningRate = 3e-3
        config.tau = 0.02
        let trainer = CQLTrainer(encoder: encoder, scale: RewardScale(priceScaleUSD: 10, cheapRatio: 0.1),
                                 configuration: config)
        #expect(trainer.head == head)
        let (net, _) = trainer.train(buffer, data: data)
        let policy = LearnedPolicy(version: "toy", kind: "cql", pool: table.models, featurizer: featurizer.identity,
                                   encoder: encoder, scale: RewardScale(priceScaleUSD: 10, cheapRatio: 0.1),
                                   lambdaRange: [0, 50], network: net, head: head, training: [:])
        let learned = sim.run(LearnedSimPolicy(policy: policy, data: data, lambda: 0), sessions: ToyMDP.sessions,
                              budgetsUSD: budgets, seed: 4).metrics
        let myopic = sim.run(SingleModelHeuristic.strongest(stats), sessions: ToyMDP.sessions,
                             budgetsUSD: budgets, seed: 4).metrics
        // Saving: cheap then dear, (0.9 + 1) / 2 per turn. Myopic: dear then cheap, (1 + 0) / 2.
        #expect(abs(learned.meanTurnQuality - 0.95) < 1e-9, "learned \(learned.meanTurnQuality)")
        #expect(abs(myopic.meanTurnQuality - 0.5) < 1e-9)
        #expect(learned.violations == 0 && learned.bankruptcyRate == 0)
    }
}

@Suite struct HBRTests {
    /// Three turns, each with holds (cheap 1, dear 5), logged actions dear, cheap, dear.
    func logged() -> LoggedSession {
        func turn(_ q: Int, _ a: Int, cost: Double, quality: Double) -> LoggedTurn {
            LoggedTurn(queryIndex: q, action: a, holdUSD: a == 0 ? 1 : 5, costUSD: cost, quality: quality,
                       propensity: 0.5, holdsUSD: [1, 5], feasible: [true, true])
        }
        return LoggedSession(session: Session(queries: [0, 1, 2]), budgetUSD: 20,
                             turns: [turn(0, 1, cost: 4, quality: 1), turn(1, 0, cost: 0.5, quality: 0.5),
                                     turn(2, 1, cost: 4, quality: 1)])
    }

    func replay(_ budget: Double) -> ([Transition], Bool) {
        var out: [Transition] = []
        let r = HindsightBudgetRelabeling.replay(logged(), budgetUSD: budget, lambda: 2) { out.append($0) }
        #expect(r.transitions == out.count)
        return (out, r.bankrupt)
    }

    @Test func fullReplayEndsDoneAtTheLastTurn() {
        let (t, bankrupt) = replay(20)
        #expect(t.count == 3 && !bankrupt)
        #expect(t.map(\.turn) == [1, 2, 3] && t.map(\.action) == [1, 0, 1])
        #expect(t.map(\.done) == [false, false, true] && t.map(\.nextQuery) == [1, 2, -1])
        #expect(t.map(\.remainingUSD) == [20, 16, 15.5] && t[0].nextRemainingUSD == 16)
        #expect(t.map(\.previous) == [Transition.none, 1, 0] && t.allSatisfy { $0.lambda == 2 })
    }

    @Test func bankruptcyIsPlacedWhereTheReplayedBudgetRunsOut() {
        // B′ = 4.7: turn 1 dear (hold 5) does not fit → nothing emitted at all? It fits cheap,
        // so the replay stops before turn 1 with no transition.
        #expect(replay(4.7).0.isEmpty)
        // B′ = 5.2: turn 1 fits (5 ≤ 5.2), leaves 1.2: turn 2 cheap fits (1 ≤ 1.2), leaves 0.7:
        // nothing fits turn 3 → turn 2's transition is the bankruptcy, terminal.
        let (t, bankrupt) = replay(5.2)
        #expect(bankrupt && t.count == 2)
        #expect(t[1].done && t[1].bankrupt && !t[0].done && !t[0].bankrupt)
        // B′ = 9.6: after two turns 5.1 left: dear (5) fits turn 3; all three emitted.
        #expect(replay(9.6).0.count == 3)
        // B′ = 8: after two turns 3.5 left: cheap fits, dear does not → turn 2 ends normally,
        // with turn 3 as its next state, and nothing after it.
        let (u, b2) = replay(8)
        #expect(!b2 && u.count == 2 && !u[1].done && u[1].nextQuery == 2 && u[1].nextFeasible == 0b01)
    }

    @Test func expansionIsDeterministicAndCounted() {
        let sessions = (0..<20).map { _ in logged() }
        var c = HBRConfiguration()
        c.seed = 5
        var a: [Transition] = [], b: [Transition] = []
        let ca = HindsightBudgetRelabeling.expand(sessions, configuration: c) { a.append($0) }
        let cb = HindsightBudgetRelabeling.expand(sessions, configuration: c) { b.append($0) }
        #expect(a == b && ca == cb && ca.transitions == a.count)
        #expect(ca.copies >= 20 * (1 + c.logUniformBudgets))
        c.seed = 6
        var d: [Transition] = []
        _ = HindsightBudgetRelabeling.expand(sessions, configuration: c) { d.append($0) }
        #expect(d != a)
        // Nothing follows a terminal transition within a copy: each copy's turns count up from 1.
        var expected = 1
        for t in a {
            if t.turn == 1 { expected = 1 }
            #expect(t.turn == UInt8(expected))
            expected += 1
        }
        #expect(ca.bankruptcies > 0)
    }
}

@Suite struct LearnedPolicyTests {
    /// A policy file written before heads existed has no "head": it is read as per-action, and
    /// a shadow-price file keeps its head through a round trip.
    @Test func policyFilesKeepTheirHead() throws {
        let encoder = StateEncoder(featureDimension: 0, tasks: ["a"], modelCount: 2, priceScaleUSD: 1, lambdaMax: 50,
                                   priorQuality: [[0.2, 0.9], [0.2, 0.9]], priorCost: [[0.1, 1], [0.1, 1]])
        let policy = LearnedPolicy(version: "v", kind: "cql", pool: ["x", "y"], featurizer: "f", encoder: encoder,
                                   scale: RewardScale(priceScaleUSD: 1, cheapRatio: 0.1), lambdaRange: [0, 50],
                                   network: MLP(sizes: [encoder.width, 4, 2], seed: 1), head: .shadowPrice, training: [:])
        let data = try JSONEncoder().encode(policy)
        #expect(try JSONDecoder().decode(LearnedPolicy.self, from: data).head == .shadowPrice)
        var object = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        #expect(object.removeValue(forKey: "head") != nil)
        let old = try JSONDecoder().decode(LearnedPolicy.self, from: JSONSerialization.data(withJSONObject: object))
        #expect(old.head == .perAction)
    }

    /// Priors per stage of a session: each model's means over the turns of that stage, the
    /// task's means over all its queries where a stage saw too few turns, and the rows the
    /// encoder reads. An encoder saved before stages existed reads as one stage.
    @Test func stagePriorsAreTheMeansOfEachStagesTurns() throws {
        func outcome(_ q: Double, _ c: Double) -> ModelOutcome { ModelOutcome(quality: q, costUSD: c) }
        let table = try QueryTable(records: [
            QueryRecord(id: "easy", task: "t", text: "", models: ["a": outcome(1, 1), "b": outcome(1, 3)]),
            QueryRecord(id: "hard", task: "t", text: "", models: ["a": outcome(0, 2), "b": outcome(1, 4)]),
        ])
        let stats = TrainingStats(training: table)
        let sessions = [Session](repeating: Session(queries: [0, 1]), count: 40)
        let p = stagePriors(sessions: sessions, table: table, stats: stats, tasks: ["t"], stages: 2)
        // Rows: task t early, t late, unknown task early, unknown late.
        #expect(p.quality == [[1, 1], [0, 1], [1, 1], [0, 1]])
        #expect(p.costUSD == [[1, 3], [2, 4], [1, 3], [2, 4]])
        let few = stagePriors(sessions: Array(sessions.prefix(10)), table: table, stats: stats, tasks: ["t"], stages: 2)
        #expect(few.quality == [[Double]](repeating: [0.5, 1], count: 4))
        let encoder = StateEncoder(featureDimension: 0, tasks: ["t"], modelCount: 2, priceScaleUSD: 1, lambdaMax: 50,
                                   priorQuality: p.quality, priorCost: p.costUSD, stages: 2)
        #expect([1, 2, 3, 4, 5].map { encoder.priorRow(taskIndex: 0, turn: $0, horizon: 5) } == [0, 0, 0, 1, 1])
        #expect(encoder.priorRow(taskIndex: nil, turn: 5, horizon: 5) == 3)
        let data = try JSONEncoder().encode(encoder)
        #expect(try JSONDecoder().decode(StateEncoder.self, from: data) == encoder)
        let perTask = StateEncoder(featureDimension: 0, tasks: ["t"], modelCount: 2, priceScaleUSD: 1, lambdaMax: 50,
                                   priorQuality: [[0.5, 1], [0.5, 1]], priorCost: [[1.5, 3.5], [1.5, 3.5]])
        var object = try #require(try JSONSerialization.jsonObject(with: JSONEncoder().encode(perTask)) as? [String: Any])
        #expect(object.removeValue(forKey: "stages") != nil)
        #expect(try JSONDecoder().decode(StateEncoder.self, from: JSONSerialization.data(withJSONObject: object)) == perTask)
    }

    /// A briefly trained network on RouterBench never picks an infeasible model, at any level.
    @Test func neverChoosesAnInfeasibleModel() throws {
        let bench = try routerBenchSim.get()
        let featurizer = HashingFeaturizer()
        let encoder = StateEncoder(featureDimension: 64, tasks: bench.train.tasks, modelCount: bench.train.models.count,
                                   priceScaleUSD: bench.levels.strongestMeanCostUSD, lambdaMax: 50)
        let data = QueryData(table: bench.test, holds: bench.holds, encoder: encoder, featurizer: featurizer)
        // An untrained network scores models arbitrarily: the feasibility mask alone must hold.
        let policy = LearnedPolicy(version: "t", kind: "cql", pool: bench.train.models, featurizer: featurizer.identity,
                                   encoder: encoder, scale: RewardScale(priceScaleUSD: 1, cheapRatio: 0.1),
                                   lambdaRange: [0, 50], network: MLP(sizes: [encoder.width, 16, bench.train.models.count], seed: 3),
                                   training: [:])
        let sessions = SessionGenerator().sessions(count: 60, from: bench.test, seed: 8)
        for rho in [0.0, 0.05, 0.5, 1.0] {
            let run = bench.simulator.run(LearnedSimPolicy(policy: policy, data: data, lambda: 1), sessions: sessions,
                                          budgetsUSD: bench.levels.budgetsUSD(for: sessions, rho: rho), seed: 1)
            #expect(run.metrics.violations == 0)
        }
    }
}

@Suite struct BenchPipelineTests {
    /// The whole pipeline at a tiny size: outputs exist and bench.json holds every policy name
    /// of the contract, at every level, with the required fields.
    @Test func writesResultsForEveryPolicy() throws {
        let tables = try routerBench.get()
        var c = BenchConfiguration.quick
        c.trainSessions = 60
        c.testSessionsPerLevel = 20
        c.validationSessions = 20
        c.rhos = [0.1, 1.0]
        c.lambdas = [0, 5]
        c.lambdaRefinements = 0  // leaves baseline points between the two λ for step 7b
        c.hbr.logUniformBudgets = 2
        c.cql.steps = 20
        c.cql.batch = 32
        c.bcSteps = 20
        let (output, policy) = try SeqRouteLearning.Bench.run(train: tables.train, test: tables.test, configuration: c) { _ in }
        let dir = try makeTempDirectory()
        try BenchReport.write(output, to: dir)
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: dir.appendingPathComponent("bench.json"))) as! [String: Any]
        let results = json["results"] as! [[String: Any]]
        let names = Set(results.map { $0["policy"] as! String })
        for name in ["seqroute", "cql-no-hbr", "bc", "pacing", "threshold", "greedy-reserve", "myopic", "random",
                     "cheapest", "strongest", "oracle"] + tables.train.models.map({ "model:\($0)" }) {
            #expect(names.contains(name), "missing \(name)")
        }
        for r in results {
            for key in ["policy", "rho", "quality", "cost", "bankruptcy_rate", "unserved"] { #expect(r[key] != nil) }
            #expect(r.keys.contains("knob"))
            #expect((r["violations"] as! Int) == 0)
        }
        #expect(Set(results.map { $0["rho"] as! Double }) == [0.1, 1.0])
        let svg = try String(contentsOf: dir.appendingPathComponent("frontier.svg"), encoding: .utf8)
        #expect(svg.hasPrefix("<svg") && svg.contains("ρ = 0.1"))
        #expect(try String(contentsOf: dir.appendingPathComponent("bench.md"), encoding: .utf8).contains("| seqroute |"))
        #expect(policy.pool == tables.train.models && policy.kind == "cql")
        // The summary's dominance lists agree with the results: the λ searched on test sessions
        // are results of this level outside the sweep, and they only ever shorten the list.
        for l in output.summary {
            let sr = output.results.filter { $0.rho == l.rho && $0.policy == "seqroute" }
            let baselines = output.results.filter { $0.rho == l.rho && SeqRouteLearning.Bench.isBaseline($0) }
            func left(_ points: [BenchResult]) -> [String] {
                baselines.filter { b in !points.contains { $0.quality >= b.quality && $0.cost <= b.cost } }
                    .map { $0.policy + ($0.knob.map { "(\($0))" } ?? "") }
            }
            // The sweep is what cql-no-hbr ran; the searched λ are the other seqroute knobs.
            let sweep = Set(output.results.filter { $0.rho == l.rho && $0.policy == "cql-no-hbr" }.map { $0.knob! })
            let knobs = sr.map { $0.knob! }
            #expect(knobs.count == Set(knobs).count && l.lambdas_searched_on_test == l.lambdas_searched_on_test.sorted())
            #expect(Set(knobs) == sweep.union(l.lambdas_searched_on_test) && sweep.isDisjoint(with: l.lambdas_searched_on_test))
            #expect(l.undominated_baseline_points == left(sr))
            #expect(l.undominated_by_sweep == left(sr.filter { sweep.contains($0.knob!) }))
            // Figures other than dominance keep to the sweep; bankruptcies count every λ run.
            let swept = sr.filter { sweep.contains($0.knob!) }
            #expect(l.seqroute_max_quality == swept.map(\.quality).max())
            #expect(l.seqroute_max_bankruptcy == sr.map(\.bankruptcy_rate).max())
            let best = baselines.max { $0.quality < $1.quality }!
            let cut = swept.filter { $0.quality >= best.quality }.min { $0.cost < $1.cost }.map { 1 - $0.cost / best.cost }
            #expect(l.cost_reduction_vs_best_baseline == cut)
        }
        #expect(output.summary.contains { !$0.lambdas_searched_on_test.isEmpty })
        #expect(output.figures["lambda_test_search_runs"] == Double(output.summary.map(\.lambdas_searched_on_test.count).reduce(0, +)))
    }
}

@Suite struct LambdaSweepTests {
    /// Step 7b at one level: SeqRoute at λ = 1 and 2, its quality and cost falling linearly in
    /// between. The search reaches a baseline point between them, leaves alone one already
    /// reached (by the sweep, or by a point the search ran for another) and one no neighbour can
    /// reach, and keeps to its cap over all the points it searches for.
    @Test func searchesTheLevelsBaselinePointsLeft() {
        func point(_ policy: String, _ knob: Double?, _ q: Double, _ c: Double) -> BenchResult {
            BenchResult(policy: policy, rho: 0.5, knob: knob, quality: q, cost: c, bankruptcy_rate: 0, unserved: 0,
                        over_budget: 0, violations: 0)
        }
        let level = [point("seqroute", 1, 0.75, 12), point("seqroute", 2, 0.5, 8),
                     point("pacing", 1, 0.6875, 11),    // reached at λ = 1.25, after 1.5
                     point("threshold", 0.5, 0.5, 12),  // already reached by λ = 2
                     point("myopic", 8, 0.8, 9),        // better than every point: nothing to search
                     point("greedy-reserve", 1, 0.625, 10.5),  // reached by λ = 1.5, run for pacing
                     point("cql-no-hbr", 1, 0.9, 1)]    // not a baseline
        var asked: [Double] = []
        let linear: (Double) -> BenchResult = { l in
            asked.append(l)
            return point("seqroute", l, 1 - l / 4, 16 - 4 * l)
        }
        let added = SeqRouteLearning.Bench.searchLambdas(level: level, triesPerPair: 16, runsAtMost: 128, run: linear)
        #expect(added.map { $0.knob! } == [1.25, 1.5] && asked == [1.5, 1.25])
        // Points just out of reach between them: the search stops at its cap, the runs for
        // pacing counting against greedy-reserve's.
        asked = []
        let flat: (Double) -> BenchResult = { l in
            asked.append(l)
            return point("seqroute", l, 0.75, 11.5)
        }
        let capped = SeqRouteLearning.Bench.searchLambdas(level: level, triesPerPair: 16, runsAtMost: 5, run: flat)
        #expect(capped.count == 5 && asked.count == 5 && capped.allSatisfy { $0.knob! > 1 && $0.knob! < 2 })
    }

    /// A frontier in 64 small steps between λ = 1 and 2 (cost falls, quality falls): the search
    /// finds the one step that reaches a point between its two ends, staying between them.
    @Test func searchFindsAPointBetweenTwoLambdas() {
        func step(_ l: Double) -> Double { min(63, (l - 1) * 64).rounded(.down) / 64 }
        var asked: [Double] = []
        let point: (Double) -> (quality: Double, cost: Double) = { l in
            asked.append(l)
            return (1 - 0.1 * step(l), 2 - step(l))
        }
        let target = (quality: 1 - 0.1 * 21 / 64, cost: 2 - 21.0 / 64)
        let found = LambdaSweep.search(dear: 1, cheap: 2, reaching: target, tries: 16, point: point)
        #expect(found.map(\.lambda) == asked && found.allSatisfy { $0.lambda > 1 && $0.lambda < 2 })
        let last = found.last!
        #expect(last.quality >= target.quality && last.cost <= target.cost && found.count <= 7)
        #expect(found.dropLast().allSatisfy { !($0.quality >= target.quality && $0.cost <= target.cost) })
        // Out of tries: every try is returned. A point dearer than the target and short of its
        // quality ends the search (no point further on is better). A target cheaper than every
        // point: the search ends by itself once the interval cannot be halved at eight digits.
        #expect(LambdaSweep.search(dear: 1, cheap: 2, reaching: target, tries: 3, point: point).count == 3)
        let short = LambdaSweep.search(dear: 1, cheap: 2, reaching: (0.99, 1.5), tries: 100, point: point)
        #expect(short.map(\.lambda) == [1.5, 1.25])
        let none = LambdaSweep.search(dear: 1, cheap: 2, reaching: (0.9, 0.99), tries: 100, point: point)
        #expect(none.count > 10 && none.count < 100 && none.allSatisfy { $0.cost > 0.99 })
        #expect(LambdaSweep.search(dear: 1, cheap: 1.00000001, reaching: target, tries: 16, point: point).isEmpty)
    }

    /// Spending that drops at λ = 0.3 at one budget level and at λ = 4.4 at the other: the sweep
    /// bisects towards both steps, adds nothing where the cost is flat, and stops at its width.
    @Test func bisectsWhereSpendingJumps() {
        var asked: [Double] = []
        let cost: (Double) -> [Double] = { l in
            asked.append(l)
            return [l < 0.3 ? 10 : 4, l < 4.4 ? 2 : 1]
        }
        let grid: [Double] = [0, 0.1, 0.5, 1, 2, 4, 5, 50]
        let sweep = LambdaSweep.refined(grid, adding: 40, figures: cost)
        #expect(sweep == sweep.sorted() && Set(grid).isSubset(of: Set(sweep)))
        let added = sweep.filter { !grid.contains($0) }
        #expect(!added.isEmpty && added.allSatisfy { (0.1...0.5).contains($0) || (4...5).contains($0) })
        // The steps end up bracketed by neighbours closer than the minimum width allows to split.
        for step in [0.3, 4.4] {
            let below = sweep.last { $0 < step }!, above = sweep.first { $0 >= step }!
            #expect(above - below <= 0.005 * above * 2)
        }
        #expect(sweep.count < grid.count + 40)  // it stopped on its own
        #expect(asked.count == sweep.count)     // each λ is evaluated once
        // Nothing to add when spending does not move with λ, or moves in steps under the threshold.
        #expect(LambdaSweep.refined(grid, adding: 40) { _ in [3, 1] } == grid)
        let fine = (0...100).map { Double($0) }
        #expect(LambdaSweep.refined(fine, adding: 40) { l in [l] } == fine)
        // A jump in quality with almost no change in cost (the cheap end of the frontier) is
        // bisected too: the figures are each level's cost and quality.
        let cheapCost: (Double) -> Double = { l in l < 0.3 ? 10 : l < 4.4 ? 1.01 : 1 }
        let byCost = LambdaSweep.refined(grid, adding: 40) { l in [cheapCost(l)] }.filter { !grid.contains($0) }
        #expect(!byCost.isEmpty && byCost.allSatisfy { (0.1...0.5).contains($0) })
        let byBoth = LambdaSweep.refined(grid, adding: 40) { l in [cheapCost(l), l < 4.4 ? 0.62 : 0.6] }.filter { !grid.contains($0) }
        #expect(byBoth.contains { (4...5).contains($0) })
        // A 5% step in a cheap cost is under the threshold against the cost's whole range, and
        // over it judged in proportion (`relative`), as costs are in the benchmark.
        let cheapStep: (Double) -> [Double] = { l in [l < 0.3 ? 10 : l < 4.4 ? 1.05 : 1] }
        #expect(LambdaSweep.refined(grid, adding: 40, figures: cheapStep).allSatisfy { !(4...5).contains($0) || grid.contains($0) })
        let proportional = LambdaSweep.refined(grid, adding: 40, relative: 1, figures: cheapStep).filter { !grid.contains($0) }
        #expect(proportional.contains { (4...5).contains($0) } && proportional.contains { (0.1...0.5).contains($0) })
        // Figures past the first `relative` keep their range: a 0.05 step in a quality whose
        // range is 9 is no jump.
        let qualityStep: (Double) -> [Double] = { l in [3, l < 0.3 ? 10 : l < 4.4 ? 1.05 : 1] }
        #expect(LambdaSweep.refined(grid, adding: 40, relative: 1, figures: qualityStep).allSatisfy {
            !(4...5).contains($0) || grid.contains($0)
        })
    }
}
