// The canonical query table of SPEC section 7: one query a line of JSONL, with every model's
// quality and actual cost in USD. This is offline benchmark data, so money here is USD as a
// Double (the ledger's integer micro-units are for the daemon only).

import Foundation
import SeqRouteCore

/// One model's outcome on one query.
public struct ModelOutcome: Sendable, Equatable, Codable {
    /// In [0, 1].
    public var quality: Double
    /// The actual cost of the call, USD, at least 0.
    public var costUSD: Double

    public init(quality: Double, costUSD: Double) {
        self.quality = quality
        self.costUSD = costUSD
    }

    enum CodingKeys: String, CodingKey {
        case quality
        case costUSD = "cost"
    }
}

/// One query of the table.
public struct QueryRecord: Sendable, Equatable, Codable {
    public var id: String
    public var task: String
    public var text: String
    /// Keyed by model name.
    public var models: [String: ModelOutcome]
    public var features: [Double]?
    /// For natively multi-turn data: the conversation this query belongs to, and its 1-based turn.
    public var conversation: String?
    public var turn: Int?

    public init(id: String, task: String, text: String, models: [String: ModelOutcome],
                features: [Double]? = nil, conversation: String? = nil, turn: Int? = nil) {
        self.id = id
        self.task = task
        self.text = text
        self.models = models
        self.features = features
        self.conversation = conversation
        self.turn = turn
    }
}

/// A reason a table was refused, with the 1-based line of the JSONL input when there is one.
public struct QueryTableError: Error, Sendable, Equatable, CustomStringConvertible {
    public var file: String?
    public var line: Int?
    public var message: String

    public init(file: String? = nil, line: Int?, message: String) {
        self.file = file
        self.line = line
        self.message = message
    }

    public var description: String {
        (file.map { "\($0): " } ?? "") + (line.map { "line \($0): " } ?? "") + message
    }
}

/// Validated queries plus dense per-model arrays, so that simulation loops index numbers
/// instead of looking up dictionaries.
public struct QueryTable: Sendable {
    public let records: [QueryRecord]
    /// The model names every record has, sorted; model indices everywhere refer to this order.
    public let models: [String]
    /// The distinct task labels, sorted.
    public let tasks: [String]
    /// Row-major: record r, model m at r * models.count + m.
    private let qualityGrid: [Double]
    private let costGridUSD: [Double]

    /// Refuses qualities outside [0, 1], negative or non-finite costs, duplicate ids, and records
    /// whose set of models differs from the others'.
    public init(records: [QueryRecord]) throws {
        try self.init(records: records, lines: nil)
    }

    /// `lines[i]` is the input line of `records[i]`, for error messages.
    init(records: [QueryRecord], lines: [Int]?) throws {
        func fail(_ index: Int, _ message: String) -> QueryTableError {
            QueryTableError(line: lines?[index],
                            message: lines == nil ? "record \(index + 1): \(message)" : message)
        }
        let models = records.first.map { $0.models.keys.sorted() } ?? []
        var seen = Set<String>()
        var quality: [Double] = []
        var cost: [Double] = []
        quality.reserveCapacity(records.count * models.count)
        cost.reserveCapacity(records.count * models.count)
        for (i, r) in records.enumerated() {
            guard seen.insert(r.id).inserted else { throw fail(i, "duplicate id '\(r.id)'") }
            let firstWhere = lines.map { "line \($0[0])" } ?? "record 1"
            if let missing = models.first(where: { r.models[$0] == nil }) {
                throw fail(i, "record '\(r.id)' has no model '\(missing)', which \(firstWhere) has")
            }
            if let extra = r.models.keys.sorted().first(where: { !models.contains($0) }) {
                throw fail(i, "record '\(r.id)' has model '\(extra)', which \(firstWhere) lacks")
            }
            for m in models {
                let o = r.models[m]!
                guard o.quality.isFinite, (0...1).contains(o.quality) else {
                    throw fail(i, "record '\(r.id)': quality \(o.quality) of model '\(m)' is outside [0, 1]")
                }
                guard o.costUSD.isFinite, o.costUSD >= 0 else {
                    throw fail(i, "record '\(r.id)': cost \(o.costUSD) of model '\(m)' is negative or not finite")
                }
                quality.append(o.quality)
                cost.append(o.costUSD)
            }
            if let f = r.features, f.contains(where: { !$0.isFinite }) {
                throw fail(i, "record '\(r.id)': features contain a non-finite value")
            }
        }
        self.records = records
        self.models = models
        self.tasks = Set(records.map(\.task)).sorted()
        self.qualityGrid = quality
        self.costGridUSD = cost
    }

    public var count: Int { records.count }

    public func quality(_ record: Int, _ model: Int) -> Double {
        qualityGrid[record * models.count + model]
    }

    public func costUSD(_ record: Int, _ model: Int) -> Double {
        costGridUSD[record * models.count + model]
    }

    /// 1 − the mean quality over models: how hard a query is for the pool as a whole.
    public func difficulty(_ record: Int) -> Double {
        guard !models.isEmpty else { return 0 }
        var sum = 0.0
        for m in models.indices { sum += quality(record, m) }
        return 1 - sum / Double(models.count)
    }

    public func index(ofModel name: String) -> Int? { models.firstIndex(of: name) }

    /// The same table with `features` filled from each record's text where it has none.
    public func featurized(by featurizer: HashingFeaturizer) throws -> QueryTable {
        try QueryTable(records: records.map { r in
            var r = r
            if r.features == nil { r.features = featurizer.features(of: r.text) }
            return r
        })
    }

    // MARK: JSONL

    /// Parses JSONL; blank lines are skipped. Errors name the line.
    public static func parse(jsonl data: Data) throws -> QueryTable {
        var records: [QueryRecord] = []
        var lines: [Int] = []
        let decoder = JSONDecoder()
        for (number, bytes) in jsonLines(data) {
            do {
                records.append(try decoder.decode(QueryRecord.self, from: bytes))
            } catch let error as DecodingError {
                throw QueryTableError(line: number, message: describe(error))
            }
            lines.append(number)
        }
        return try QueryTable(records: records, lines: lines)
    }

    public static func parse(jsonl text: String) throws -> QueryTable {
        try parse(jsonl: Data(text.utf8))
    }

    public static func read(from url: URL) throws -> QueryTable {
        do {
            return try parse(jsonl: Data(contentsOf: url))
        } catch var error as QueryTableError {
            error.file = url.lastPathComponent
            throw error
        }
    }

    /// One record a line, keys sorted, so that the same table always gives the same bytes.
    public func jsonl() throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        var out = ""
        for r in records {
            out += String(decoding: try encoder.encode(r), as: UTF8.self)
            out += "\n"
        }
        return out
    }

    /// Writes atomically, so that a reader never sees half a table.
    public func write(to url: URL) throws {
        try Data(jsonl().utf8).write(to: url, options: .atomic)
    }

    private static func describe(_ error: DecodingError) -> String {
        func path(_ keys: [any CodingKey]) -> String {
            keys.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
        }
        switch error {
        case .keyNotFound(let key, let context):
            let at = path(context.codingPath)
            return "missing key '\(key.stringValue)'" + (at.isEmpty ? "" : " in '\(at)'")
        case .typeMismatch(let type, let context), .valueNotFound(let type, let context):
            return "'\(path(context.codingPath))' is not a valid \(type)"
        case .dataCorrupted(let context):
            let at = path(context.codingPath)
            return "bad JSON" + (at.isEmpty ? "" : " at '\(at)'") + ": \(context.debugDescription)"
        @unknown default:
            return "bad JSON: \(error)"
        }
    }
}

/// The non-blank lines of JSONL data with their 1-based numbers. Lines are split on LF bytes
/// (a CR before it is JSON whitespace), not on Swift Characters, which would merge CRLF.
func jsonLines(_ data: Data) -> [(number: Int, bytes: Data)] {
    data.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).enumerated().compactMap { i, line in
        line.allSatisfy { $0 == 0x20 || $0 == 0x09 || $0 == 0x0D } ? nil : (i + 1, line)
    }
}
