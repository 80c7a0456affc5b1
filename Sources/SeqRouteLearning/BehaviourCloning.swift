// Behaviour cloning: a classifier of the logged action given the state, trained with the
// cross-entropy of a softmax over the feasible models only. The baseline that imitates the
// logging policy without asking what money is worth.

import Foundation
import SeqRouteCore

public struct BehaviourCloning: Sendable {
    public let encoder: StateEncoder
    public var hidden = [256, 256]
    public var batch = 256
    public var steps = 10_000
    public var learningRate: Float = 1e-3
    public var seed: UInt64 = 13

    public init(encoder: StateEncoder) { self.encoder = encoder }

    /// `transitions` are the logged steps (not relabelled); λ is not an input of the clone.
    public func train(_ transitions: [Transition], data: QueryData) -> MLP {
        let k = encoder.modelCount, width = encoder.width
        var net = MLP(sizes: [width] + hidden + [k], seed: seed)
        var adam = Adam(for: net, learningRate: learningRate)
        var random = SplitMix64(seed: seed &+ 1)
        var x = [Float](repeating: 0, count: batch * width)
        var picked = [Transition](repeating: transitions[0], count: batch)
        for _ in 0..<steps {
            for i in 0..<batch { picked[i] = transitions[Int(random.next() % UInt64(transitions.count))] }
            for i in x.indices { x[i] = 0 }
            x.withUnsafeMutableBufferPointer { xs in
                for (i, t) in picked.enumerated() { data.encode(t, row: i, of: xs, encoder: encoder, lambda: 0) }
            }
            let values = net.forward(x, batch: batch)
            let logits = values.last!
            var grad = [Float](repeating: 0, count: batch * k)
            for (i, t) in picked.enumerated() {
                var top = -Float.infinity
                for m in 0..<k where t.feasible & (1 << m) != 0 { top = max(top, logits[i * k + m]) }
                var sum: Float = 0
                for m in 0..<k where t.feasible & (1 << m) != 0 { sum += exp(logits[i * k + m] - top) }
                for m in 0..<k where t.feasible & (1 << m) != 0 {
                    grad[i * k + m] = exp(logits[i * k + m] - top) / sum / Float(batch)
                }
                grad[i * k + Int(t.action)] -= 1 / Float(batch)
            }
            adam.apply(net.backward(values: values, outputGradient: grad, batch: batch), to: &net)
        }
        return net
    }
}
