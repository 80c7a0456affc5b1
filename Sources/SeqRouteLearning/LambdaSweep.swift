// Where to evaluate λ. A learned policy's spending is a step function of λ: across most of the
// range nothing changes, and then a whole task moves to another model within a narrow band.
// A fixed grid leaves gaps in the cost-quality frontier exactly there, so the sweep bisects
// the intervals across which the spending jumps most, measured on sessions the caller chooses
// (validation sessions drawn from training queries, never test sessions).

public enum LambdaSweep {
    /// `grid` (sorted, without repeats) plus up to `extra` midpoints. Each step bisects the
    /// interval whose ends differ most in cost at any budget level, relative to that level's
    /// cost range over `grid`; it stops when no interval's jump exceeds `threshold` of the
    /// range, or when the only such intervals are narrower than `minimumWidth` of their upper end.
    /// `cost(λ)` gives the mean cost at each budget level, in the same order for every λ.
    public static func refined(_ grid: [Double], adding extra: Int, threshold: Double = 0.02,
                               minimumWidth: Double = 0.005, cost: (Double) -> [Double]) -> [Double] {
        var points = Array(Set(grid)).sorted().map { (lambda: $0, cost: cost($0)) }
        guard points.count >= 2, extra > 0 else { return points.map(\.lambda) }
        let levels = points[0].cost.count
        let ranges = (0..<levels).map { l in
            let costs = points.map { $0.cost[l] }
            return costs.max()! - costs.min()!
        }
        func jump(_ i: Int) -> Double {
            (0..<levels).map { l in
                ranges[l] > 0 ? abs(points[i].cost[l] - points[i + 1].cost[l]) / ranges[l] : 0
            }.max() ?? 0
        }
        for _ in 0..<extra {
            let candidates = (0..<points.count - 1).filter {
                points[$0 + 1].lambda - points[$0].lambda > minimumWidth * points[$0 + 1].lambda
            }
            guard let steepest = candidates.max(by: { jump($0) < jump($1) }), jump(steepest) > threshold else { break }
            // Six significant digits keep the knobs readable; the width floor keeps them inside.
            let mid = Double(String(format: "%.6g", (points[steepest].lambda + points[steepest + 1].lambda) / 2))!
            points.insert((mid, cost(mid)), at: steepest + 1)
        }
        return points.map(\.lambda)
    }
}
