import Foundation
import SeqRouteCore
import SeqRouteLedger
import SeqRouteServer
import Testing

@Suite(.serialized) struct PeerAccessTests {
    /// Runs `seqroute ctl` as the user `nobody` (uid 65534, group nogroup); needs root.
    func asNobody(_ daemon: DaemonProcess, _ line: String) throws -> String {
        let copy = daemon.directory + "/seqroute-client"
        if !FileManager.default.fileExists(atPath: copy) {
            // Written through a close-on-exec descriptor: a child forked meanwhile by another test
            // must not inherit it, or running the copy fails with "Text file busy".
            let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: DaemonProcess.binary)))
            let fd = open(copy, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o755)
            try #require(fd >= 0)
            var off = 0
            while off < bytes.count {
                let n = bytes[off...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
                try #require(n > 0)
                off += n
            }
            close(fd)
        }
        let out = daemon.directory + "/nobody-\(UInt32.random(in: 0..<UInt32.max)).out"
        let pid = try spawn("/usr/sbin/runuser", ["-u", "nobody", "--", copy, "ctl", "--socket", daemon.socketPath]
                                + line.split(separator: " ").map(String.init), environment: [:], output: out)
        _ = Subprocess.wait(pid)
        return (try String(contentsOfFile: out, encoding: .utf8)).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    func daemon(_ server: String) throws -> DaemonProcess {
        let d = try DaemonProcess(dsn: try TestCluster.freshDatabase(), config: testConfig.replacingOccurrences(
            of: "socket_mode = \"0660\"", with: server))
        try d.start()
        return d
    }

    /// Each decision records the uid of the process that asked (SO_PEERCRED); the socket gets
    /// the configured group.
    @Test func decisionsRecordThePeersUidAndTheSocketItsGroup() throws {
        try #require(getuid() == 0, "switching to another user needs root (CI runs as root)")
        let d = try daemon("socket_mode = \"0666\"\nsocket_group = \"nogroup\"")
        var st = stat()
        #expect(stat(d.socketPath, &st) == 0 && st.st_gid == 65534 && st.st_mode & 0o777 == 0o666)
        let c = try d.client()
        _ = try c.request("OPEN mine budget=100000")
        _ = try c.request("ROUTE mine tokens=10")
        #expect(try asNobody(d, "OPEN theirs budget=100000").hasPrefix("OK"))
        #expect(try asNobody(d, "ROUTE theirs tokens=10").hasPrefix("OK turn=1"))
        let db = try PGConnection(dsn: d.dsn)
        let rows = try db.query("SELECT session_id, peer_uid FROM decisions ORDER BY session_id").map { "\($0[0]!):\($0[1]!)" }
        #expect(rows == ["mine:\(getuid())", "theirs:65534"])
        #expect(d.terminate() == 0)
    }

    /// With an allow-list, others are answered `ERR forbidden` and nothing reaches the ledger;
    /// a listed group lets its members in; the daemon's own uid is always let in.
    @Test func allowListRefusesOthersWithForbidden() throws {
        try #require(getuid() == 0, "switching to another user needs root (CI runs as root)")
        let strict = try daemon("socket_mode = \"0666\"\nallowed_uids = [4242]")
        let refused = try asNobody(strict, "OPEN x budget=100000")
        #expect(refused.hasPrefix("ERR forbidden uid 65534 "), "\(refused)")
        #expect(try strict.client().request("PING") == "OK pong")
        #expect(try PGConnection(dsn: strict.dsn).query("SELECT count(*) FROM sessions")[0][0] == "0")
        #expect(strict.terminate() == 0)

        let byGroup = try daemon("socket_mode = \"0666\"\nallowed_groups = [\"nogroup\"]")
        #expect(try asNobody(byGroup, "PING") == "OK pong")
        #expect(byGroup.terminate() == 0)
    }

    @Test func unknownGroupIsRefusedNamingTheKey() throws {
        var config = testConfig.replacingOccurrences(of: "socket_mode = \"0660\"", with: "allowed_groups = [\"no-such-group-x\"]")
        #expect(throws: (any Error).self) { try SeqRouteCore.Configuration.parse(config) }
        config = testConfig.replacingOccurrences(of: "socket_mode = \"0660\"", with: "allowed_uids = [\"root\"]")
        do {
            _ = try SeqRouteCore.Configuration.parse(config)
            Issue.record("accepted a uid that is not a number")
        } catch {
            #expect("\(error)".hasPrefix("server.allowed_uids: "))
        }
    }
}
