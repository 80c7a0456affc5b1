import Foundation
import SeqRouteCore
import SeqRouteLedger
@testable import SeqRouteServer
import Testing

@Suite(.serialized) struct LoadGeneratorTests {
    /// The script walks OPEN, ROUTE/REPORT per turn, CLOSE per session; a refused OPEN skips
    /// its session, a bankrupt or refused ROUTE skips its REPORT.
    @Test func theScriptFollowsTheAnswers() {
        var s = LoadScript(prefix: "c", sessions: 2, turns: 2, budget: 500, account: "acme", seed: 1)
        #expect(s.request == "OPEN c-0 budget=500 horizon=2 account=acme")
        #expect(s.answered("ERR exists session c-0 is already open") == .failure("ERR exists session c-0 is already open"))
        #expect(s.request == "OPEN c-1 budget=500 horizon=2 account=acme")
        #expect(s.answered("OK session=c-1") == .none)
        #expect(s.request?.hasPrefix("ROUTE c-1 tokens=") == true)
        #expect(s.answered("OK model=small turn=1 hold=100 remaining=400") == .none)
        let report = s.request ?? ""
        #expect(report.hasPrefix("REPORT c-1 1 cost=") && report.contains(" quality="), "\(report)")
        let cost = Int(report.split(separator: " ")[3].dropFirst(5)) ?? -1
        #expect((30...99).contains(cost), "a cost of 30–99% of the hold: \(cost)")
        #expect(s.answered("OK spent=50 remaining=450") == .decision)
        #expect(s.request?.hasPrefix("ROUTE c-1 ") == true)
        #expect(s.answered("OK turn=2 bankrupt=1") == .bankrupt)
        #expect(s.request == "CLOSE c-1")
        #expect(s.answered("OK closed") == .none)
        #expect(s.request == nil)
        #expect(s.phase == .done)
    }

    /// A client that cannot connect closes its socket once. A throwing initializer runs deinit,
    /// so a close in both closed the descriptor number twice, and the second close could take a
    /// descriptor another thread had opened meanwhile (a test's PostgreSQL connection failed
    /// with "Bad file descriptor" that way while a daemon was starting).
    @Test func aFailedConnectClosesItsSocketOnce() throws {
        let missing = try makeTempDirectory("nobody") + "/no.sock"
        let done = DispatchSemaphore(value: 0)
        Thread {
            for _ in 0..<20_000 { _ = try? LineClient(path: missing) }
            done.signal()
        }.start()
        var lost = 0
        while done.wait(timeout: .now()) == .timedOut {
            let fd = open("/dev/null", O_RDONLY | O_CLOEXEC)
            try #require(fd >= 0)
            if fcntl(fd, F_GETFD) == -1 { lost += 1 }
            if close(fd) != 0 { lost += 1 }
        }
        #expect(lost == 0, "\(lost) descriptors of this thread were closed by another")
    }

    /// One word of an answer, found without splitting it: whole keys only, values as sent.
    @Test func aFieldIsFoundByItsWholeKey() {
        let answer = "OK turn=3 model=vendor%2Fm hold=1250 remaining=40 policy=p"
        #expect(LineClient.field("turn", in: answer) == "3")
        #expect(LineClient.field("model", in: answer) == "vendor%2Fm")
        #expect(LineClient.field("del", in: "OK model=x") == nil)
        #expect(LineClient.field("hold", in: answer) == "1250")
        #expect(LineClient.field("policy", in: answer) == "p")
        #expect(LineClient.field("mode", in: answer) == nil)
        #expect(LineClient.field("n", in: "OK turn=3") == nil)
        #expect(LineClient.field("turn", in: "OK return=3 turn=") == "")
        #expect(LineClient.field("OK", in: answer) == nil)
    }

    /// Against a real daemon: every turn of every session is a decision, each session is
    /// closed, and the ledger holds exactly what the load generator reports.
    @Test func runsWholeSessionsAgainstADaemon() throws {
        let dsn = try TestCluster.freshDatabase()
        let daemon = try DaemonProcess(dsn: dsn)
        try daemon.start()
        let report = try load(daemon, sessions: 10, turns: 3)
        #expect(report.errors == 0, "\(report.firstErrors)")
        #expect(report.decisions == 30)
        #expect(report.p50 > 0 && report.p50 <= report.p99)
        let db = try PGConnection(dsn: dsn)
        #expect(try db.query("SELECT count(*) FROM sessions WHERE state = 'closed'")[0].int(0) == 10)
        #expect(try db.query("SELECT count(*) FROM decisions WHERE status = 'reported'")[0].int(0) == 30)
        #expect(try reconciliationRows(db).isEmpty)
        #expect(daemon.terminate() == 0)
    }

    /// With prompt text, every ROUTE carries it as text= instead of tokens=, and the daemon
    /// logs the features the featurizer made of it.
    @Test func promptTextReachesTheFeaturizer() throws {
        let s = LoadScript(prefix: "t", sessions: 1, turns: 1, budget: 500, account: nil, seed: 3, textBytes: 200)
        let text = try #require(s.text)
        #expect(try LineProtocol.percentDecoded(text, "text").utf8.count >= 200)
        let dsn = try TestCluster.freshDatabase()
        let daemon = try DaemonProcess(dsn: dsn)
        try daemon.start()
        let report = try LoadGenerator.run(LoadOptions(socketPaths: [daemon.socketPath], connections: 2, sessions: 4, turns: 2,
                                                       budget: 100_000_000, account: nil, rate: 0, seed: 7, textBytes: 300))
        #expect(report.errors == 0, "\(report.firstErrors)")
        #expect(report.decisions == 8)
        let db = try PGConnection(dsn: dsn)
        let logged = try db.query("""
            SELECT count(*) FILTER (WHERE features <> decode(repeat('00', length(features)), 'hex')), count(*),
                   min(prompt_tokens) FROM decisions
            """)[0]
        #expect(logged.int(0) == 8 && logged.int(1) == 8, "every ROUTE's features are non-zero: \(logged.values)")
        #expect((logged.int(2) ?? 0) >= 75, "tokens estimated from about 300 bytes: \(logged.values)")
        #expect(daemon.terminate() == 0)
    }

    /// With a rate, each connection waits for its slot: 16 decisions at 100/s take at least
    /// 0.12 s (the first slots are spread over one interval), and all are made.
    @Test func aRateSpacesTheDecisions() throws {
        let daemon = try DaemonProcess(dsn: TestCluster.freshDatabase())
        try daemon.start()
        let report = try load(daemon, sessions: 8, turns: 2, rate: 100)
        #expect(report.errors == 0, "\(report.firstErrors)")
        #expect(report.decisions == 16)
        #expect(report.seconds >= 0.12, "\(report.seconds) s")
        #expect(daemon.terminate() == 0)
    }

    /// A ROUTE waiting for its slot is not waiting for an answer: with slots 1.6 s apart and a
    /// timeout of 1 s, nothing times out.
    @Test func aPacedRouteIsNotAnOverdueAnswer() throws {
        let daemon = try DaemonProcess(dsn: TestCluster.freshDatabase())
        try daemon.start()
        let report = try load(daemon, sessions: 4, turns: 2, rate: 2.5, timeout: 1)
        #expect(report.errors == 0, "\(report.firstErrors)")
        #expect(report.decisions == 8)
        #expect(report.seconds >= 1.6, "\(report.seconds) s")
        #expect(daemon.terminate() == 0)
    }

    /// Connections the daemon refuses are counted as errors; the others run to the end.
    @Test func refusedConnectionsAreErrorsAndTheRestFinish() throws {
        let daemon = try DaemonProcess(dsn: TestCluster.freshDatabase(), config: testConfig(maxConnections: 2))
        try daemon.start()
        usleep(300_000)  // the start-up probe's connection closes on the daemon's side
        let report = try load(daemon, sessions: 8, turns: 2)
        #expect(report.decisions == 8, "two admitted connections with two sessions of two turns each")
        // Each refused connection: its OPEN answered `ERR busy`, then one error for the close.
        #expect(report.errors == 4, "\(report.firstErrors)")
        #expect(report.firstErrors.contains { $0.hasPrefix("ERR busy") }, "\(report.firstErrors)")
        #expect(daemon.terminate() == 0)
    }

    /// A server that takes connections but never answers: each connection counts one error
    /// once its request has waited out the timeout, and the run ends instead of hanging.
    @Test func unansweredRequestsTimeOut() throws {
        let path = try makeTempDirectory("silent") + "/s.sock"
        let fd = try boundUnixSocket(Int32(SOCK_STREAM.rawValue), at: path)
        defer { close(fd) }
        // Listening without ever accepting: the kernel completes the connections and keeps
        // what the clients write, and nothing comes back.
        try #require(listen(fd, 16) == 0)
        // On a thread, so that a load generator that hangs fails the test instead of the suite.
        let finished = DispatchSemaphore(value: 0)
        nonisolated(unsafe) var result: Result<LoadReport, Error>?
        Thread {
            result = Result {
                try LoadGenerator.run(LoadOptions(socketPaths: [path], connections: 4, sessions: 8, turns: 2,
                                                  budget: 100_000, account: nil, rate: 0, seed: 7, answerTimeoutSeconds: 1))
            }
            finished.signal()
        }.start()
        try #require(finished.wait(timeout: .now() + 20) == .success, "the load generator still waits after 20 s")
        let report = try #require(result).get()
        #expect(report.decisions == 0)
        #expect(report.errors == 4, "\(report.firstErrors)")
        #expect(report.firstErrors.allSatisfy { $0 == "no answer within 1 s" }, "\(report.firstErrors)")
        #expect(report.seconds >= 1 && report.seconds < 10, "\(report.seconds) s")
    }

    /// A load generator run of 4 connections against `daemon`.
    private func load(_ daemon: DaemonProcess, sessions: Int, turns: Int, rate: Double = 0,
                      timeout: Int = 30) throws -> LoadReport {
        try LoadGenerator.run(LoadOptions(socketPaths: [daemon.socketPath], connections: 4, sessions: sessions,
                                          turns: turns, budget: 100_000_000, account: nil, rate: rate, seed: 7,
                                          answerTimeoutSeconds: timeout))
    }
}
