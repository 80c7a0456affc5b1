// Runs programs with posix_spawn and waitpid. Foundation's Process can hang in waitUntilExit
// on Linux when the child leaves a daemon behind (as pg_ctl start does).

import Foundation

public enum Subprocess {
    /// Starts `path` with `args`, stdin from /dev/null, stdout and stderr appended to
    /// `outputFile`; `environment` replaces the inherited one when given. Returns the pid.
    public static func spawn(_ path: String, _ args: [String], environment: [String: String]? = nil,
                             outputFile: String, truncate: Bool = false) throws -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, outputFile, O_WRONLY | O_CREAT | (truncate ? O_TRUNC : O_APPEND), 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        let argv: [UnsafeMutablePointer<CChar>?] = ([path] + args).map { strdup($0) } + [nil]
        let envp: [UnsafeMutablePointer<CChar>?]? = environment.map { $0.map { strdup("\($0.key)=\($0.value)") } + [nil] }
        defer {
            for p in argv { free(p) }
            for p in envp ?? [] { free(p) }
        }
        var pid: pid_t = 0
        let rc = envp.map { posix_spawn(&pid, path, &actions, nil, argv, $0) } ?? posix_spawn(&pid, path, &actions, nil, argv, environ)
        guard rc == 0 else {
            throw PGError(sqlState: nil, message: "cannot run \(path): \(String(cString: strerror(rc)))", connectionLost: true)
        }
        return pid
    }

    /// Waits for `pid`; returns its exit status (128 + signal when a signal ended it).
    public static func wait(_ pid: pid_t) -> Int32 {
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 {
            guard errno == EINTR else { return -1 }
        }
        // WIFEXITED / WEXITSTATUS, spelled out: Swift does not import the macros.
        return (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
    }

    /// Runs `path` to completion, output to `outputFile`; returns the exit status.
    public static func run(_ path: String, _ args: [String], outputFile: String) throws -> Int32 {
        wait(try spawn(path, args, outputFile: outputFile, truncate: true))
    }
}
