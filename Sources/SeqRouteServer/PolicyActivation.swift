// Activating a policy version: the one path that `seqroute refit` (on promotion) and
// `seqroute policy activate` (a rollback, or a manual choice) both take. The file is checked
// against the checksum registered for it, the active link is moved to it, the daemon is asked
// to RELOAD, and only when the daemon has it (or is not running) is the ledger's registry
// changed. A daemon that refuses the policy gets the old link back.

import Foundation
import SeqRouteLearning
import SeqRouteLedger

public enum PolicyActivation {
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    /// Returns a line for the operator saying what happened.
    public static func activate(_ version: String, db: PGConnection, store: PolicyStore,
                                socketPath: String) throws -> String {
        guard let entry = try db.policy(version) else { throw Failure(description: "no policy \(version) in the registry") }
        guard let path = entry.filePath else { throw Failure(description: "policy \(version) has no file") }
        let sum = try store.checksum(of: path)
        guard sum == entry.sha256 else {
            throw Failure(description: "policy file \(path) does not match the checksum registered for \(version)")
        }
        return try store.exclusively {
            let previous = try store.activate(path: path)
            let answer: String
            do {
                answer = try LineClient(path: socketPath).request("RELOAD")
            } catch {
                // No daemon there (no socket, or nobody listening): it loads the link when it starts.
                // Anything else (a socket it may not use, say) is a failure, and the link goes back.
                let message = "\(error)"
                guard message.contains("No such file or directory") || message.contains("Connection refused") else {
                    try store.restore(previous)
                    throw Failure(description: "cannot ask the daemon at \(socketPath) to reload (\(message)); the previous policy stays")
                }
                try db.markActive(version)
                return "activated \(version); no daemon is listening at \(socketPath), it loads the policy when it starts"
            }
            guard answer == "OK policy=\(version)" else {
                try store.restore(previous)
                throw Failure(description: "the daemon refused \(version), the previous policy stays: \(answer)")
            }
            try db.markActive(version)
            return "activated \(version); daemon reloaded: \(answer)"
        }
    }
}
