import Testing
@testable import SeqRouteCore

private let pool = ModelPool(models: [
    ModelSpec(name: "big", inputPrice: 10_000_000, outputPrice: 30_000_000, maxOutputTokens: 100, quality: 0.9,
              taskQuality: ["code": 0.95]),
    ModelSpec(name: "mid", inputPrice: 1_000_000, outputPrice: 2_000_000, maxOutputTokens: 100, quality: 0.7),
    ModelSpec(name: "small", inputPrice: 200_000, outputPrice: 200_000, maxOutputTokens: 100, quality: 0.5,
              taskQuality: ["code": 0.96]),
])

@Suite struct MoneyTests {
    @Test func holdRoundsUpToWholeMicros() {
        // 10 micros per token in, 30 per token out: 100 prompt + 100 output tokens.
        #expect(pool.models[0].hold(promptTokens: 100) == 4_000)
        // 0.2 micros per token each way: 101 + 100 tokens = 40.2 micros, rounded up.
        #expect(pool.models[2].hold(promptTokens: 101) == 41)
    }

    @Test func budgetAdmitsOnlyWhatFitsBoth() {
        let b = BudgetState(sessionBudget: 1_000, sessionSpent: 300, sessionHeld: 200, accountRemaining: 400)
        #expect(b.sessionRemaining == 500)
        #expect(b.admits(400))
        #expect(!b.admits(401))
        #expect(b.feasible([500, 100, 400]) == [false, true, true])
    }

    @Test func poolIdentityFollowsPrices() {
        var other = pool
        other.models[1].inputPrice += 1
        #expect(pool.identity != other.identity)
        #expect(pool.identity == ModelPool(models: pool.models).identity)
    }
}

@Suite struct PolicyTests {
    func context(remaining: Int64, turn: Int = 1, horizon: Int? = 4, task: String? = nil, tokens: Int = 100) -> DecisionContext {
        DecisionContext(features: [], task: task, turn: turn, horizon: horizon,
                        budget: BudgetState(sessionBudget: remaining, sessionSpent: 0, sessionHeld: 0, accountRemaining: 1_000_000),
                        lambda: 0, holds: pool.holds(promptTokens: tokens))
    }

    @Test func pacingPicksBestModelWithinAllowance() {
        let p = PacingPolicy(pool: pool, defaultHorizon: 4, exploration: 0)
        var r = SplitMix64(seed: 1)
        // holds: big 4000, mid 300, small 40. Allowance 20000/4 = 5000: big fits.
        #expect(p.decide(context(remaining: 20_000), random: &r).model == 0)
        // Allowance 8000/4 = 2000: big does not fit; mid is best.
        #expect(p.decide(context(remaining: 8_000), random: &r).model == 1)
        // For code, small is rated above mid.
        #expect(p.decide(context(remaining: 8_000, task: "code"), random: &r).model == 2)
        // Nothing fits the allowance: cheapest feasible.
        #expect(p.decide(context(remaining: 100), random: &r).model == 2)
        // The last turn may spend everything left.
        #expect(p.decide(context(remaining: 4_000, turn: 4), random: &r).model == 0)
    }

    @Test func neverChoosesAnInfeasibleModelAndLogsPropensity() {
        let p = PacingPolicy(pool: pool, defaultHorizon: 4, exploration: 0.5)
        var r = SplitMix64(seed: 7)
        for remaining: Int64 in [40, 300, 500, 4_000, 100_000] {
            for _ in 0..<200 {
                let c = context(remaining: remaining, turn: Int(r.next() % 6) + 1)
                let d = p.decide(c, random: &r)
                #expect(c.feasible[d.model])
                let nFeasible = Double(c.feasible.filter { $0 }.count)
                let greedy = p.greedy(c).model
                let expected = (d.model == greedy ? 0.5 : 0) + 0.5 / nFeasible
                #expect(abs(d.propensity - expected) < 1e-12)
                #expect(abs(p.probability(of: d.model, in: c) - expected) < 1e-12)
            }
        }
    }

    @Test func explorationFrequencyMatchesPropensity() {
        var r = SplitMix64(seed: 3)
        let feasible = [true, true, false, true]
        var counts = [0, 0, 0, 0]
        for _ in 0..<30_000 { counts[explore(greedy: 0, feasible: feasible, rate: 0.3, random: &r).model] += 1 }
        #expect(counts[2] == 0)
        #expect(abs(Double(counts[0]) / 30_000 - (0.7 + 0.1)) < 0.01)
        #expect(abs(Double(counts[1]) / 30_000 - 0.1) < 0.01)
    }
}

@Suite struct HoldLimitTests {
    @Test func hugePricesSaturateInsteadOfOverflowing() {
        let m = ModelSpec(name: "x", inputPrice: Limits.maxMoney, outputPrice: 1, maxOutputTokens: 1)
        #expect(m.hold(promptTokens: Limits.maxTokens) == Limits.maxMoney)
        #expect(m.hold(promptTokens: 0) == 1)
    }
}
