import Foundation
import Testing
@testable import SeqRouteLearning

@Suite struct RouterBenchImportTests {
    @Test func importsTheSharedData() throws {
        let tables = try routerBench.get()
        for note in tables.notes { print("routerbench:", note) }
        // 2,225 train and 953 test rows, less the rows with an empty score (20 and 8).
        #expect(tables.train.count == 2205)
        #expect(tables.test.count == 945)
        #expect(tables.notes.contains("arc_challenge_train.csv: 1039 rows, 20 skipped for an empty score or cost"))
        #expect(tables.notes.contains("arc_challenge_test.csv: 445 rows, 8 skipped for an empty score or cost"))
        for table in [tables.train, tables.test] {
            #expect(table.models.count == 11)
            #expect(table.models.contains("gpt-4-1106-preview"))
            #expect(table.tasks == ["arc-challenge", "mbpp", "winogrande"])
            #expect(table.records.allSatisfy { $0.models.count == 11 && !$0.text.hasPrefix("['") })
        }
        #expect(Dictionary(grouping: tables.test.records, by: \.task).mapValues(\.count)
            == ["arc-challenge": 437, "mbpp": 128, "winogrande": 380])
        let first = try #require(tables.train.records.first { $0.id == "winogrande.dev.949" })
        #expect(first.text.hasPrefix("Please answer with the letter of the correct answer.\n\nIan volunteered to eat Dennis's menudo"))
    }

    @Test func readsOnlyTheFolderItIsGiven() throws {
        let dir = try makeTempDirectory()
        let header = "\"\",sample_id,prompt,eval_name,m1,m2,m1|total_cost,m2|total_cost,m1|model_response,m2|model_response\n"
        try Data((header
            + "0,a.1,\"['Q, one']\",qa,1.0,0.0,0.001,0.0002,\"x\",\"y\"\n"
            + "1,a.2,['two'],qa,,1.0,0.001,0.0002,x,y\n"
            + "2,a.1,\"['dup']\",qa,1.0,1.0,0.001,0.0002,x,y\n"
            + "3,a.3,\"[\"\"it's\"\"]\",qa,0.0,1.0,0.002,0.0003,\"multi\nline\",y\n").utf8)
            .write(to: dir.appendingPathComponent("qa_train.csv"))
        try Data((header + "0,b.1,plain,code,1.0,1.0,0.01,0.0001,x,y\n").utf8)
            .write(to: dir.appendingPathComponent("code_test.csv"))
        let tables = try RouterBenchImporter(directory: dir).load()
        #expect(tables.train.records.map(\.id) == ["a.1", "a.3"])
        #expect(tables.train.records.map(\.text) == ["Q, one", "it's"])
        #expect(tables.train.models == ["m1", "m2"])
        #expect(tables.train.costUSD(1, 0) == 0.002 && tables.train.quality(1, 1) == 1)
        #expect(tables.test.records.map(\.text) == ["plain"])
        #expect(tables.notes.contains("qa_train.csv: 4 rows, 1 skipped for an empty score or cost"))
        #expect(tables.notes.contains("*_train.csv: 1 later rows of a repeated sample_id dropped"))
    }

    @Test func badCellsNameFileAndLine() throws {
        let dir = try makeTempDirectory()
        let header = "sample_id,prompt,eval_name,m1,m1|total_cost\n"
        try Data((header + "a,p,t,1.0,0.1\nb,p,t,2.0,0.1\n").utf8).write(to: dir.appendingPathComponent("x_train.csv"))
        try Data((header + "c,p,t,1.0,0.1\n").utf8).write(to: dir.appendingPathComponent("x_test.csv"))
        #expect(throws: ImportError.self) { try RouterBenchImporter(directory: dir).load() }
        do {
            _ = try RouterBenchImporter(directory: dir).load()
        } catch {
            #expect("\(error)" == "x_train.csv:3: score 2.0 of 'm1' is outside [0, 1]")
        }
    }
}

@Suite struct RouteLLMImportTests {
    @Test func importsTheSharedData() throws {
        let tables = try routeLLM.get()
        for note in tables.notes { print("routellm:", note) }
        let all = tables.train.records + tables.test.records
        #expect(tables.train.models == ["gpt-4-1106-preview", "mistralai/Mixtral-8x7B-Instruct-v0.1"])
        #expect(tables.test.models == tables.train.models)
        let byTask = Dictionary(grouping: all, by: \.task).mapValues(\.count)
        #expect(byTask == ["mmlu": 14042, "gsm8k": 1319, "mt-bench": 160])
        let testShare = Double(tables.test.count) / Double(all.count)
        #expect(testShare > 0.18 && testShare < 0.22)
        // Every judge prompt showed its answers, so no MT-Bench output length was assumed.
        #expect(!tables.notes.contains { $0.contains("not found in the judge prompt") })

        // Both turns of an MT-Bench question are on one side of the split.
        let trainConversations = Set(tables.train.records.compactMap(\.conversation))
        #expect(tables.test.records.allSatisfy { $0.conversation.map { !trainConversations.contains($0) } ?? true })
        #expect(all.filter { $0.task == "mt-bench" }.allSatisfy { $0.turn != nil && $0.conversation != nil })
    }

    @Test func costsFollowTheDocumentedRule() throws {
        let tables = try routeLLM.get()
        let all = tables.train.records + tables.test.records
        let gpt4 = "gpt-4-1106-preview", mixtral = "mistralai/Mixtral-8x7B-Instruct-v0.1"

        let mmlu = try #require(all.first { $0.task == "mmlu" })
        let tokens = Double(RouteLLMImporter.estimatedTokens(mmlu.text))
        #expect(abs(mmlu.models[gpt4]!.costUSD - (tokens * 10 + 16 * 30) / 1e6) < 1e-15)
        #expect(abs(mmlu.models[mixtral]!.costUSD - (tokens * 0.6 + 16 * 0.6) / 1e6) < 1e-15)

        // Turn 2 of MT-Bench bills the whole conversation, so it costs more than its text alone.
        let turn2 = try #require(all.first { $0.task == "mt-bench" && $0.turn == 2 })
        let textOnly = Double(RouteLLMImporter.estimatedTokens(turn2.text)) * 10 / 1e6
        #expect(turn2.models[gpt4]!.costUSD > textOnly + 30 * 16 / 1e6)
        #expect(all.allSatisfy { r in r.models.values.allSatisfy { $0.costUSD > 0 } })
        let question81 = try #require(all.first { $0.id == "mt-bench/81/1" })
        #expect(question81.text.hasPrefix("Compose an engaging travel blog post about a recent trip to Hawaii"))
        #expect(question81.conversation == "81" && question81.turn == 1)
        #expect(RouteLLMImporter.estimatedTokens("") == 0 && RouteLLMImporter.estimatedTokens("abcde") == 2)
    }

    @Test func findsAnswersInJudgePrompts() {
        let single = "[Instruction]\nJudge.\n\n[Question]\nQ?\n\n[The Start of Assistant's Answer]\n  A one.\n[The End of Assistant's Answer]"
        #expect(RouteLLMImporter.assistantAnswers(inJudgePrompt: single) == ["A one."])
        let multi = "<|The Start of Reference Answer|>\n\n### User:\nq1\n\n### Reference answer:\nr1\n\n<|The End of Reference Answer|>\n\n"
            + "<|The Start of Assistant A's Conversation with User|>\n\n### User:\nq1\n\n### Assistant A:\nfirst\n\n### User:\nq2\n\n### Assistant A:\nsecond\n\n<|The End of Assistant A's Conversation with User|>"
        #expect(RouteLLMImporter.assistantAnswers(inJudgePrompt: multi) == ["first", "second"])
        #expect(RouteLLMImporter.assistantAnswers(inJudgePrompt: "no layout") == [])
    }

    @Test func splitIsSeeded() {
        let a = RouteLLMImporter(directory: dataRoot, mtBenchQuestionsDirectory: dataRoot)
        var b = a
        b.splitSeed = 7
        let keys = (0..<1000).map { "mmlu/x/\($0)" }
        #expect(keys.map(a.splitUnit) == keys.map(a.splitUnit))
        #expect(keys.map(a.splitUnit) != keys.map(b.splitUnit))
        #expect(keys.allSatisfy { (0..<1).contains(a.splitUnit($0)) })
    }
}
