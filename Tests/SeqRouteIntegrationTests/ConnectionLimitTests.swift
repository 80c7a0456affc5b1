import Foundation
import SeqRouteCore
import SeqRouteLedger
import SeqRouteServer
import Testing

@Suite(.serialized) struct ConnectionLimitTests {
    /// Past `max_connections` a connection gets `ERR busy` and is closed; the others are
    /// served, and a place that frees up is taken again.
    @Test func connectionsOverTheLimitAreRefusedAndOthersServed() throws {
        let dsn = try TestCluster.freshDatabase()
        let daemon = try DaemonProcess(dsn: dsn, config: testConfig(maxConnections: 6))
        try daemon.start()
        usleep(300_000)  // the start-up probe's connection closes on the daemon's side
        var open = try (0..<6).map { _ in try daemon.client() }
        for c in open { #expect(try c.request("PING") == "OK pong") }
        let extra = try daemon.client()
        let refused = try extra.readLine()
        #expect(refused?.hasPrefix("ERR busy ") == true, "\(String(describing: refused))")
        #expect(try extra.readLine() == nil)
        #expect(try open[0].request("PING") == "OK pong")

        open.removeLast(2)  // closes two
        var admitted = false
        for _ in 0..<100 where !admitted {
            if let c = try? daemon.client(), (try? c.request("PING")) == "OK pong" { admitted = true } else { usleep(20_000) }
        }
        #expect(admitted)
        #expect(daemon.terminate() == 0)
    }

    /// A client that pipelines without reading its answers is not served past what its socket
    /// holds: the daemon's memory stays put, other clients are answered at once, and every
    /// answer arrives, in order, once the client reads.
    @Test func aClientThatDoesNotReadHoldsOnlyBoundedMemory() throws {
        let dsn = try TestCluster.freshDatabase()
        let daemon = try DaemonProcess(dsn: dsn)
        try daemon.start()
        let greedy = try daemon.client()
        let lines = 60_000
        // Writing (this thread) and reading (the test) touch different parts of the client.
        final class Writer: @unchecked Sendable {
            let client: LineClient
            init(_ client: LineClient) { self.client = client }
        }
        let writer = Writer(greedy)
        let sender = Thread {
            try? writer.client.send(raw: Array(String(repeating: "PING\n", count: lines).utf8))
        }
        sender.start()
        // The daemon stops taking requests from it once its answers fill the socket: the
        // request count stalls far below what was sent.
        let watcher = try daemon.client()
        func served() throws -> Int { Int(LineClient.fields(try watcher.request("STATS"))["requests"] ?? "") ?? -1 }
        var last = -10, now = try served()
        while now - last > 1 {  // each STATS counts itself
            usleep(500_000)
            (last, now) = (now, try served())
        }
        #expect(now < lines / 2, "\(now) requests answered to a client that reads none")
        let rss = try String(contentsOfFile: "/proc/\(daemon.pid)/status", encoding: .utf8)
            .split(separator: "\n").first { $0.hasPrefix("VmRSS:") }
            .flatMap { Int($0.split(separator: " ", omittingEmptySubsequences: true)[1]) } ?? Int.max
        #expect(rss < 200_000, "daemon RSS \(rss) kB")
        let other = try daemon.client()
        let t0 = Date()
        #expect(try other.request("PING") == "OK pong")
        #expect(Date().timeIntervalSince(t0) < 1)
        var answered = 0
        while answered < lines, let answer = try greedy.readLine() {
            guard answer == "OK pong" else { break }
            answered += 1
        }
        #expect(answered == lines)
        #expect(daemon.terminate() == 0)
    }

    /// Thousands of random lines pipelined at once: random bytes (NUL and non-UTF-8 included)
    /// and verbs with random arguments. Every line gets exactly one answer, each an ERR with a
    /// code or a well-formed OK; the daemon lives on and the ledger does not change.
    @Test func pipelinedGarbageGetsOneWellFormedAnswerPerLine() throws {
        let dsn = try TestCluster.freshDatabase()
        let daemon = try DaemonProcess(dsn: dsn)
        try daemon.start()
        let db = try PGConnection(dsn: dsn)
        let c = try daemon.client()
        _ = try c.request("OPEN g budget=100000")
        let before = try ledgerFingerprint(db)
        var random = SplitMix64(seed: 77)
        let verbs = ["PING", "OPEN", "ROUTE", "REPORT", "FEEDBACK", "CLOSE", "STATUS", "STATS", "route", "OPEN g", "REPORT g 1"]
        var input: [UInt8] = []
        let count = 3_000
        for i in 0..<count {
            var line: [UInt8] = i % 2 == 0 ? Array(verbs[Int(random.next() % UInt64(verbs.count))].utf8) + [0x20] : []
            for _ in 0..<Int(random.next() % 120) {
                // Any byte but the newline, and no '=' so that no argument is ever valid.
                var b = UInt8(truncatingIfNeeded: random.next())
                if b == 0x0A || b == 0x3D { b = 0x25 }
                line.append(b)
            }
            input += line + [0x0A]
        }
        try c.send(raw: input)
        var answers = 0
        while answers < count, let answer = try c.readLine() {
            answers += 1
            let words = answer.split(separator: " ", omittingEmptySubsequences: false)
            let wellFormed = answer == "OK" || answer.hasPrefix("OK ")
                || (words.count >= 3 && words[0] == "ERR" && words[1].allSatisfy { $0.isLowercase || $0 == "_" })
            #expect(wellFormed && answer.unicodeScalars.allSatisfy { $0.value >= 0x20 && $0.value < 0x7F }, "\(answer)")
        }
        #expect(answers == count)
        #expect(try c.request("PING") == "OK pong")
        #expect(try ledgerFingerprint(db) == before)
        #expect(daemon.terminate() == 0)
    }

    /// Two thousand idle connections and a hundred clients that leave in the middle of a line:
    /// the daemon keeps serving others at once, with bounded memory, and the half lines never
    /// reach the ledger.
    @Test func idleAndVanishingClientsDoNotStarveOthers() throws {
        let dsn = try TestCluster.freshDatabase()
        let daemon = try DaemonProcess(dsn: dsn)
        try daemon.start()
        let db = try PGConnection(dsn: dsn)
        let before = try ledgerFingerprint(db)
        // This process holds the client ends: lift its soft descriptor limit (often 1,024).
        var limit = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        limit.rlim_cur = limit.rlim_max
        setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        var idle: [LineClient] = []
        for _ in 0..<2_000 { idle.append(try daemon.client()) }
        for i in 0..<100 {
            let c = try daemon.client()
            try c.send(raw: Array("OPEN half\(i) budget=100".utf8))  // no newline, then gone
        }
        let other = try daemon.client()
        let t0 = Date()
        #expect(try other.request("PING") == "OK pong")
        #expect(Date().timeIntervalSince(t0) < 1)
        #expect(try idle[1_500].request("PING") == "OK pong")
        let rss = try String(contentsOfFile: "/proc/\(daemon.pid)/status", encoding: .utf8)
            .split(separator: "\n").first { $0.hasPrefix("VmRSS:") }
            .flatMap { Int($0.split(separator: " ", omittingEmptySubsequences: true)[1]) } ?? Int.max
        #expect(rss < 300_000, "daemon RSS \(rss) kB with 2,000 idle connections")
        idle.removeAll()
        usleep(200_000)
        #expect(try ledgerFingerprint(db) == before)
        #expect(daemon.terminate() == 0)
    }
}
