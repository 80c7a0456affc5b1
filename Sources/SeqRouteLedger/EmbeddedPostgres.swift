// The embedded default: a private PostgreSQL cluster in a project-local folder, reached over a
// Unix socket in that folder only (no TCP). initdb and pg_ctl come from Debian's `postgresql`
// package. PostgreSQL refuses to run as root, so when invoked as root the cluster runs as the
// user who owns it already (the cluster folder, else the data folder: under systemd that is
// the service's user), and a new one belongs to the `postgres` system user (created by that
// package).

import Foundation

public final class EmbeddedPostgres: @unchecked Sendable {
    public let directory: String
    public let database: String
    private let binDirectory: String
    private let runAs: String?
    private var startedHere = false

    public init(directory: String, database: String = "seqroute") throws {
        self.directory = URL(fileURLWithPath: directory).standardizedFileURL.path
        self.database = database
        binDirectory = try EmbeddedPostgres.findBinaries()
        runAs = geteuid() == 0 ? EmbeddedPostgres.owner(of: self.directory) : nil
    }

    /// The non-root owner of the cluster folder or of the data folder, else `postgres`.
    static func owner(of directory: String) -> String {
        for path in [directory + "/pgdata", directory] {
            var st = stat()
            if stat(path, &st) == 0, st.st_uid != 0, let pw = getpwuid(st.st_uid) { return String(cString: pw.pointee.pw_name) }
        }
        return "postgres"
    }

    var dataDirectory: String { directory + "/pgdata" }
    /// The socket lives in its own short folder: Unix socket paths are limited to 107 bytes.
    var socketDirectory: String { directory + "/run" }
    var logFile: String { directory + "/postgres.log" }

    public var dsn: String { "host=\(socketDirectory) dbname=\(database) user=seqroute connect_timeout=5" }
    public var adminDSN: String { "host=\(socketDirectory) dbname=postgres user=seqroute connect_timeout=5" }

    /// Initialises the cluster if needed, starts it unless it runs already, creates the database.
    public func start(log: (String) -> Void = { _ in }) throws {
        let fm = FileManager.default
        try fm.createDirectory(atPath: socketDirectory, withIntermediateDirectories: true)
        try fm.createDirectory(atPath: dataDirectory, withIntermediateDirectories: true)
        // Only the cluster's own folders and its log change hands; the rest of the data folder
        // (policies) stays as it is.
        if !fm.fileExists(atPath: logFile) && !fm.createFile(atPath: logFile, contents: nil) {
            throw PGError(sqlState: nil, message: "cannot create the cluster's log file \(logFile)", connectionLost: true)
        }
        if let runAs { try run("/bin/chown", ["-R", runAs, dataDirectory, socketDirectory, logFile]) }
        // Trust authentication is safe only because nobody else can reach the socket.
        chmod(dataDirectory, 0o700)
        chmod(socketDirectory, 0o700)
        if !fm.fileExists(atPath: dataDirectory + "/PG_VERSION") {
            log("<6>initialising a private PostgreSQL cluster in \(dataDirectory)")
            // Byte-order collation: every statement of a batch compares text keys (session and
            // account ids), and a libc locale's strcoll costs several times a memcmp.
            try run(binDirectory + "/initdb", ["-D", dataDirectory, "-U", "seqroute", "-A", "trust",
                                                "-E", "UTF8", "--lc-collate=C", "--no-sync"], asOwner: true)
        }
        if (try? run(binDirectory + "/pg_ctl", ["-D", dataDirectory, "status"], asOwner: true)) == nil {
            let options = "-c listen_addresses='' -k \(socketDirectory) -c unix_socket_permissions=0700 -c jit=off -c max_connections=200"
            try run(binDirectory + "/pg_ctl", ["-D", dataDirectory, "-l", logFile, "-w",
                                               "-t", "60", "-o", options, "start"], asOwner: true)
            startedHere = true
            log("<6>private PostgreSQL cluster started (socket in \(socketDirectory))")
        }
        let admin = try PGConnection(dsn: adminDSN)
        if try admin.query("SELECT 1 FROM pg_database WHERE datname = $1", [database]).isEmpty {
            // CREATE DATABASE takes no parameters; the name is ours, not the user's.
            try admin.execute(script: "CREATE DATABASE \"\(database.replacingOccurrences(of: "\"", with: ""))\"")
        }
    }

    /// Stops the cluster if this process started it.
    public func stop() {
        guard startedHere else { return }
        _ = try? run(binDirectory + "/pg_ctl", ["-D", dataDirectory, "-m", "fast", "-w", "stop"], asOwner: true)
        startedHere = false
    }

    /// Stops the cluster whoever started it (tests, and `--stop`).
    public func forceStop() {
        _ = try? run(binDirectory + "/pg_ctl", ["-D", dataDirectory, "-m", "fast", "-w", "stop"], asOwner: true)
        startedHere = false
    }

    static func findBinaries() throws -> String {
        var candidates: [String] = []
        if let env = ProcessInfo.processInfo.environment["SEQROUTE_PG_BIN"] { candidates.append(env) }
        if let versions = try? FileManager.default.contentsOfDirectory(atPath: "/usr/lib/postgresql") {
            for v in versions.sorted(by: { (Int($0) ?? 0) > (Int($1) ?? 0) }) {
                candidates.append("/usr/lib/postgresql/\(v)/bin")
            }
        }
        for c in candidates where FileManager.default.isExecutableFile(atPath: c + "/pg_ctl") { return c }
        throw PGError(sqlState: nil,
                      message: "no PostgreSQL server binaries found (install Debian's postgresql package, or set SEQROUTE_PG_BIN)",
                      connectionLost: true)
    }

    @discardableResult
    private func run(_ tool: String, _ args: [String], asOwner: Bool = false) throws -> String {
        var path = tool, argv = args
        if asOwner, let runAs {
            path = "/usr/sbin/runuser"
            argv = ["-u", runAs, "--", tool] + args
        }
        let outPath = directory + "/command.log"
        let status = try Subprocess.run(path, argv, outputFile: outPath)
        let text = (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? ""
        guard status == 0 else {
            throw PGError(sqlState: nil, message: "\((tool as NSString).lastPathComponent) failed: \(text)", connectionLost: true)
        }
        return text
    }
}
