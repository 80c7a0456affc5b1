import Foundation
import Testing
@testable import SeqRouteCore

private let minimal = """
[[models]]
name = "m1"
input_price = 1_000_000
output_price = 2000000
max_output_tokens = 100
"""

private func configError(_ text: String) -> String? {
    do {
        _ = try Configuration.parse(text)
        return nil
    } catch let e as ConfigError {
        return e.key
    } catch {
        return "unexpected \(error)"
    }
}

@Suite struct ConfigurationTests {
    @Test func readsTheShippedExample() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let text = try String(contentsOf: root.appendingPathComponent("config/seqroute.toml"), encoding: .utf8)
        let c = try Configuration.parse(text)
        #expect(c.pool.count == 11)
        #expect(c.pool.names == c.pool.names.sorted())
        #expect(c.pool.models[c.pool.index(of: "gpt-4-1106-preview")!].taskQuality["arc-challenge"] == 0.953)
        #expect(c.socketMode == 0o660)
        #expect(c.holdExpirySeconds == 600)
    }

    @Test func appliesDefaults() throws {
        let c = try Configuration.parse(minimal)
        #expect(c.pool.models[0].inputPrice == 1_000_000)
        #expect(c.defaultHorizon == 8)
        #expect(c.exploration == 0.05)
    }

    @Test func namesTheBadKey() {
        #expect(configError("") == "models")
        #expect(configError("[server]\nsocket = 5\n" + minimal) == "server.socket")
        #expect(configError("[server]\nsocket_mode = \"999\"\n" + minimal) == "server.socket_mode")
        #expect(configError("[routing]\nexploration = 1.5\n" + minimal) == "routing.exploration")
        #expect(configError("[routing]\ncolour = 1\n" + minimal) == "routing.colour")
        #expect(configError("[ledger]\ndefault_account_cap = -1\n" + minimal) == "ledger.default_account_cap")
        #expect(configError("[routing]\nfallback_model = \"nope\"\n" + minimal) == "routing.fallback_model")
        #expect(configError(minimal.replacingOccurrences(of: "max_output_tokens = 100", with: "")) == "models[0].max_output_tokens")
        #expect(configError(minimal + "\n" + minimal) == "models[1].name")
        #expect(configError("[bogus]\n" + minimal) == "bogus")
        #expect(configError("[server\n" + minimal) == "")
    }

    @Test func tomlSubset() throws {
        let doc = try TOML.parse("""
            # comment
            a = "x\\ty" # trailing
            b = 'lit\\n'
            c = [1, 2,
                 3]
            d = { e = 1.5, "f g" = true }
            [[t]]
            k = -4
            [[t]]
            k = 5
            """)
        #expect(doc["a"] == .string("x\ty"))
        #expect(doc["b"] == .string("lit\\n"))
        #expect(doc["c"] == .array([.integer(1), .integer(2), .integer(3)]))
        #expect(doc["d"] == .table(["e": .float(1.5), "f g": .bool(true)]))
        #expect(doc["t"] == .array([.table(["k": .integer(-4)]), .table(["k": .integer(5)])]))
        #expect(throws: TOMLError.self) { try TOML.parse("a.b = 1") }
        #expect(throws: TOMLError.self) { try TOML.parse("a = 1\na = 2") }
        #expect(throws: TOMLError.self) { try TOML.parse("a = \"open") }
    }
}
