// A small RFC 4180 CSV reader for the importers: the benchmark CSVs carry model responses with
// commas, doubled quotes and newlines inside quoted fields, so splitting on lines or commas is
// wrong.

import Foundation

public struct CSVError: Error, Sendable, Equatable, CustomStringConvertible {
    /// 1-based line where the offending record starts.
    public var line: Int
    public var message: String
    public var description: String { "line \(line): \(message)" }
}

/// One record and the 1-based line it starts on (records may span lines).
public struct CSVRecord: Sendable, Equatable {
    public var line: Int
    public var fields: [String]
}

public enum CSV {
    /// Fields are separated by commas and records by LF or CRLF. A field that starts with a
    /// double quote runs to the matching closing quote, may hold commas and line breaks, and
    /// writes a quote as two; after its closing quote only a comma or the end of the record may
    /// follow. A quote inside an unquoted field is kept as it is. Empty lines are skipped and a
    /// leading UTF-8 byte order mark is ignored.
    public static func parse(_ data: Data) throws -> [CSVRecord] {
        try data.withUnsafeBytes { try parse(bytes: $0.bindMemory(to: UInt8.self)) }
    }

    public static func parse(_ text: String) throws -> [CSVRecord] {
        try parse(Data(text.utf8))
    }

    private static let quote = UInt8(ascii: "\""), comma = UInt8(ascii: ","),
        lf = UInt8(ascii: "\n"), cr = UInt8(ascii: "\r")

    private static func parse(bytes b: UnsafeBufferPointer<UInt8>) throws -> [CSVRecord] {
        let n = b.count
        var records: [CSVRecord] = []
        var line = 1
        var i = n >= 3 && b[0] == 0xEF && b[1] == 0xBB && b[2] == 0xBF ? 3 : 0

        /// The length of the line break at j (LF or CRLF), or nil when there is none.
        func lineBreak(at j: Int) -> Int? {
            if b[j] == lf { return 1 }
            if b[j] == cr, j + 1 < n, b[j + 1] == lf { return 2 }
            return nil
        }

        while i < n {
            if let skip = lineBreak(at: i) {
                i += skip
                line += 1
                continue
            }
            let recordLine = line
            var fields: [String] = []
            while true {
                if i < n, b[i] == quote {
                    var bytes: [UInt8] = []
                    var j = i + 1
                    while true {
                        guard j < n else {
                            throw CSVError(line: recordLine, message: "quoted field is not closed")
                        }
                        if b[j] == quote {
                            guard j + 1 < n, b[j + 1] == quote else { break }
                            j += 1
                        } else if b[j] == lf {
                            line += 1
                        }
                        bytes.append(b[j])
                        j += 1
                    }
                    fields.append(String(decoding: bytes, as: UTF8.self))
                    i = j + 1
                } else {
                    var j = i
                    while j < n, b[j] != comma, lineBreak(at: j) == nil { j += 1 }
                    fields.append(String(decoding: UnsafeBufferPointer(rebasing: b[i..<j]), as: UTF8.self))
                    i = j
                }
                if i == n { break }
                if b[i] == comma {
                    i += 1
                    continue
                }
                guard let skip = lineBreak(at: i) else {
                    throw CSVError(line: line, message: "unexpected character after a closing quote")
                }
                i += skip
                line += 1
                break
            }
            records.append(CSVRecord(line: recordLine, fields: fields))
        }
        return records
    }
}
