// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "SeqRoute",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "seqroute", targets: ["seqroute"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
    ],
    targets: [
        // libpq from Debian's libpq-dev.
        .systemLibrary(name: "CLibPQ", pkgConfig: "libpq", providers: [.apt(["libpq-dev"])]),
        // OpenBLAS from Debian's libopenblas-dev, for the network's matrix work.
        .systemLibrary(name: "COpenBLAS", pkgConfig: "openblas", providers: [.apt(["libopenblas-dev"])]),
        // Pure logic: protocol, featurizer, configuration, decision problem, policies.
        .target(name: "SeqRouteCore"),
        // The PostgreSQL ledger: libpq wrapper, migrations, group committer.
        .target(
            name: "SeqRouteLedger",
            dependencies: ["CLibPQ", "SeqRouteCore"]
        ),
        // The daemon: socket server, request handling, systemd integration, embedded cluster.
        .target(
            name: "SeqRouteServer",
            dependencies: [
                "SeqRouteCore", "SeqRouteLedger", "SeqRouteLearning",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]
        ),
        .executableTarget(
            name: "seqroute",
            dependencies: [
                "SeqRouteCore", "SeqRouteLedger", "SeqRouteServer", "SeqRouteLearning",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
            ]
        ),
        // The learning engine: data, simulation, HBR, CQL, baselines, the oracle, the benchmark.
        .target(name: "SeqRouteLearning", dependencies: ["SeqRouteCore", "COpenBLAS"]),
        .testTarget(name: "SeqRouteCoreTests", dependencies: ["SeqRouteCore"]),
        .testTarget(name: "SeqRouteLearningTests", dependencies: ["SeqRouteLearning", "SeqRouteCore"]),
        .testTarget(
            name: "SeqRouteIntegrationTests",
            dependencies: ["SeqRouteCore", "SeqRouteLedger", "SeqRouteServer", "SeqRouteLearning"]
        ),
    ]
)
