"""Time of one collective by the alpha-beta model: a latency per algorithm step plus bytes over bus bandwidth.

Bandwidth follows nccl-tests' conventions (NVIDIA/nccl-tests doc/PERFORMANCE.md): a collective of "size" S bytes
(the all-gather's output, the reduce-scatter's input) on n ranks takes S / algbw, and busbw = algbw x factor is
the per-rank link bandwidth the algorithm needs, comparable across n:
    all-reduce 2(n-1)/n,  all-gather and reduce-scatter (n-1)/n,  broadcast 1.
So time = factor x S / busbw for the bandwidth term, and a link's busbw is what it can carry per GPU per direction.

Algorithms (NVIDIA/nccl src/graph/tuning.cc, ncclTopoTuneModel, which NCCL itself uses to choose between them):
- ring: all-reduce is a reduce-scatter then an all-gather around the ring, 2(n-1) steps each moving S/n per rank
  (Patarasuk and Yuan 2009, bandwidth-optimal all-reduce); all-gather and reduce-scatter n-1 steps; broadcast a
  pipelined chain, n-1 hops. Latency = base + intra-node steps x intra hop latency + inter-node steps x network
  hop latency, with 2(nodes-1) of all-reduce's steps crossing nodes (nodes-1 for the others).
- tree (all-reduce only, NCCL's double binary tree, Sanders et al. 2009; NVIDIA blog "Massively Scale Your Deep
  Learning Training with NCCL 2.4", 2019): a reduce up and a broadcast down, each rank moving about S each way, so
  algbw = busbw / 2 (tuning.cc's "ratio = .5"), with 2 x ((ranks per node - 1) x intra + log2(nodes) x network)
  hop latencies: logarithmic in nodes, where the ring is linear.
- protocols: LL (8-byte flag+data stores: low latency, a quarter of the ring's bandwidth) and Simple (full
  bandwidth, higher per-hop latency). We take the faster of {ring, tree} x {LL, Simple}, as NCCL's tuner does.
Latencies in microseconds are tuning.cc's tables (the NCCL 2.8-era file; newer versions refine them per GPU
generation). They are per-launch and per-hop costs, not measured on any machine of ours.

Across nodes a ring's traffic leaves each node once per ring; NCCL runs one ring per NIC (channels), so a group
with g ranks on each node reaches min(intra busbw, network busbw x NICs per node x g / GPUs per node): the node's
NICs are shared by the GPUs-per-node / g groups running side by side (data-parallel groups of a 2-D layout).
"""

import math
from dataclasses import dataclass, field

BUS_FACTOR = {  # busbw / algbw: nccl-tests doc/PERFORMANCE.md
    "all_reduce": lambda n: 2 * (n - 1) / n,
    "all_gather": lambda n: (n - 1) / n,
    "reduce_scatter": lambda n: (n - 1) / n,
    "broadcast": lambda n: 1.0,
}

# NVIDIA/nccl src/graph/tuning.cc (2.8): baseLat and hwLat in microseconds, [algorithm][protocol], Simple and LL.
BASE_LATENCY_US = {("ring", "LL"): 6.6, ("ring", "Simple"): 8.4, ("tree", "LL"): 6.8, ("tree", "Simple"): 0.0}
HOP_LATENCY_US = {
    "nvlink": {("ring", "LL"): 0.47, ("ring", "Simple"): 3.4, ("tree", "LL"): 0.52, ("tree", "Simple"): 28.0},
    "pci": {("ring", "LL"): 1.0, ("ring", "Simple"): 5.7, ("tree", "LL"): 1.0, ("tree", "Simple"): 28.0},
    "net": {("ring", "LL"): 2.7, ("ring", "Simple"): 9.6, ("tree", "LL"): 5.0, ("tree", "Simple"): 50.0},
}
# Bandwidth each protocol reaches, as a fraction of the link's busbw (tuning.cc: ring LL x 1/4 for all-reduce and
# across nodes, 1/3 otherwise; tree x 0.9, tree LL x 0.9 / 3.8).
PROTOCOL_EFFICIENCY = {("ring", "LL"): 0.25, ("ring", "Simple"): 1.0, ("tree", "LL"): 0.9 / 3.8, ("tree", "Simple"): 0.9}


@dataclass(frozen=True)
class Link:
    name: str
    kind: str  # "nvlink", "pci" or "net": which row of NCCL's latency table
    busbw_gb_s: float  # per GPU (intra-node) or per NIC (network), one direction, GB/s = 1e9 B/s
    source: str


# Peak one-direction rates from the datasheets: what busbw can at best approach (nccl-tests on NVLink typically
# reaches 75-90% of it). Pass --collectives with measured rows to replace them.
LINKS: dict[str, Link] = {
    "nvlink3": Link("NVLink 3 (A100 SXM)", "nvlink", 300.0, "NVIDIA A100 datasheet: 600 GB/s bidirectional per GPU"),
    "nvlink4": Link("NVLink 4 (H100/H200 SXM)", "nvlink", 450.0, "NVIDIA H100 datasheet: 900 GB/s bidirectional per GPU"),
    "nvlink5": Link("NVLink 5 (B200)", "nvlink", 900.0, "NVIDIA DGX B200 datasheet: 1.8 TB/s bidirectional per GPU"),
    "pcie4": Link("PCIe 4.0 x16", "pci", 31.5, "PCI-SIG: 16 GT/s x 16 lanes, 128b/130b encoding, per direction"),
    "pcie5": Link("PCIe 5.0 x16", "pci", 63.0, "PCI-SIG: 32 GT/s x 16 lanes, 128b/130b encoding, per direction"),
    "ib_ndr": Link("InfiniBand NDR 400 Gb/s", "net", 50.0, "NVIDIA ConnectX-7: 400 Gb/s per port = 50 GB/s"),
    "ib_hdr": Link("InfiniBand HDR 200 Gb/s", "net", 25.0, "NVIDIA ConnectX-6: 200 Gb/s per port = 25 GB/s"),
    "roce100": Link("RoCE/Ethernet 100 Gb/s", "net", 12.5, "IEEE 802.3: 100 Gb/s = 12.5 GB/s"),
    "roce200": Link("RoCE/Ethernet 200 Gb/s", "net", 25.0, "IEEE 802.3: 200 Gb/s = 25 GB/s"),
    "roce400": Link("RoCE/Ethernet 400 Gb/s", "net", 50.0, "IEEE 802.3: 400 Gb/s = 50 GB/s"),
}


@dataclass(frozen=True)
class Network:
    """Nodes of `gpus_per_node` GPUs joined by `intra`, and by `inter` (one NIC per GPU unless said) across nodes.

    measured: busbw in GB/s measured per (op, world size) at sizes in bytes: {(op, n): [(size, busbw), ...]};
    used instead of the model where a row of the same op and group size exists.
    """

    intra: Link
    inter: Link | None = None
    gpus_per_node: int = 8
    nics_per_node: int | None = None
    measured: dict[tuple[str, int], list[tuple[int, float]]] = field(default_factory=dict)

    def __post_init__(self):
        if self.gpus_per_node < 1:
            raise ValueError(f"gpus_per_node must be >= 1, got {self.gpus_per_node}")
        if self.nics_per_node is not None and self.nics_per_node < 1:
            raise ValueError(f"nics_per_node must be >= 1, got {self.nics_per_node}")

    def nodes(self, ranks: int, ranks_per_node: int | None = None) -> int:
        return math.ceil(ranks / min(ranks_per_node or self.gpus_per_node, self.gpus_per_node))


@dataclass(frozen=True)
class CollectiveTime:
    seconds: float
    algorithm: str  # "ring/Simple", "tree/LL", ... or "measured"
    busbw_gb_s: float  # the bus bandwidth the bandwidth term ran at


def bus_bytes(op: str, size_bytes: float, n: int) -> float:
    """Bytes each rank sends for a collective of nccl-tests size S on n ranks: factor(n) x S."""
    return BUS_FACTOR[op](n) * size_bytes


def collective_time(
    op: str, size_bytes: float, n: int, network: Network, ranks_per_node: int | None = None, calls: int = 1
) -> CollectiveTime:
    """Seconds for `calls` collectives of `op` carrying `size_bytes` in all, on a group of n ranks placed
    `ranks_per_node` to a node (default: packed, gpus_per_node). One rank: no communication."""
    if op not in BUS_FACTOR:
        raise ValueError(f"unknown collective {op!r}; choose from {', '.join(BUS_FACTOR)}")
    if n <= 1 or size_bytes <= 0:
        return CollectiveTime(0.0, "none", 0.0)
    per_node = min(ranks_per_node or network.gpus_per_node, network.gpus_per_node, n)
    nodes = network.nodes(n, per_node)
    measured = network.measured.get((op, n))
    if measured:
        busbw = _interpolate(measured, size_bytes / calls)
        return CollectiveTime(calls * bus_bytes(op, size_bytes / calls, n) / (busbw * 1e9), "measured", busbw)
    if nodes > 1 and network.inter is None:
        raise ValueError(f"{n} ranks need {nodes} nodes of {network.gpus_per_node}: describe the link between nodes")
    busbw = link_busbw(network, per_node, nodes)
    best = None
    for algorithm, protocol in PROTOCOL_EFFICIENCY:
        if algorithm == "tree" and op != "all_reduce":
            continue  # NCCL's trees are for all-reduce only (tuning.cc: "coll != ncclCollAllReduce && a != RING")
        latency = _latency_us(op, algorithm, protocol, n, per_node, nodes, network) * 1e-6
        rate = busbw * PROTOCOL_EFFICIENCY[(algorithm, protocol)] * 1e9
        if algorithm == "ring":
            moved = bus_bytes(op, size_bytes, n)
        else:
            moved = 2 * size_bytes  # tree: algbw = busbw / 2
        seconds = calls * latency + moved / rate
        if best is None or seconds < best.seconds:
            best = CollectiveTime(seconds, f"{algorithm}/{protocol}", busbw * PROTOCOL_EFFICIENCY[(algorithm, protocol)])
    return best


def link_busbw(network: Network, ranks_per_node: int, nodes: int) -> float:
    """GB/s per rank for a ring over `nodes` nodes with `ranks_per_node` of the group on each."""
    if nodes <= 1:
        return network.intra.busbw_gb_s
    nics = network.nics_per_node or network.gpus_per_node
    network_share = network.inter.busbw_gb_s * nics * ranks_per_node / network.gpus_per_node
    return min(network.intra.busbw_gb_s, network_share)


def _latency_us(op: str, algorithm: str, protocol: str, n: int, per_node: int, nodes: int, network: Network) -> float:
    intra_kind = network.intra.kind
    intra = HOP_LATENCY_US[intra_kind][(algorithm, protocol)]
    inter = HOP_LATENCY_US["net"][(algorithm, protocol)]
    base = BASE_LATENCY_US[(algorithm, protocol)]
    if algorithm == "tree":
        return base + 2 * ((per_node - 1) * intra + math.log2(nodes) * inter)
    steps, inter_steps = ring_steps(op, n, nodes)
    return base + (steps - inter_steps) * intra + inter_steps * inter


def ring_steps(op: str, n: int, nodes: int) -> tuple[int, int]:
    """(all steps, steps that cross nodes) of the ring algorithm: all-reduce 2(n-1), the others n-1."""
    if op == "all_reduce":
        return 2 * (n - 1), 2 * (nodes - 1)
    return n - 1, nodes - 1


def _interpolate(points: list[tuple[int, float]], size: float) -> float:
    """busbw at `size`, linear in log(size) between measured sizes, clamped at both ends."""
    points = sorted(points)
    if size <= points[0][0]:
        return points[0][1]
    for (s0, b0), (s1, b1) in zip(points, points[1:]):
        if size <= s1:
            t = (math.log(size) - math.log(s0)) / (math.log(s1) - math.log(s0))
            return b0 + t * (b1 - b0)
    return points[-1][1]
