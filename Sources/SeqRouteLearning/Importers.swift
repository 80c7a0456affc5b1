// Importers from the public router-evaluation data into the canonical query table (SPEC 7).
// Each reads only the folder it is given, so a user can point it at a copy of their own.

import Foundation

/// What an importer gives: the two tables and what it had to skip or assume, in words.
public struct ImportedTables: Sendable {
    public var train: QueryTable
    public var test: QueryTable
    public var notes: [String]
}

public struct ImportError: Error, Sendable, CustomStringConvertible {
    public var file: String
    public var line: Int?
    public var message: String
    public var description: String {
        "\(file)" + (line.map { ":\($0)" } ?? "") + ": \(message)"
    }
}

// MARK: - RouterBench

/// RouterBench 0-shot rows as RouterDC ships them: files `<name>_train.csv` and `<name>_test.csv`
/// with columns `sample_id`, `prompt` (a Python list of strings), `eval_name` (the task), and per
/// model `<model>` (the 0/1 score) and `<model>|total_cost` (real cost, USD). The source's
/// train/test split is kept. A row with an empty score or cost for any model is skipped and
/// counted; a repeated `sample_id` within a split keeps its first row.
public struct RouterBenchImporter: Sendable {
    public var directory: URL

    public init(directory: URL) {
        self.directory = directory
    }

    public func load() throws -> ImportedTables {
        let names = try FileManager.default.contentsOfDirectory(atPath: directory.path).sorted()
        var notes: [String] = []
        var models: [String]?
        var firstFile = ""
        var tables: [QueryTable] = []
        for suffix in ["_train.csv", "_test.csv"] {
            let files = names.filter { $0.hasSuffix(suffix) }
            guard !files.isEmpty else {
                throw ImportError(file: directory.path, line: nil, message: "no *\(suffix) file")
            }
            var records: [QueryRecord] = []
            var ids = Set<String>()
            var duplicates = 0
            for file in files {
                let (fileModels, rows, skipped) = try readFile(file)
                if let models, models != fileModels {
                    throw ImportError(file: file, line: 1,
                                      message: "its models \(fileModels) differ from \(firstFile)'s \(models)")
                }
                if models == nil { models = fileModels; firstFile = file }
                for r in rows {
                    if ids.insert(r.id).inserted { records.append(r) } else { duplicates += 1 }
                }
                notes.append("\(file): \(rows.count + skipped) rows, \(skipped) skipped for an empty score or cost")
            }
            if duplicates > 0 {
                notes.append("*\(suffix): \(duplicates) later rows of a repeated sample_id dropped")
            }
            tables.append(try QueryTable(records: records))
        }
        let shared = Set(tables[0].records.map(\.id)).intersection(tables[1].records.map(\.id))
        if !shared.isEmpty {
            notes.append("\(shared.count) sample_ids are in both train and test")
        }
        notes.append("train: \(tables[0].count) queries, test: \(tables[1].count), \(models?.count ?? 0) models")
        return ImportedTables(train: tables[0], test: tables[1], notes: notes)
    }

    private func readFile(_ file: String) throws -> (models: [String], rows: [QueryRecord], skipped: Int) {
        let csv: [CSVRecord]
        do {
            csv = try CSV.parse(Data(contentsOf: directory.appendingPathComponent(file)))
        } catch let error as CSVError {
            throw ImportError(file: file, line: error.line, message: error.message)
        }
        guard let header = csv.first?.fields else {
            throw ImportError(file: file, line: nil, message: "empty file")
        }
        func column(_ name: String) throws -> Int {
            guard let c = header.firstIndex(of: name) else {
                throw ImportError(file: file, line: 1, message: "no column '\(name)'")
            }
            return c
        }
        let idColumn = try column("sample_id"), promptColumn = try column("prompt"),
            taskColumn = try column("eval_name")
        let models = header.filter { !$0.isEmpty && !$0.contains("|") && header.contains($0 + "|total_cost") }.sorted()
        guard !models.isEmpty else {
            throw ImportError(file: file, line: 1, message: "no model columns (<model> with <model>|total_cost)")
        }
        let scoreColumns = try models.map { try column($0) }
        let costColumns = try models.map { try column($0 + "|total_cost") }
        var rows: [QueryRecord] = []
        var skipped = 0
        for record in csv.dropFirst() {
            let f = record.fields
            guard f.count == header.count else {
                throw ImportError(file: file, line: record.line,
                                  message: "\(f.count) fields where the header has \(header.count)")
            }
            if scoreColumns.contains(where: { f[$0].isEmpty }) || costColumns.contains(where: { f[$0].isEmpty }) {
                skipped += 1
                continue
            }
            func number(_ c: Int) throws -> Double {
                guard let x = Double(f[c]), x.isFinite else {
                    throw ImportError(file: file, line: record.line,
                                      message: "column '\(header[c])': '\(f[c])' is not a number")
                }
                return x
            }
            var outcomes: [String: ModelOutcome] = [:]
            for (k, model) in models.enumerated() {
                let quality = try number(scoreColumns[k]), cost = try number(costColumns[k])
                guard (0...1).contains(quality) else {
                    throw ImportError(file: file, line: record.line,
                                      message: "score \(quality) of '\(model)' is outside [0, 1]")
                }
                guard cost >= 0 else {
                    throw ImportError(file: file, line: record.line, message: "cost \(cost) of '\(model)' is negative")
                }
                outcomes[model] = ModelOutcome(quality: quality, costUSD: cost)
            }
            let prompt = f[promptColumn]
            let text = pythonStringList(prompt)?.joined(separator: "\n\n") ?? prompt
            rows.append(QueryRecord(id: f[idColumn], task: f[taskColumn], text: text, models: outcomes))
        }
        return (models, rows, skipped)
    }
}

/// The strings of a Python list literal of string literals, such as `['a', "b\n"]`, with escapes
/// decoded; nil when the text is not one. RouterBench stores each prompt this way.
func pythonStringList(_ text: String) -> [String]? {
    let s = Array(text.unicodeScalars)
    var i = 0
    func skipSpaces() { while i < s.count, s[i] == " " || s[i] == "\n" || s[i] == "\t" { i += 1 } }
    func hex(_ count: Int) -> Unicode.Scalar? {
        guard i + count <= s.count,
              let v = UInt32(String(String.UnicodeScalarView(s[i..<(i + count)])), radix: 16) else { return nil }
        i += count
        return Unicode.Scalar(v)
    }
    skipSpaces()
    guard i < s.count, s[i] == "[" else { return nil }
    i += 1
    var items: [String] = []
    while true {
        skipSpaces()
        guard i < s.count else { return nil }
        if s[i] == "]" { i += 1; break }
        if !items.isEmpty {
            guard s[i] == "," else { return nil }
            i += 1
            skipSpaces()
            if i < s.count, s[i] == "]" { i += 1; break }
        }
        guard i < s.count, s[i] == "'" || s[i] == "\"" else { return nil }
        let delimiter = s[i]
        i += 1
        var out = String.UnicodeScalarView()
        while true {
            guard i < s.count else { return nil }
            let c = s[i]
            i += 1
            if c == delimiter { break }
            guard c == "\\" else { out.append(c); continue }
            guard i < s.count else { return nil }
            let e = s[i]
            i += 1
            switch e {
            case "n": out.append("\n")
            case "t": out.append("\t")
            case "r": out.append("\r")
            case "0": out.append("\0")
            case "\\", "'", "\"": out.append(e)
            case "x": guard let v = hex(2) else { return nil }; out.append(v)
            case "u": guard let v = hex(4) else { return nil }; out.append(v)
            case "U": guard let v = hex(8) else { return nil }; out.append(v)
            // Python keeps the backslash of an unknown escape.
            default: out.append("\\"); out.append(e)
            }
        }
        items.append(String(out))
    }
    skipSpaces()
    return i == s.count ? items : nil
}

// MARK: - RouteLLM

/// RouteLLM's evaluation data for two models (gpt-4-1106-preview and Mixtral-8x7B):
/// - `mmlu_responses/mmlu_<subject>.csv`: `prompt` and each model's `True`/`False`; task "mmlu".
/// - `gsm8k/gsm8k_responses.csv`: `prompt`, each model's correctness and `<model>_response`;
///   task "gsm8k".
/// - `mt_bench/judgements*.jsonl`: GPT-4 judge scores 1-10 per question, turn and model;
///   quality (score − 1)/9, task "mt-bench", `conversation` = the question id, `turn` 1 or 2.
///   The question texts come from `question.jsonl` in `mtBenchQuestionsDirectory`.
///
/// The data has no costs, so they are estimated: tokens = ⌈characters / 4⌉ (characters counted
/// as Unicode scalars), cost = input tokens × input price + output tokens × output price, with
/// the list prices in `listPricesUSDPerMillionTokens`: gpt-4-1106-preview $10 in / $30 out,
/// Mixtral-8x7B-Instruct $0.60 / $0.60 per million tokens. Input is the prompt; for MT-Bench turn
/// 2 it is the whole conversation so far (question 1, the model's own answer 1, question 2), as a
/// chat API bills it. Output is the model's own response where the data has it (GSM8K, and the
/// MT-Bench answers quoted in the judge's prompt); MMLU has none, so every MMLU answer is taken
/// as `assumedOutputTokens` (16) tokens, and so is an MT-Bench answer the judge prompt does not
/// show.
///
/// There is no split in the source, so one is made: a query goes to test when a seeded hash of
/// its id falls in the first `testShare` of the range; both turns of an MT-Bench question hash by
/// the question, so a conversation stays on one side.
public struct RouteLLMImporter: Sendable {
    public struct TokenPricesUSD: Sendable, Equatable {
        public var inputPerMillion: Double
        public var outputPerMillion: Double
        public init(inputPerMillion: Double, outputPerMillion: Double) {
            self.inputPerMillion = inputPerMillion
            self.outputPerMillion = outputPerMillion
        }
    }

    public static let listPricesUSDPerMillionTokens: [String: TokenPricesUSD] = [
        "gpt-4-1106-preview": TokenPricesUSD(inputPerMillion: 10, outputPerMillion: 30),
        "mistralai/Mixtral-8x7B-Instruct-v0.1": TokenPricesUSD(inputPerMillion: 0.6, outputPerMillion: 0.6),
    ]
    public static let charactersPerToken = 4
    public static let assumedOutputTokens = 16

    public var directory: URL
    public var mtBenchQuestionsDirectory: URL
    public var prices: [String: TokenPricesUSD]
    public var testShare: Double
    public var splitSeed: UInt64

    public init(directory: URL, mtBenchQuestionsDirectory: URL,
                prices: [String: TokenPricesUSD] = RouteLLMImporter.listPricesUSDPerMillionTokens,
                testShare: Double = 0.2, splitSeed: UInt64 = 0x5EC0_2024) {
        self.directory = directory
        self.mtBenchQuestionsDirectory = mtBenchQuestionsDirectory
        self.prices = prices
        self.testShare = testShare
        self.splitSeed = splitSeed
    }

    public static func estimatedTokens(_ text: String) -> Int {
        (text.unicodeScalars.count + charactersPerToken - 1) / charactersPerToken
    }

    public func load() throws -> ImportedTables {
        var notes: [String] = []
        var models: [String]?
        var records: [QueryRecord] = []
        func agree(_ found: [String], _ file: String) throws {
            if let models, models != found {
                throw ImportError(file: file, line: 1, message: "models \(found) differ from \(models)")
            }
            models = found
        }
        let mmlu = try readMMLU(agree)
        records += mmlu.records
        notes.append("mmlu: \(mmlu.records.count) questions from \(mmlu.files) files"
            + ", output taken as \(Self.assumedOutputTokens) tokens")
        let gsm8k = try readGSM8K(agree)
        records += gsm8k
        notes.append("gsm8k: \(gsm8k.count) questions")
        let mtBench = try readMTBench(agree)
        records += mtBench.records
        notes += mtBench.notes

        var train: [QueryRecord] = []
        var test: [QueryRecord] = []
        for r in records {
            if splitUnit(r.conversation.map { "mt-bench/\($0)" } ?? r.id) < testShare {
                test.append(r)
            } else {
                train.append(r)
            }
        }
        notes.append("split by seeded id hash (seed \(splitSeed), test share \(testShare)): "
            + "train \(train.count), test \(test.count)")
        return ImportedTables(train: try QueryTable(records: train), test: try QueryTable(records: test),
                              notes: notes)
    }

    /// A uniform number in [0, 1) from the key and the seed: FNV-1a, then a 64-bit finalizer so
    /// that similar ids land far apart.
    func splitUnit(_ key: String) -> Double {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325 ^ splitSeed
        for b in key.utf8 { h = (h ^ UInt64(b)) &* 0x0000_0100_0000_01B3 }
        h = (h ^ (h >> 30)) &* 0xBF58_476D_1CE4_E5B9
        h = (h ^ (h >> 27)) &* 0x94D0_49BB_1331_11EB
        h ^= h >> 31
        return Double(h >> 11) * 0x1.0p-53
    }

    private func costUSD(_ model: String, inputTokens: Int, outputTokens: Int, file: String) throws -> Double {
        guard let p = prices[model] else {
            throw ImportError(file: file, line: nil, message: "no list price for model '\(model)'")
        }
        return (Double(inputTokens) * p.inputPerMillion + Double(outputTokens) * p.outputPerMillion) / 1_000_000
    }

    private func readCSV(_ path: String) throws -> [CSVRecord] {
        do {
            return try CSV.parse(Data(contentsOf: directory.appendingPathComponent(path)))
        } catch let error as CSVError {
            throw ImportError(file: path, line: error.line, message: error.message)
        }
    }

    private func correctness(_ value: String, file: String, line: Int) throws -> Double {
        switch value {
        case "True": return 1
        case "False": return 0
        default: throw ImportError(file: file, line: line, message: "'\(value)' is neither True nor False")
        }
    }

    private func readMMLU(_ agree: (_ models: [String], _ file: String) throws -> Void) throws
        -> (records: [QueryRecord], files: Int) {
        let folder = "mmlu_responses"
        let files = try FileManager.default.contentsOfDirectory(
            atPath: directory.appendingPathComponent(folder).path)
            .filter { $0.hasPrefix("mmlu_") && $0.hasSuffix(".csv") }.sorted()
        var records: [QueryRecord] = []
        for name in files {
            let file = folder + "/" + name
            let csv = try readCSV(file)
            guard let header = csv.first?.fields, header.count >= 2, header[0] == "prompt" else {
                throw ImportError(file: file, line: 1, message: "expected the columns prompt, <model>...")
            }
            let models = Array(header.dropFirst())
            try agree(models.sorted(), file)
            let subject = String(name.dropFirst("mmlu_".count).dropLast(".csv".count))
            for (row, record) in csv.dropFirst().enumerated() {
                let f = record.fields
                guard f.count == header.count else {
                    throw ImportError(file: file, line: record.line, message: "\(f.count) fields, expected \(header.count)")
                }
                let input = Self.estimatedTokens(f[0])
                var outcomes: [String: ModelOutcome] = [:]
                for (k, model) in models.enumerated() {
                    outcomes[model] = ModelOutcome(
                        quality: try correctness(f[k + 1], file: file, line: record.line),
                        costUSD: try costUSD(model, inputTokens: input, outputTokens: Self.assumedOutputTokens, file: file))
                }
                records.append(QueryRecord(id: "mmlu/\(subject)/\(row)", task: "mmlu", text: f[0], models: outcomes))
            }
        }
        return (records, files.count)
    }

    private func readGSM8K(_ agree: (_ models: [String], _ file: String) throws -> Void) throws -> [QueryRecord] {
        let file = "gsm8k/gsm8k_responses.csv"
        let csv = try readCSV(file)
        guard let header = csv.first?.fields, header.first == "prompt" else {
            throw ImportError(file: file, line: 1, message: "expected a first column 'prompt'")
        }
        let models = header.filter { header.contains($0 + "_response") }
        try agree(models.sorted(), file)
        let scoreColumns = models.map { header.firstIndex(of: $0)! }
        let responseColumns = models.map { header.firstIndex(of: $0 + "_response")! }
        var records: [QueryRecord] = []
        for (row, record) in csv.dropFirst().enumerated() {
            let f = record.fields
            guard f.count == header.count else {
                throw ImportError(file: file, line: record.line, message: "\(f.count) fields, expected \(header.count)")
            }
            let input = Self.estimatedTokens(f[0])
            var outcomes: [String: ModelOutcome] = [:]
            for (k, model) in models.enumerated() {
                outcomes[model] = ModelOutcome(
                    quality: try correctness(f[scoreColumns[k]], file: file, line: record.line),
                    costUSD: try costUSD(model, inputTokens: input,
                                         outputTokens: Self.estimatedTokens(f[responseColumns[k]]), file: file))
            }
            records.append(QueryRecord(id: "gsm8k/\(row)", task: "gsm8k", text: f[0], models: outcomes))
        }
        return records
    }

    private struct Judgement: Decodable {
        var question_id: Int
        var model: String
        var user_prompt: String
        var score: Double
        var turn: Int
    }

    private struct Question: Decodable {
        var question_id: Int
        var turns: [String]
    }

    private func readJSONL<T: Decodable>(_ url: URL, as type: T.Type, file: String) throws -> [T] {
        let decoder = JSONDecoder()
        return try jsonLines(Data(contentsOf: url)).map { number, bytes in
            do {
                return try decoder.decode(T.self, from: bytes)
            } catch {
                throw ImportError(file: file, line: number, message: "bad record: \(error)")
            }
        }
    }

    private func readMTBench(_ agree: (_ models: [String], _ file: String) throws -> Void) throws
        -> (records: [QueryRecord], notes: [String]) {
        let questionFile = "question.jsonl"
        var questions: [Int: [String]] = [:]
        for q in try readJSONL(mtBenchQuestionsDirectory.appendingPathComponent(questionFile),
                               as: Question.self, file: questionFile) {
            questions[q.question_id] = q.turns
        }
        let folder = "mt_bench"
        let files = try FileManager.default.contentsOfDirectory(
            atPath: directory.appendingPathComponent(folder).path)
            .filter { $0.hasPrefix("judgements") && $0.hasSuffix(".jsonl") }.sorted()
        var judged: [String: Judgement] = [:]
        var outOfRange = 0, repeated = 0
        for name in files {
            let file = folder + "/" + name
            for j in try readJSONL(directory.appendingPathComponent(file), as: Judgement.self, file: file) {
                // A judge that failed to give a score leaves -1; such a turn has no outcome.
                guard (1...10).contains(j.score) else { outOfRange += 1; continue }
                let key = "\(j.question_id)/\(j.turn)/\(j.model)"
                if judged[key] == nil { judged[key] = j } else { repeated += 1 }
            }
        }
        let judgedModels = Set(judged.values.map(\.model)).sorted()
        try agree(judgedModels, folder)
        var records: [QueryRecord] = []
        var incomplete = 0, unknownQuestion = 0, assumedAnswers = 0
        let turnsJudged = Set(judged.values.map { [$0.question_id, $0.turn] }).sorted { $0.lexicographicallyPrecedes($1) }
        for key in turnsJudged {
            let (qid, turn) = (key[0], key[1])
            guard let texts = questions[qid], turn >= 1, turn <= texts.count else {
                unknownQuestion += 1
                continue
            }
            var outcomes: [String: ModelOutcome] = [:]
            for model in judgedModels {
                guard let j = judged["\(qid)/\(turn)/\(model)"] else { break }
                let answers = Self.assistantAnswers(inJudgePrompt: j.user_prompt)
                var input = Self.estimatedTokens(texts[turn - 1])
                var output = Self.assumedOutputTokens
                if answers.count == turn {
                    output = Self.estimatedTokens(answers[turn - 1])
                    for earlier in 0..<(turn - 1) {
                        input += Self.estimatedTokens(texts[earlier]) + Self.estimatedTokens(answers[earlier])
                    }
                } else {
                    assumedAnswers += 1
                    for earlier in 0..<(turn - 1) {
                        input += Self.estimatedTokens(texts[earlier]) + Self.assumedOutputTokens
                    }
                }
                outcomes[model] = ModelOutcome(
                    quality: (j.score - 1) / 9,
                    costUSD: try costUSD(model, inputTokens: input, outputTokens: output, file: folder))
            }
            guard outcomes.count == judgedModels.count else {
                incomplete += 1
                continue
            }
            records.append(QueryRecord(id: "mt-bench/\(qid)/\(turn)", task: "mt-bench", text: texts[turn - 1],
                                       models: outcomes, conversation: String(qid), turn: turn))
        }
        var notes = ["mt-bench: \(records.count) turns of \(Set(records.compactMap(\.conversation)).count) questions"]
        if outOfRange > 0 { notes.append("mt-bench: \(outOfRange) judgements without a score in 1-10 skipped") }
        if repeated > 0 { notes.append("mt-bench: \(repeated) repeated judgements ignored") }
        if incomplete > 0 { notes.append("mt-bench: \(incomplete) turns skipped for lacking a model's judgement") }
        if unknownQuestion > 0 { notes.append("mt-bench: \(unknownQuestion) turns skipped for an unknown question") }
        if assumedAnswers > 0 {
            notes.append("mt-bench: \(assumedAnswers) answers not found in the judge prompt, taken as \(Self.assumedOutputTokens) tokens")
        }
        return (records, notes)
    }

    /// The assistant's answers quoted in an MT-Bench judge prompt, in turn order: one for a
    /// single-turn prompt, every turn's for a multi-turn one; empty when the layout is unknown.
    static func assistantAnswers(inJudgePrompt prompt: String) -> [String] {
        func between(_ text: Substring, _ start: String, _ end: String) -> Substring? {
            guard let a = text.range(of: start), let b = text.range(of: end, range: a.upperBound..<text.endIndex)
            else { return nil }
            return text[a.upperBound..<b.lowerBound]
        }
        let whole = prompt[...]
        if let answer = between(whole, "[The Start of Assistant's Answer]", "[The End of Assistant's Answer]") {
            return [answer.trimmingCharacters(in: .whitespacesAndNewlines)]
        }
        guard let conversation = between(whole, "<|The Start of Assistant A's Conversation with User|>",
                                         "<|The End of Assistant A's Conversation with User|>") else { return [] }
        return conversation.components(separatedBy: "### Assistant A:").dropFirst().map { part in
            let answer = part.range(of: "### User:").map { part[..<$0.lowerBound] } ?? part[...]
            return answer.trimmingCharacters(in: .whitespacesAndNewlines)
        }
    }
}
