// Policy files on disk. Each trained version is its own file in the policy folder, written
// atomically (temporary file, fsync, rename, fsync of the folder), so that a crash leaves the
// old file or the new one, never half of one. The active policy is the symbolic link the
// daemon's `[routing] policy_file` names; activating a version replaces that link with one
// rename, so the daemon reads either the old target or the new one.

import Foundation
import SeqRouteCore

public struct PolicyStore: Sendable {
    public let directory: String
    /// The link the daemon loads (`[routing] policy_file`).
    public let activeLink: String

    public init(directory: String, activeLink: String) {
        self.directory = directory
        self.activeLink = activeLink
    }

    /// Absolute, so that the link resolves whatever folder it is in and whoever reads it.
    public func path(of version: String) -> String {
        URL(fileURLWithPath: directory + "/" + version + ".json").standardizedFileURL.path
    }

    /// Writes the policy as `<version>.json`; returns its path and SHA-256.
    public func write(_ policy: LearnedPolicy) throws -> (path: String, sha256: String) {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let bytes = [UInt8](try encoder.encode(policy))
        let target = path(of: policy.version)
        try Self.writeAtomically(bytes, to: target)
        return (target, SHA256.hex(bytes))
    }

    /// The SHA-256 of a stored version's file.
    public func checksum(of path: String) throws -> String {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw RefitError("cannot read policy file \(path)")
        }
        return SHA256.hex([UInt8](data))
    }

    /// Points the active link at `path` with one rename. Returns the previous target as the link
    /// held it, so that a refused reload can put it back (`restore`). A regular file where the
    /// link belongs is refused: it would be replaced and lost.
    @discardableResult
    public func activate(path: String) throws -> String? {
        try pointLink(at: URL(fileURLWithPath: path).standardizedFileURL.path)
    }

    /// Puts back what `activate` returned, verbatim; nil removes the link.
    public func restore(_ previous: String?) throws {
        if let previous { _ = try pointLink(at: previous) } else { unlink(activeLink) }
    }

    private func pointLink(at target: String) throws -> String? {
        var st = stat()
        if lstat(activeLink, &st) == 0 && (st.st_mode & S_IFMT) != S_IFLNK {
            throw RefitError("\(activeLink) is a regular file, not a link: move it away or point [routing] policy_file at another path; refit and `policy activate` manage a link there")
        }
        let previous = try? FileManager.default.destinationOfSymbolicLink(atPath: activeLink)
        let linkDir = (activeLink as NSString).deletingLastPathComponent
        try FileManager.default.createDirectory(atPath: linkDir.isEmpty ? "." : linkDir, withIntermediateDirectories: true)
        let temporary = activeLink + ".tmp-\(getpid())"
        unlink(temporary)
        guard symlink(target, temporary) == 0 else { throw Self.posixError("symlink \(temporary)") }
        guard rename(temporary, activeLink) == 0 else {
            let e = Self.posixError("rename to \(activeLink)")
            unlink(temporary)
            throw e
        }
        try Self.syncDirectory(linkDir.isEmpty ? "." : linkDir)
        return previous
    }

    /// Runs `body` holding an exclusive lock on the policy folder, so that two activations (the
    /// refit timer and an operator's rollback) never interleave their link moves and reloads.
    public func exclusively<T>(_ body: () throws -> T) throws -> T {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let fd = open(directory + "/.activation.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw Self.posixError("cannot open \(directory)/.activation.lock") }
        defer { close(fd) }
        guard flock(fd, LOCK_EX) == 0 else { throw Self.posixError("cannot lock \(directory)/.activation.lock") }
        defer { flock(fd, LOCK_UN) }
        return try body()
    }

    static func writeAtomically(_ bytes: [UInt8], to target: String) throws {
        let temporary = target + ".tmp-\(getpid())"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw posixError("cannot create \(temporary)") }
        var ok = true
        var offset = 0
        while ok && offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            if n > 0 { offset += n } else { ok = false }
        }
        let failure = ok ? nil : posixError("cannot write \(temporary)")
        let synced = ok && fsync(fd) == 0
        let syncFailure = ok && !synced ? posixError("cannot fsync \(temporary)") : nil
        close(fd)
        if let e = failure ?? syncFailure {
            unlink(temporary)
            throw e
        }
        guard rename(temporary, target) == 0 else {
            let e = posixError("cannot rename \(temporary) to \(target)")
            unlink(temporary)
            throw e
        }
        try syncDirectory((target as NSString).deletingLastPathComponent)
    }

    static func syncDirectory(_ path: String) throws {
        let fd = open(path.isEmpty ? "." : path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw posixError("cannot open folder \(path)") }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw posixError("cannot fsync folder \(path)") }
    }

    static func posixError(_ what: String) -> RefitError {
        RefitError("\(what): \(String(cString: strerror(errno)))")
    }
}

/// SHA-256 (FIPS 180-4), for policy file checksums; Foundation on Linux has none.
public enum SHA256 {
    private static let k: [UInt32] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
        0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
        0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
        0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
        0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
        0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
        0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
    ]

    public static func hex(_ message: [UInt8]) -> String {
        var h: [UInt32] = [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19]
        var data = message
        data.append(0x80)
        while data.count % 64 != 56 { data.append(0) }
        let bits = UInt64(message.count) &* 8
        for i in (0..<8).reversed() { data.append(UInt8(truncatingIfNeeded: bits >> (UInt64(i) * 8))) }
        var w = [UInt32](repeating: 0, count: 64)
        for block in stride(from: 0, to: data.count, by: 64) {
            for i in 0..<16 {
                let j = block + 4 * i
                w[i] = UInt32(data[j]) << 24 | UInt32(data[j + 1]) << 16 | UInt32(data[j + 2]) << 8 | UInt32(data[j + 3])
            }
            for i in 16..<64 {
                let s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3)
                let s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10)
                w[i] = w[i - 16] &+ s0 &+ w[i - 7] &+ s1
            }
            var (a, b, c, d, e, f, g, hh) = (h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7])
            for i in 0..<64 {
                let t1 = hh &+ (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) &+ ((e & f) ^ (~e & g)) &+ k[i] &+ w[i]
                let t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) &+ ((a & b) ^ (a & c) ^ (b & c))
                (hh, g, f, e, d, c, b, a) = (g, f, e, d &+ t1, c, b, a, t1 &+ t2)
            }
            h[0] &+= a; h[1] &+= b; h[2] &+= c; h[3] &+= d; h[4] &+= e; h[5] &+= f; h[6] &+= g; h[7] &+= hh
        }
        return h.map { String($0, radix: 16).leftPadded(to: 8) }.joined()
    }

    private static func rotr(_ x: UInt32, _ n: UInt32) -> UInt32 { (x >> n) | (x << (32 - n)) }
}

private extension String {
    func leftPadded(to n: Int) -> String { String(repeating: "0", count: max(0, n - count)) + self }
}
