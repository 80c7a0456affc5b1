// Shared inputs of the learning tests: the real RouterBench and RouteLLM data (shared/data beside
// the checkout, or $SEQROUTE_DATA), imported once per test process, and small helpers.

import Foundation
import SeqRouteCore
@testable import SeqRouteLearning

let dataRoot: URL = {
    if let path = ProcessInfo.processInfo.environment["SEQROUTE_DATA"] { return URL(fileURLWithPath: path) }
    return URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("../shared/data").standardizedFileURL
}()

let routerBench: Result<ImportedTables, any Error> = Result {
    try RouterBenchImporter(directory: dataRoot.appendingPathComponent("routerbench_routerdc")).load()
}

let routeLLM: Result<ImportedTables, any Error> = Result {
    try RouteLLMImporter(directory: dataRoot.appendingPathComponent("routellm"),
                         mtBenchQuestionsDirectory: dataRoot.appendingPathComponent("mt_bench_questions")).load()
}

/// Everything a RouterBench simulation needs, built from the imported tables once.
struct Bench: Sendable {
    let train: QueryTable
    let test: QueryTable
    let stats: TrainingStats
    let holds: Holds
    let levels: BudgetLevels
    let simulator: Simulator

    init(_ tables: ImportedTables) throws {
        train = tables.train
        test = tables.test
        stats = TrainingStats(training: train)
        holds = Holds(training: train)
        levels = BudgetLevels(stats: stats, holds: holds)
        simulator = try Simulator(table: test, holds: holds)
    }
}

let routerBenchSim: Result<Bench, any Error> = Result { try Bench(routerBench.get()) }

/// One root per test process for the folders tests make, removed when the process exits.
let testRoot: URL = {
    let url = FileManager.default.temporaryDirectory
        .appendingPathComponent("seqroute-learning-" + String(UInt64.random(in: 0..<UInt64.max), radix: 36))
    atexit { try? FileManager.default.removeItem(at: testRoot) }
    return url
}()

func makeTempDirectory() throws -> URL {
    let url = testRoot.appendingPathComponent(String(UInt64.random(in: 0..<UInt64.max), radix: 36))
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
}

func outcome(_ quality: Double, _ costUSD: Double) -> ModelOutcome {
    ModelOutcome(quality: quality, costUSD: costUSD)
}
