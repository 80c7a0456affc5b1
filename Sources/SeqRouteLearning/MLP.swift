// A fully connected ReLU network with hand-derived backpropagation. Every matrix product,
// bias broadcast and bias gradient goes through BLAS (OpenBLAS); only the ReLU masks are loops.
// Rows are samples: a batch is a row-major matrix of `batch × width`.

import COpenBLAS
import Foundation
import SeqRouteCore

public struct MLP: Sendable, Codable, Equatable {
    /// Layer widths: input, hidden..., output.
    public let sizes: [Int]
    /// Layer l's weights, row-major `sizes[l] × sizes[l+1]`.
    public var weights: [[Float]]
    public var biases: [[Float]]

    /// He initialisation, seeded.
    public init(sizes: [Int], seed: UInt64) {
        precondition(sizes.count >= 2 && sizes.allSatisfy { $0 > 0 })
        self.sizes = sizes
        var random = SplitMixFloat(seed: seed)
        weights = (0..<(sizes.count - 1)).map { l in
            let scale = (2 / Float(sizes[l])).squareRoot()
            return (0..<(sizes[l] * sizes[l + 1])).map { _ in random.normal() * scale }
        }
        biases = (0..<(sizes.count - 1)).map { [Float](repeating: 0, count: sizes[$0 + 1]) }
    }

    public var layers: Int { sizes.count - 1 }
    public var inputWidth: Int { sizes[0] }
    public var outputWidth: Int { sizes[sizes.count - 1] }

    /// The values of every layer for a batch: `values[0]` is the input, `values[l]` the output of
    /// layer l (after ReLU, except the last layer, which is linear).
    public func forward(_ input: [Float], batch: Int) -> [[Float]] {
        precondition(input.count == batch * inputWidth, "input is not batch × inputWidth")
        var values = [input]
        values.reserveCapacity(sizes.count)
        for l in 0..<layers {
            let n = sizes[l], m = sizes[l + 1]
            var out = [Float](repeating: 0, count: batch * m)
            let ones = [Float](repeating: 1, count: batch)
            values[l].withUnsafeBufferPointer { x in
                weights[l].withUnsafeBufferPointer { w in
                    biases[l].withUnsafeBufferPointer { b in
                        out.withUnsafeMutableBufferPointer { y in
                            // y = ones · bᵀ, then y += x · W
                            cblas_sger(CblasRowMajor, Int32(batch), Int32(m), 1, ones, 1, b.baseAddress, 1,
                                       y.baseAddress, Int32(m))
                            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(batch), Int32(m), Int32(n),
                                        1, x.baseAddress, Int32(n), w.baseAddress, Int32(m), 1, y.baseAddress, Int32(m))
                        }
                    }
                }
            }
            if l < layers - 1 {
                for i in out.indices where out[i] < 0 { out[i] = 0 }
            }
            values.append(out)
        }
        return values
    }

    /// The outputs only.
    public func outputs(_ input: [Float], batch: Int) -> [Float] { forward(input, batch: batch).last! }

    /// Gradients of a loss with respect to every weight and bias, given the values of a
    /// forward pass and the loss's gradient with respect to the outputs.
    public func backward(values: [[Float]], outputGradient: [Float], batch: Int) -> MLPGradients {
        var gradW = weights.map { [Float](repeating: 0, count: $0.count) }
        var gradB = biases.map { [Float](repeating: 0, count: $0.count) }
        var delta = outputGradient
        let ones = [Float](repeating: 1, count: batch)
        for l in stride(from: layers - 1, through: 0, by: -1) {
            let n = sizes[l], m = sizes[l + 1]
            values[l].withUnsafeBufferPointer { x in
                delta.withUnsafeBufferPointer { d in
                    gradW[l].withUnsafeMutableBufferPointer { gw in
                        // dW = xᵀ · δ
                        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(n), Int32(m), Int32(batch),
                                    1, x.baseAddress, Int32(n), d.baseAddress, Int32(m), 0, gw.baseAddress, Int32(m))
                    }
                    gradB[l].withUnsafeMutableBufferPointer { gb in
                        // db = δᵀ · 1
                        cblas_sgemv(CblasRowMajor, CblasTrans, Int32(batch), Int32(m), 1, d.baseAddress, Int32(m),
                                    ones, 1, 0, gb.baseAddress, 1)
                    }
                }
            }
            if l == 0 { break }
            var previous = [Float](repeating: 0, count: batch * n)
            delta.withUnsafeBufferPointer { d in
                weights[l].withUnsafeBufferPointer { w in
                    previous.withUnsafeMutableBufferPointer { p in
                        // δ_prev = δ · Wᵀ, then through the ReLU of layer l-1
                        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(batch), Int32(n), Int32(m),
                                    1, d.baseAddress, Int32(m), w.baseAddress, Int32(m), 0, p.baseAddress, Int32(n))
                    }
                }
            }
            let activation = values[l]
            for i in previous.indices where activation[i] <= 0 { previous[i] = 0 }
            delta = previous
        }
        return MLPGradients(weights: gradW, biases: gradB)
    }

    /// θ ← (1-τ)·θ + τ·θ_source (a soft target-network update).
    public mutating func blend(toward source: MLP, rate tau: Float) {
        for l in 0..<layers {
            blendArray(&weights[l], source.weights[l], tau)
            blendArray(&biases[l], source.biases[l], tau)
        }
    }

    private func blendArray(_ a: inout [Float], _ b: [Float], _ tau: Float) {
        let n = Int32(a.count)
        a.withUnsafeMutableBufferPointer { x in
            b.withUnsafeBufferPointer { y in
                cblas_sscal(n, 1 - tau, x.baseAddress, 1)
                cblas_saxpy(n, tau, y.baseAddress, 1, x.baseAddress, 1)
            }
        }
    }
}

public struct MLPGradients: Sendable {
    public var weights: [[Float]]
    public var biases: [[Float]]
}

/// Adam (Kingma and Ba), one moment pair per parameter.
public struct Adam: Sendable {
    public var learningRate: Float
    public let beta1: Float = 0.9
    public let beta2: Float = 0.999
    public let epsilon: Float = 1e-8
    private var beta1Power: Float = 1
    private var beta2Power: Float = 1
    private var m: MLPGradients
    private var v: MLPGradients

    public init(for network: MLP, learningRate: Float) {
        self.learningRate = learningRate
        let zeros = MLPGradients(weights: network.weights.map { [Float](repeating: 0, count: $0.count) },
                                 biases: network.biases.map { [Float](repeating: 0, count: $0.count) })
        m = zeros
        v = zeros
    }

    public mutating func apply(_ g: MLPGradients, to network: inout MLP) {
        beta1Power *= beta1
        beta2Power *= beta2
        let c1 = 1 - beta1Power, c2 = 1 - beta2Power
        let rate = learningRate * c2.squareRoot() / c1
        for l in 0..<network.layers {
            update(&network.weights[l], &m.weights[l], &v.weights[l], g.weights[l], rate)
            update(&network.biases[l], &m.biases[l], &v.biases[l], g.biases[l], rate)
        }
    }

    private func update(_ p: inout [Float], _ m: inout [Float], _ v: inout [Float], _ g: [Float], _ rate: Float) {
        for i in p.indices {
            m[i] = beta1 * m[i] + (1 - beta1) * g[i]
            v[i] = beta2 * v[i] + (1 - beta2) * g[i] * g[i]
            p[i] -= rate * m[i] / (v[i].squareRoot() + epsilon)
        }
    }
}

/// Normal draws for initialisation (Box-Muller on SplitMix64).
struct SplitMixFloat {
    var random: SplitMix64
    init(seed: UInt64) { random = SplitMix64(seed: seed) }
    mutating func normal() -> Float {
        let u1 = max(random.unit(), 1e-12), u2 = random.unit()
        return Float((-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2))
    }
}
