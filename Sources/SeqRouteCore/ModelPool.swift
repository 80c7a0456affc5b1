// The model pool and the money arithmetic of one turn: holds and feasibility (SPEC 2 and 4).

public struct ModelSpec: Sendable, Equatable {
    public var name: String
    /// Micro-units per million prompt tokens.
    public var inputPrice: Int64
    /// Micro-units per million output tokens.
    public var outputPrice: Int64
    public var maxOutputTokens: Int
    /// Prior mean quality in [0,1], used by the cold-start policy.
    public var quality: Double
    /// Prior mean quality per task label, overriding `quality` for that task.
    public var taskQuality: [String: Double]

    public init(name: String, inputPrice: Int64, outputPrice: Int64, maxOutputTokens: Int,
                quality: Double = 0.5, taskQuality: [String: Double] = [:]) {
        self.name = name
        self.inputPrice = inputPrice
        self.outputPrice = outputPrice
        self.maxOutputTokens = maxOutputTokens
        self.quality = quality
        self.taskQuality = taskQuality
    }

    /// The upper cost estimate of one call: prompt tokens at the input price plus the model's
    /// maximum output at the output price, rounded up to a whole micro-unit.
    /// Saturates at `Limits.maxMoney` rather than overflow (a hold that large fits no budget).
    public func hold(promptTokens: Int) -> Int64 {
        let a = inputPrice.multipliedReportingOverflow(by: Int64(promptTokens))
        let b = outputPrice.multipliedReportingOverflow(by: Int64(maxOutputTokens))
        let sum = a.partialValue.addingReportingOverflow(b.partialValue)
        guard !a.overflow, !b.overflow, !sum.overflow else { return Limits.maxMoney }
        return min((sum.partialValue / 1_000_000) + (sum.partialValue % 1_000_000 == 0 ? 0 : 1), Limits.maxMoney)
    }

    public func priorQuality(task: String?) -> Double {
        task.flatMap { taskQuality[$0] } ?? quality
    }
}

public struct ModelPool: Sendable, Equatable {
    public var models: [ModelSpec]
    public init(models: [ModelSpec]) { self.models = models }
    public var count: Int { models.count }
    public var names: [String] { models.map(\.name) }

    public func index(of name: String) -> Int? { models.firstIndex { $0.name == name } }

    public func holds(promptTokens: Int) -> [Int64] { models.map { $0.hold(promptTokens: promptTokens) } }

    /// A stable identity of the pool (names and prices), recorded with decisions and policies.
    public var identity: String {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for m in models {
            for b in "\(m.name)|\(m.inputPrice)|\(m.outputPrice)|\(m.maxOutputTokens);".utf8 {
                h = (h ^ UInt64(b)) &* 0x0000_0100_0000_01B3
            }
        }
        let hex = String(h, radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex
    }
}

/// Money left to a session and its account, in micro-units.
public struct BudgetState: Sendable, Equatable {
    public var sessionBudget: Int64
    public var sessionSpent: Int64
    public var sessionHeld: Int64
    public var accountRemaining: Int64

    public init(sessionBudget: Int64, sessionSpent: Int64, sessionHeld: Int64, accountRemaining: Int64) {
        self.sessionBudget = sessionBudget
        self.sessionSpent = sessionSpent
        self.sessionHeld = sessionHeld
        self.accountRemaining = accountRemaining
    }

    public var sessionRemaining: Int64 { sessionBudget - sessionSpent - sessionHeld }

    /// Money rule 1: a hold is admitted only if it fits both the session and the account.
    public func admits(_ hold: Int64) -> Bool {
        hold <= sessionRemaining && hold <= accountRemaining
    }

    public func feasible(_ holds: [Int64]) -> [Bool] { holds.map(admits) }
}
