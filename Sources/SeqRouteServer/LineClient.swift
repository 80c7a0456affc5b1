// A blocking client of the line protocol, for `seqroute ctl`, `seqroute simulate`, policy
// activation and tests; `fields` also reads answers for the load generator.

import Foundation

public final class LineClient {
    private let fd: Int32
    private var buffer: [UInt8] = []
    private var start = 0
    /// Where each read lands, kept between reads: a fresh 64 KiB array per answer would cost a
    /// busy client more than the request itself.
    private var chunk = [UInt8](repeating: 0, count: 65_536)

    public init(path: String) throws {
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw ServerError("socket(): \(String(cString: strerror(errno)))") }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        // No close before a throw: once every property is set, a throwing initializer runs
        // deinit, which closes the socket. Closing here too closed the number twice, and the
        // second close could take a descriptor another thread had opened since.
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else {
            throw ServerError("socket path too long: \(path)")
        }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        let size = socklen_t(MemoryLayout<sockaddr_un>.size)
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, size) }
        }
        guard rc == 0 else { throw ServerError("cannot connect to \(path): \(String(cString: strerror(errno)))") }
    }

    deinit { if fd >= 0 { close(fd) } }

    /// Sends raw bytes as they are (tests send malformed input this way).
    public func send(raw: [UInt8]) throws {
        var off = 0
        while off < raw.count {
            // MSG_NOSIGNAL: a daemon that closed the connection is an error here, not SIGPIPE.
            let n = raw[off...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { throw ServerError("write failed: \(String(cString: strerror(errno)))") }
            off += n
        }
    }

    public func send(_ line: String) throws { try send(raw: Array((line + "\n").utf8)) }

    /// Closes the writing side only; answers can still be read.
    public func finishWriting() { shutdown(fd, Int32(SHUT_WR)) }

    /// Reads one answer line; nil when the server closed the connection.
    public func readLine() throws -> String? {
        while true {
            if let nl = buffer[start...].firstIndex(of: UInt8(ascii: "\n")) {
                let line = String(decoding: buffer[start..<nl], as: UTF8.self)
                start = nl + 1
                if start > 65_536 {
                    buffer.removeFirst(start)
                    start = 0
                }
                return line
            }
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n == 0 { return nil }
            guard n > 0 else {
                if errno == EINTR { continue }
                if errno == ECONNRESET { return nil }
                throw ServerError("read failed: \(String(cString: strerror(errno)))")
            }
            buffer.append(contentsOf: chunk[0..<n])
        }
    }

    /// Sends one request and waits for its answer. A daemon that refuses the connection
    /// (`ERR busy`, `ERR forbidden`) answers and closes before the request is read: that answer
    /// is returned rather than the failed write.
    public func request(_ line: String) throws -> String {
        do { try send(line) } catch {
            if let refusal = try? readLine() { return refusal }
            throw error
        }
        guard let answer = try readLine() else { throw ServerError("the server closed the connection") }
        return answer
    }

    /// The value of `key` in an answer `OK k=v ...` (left encoded), found by scanning its bytes
    /// once: the daemon's metrics and the load generator look up a word or two of every answer,
    /// and splitting each into a dictionary cost them more than the rest of their work on it.
    public static func field(_ key: String, in answer: String) -> Substring? {
        let text = answer.utf8, pattern = " \(key)=".utf8
        var i = text.startIndex
        while let start = text[i...].firstIndex(of: UInt8(ascii: " ")) {
            if text[start...].starts(with: pattern) {
                let from = text.index(start, offsetBy: pattern.count)
                let to = text[from...].firstIndex(of: UInt8(ascii: " ")) ?? text.endIndex
                return Substring(text[from..<to])
            }
            i = text.index(after: start)
        }
        return nil
    }

    /// Parses `OK k=v ...` into a dictionary (values left encoded).
    public static func fields(_ answer: String) -> [String: String] {
        var out: [String: String] = [:]
        for word in answer.split(separator: " ").dropFirst() {
            if let eq = word.firstIndex(of: "=") { out[String(word[..<eq])] = String(word[word.index(after: eq)...]) }
        }
        return out
    }
}
