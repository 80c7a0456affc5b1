import Foundation
import SeqRouteCore
import Testing
@testable import SeqRouteLearning

@Suite struct QueryTableTests {
    let records = [
        QueryRecord(id: "q1", task: "code", text: "Write \"reverse\"\nin C/C++ — é",
                    models: ["b": outcome(1, 0.0012345678901234567), "a": outcome(0.3333333333333333, 0)],
                    features: [0.1, -2.5e-7, 1.0 / 3.0]),
        QueryRecord(id: "q2", task: "chat", text: "", models: ["a": outcome(0, 4.9e-7), "b": outcome(0.5, 1e-12)],
                    conversation: "81", turn: 2),
    ]

    @Test func roundTripsThroughJSONL() throws {
        let table = try QueryTable(records: records)
        #expect(table.models == ["a", "b"])
        #expect(table.tasks == ["chat", "code"])
        #expect(table.quality(0, 0) == 0.3333333333333333 && table.costUSD(0, 1) == 0.0012345678901234567)
        let text = try table.jsonl()
        #expect(text.split(separator: "\n").count == 2)
        let back = try QueryTable.parse(jsonl: text)
        #expect(back.records == records)
        #expect(try back.jsonl() == text)

        let file = try makeTempDirectory().appendingPathComponent("queries.jsonl")
        try table.write(to: file)
        #expect(try QueryTable.read(from: file).records == records)
    }

    @Test func writesTheCanonicalKeys() throws {
        let line = try QueryTable(records: [records[1]]).jsonl()
        #expect(line == #"{"conversation":"81","id":"q2","models":{"a":{"cost":4.9e-07,"quality":0},"b":{"cost":1e-12,"quality":0.5}},"task":"chat","text":"","turn":2}"# + "\n")
    }

    @Test func difficultyIsOneMinusMeanQuality() throws {
        let table = try QueryTable(records: records)
        #expect(abs(table.difficulty(1) - 0.75) < 1e-12)
    }

    @Test func featurizesRecordsWithoutFeatures() throws {
        let table = try QueryTable(records: records).featurized(by: HashingFeaturizer(dimension: 8))
        #expect(table.records[0].features == records[0].features)
        #expect(table.records[1].features == HashingFeaturizer(dimension: 8).features(of: ""))
    }

    private func error(_ jsonl: String) -> String {
        do {
            _ = try QueryTable.parse(jsonl: jsonl)
            return "no error"
        } catch {
            return "\(error)"
        }
    }

    private let good = #"{"id":"a","task":"t","text":"x","models":{"m":{"quality":1,"cost":0.5},"n":{"quality":0,"cost":0}}}"#

    @Test func errorsNameTheLine() {
        #expect(error(good + "\n\n{\"id\": 1") .hasPrefix("line 3: bad JSON"))
        #expect(error(good + "\n" + #"{"id":"b","text":"x","models":{}}"#)
            == "line 2: missing key 'task'")
        #expect(error(#"{"id":"b","task":"t","text":"x","models":{"m":{"quality":1}}}"#)
            == "line 1: missing key 'cost' in 'models.m'")
        #expect(error(#"{"id":"b","task":"t","text":"x","models":{"m":{"quality":"high","cost":1}}}"#)
            == "line 1: 'models.m.quality' is not a valid Double")
        #expect(error(good.replacingOccurrences(of: "\"quality\":1,", with: "\"quality\":1.5,"))
            == "line 1: record 'a': quality 1.5 of model 'm' is outside [0, 1]")
        #expect(error(good.replacingOccurrences(of: "\"cost\":0.5", with: "\"cost\":-0.5"))
            == "line 1: record 'a': cost -0.5 of model 'm' is negative or not finite")
        #expect(error(good + "\n" + #"{"id":"b","task":"t","text":"x","models":{"m":{"quality":1,"cost":0}}}"#)
            == "line 2: record 'b' has no model 'n', which line 1 has")
        #expect(error(good + "\n" + good.replacingOccurrences(of: "\"models\":{", with: "\"models\":{\"z\":{\"quality\":1,\"cost\":0},")
            .replacingOccurrences(of: "\"id\":\"a\"", with: "\"id\":\"c\""))
            == "line 2: record 'c' has model 'z', which line 1 lacks")
        #expect(error(good + "\n" + good) == "line 2: duplicate id 'a'")
        #expect(error(good + "\r\n\r\n" + good + "\r\n") == "line 3: duplicate id 'a'")
    }

    @Test func readErrorsNameTheFile() throws {
        let file = try makeTempDirectory().appendingPathComponent("broken.jsonl")
        try Data("{\n".utf8).write(to: file)
        #expect(throws: QueryTableError.self) { try QueryTable.read(from: file) }
        do {
            _ = try QueryTable.read(from: file)
        } catch {
            #expect("\(error)".hasPrefix("broken.jsonl: line 1: bad JSON"))
        }
    }

    @Test func initWithoutLinesNamesTheRecord() {
        #expect(throws: QueryTableError(line: nil, message: "record 2: duplicate id 'q1'")) {
            try QueryTable(records: [records[0], records[0]])
        }
    }
}
