// Real parts for the integration tests: a real PostgreSQL cluster (started here, as the
// `postgres` user when the tests run as root), the real `seqroute` binary, real sockets.
// A test that needs PostgreSQL fails when it cannot get one; nothing is skipped.

import Foundation
import SeqRouteCore
import SeqRouteLedger
import SeqRouteServer
import Testing

let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().path

/// One PostgreSQL cluster for the whole test process; each test gets a database of its own.
enum TestCluster {
    static let shared: Result<EmbeddedPostgres, Error> = {
        Result {
            let dir = try makeTempDirectory("pg")
            let pg = try EmbeddedPostgres(directory: dir, database: "postgres")
            try pg.start()
            atexit { if case .success(let pg) = TestCluster.shared { pg.forceStop() } }
            return pg
        }
    }()

    /// A fresh, migrated database; returns its DSN.
    static func freshDatabase() throws -> String {
        let dsn = try emptyDatabase()
        try Migrations.apply(Migrations.load(from: packageRoot + "/sql"), on: try PGConnection(dsn: dsn))
        return dsn
    }

    /// A fresh database with nothing in it; returns its DSN.
    static func emptyDatabase() throws -> String {
        let pg = try shared.get()
        let name = "t_" + String(UInt64.random(in: 0..<UInt64.max), radix: 36)
        try PGConnection(dsn: pg.adminDSN).execute(script: "CREATE DATABASE \(name)")
        return pg.adminDSN.replacingOccurrences(of: "dbname=postgres", with: "dbname=\(name)")
    }

    /// A fresh database owned and migrated by a role of its own that is no superuser, as with an
    /// external PostgreSQL (docs/OPERATIONS.md); returns that role's DSN.
    static func freshDatabaseOfOwnRole() throws -> String {
        let pg = try shared.get()
        let name = "o_" + String(UInt64.random(in: 0..<UInt64.max), radix: 36)
        let admin = try PGConnection(dsn: pg.adminDSN)
        try admin.execute(script: "CREATE ROLE \(name) LOGIN")
        try admin.execute(script: "CREATE DATABASE \(name) OWNER \(name)")
        try admin.execute(script: """
            DO $$ BEGIN CREATE ROLE seqroute_auditor NOLOGIN; EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$
            """)
        let dsn = pg.adminDSN.replacingOccurrences(of: "dbname=postgres", with: "dbname=\(name)")
            .replacingOccurrences(of: "user=seqroute", with: "user=\(name)")
        try Migrations.apply(Migrations.load(from: packageRoot + "/sql"), on: try PGConnection(dsn: dsn))
        return dsn
    }
}

/// Every folder a test makes lives under one root per test process, removed when the process
/// exits. Handlers registered with atexit run last-registered first, and the root is made before
/// the shared cluster registers its stop, so the cluster stops before its folder goes.
let testRoot: String = {
    // Short paths: a Unix socket path must fit in 107 bytes.
    let path = "/tmp/sr-" + String(UInt32.random(in: 0..<UInt32.max), radix: 36)
    try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    chmod(path, 0o755)
    atexit { try? FileManager.default.removeItem(atPath: testRoot) }
    return path
}()

func makeTempDirectory(_ tag: String) throws -> String {
    let path = testRoot + "/\(tag)-" + String(UInt32.random(in: 0..<UInt32.max), radix: 36)
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    chmod(path, 0o755)
    return path
}

let testConfig = """
[server]
socket_mode = "0660"
max_line_bytes = 4096

[ledger]
hold_expiry_seconds = 600
default_account = "default"
default_account_cap = 1000000000

[routing]
default_horizon = 4
exploration = 0.1
default_prompt_tokens = 200

[[models]]
name = "big"
input_price = 10000000
output_price = 30000000
max_output_tokens = 100
quality = 0.9

[[models]]
name = "mid"
input_price = 1000000
output_price = 2000000
max_output_tokens = 100
quality = 0.7

[[models]]
name = "small"
input_price = 200000
output_price = 200000
max_output_tokens = 100
quality = 0.5
"""

/// `testConfig` with a limit on open connections.
/// A Unix socket of `type` (SOCK_STREAM or SOCK_DGRAM) bound to `path`; the caller closes it.
func boundUnixSocket(_ type: Int32, at path: String) throws -> Int32 {
    let fd = socket(AF_UNIX, type, 0)
    var addr = sockaddr_un()
    addr.sun_family = sa_family_t(AF_UNIX)
    let bytes = Array(path.utf8)
    guard fd >= 0, bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else {
        if fd >= 0 { close(fd) }
        throw ServerError("cannot make a Unix socket at \(path)")
    }
    withUnsafeMutableBytes(of: &addr.sun_path) { raw in
        raw.copyBytes(from: bytes)
        raw[bytes.count] = 0
    }
    let bound = withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
    }
    guard bound == 0 else {
        close(fd)
        throw ServerError("cannot bind \(path): errno \(errno)")
    }
    return fd
}

func testConfig(maxConnections: Int) -> String {
    testConfig.replacingOccurrences(of: "max_line_bytes = 4096", with: "max_line_bytes = 4096\nmax_connections = \(maxConnections)")
}

/// The real daemon binary, run as a child process.
final class DaemonProcess: @unchecked Sendable {
    let directory: String
    let socketPath: String
    let dsn: String
    let configPath: String
    private(set) var pid: pid_t = 0

    init(dsn: String, config: String = testConfig) throws {
        directory = try makeTempDirectory("d")
        socketPath = directory + "/s.sock"
        configPath = directory + "/seqroute.toml"
        self.dsn = dsn
        try config.write(toFile: configPath, atomically: true, encoding: .utf8)
    }

    static var binary: String { packageRoot + "/.build/debug/seqroute" }

    /// Starts the daemon (through `launcher`, a command that ends by running the binary, when
    /// given) and waits until its socket answers PING.
    func start(environment extra: [String: String] = [:], launcher: [String] = []) throws {
        guard FileManager.default.isExecutableFile(atPath: DaemonProcess.binary) else {
            throw ServerError("\(DaemonProcess.binary) is missing: run `swift build` before the tests")
        }
        let command = launcher + [DaemonProcess.binary, "serve", "--config", configPath, "--dsn", dsn,
                                  "--socket", socketPath, "--data-dir", directory, "--sql-dir", packageRoot + "/sql"]
        pid = try spawn(command[0], Array(command.dropFirst()), environment: extra, output: directory + "/daemon.log")
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            if let c = try? LineClient(path: socketPath), (try? c.request("PING")) == "OK pong" { return }
            if !isRunning { throw ServerError("daemon exited early: \(log)") }
            usleep(50_000)
        }
        throw ServerError("daemon did not come up: \(log)")
    }

    var log: String { (try? String(contentsOfFile: directory + "/daemon.log", encoding: .utf8)) ?? "" }

    var isRunning: Bool {
        guard pid > 0 else { return false }
        var status: Int32 = 0
        return waitpid(pid, &status, WNOHANG) == 0
    }

    func kill9() {
        guard pid > 0 else { return }
        kill(pid, SIGKILL)
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        pid = 0
    }

    /// Sends SIGTERM and returns the exit status.
    @discardableResult
    func terminate() -> Int32 {
        guard pid > 0 else { return -1 }
        kill(pid, SIGTERM)
        defer { pid = 0 }
        return Subprocess.wait(pid)
    }

    func client() throws -> LineClient { try LineClient(path: socketPath) }

    /// The configuration the daemon runs with, flags included.
    func configuration() throws -> Configuration {
        try DaemonOptions(configPath: configPath, dsn: dsn, socketPath: socketPath, dataDirectory: directory,
                          sqlDirectory: nil).loadConfiguration()
    }

    deinit { kill9() }
}

/// The test process's environment without NOTIFY_SOCKET, plus `extra`.
func spawn(_ path: String, _ args: [String], environment extra: [String: String], output: String) throws -> pid_t {
    var env = ProcessInfo.processInfo.environment
    env.removeValue(forKey: "NOTIFY_SOCKET")
    for (k, v) in extra { env[k] = v }
    return try Subprocess.spawn(path, args, environment: env, outputFile: output)
}

/// Runs the binary to completion; returns (status, output).
func runSeqroute(_ args: [String]) throws -> (Int32, String) {
    let dir = try makeTempDirectory("cli")
    let out = dir + "/out"
    let status = Subprocess.wait(try spawn(DaemonProcess.binary, args, environment: [:], output: out))
    return (status, (try? String(contentsOfFile: out, encoding: .utf8)) ?? "")
}

/// Counts of every ledger table, to show that a refused request changed nothing.
func ledgerFingerprint(_ db: PGConnection) throws -> [String] {
    try db.query("""
        SELECT (SELECT count(*) FROM sessions) || '/' || (SELECT count(*) FROM decisions) || '/' ||
               (SELECT count(*) FROM ledger_entries) || '/' || (SELECT coalesce(sum(spent + held), 0) FROM accounts) || '/' ||
               (SELECT coalesce(sum(turns), 0) FROM sessions) || '/' ||
               (SELECT count(*) FROM decisions WHERE quality IS NOT NULL)
        """).map { $0[0] ?? "" }
}

func reconciliationRows(_ db: PGConnection) throws -> [[String?]] {
    try db.query("SELECT * FROM reconciliation").map(\.values)
}

/// Reads one account's spent + held over and over on a connection of its own, while a test
/// runs load: the largest value seen must stay within the cap.
final class AccountSampler: @unchecked Sendable {
    private let lock = NSLock()
    private var done = false
    private(set) var samples = 0
    private(set) var largest: Int64 = 0
    private let finished = DispatchSemaphore(value: 0)

    init(dsn: String, account: String) {
        Thread {
            defer { self.finished.signal() }
            guard let db = try? PGConnection(dsn: dsn) else { return }
            while !self.lock.withLock({ self.done }) {
                if let v = (try? db.query("SELECT spent + held FROM accounts WHERE id = $1", [account]))?.first?.int64(0) {
                    self.lock.withLock {
                        self.largest = max(self.largest, v)
                        self.samples += 1
                    }
                }
                usleep(2_000)
            }
        }.start()
    }

    /// Stops sampling; returns how many samples were taken and the largest value seen.
    func stop() -> (samples: Int, largest: Int64) {
        lock.withLock { done = true }
        finished.wait()
        return lock.withLock { (samples, largest) }
    }
}
