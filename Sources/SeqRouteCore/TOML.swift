// A reader for the subset of TOML that config/seqroute.toml uses: comments, [tables],
// [[arrays of tables]], bare or quoted keys, basic and literal strings, integers (with '_'),
// floats, booleans, arrays and inline tables. Dotted keys, dates and multi-line strings are
// refused with a clear message rather than misread.

public enum TOMLValue: Equatable, Sendable {
    case string(String)
    case integer(Int64)
    case float(Double)
    case bool(Bool)
    case array([TOMLValue])
    case table([String: TOMLValue])

    var typeName: String {
        switch self {
        case .string: return "string"
        case .integer: return "integer"
        case .float: return "float"
        case .bool: return "boolean"
        case .array: return "array"
        case .table: return "table"
        }
    }
}

public struct TOMLError: Error, CustomStringConvertible, Sendable {
    public var line: Int
    public var message: String
    public var description: String { "line \(line): \(message)" }
}

public enum TOML {
    public static func parse(_ text: String) throws -> [String: TOMLValue] {
        var p = Parser(Array(text.utf8))
        return try p.document()
    }

    private struct Parser {
        let b: [UInt8]
        var i = 0
        var line = 1
        init(_ b: [UInt8]) { self.b = b }

        func fail(_ m: String) -> TOMLError { TOMLError(line: line, message: m) }
        var peek: UInt8? { i < b.count ? b[i] : nil }

        mutating func skipSpaces() {
            while let c = peek, c == 0x20 || c == 0x09 { i += 1 }
        }
        mutating func skipComment() {
            if peek == UInt8(ascii: "#") { while let c = peek, c != 0x0A { i += 1 } }
        }
        /// Spaces, comments and newlines (inside arrays).
        mutating func skipBlank() {
            while let c = peek {
                if c == 0x20 || c == 0x09 || c == 0x0D { i += 1 }
                else if c == 0x0A { i += 1; line += 1 }
                else if c == UInt8(ascii: "#") { skipComment() }
                else { break }
            }
        }
        mutating func endOfLine() throws {
            skipSpaces()
            skipComment()
            if peek == 0x0D { i += 1 }
            guard let c = peek else { return }
            guard c == 0x0A else { throw fail("unexpected text after value") }
            i += 1
            line += 1
        }

        mutating func document() throws -> [String: TOMLValue] {
            var root: [String: TOMLValue] = [:]
            // Path of the current table: (key, index into array of tables or nil).
            var current: [(String, Int?)] = []
            while true {
                skipBlank()
                guard let c = peek else { break }
                if c == UInt8(ascii: "[") {
                    i += 1
                    let isArray = peek == UInt8(ascii: "[")
                    if isArray { i += 1 }
                    skipSpaces()
                    let name = try key()
                    skipSpaces()
                    guard peek == UInt8(ascii: "]") else { throw fail("expected ']' after table name") }
                    i += 1
                    if isArray {
                        guard peek == UInt8(ascii: "]") else { throw fail("expected ']]'") }
                        i += 1
                        var arr: [TOMLValue] = []
                        if let existing = root[name] {
                            guard case .array(let a) = existing else { throw fail("\(name) is not an array of tables") }
                            arr = a
                        }
                        arr.append(.table([:]))
                        root[name] = .array(arr)
                        current = [(name, arr.count - 1)]
                    } else {
                        if root[name] != nil { throw fail("table [\(name)] defined twice") }
                        root[name] = .table([:])
                        current = [(name, nil)]
                    }
                    try endOfLine()
                    continue
                }
                let k = try key()
                skipSpaces()
                guard peek == UInt8(ascii: "=") else { throw fail("expected '=' after key \(k)") }
                i += 1
                skipSpaces()
                let v = try value()
                try assign(&root, current, k, v)
                try endOfLine()
            }
            return root
        }

        func assign(_ root: inout [String: TOMLValue], _ path: [(String, Int?)], _ k: String, _ v: TOMLValue) throws {
            guard let (name, index) = path.first else {
                if root[k] != nil { throw fail("key \(k) defined twice") }
                root[k] = v
                return
            }
            if let index {
                guard case .array(var arr) = root[name]!, case .table(var t) = arr[index] else { return }
                if t[k] != nil { throw fail("key \(name).\(k) defined twice") }
                t[k] = v
                arr[index] = .table(t)
                root[name] = .array(arr)
            } else {
                guard case .table(var t) = root[name]! else { return }
                if t[k] != nil { throw fail("key \(name).\(k) defined twice") }
                t[k] = v
                root[name] = .table(t)
            }
        }

        mutating func key() throws -> String {
            guard let c = peek else { throw fail("expected a key") }
            if c == UInt8(ascii: "\"") { return try basicString() }
            if c == UInt8(ascii: "'") { return try literalString() }
            let start = i
            while let c = peek, isBare(c) { i += 1 }
            guard i > start else { throw fail("expected a key") }
            if peek == UInt8(ascii: ".") { throw fail("dotted keys are not supported; use a [table]") }
            return String(decoding: b[start..<i], as: UTF8.self)
        }

        func isBare(_ c: UInt8) -> Bool {
            (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c == 45 || c == 95
        }

        mutating func value() throws -> TOMLValue {
            guard let c = peek else { throw fail("expected a value") }
            switch c {
            case UInt8(ascii: "\""):
                if b[i...].starts(with: Array("\"\"\"".utf8)) { throw fail("multi-line strings are not supported") }
                return .string(try basicString())
            case UInt8(ascii: "'"):
                return .string(try literalString())
            case UInt8(ascii: "["):
                i += 1
                var items: [TOMLValue] = []
                while true {
                    skipBlank()
                    if peek == UInt8(ascii: "]") { i += 1; break }
                    items.append(try value())
                    skipBlank()
                    if peek == UInt8(ascii: ",") { i += 1; continue }
                    guard peek == UInt8(ascii: "]") else { throw fail("expected ',' or ']' in array") }
                    i += 1
                    break
                }
                return .array(items)
            case UInt8(ascii: "{"):
                i += 1
                var t: [String: TOMLValue] = [:]
                skipSpaces()
                if peek == UInt8(ascii: "}") { i += 1; return .table(t) }
                while true {
                    skipSpaces()
                    let k = try key()
                    skipSpaces()
                    guard peek == UInt8(ascii: "=") else { throw fail("expected '=' in inline table") }
                    i += 1
                    skipSpaces()
                    if t[k] != nil { throw fail("key \(k) defined twice in inline table") }
                    t[k] = try value()
                    skipSpaces()
                    if peek == UInt8(ascii: ",") { i += 1; continue }
                    guard peek == UInt8(ascii: "}") else { throw fail("expected ',' or '}' in inline table") }
                    i += 1
                    return .table(t)
                }
            default:
                let start = i
                while let c = peek, c != 0x20, c != 0x09, c != 0x0A, c != 0x0D, c != UInt8(ascii: ","),
                      c != UInt8(ascii: "]"), c != UInt8(ascii: "}"), c != UInt8(ascii: "#") { i += 1 }
                let word = String(decoding: b[start..<i], as: UTF8.self)
                if word == "true" { return .bool(true) }
                if word == "false" { return .bool(false) }
                let digits = word.replacingUnderscores()
                if let n = Int64(digits) { return .integer(n) }
                if word.contains(where: { $0 == "." || $0 == "e" || $0 == "E" }), let d = Double(digits), d.isFinite {
                    return .float(d)
                }
                throw fail("cannot read value \(word.isEmpty ? "(nothing)" : word)")
            }
        }

        mutating func basicString() throws -> String {
            i += 1
            var out: [UInt8] = []
            while true {
                guard let c = peek, c != 0x0A else { throw fail("unterminated string") }
                i += 1
                if c == UInt8(ascii: "\"") { break }
                if c == UInt8(ascii: "\\") {
                    guard let e = peek else { throw fail("unterminated string") }
                    i += 1
                    switch e {
                    case UInt8(ascii: "n"): out.append(0x0A)
                    case UInt8(ascii: "t"): out.append(0x09)
                    case UInt8(ascii: "r"): out.append(0x0D)
                    case UInt8(ascii: "\\"): out.append(0x5C)
                    case UInt8(ascii: "\""): out.append(0x22)
                    default: throw fail("unsupported escape \\\(Unicode.Scalar(e))")
                    }
                } else {
                    out.append(c)
                }
            }
            guard let s = String(validating: out, as: UTF8.self) else { throw fail("string is not valid UTF-8") }
            return s
        }

        mutating func literalString() throws -> String {
            i += 1
            let start = i
            while true {
                guard let c = peek, c != 0x0A else { throw fail("unterminated string") }
                if c == UInt8(ascii: "'") { break }
                i += 1
            }
            defer { i += 1 }
            guard let s = String(validating: b[start..<i], as: UTF8.self) else { throw fail("string is not valid UTF-8") }
            return s
        }
    }
}

extension String {
    fileprivate func replacingUnderscores() -> String { String(self.filter { $0 != "_" }) }
}
