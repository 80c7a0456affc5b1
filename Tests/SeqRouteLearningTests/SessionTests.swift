import Foundation
import SeqRouteCore
import Testing
@testable import SeqRouteLearning

@Suite struct SessionGeneratorTests {
    @Test func isDeterministicForASeed() throws {
        let table = try routerBench.get().test
        let g = SessionGenerator()
        let a = g.sessions(count: 200, from: table, seed: 42)
        #expect(a == g.sessions(count: 200, from: table, seed: 42))
        #expect(a != g.sessions(count: 200, from: table, seed: 43))
    }

    @Test func lengthsStayInTheRangeAndReachBothEnds() throws {
        let table = try routerBench.get().test
        for range in [4...16, 1...3, 7...7] {
            let lengths = SessionGenerator(lengths: range).sessions(count: 400, from: table, seed: 1).map(\.horizon)
            #expect(lengths.allSatisfy(range.contains))
            #expect(lengths.min() == range.lowerBound && lengths.max() == range.upperBound)
        }
    }

    @Test func queriesMostlyShareATaskAndAreValid() throws {
        let table = try routerBench.get().test
        let sessions = SessionGenerator().sessions(count: 500, from: table, seed: 9)
        var share = 0.0
        for s in sessions {
            #expect(s.queries.allSatisfy(table.records.indices.contains))
            #expect(Set(s.queries).count == s.horizon)
            let counts = Dictionary(grouping: s.queries, by: { table.records[$0].task }).values.map(\.count)
            share += Double(counts.max()!) / Double(s.horizon)
        }
        share /= Double(sessions.count)
        #expect(share > 0.75 && share < 0.92)
        let everyQuery = SessionGenerator(mainTaskProbability: 1).sessions(count: 100, from: table, seed: 9)
        #expect(everyQuery.allSatisfy { Set($0.queries.map { table.records[$0].task }).count == 1 })
    }

    @Test func queriesGetHarder() throws {
        let table = try routerBench.get().test
        let sorted = SessionGenerator(difficultyNoise: 0).sessions(count: 100, from: table, seed: 5)
        for s in sorted {
            let d = s.queries.map(table.difficulty)
            #expect(zip(d, d.dropFirst()).allSatisfy { $0 <= $1 })
        }
        // With noise the order is loose, but the last turns are still harder on average.
        let noisy = SessionGenerator().sessions(count: 500, from: table, seed: 5)
        let first = noisy.map { table.difficulty($0.queries.first!) }.reduce(0, +)
        let last = noisy.map { table.difficulty($0.queries.last!) }.reduce(0, +)
        #expect(last > first)
        #expect(noisy.contains { s in
            let d = s.queries.map(table.difficulty)
            return zip(d, d.dropFirst()).contains { $0 > $1 }
        })
    }
}

@Suite struct SimulationMoneyTests {
    let train = try! QueryTable(records: [
        QueryRecord(id: "1", task: "a", text: "", models: ["x": outcome(1, 0.001), "y": outcome(0, 0.004)]),
        QueryRecord(id: "2", task: "a", text: "", models: ["x": outcome(1, 0.003), "y": outcome(1, 0.002)]),
        QueryRecord(id: "3", task: "b", text: "", models: ["x": outcome(0, 0.01), "y": outcome(1, 0.0)]),
    ])

    @Test func holdsAreTheHighestTrainingCostPerTaskTimesFactor() {
        let holds = Holds(training: train)
        #expect(holds.models == ["x", "y"])
        #expect(holds.holdsUSD(task: "a") == [0.003 * 1.25, 0.004 * 1.25])
        #expect(holds.holdsUSD(task: "b") == [0.01 * 1.25, 0])
        // An unseen task takes each model's highest cost over all tasks.
        #expect(holds.holdsUSD(task: "new") == [0.01 * 1.25, 0.004 * 1.25])
        #expect(Holds(training: train, factor: 2).holdsUSD(task: "a") == [0.006, 0.008])
    }

    @Test func budgetLevelsFollowTheFormula() {
        let stats = TrainingStats(training: train)
        // x: mean quality 2/3, mean cost 0.014/3; y: 2/3 and 0.002. Ties go to the first name.
        #expect(stats.strongestModel == 0 && stats.cheapestModel == 1)
        #expect(stats.quality(task: "a") == [1, 0.5])
        #expect(stats.costUSD(task: "zzz") == stats.meanCostUSD)
        let levels = BudgetLevels(stats: stats, holds: Holds(training: train))
        let hbar = (2 * 0.004 * 1.25 + 0) / 3, cbar = 0.014 / 3
        #expect(abs(levels.cheapestMeanHoldUSD - hbar) < 1e-15)
        #expect(abs(levels.strongestMeanCostUSD - cbar) < 1e-15)
        #expect(abs(levels.budgetUSD(turns: 10, rho: 0.35) - 10 * (hbar + 0.35 * (cbar - hbar))) < 1e-15)
        #expect(levels.budgetsUSD(for: [Session(queries: [0, 1]), Session(queries: [2])], rho: 1)
            == [levels.budgetUSD(turns: 2, rho: 1), levels.budgetUSD(turns: 1, rho: 1)])
        #expect(BudgetLevels.rhos == [0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0])
    }
}
