"""Artificien's partitioner, in Python, bit for bit: the shards `artificien worker
--partition iid|dirichlet:ALPHA --shard I/N --seed S --heldout H` trains on.

A port of src/core/rng.c (PCG32 XSH-RR seeded through splitmix64, Lemire's bounded draw,
53-bit uniforms, Box-Muller normals, Marsaglia-Tsang gamma, Dirichlet, Fisher-Yates) and of
the iid and dirichlet kinds of src/data/partition.c, so that a Python peer (bench/peers/
flower_fedavg.py) trains each device on exactly the samples our worker holds. Plain Python
(math only: libm's log/cos/sqrt/pow, as the C code calls them). Only iid and dirichlet: the
other kinds are not needed by the peers. If partition.c or rng.c change, `selfcheck` (run by
bench/flower.sh against `artificien sim`'s partition.csv) says the port no longer agrees.

Usage: python3 af_partition.py selfcheck PARTITION.CSV SPEC SEED HELDOUT [DATA_DIR]
"""
import gzip
import math
import os
import sys

M64 = (1 << 64) - 1
M32 = (1 << 32) - 1
STREAM_ASSIGN = 0x61737367
SALT_DEVICE = 0x6465766963655f73


def _splitmix64(x):
    """One splitmix64 step: returns (new state, output)."""
    x = (x + 0x9e3779b97f4a7c15) & M64
    z = x
    z = ((z ^ (z >> 30)) * 0xbf58476d1ce4e5b9) & M64
    z = ((z ^ (z >> 27)) * 0x94d049bb133111eb) & M64
    return x, z ^ (z >> 31)


class Rng:
    """af_rng: PCG32 (XSH-RR), 64-bit state, odd increment."""

    def __init__(self, seed, stream):
        s, a = _splitmix64(seed & M64)
        self.state = 0
        self.inc = ((((a ^ ((stream * 0xda942042e4dd58b5) & M64)) << 1) | 1) & M64)
        self.u32()
        s, b = _splitmix64(s)
        self.state = (self.state + b) & M64
        self.u32()

    @classmethod
    def split(cls, seed, i):
        """af_rng_split: the i-th independent stream of a seed."""
        s = (seed ^ 0x5851f42d4c957f2d) & M64
        s, a = _splitmix64(s)
        s = (a ^ ((i * 0x2545f4914f6cdd1d) & M64)) & M64
        s, b = _splitmix64(s)
        return cls(b, i)

    def u32(self):
        old = self.state
        self.state = (old * 6364136223846793005 + self.inc) & M64
        xs = (((old >> 18) ^ old) >> 27) & M32
        rot = old >> 59
        return ((xs >> rot) | (xs << ((-rot) & 31))) & M32

    def u64(self):
        hi = self.u32()
        return (hi << 32) | self.u32()

    def below(self, n):
        # Lemire's nearly-divisionless method with rejection
        m = self.u32() * n
        lo = m & M32
        if lo < n:
            t = ((1 << 32) - n) % n
            while lo < t:
                m = self.u32() * n
                lo = m & M32
        return m >> 32

    def uniform(self):
        return (self.u64() >> 11) * 2.0 ** -53

    def normal(self):
        u1 = self.uniform()
        u2 = self.uniform()
        if u1 < 1e-300:
            u1 = 1e-300
        return math.sqrt(-2.0 * math.log(u1)) * math.cos(6.283185307179586 * u2)

    def gamma(self, shape):
        if shape < 1.0:
            # Gamma(a) = Gamma(a+1) * U^(1/a); U is drawn first, as in C
            u = self.uniform()
            if u < 1e-300:
                u = 1e-300
            return self.gamma(shape + 1.0) * math.pow(u, 1.0 / shape)
        d = shape - 1.0 / 3.0
        c = 1.0 / math.sqrt(9.0 * d)
        while True:
            while True:
                x = self.normal()
                v = 1.0 + c * x
                if not v <= 0.0:
                    break
            v = v * v * v
            u = self.uniform()
            if u < 1.0 - 0.0331 * x * x * x * x:
                return d * v
            logu = math.log(u) if u > 0.0 else -math.inf
            if logu < 0.5 * x * x + d * (1.0 - v + math.log(v)):
                return d * v

    def dirichlet(self, alpha, k):
        p = []
        s = 0.0
        for _ in range(k):
            g = self.gamma(alpha)
            p.append(g)
            s += g
        if s <= 0.0:
            p = [0.0] * k
            p[self.below(k)] = 1.0
            return p
        return [x / s for x in p]

    def shuffle(self, a):
        """Fisher-Yates in place, from the end (af_rng_shuffle_u32)."""
        for i in range(len(a), 1, -1):
            j = self.below(i)
            a[i - 1], a[j] = a[j], a[i - 1]


def _split_by_shares(p, total):
    """floor(total * cumsum(p)) cut points, the last part takes the rest."""
    sizes = []
    cum = 0.0
    prev = 0
    for j in range(len(p) - 1):
        cum += p[j]
        c = cum * float(total)
        cut = total if c >= float(total) else int(c)
        cut = max(cut, prev)
        sizes.append(cut - prev)
        prev = cut
    sizes.append(total - prev)
    return sizes


def partition(labels, n_devices, spec, seed, heldout=0.1, n_classes=10, min_size=0,
              max_tries=1000):
    """Splits sample indices over n_devices as data_partition_create does.

    labels: a sequence of ints in [0, n_classes). Returns a list of (train, heldout) index
    lists per device, each sorted ascending. Raises ValueError on a spec this port lacks or
    on a Dirichlet draw that never meets min_size (as the C code refuses it)."""
    n, k = len(labels), n_devices
    kind, _, arg = spec.partition(":")
    dev = [0] * n
    rng = Rng(seed, STREAM_ASSIGN)
    if kind == "iid" and not arg:
        order = list(range(n))
        rng.shuffle(order)
        pos = 0
        for d in range(k):
            for _ in range((d + 1) * n // k - d * n // k):
                dev[order[pos]] = d
                pos += 1
    elif kind == "dirichlet":
        alpha = float(arg)
        if min_size == 0:
            min_size = min(10, max(1, n // (2 * k)))
        # stable sort by label; each class's run is shuffled in place, across retries too
        classes = [[] for _ in range(n_classes)]
        for i, y in enumerate(labels):
            classes[int(y)].append(i)
        for tries in range(1, max_tries + 1):
            dsize = [0] * k
            for cls in classes:
                rng.shuffle(cls)
                sizes = _split_by_shares(rng.dirichlet(alpha, k), len(cls))
                pos = 0
                for d, sz in enumerate(sizes):
                    for j in range(pos, pos + sz):
                        dev[cls[j]] = d
                    pos += sz
                    dsize[d] += sz
            if min(dsize) >= min_size:
                break
        else:
            raise ValueError(f"partition '{spec}': no draw in {max_tries} tries met min_size")
    else:
        raise ValueError(f"partition '{spec}': only iid and dirichlet:ALPHA are ported")
    lists = [[] for _ in range(k)]
    for i in range(n):
        lists[dev[i]].append(i)
    out = []
    for d, lst in enumerate(lists):
        nd = len(lst)
        if nd == 0:
            raise ValueError(f"partition '{spec}': device {d} received no samples")
        nh = int(heldout * float(nd) + 0.5)
        if nh >= nd:
            nh = nd - 1
        if nh:  # with nothing held out the per-device shuffle cannot change the sorted list
            Rng.split(seed ^ SALT_DEVICE, d).shuffle(lst)
        out.append((sorted(lst[:nd - nh]), sorted(lst[nd - nh:])))
    return out


def read_labels(data_dir="/usr/share/datasets/fashion-mnist"):
    """Fashion-MNIST training labels (IDX, gz or raw) as bytes."""
    for name in ("train-labels-idx1-ubyte.gz", "train-labels-idx1-ubyte"):
        p = os.path.join(data_dir, name)
        if os.path.exists(p):
            raw = (gzip.open if p.endswith(".gz") else open)(p, "rb").read()
            return raw[8:]
    raise FileNotFoundError(f"train-labels-idx1-ubyte(.gz) not in {data_dir}")


def selfcheck(csv_path, spec, seed, heldout, data_dir):
    """Compares per-device sizes and class counts with an `artificien sim --out` partition.csv.
    Returns 0 when every row agrees."""
    labels = read_labels(data_dir)
    rows = [line.rstrip("\n").split(",") for line in open(csv_path)][1:]
    parts = partition(labels, len(rows), spec, seed, heldout)
    bad = 0
    for d, (row, (tr, ho)) in enumerate(zip(rows, parts)):
        counts = [0] * 10
        for i in tr + ho:
            counts[labels[i]] += 1
        want = [int(x) for x in row[1:]]
        got = [len(tr), len(ho)] + counts
        if got != want:
            bad += 1
            print(f"device {d}: ours {want}, port {got}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    if len(sys.argv) < 6 or sys.argv[1] != "selfcheck":
        sys.exit(__doc__)
    sys.exit(selfcheck(sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5]),
                       sys.argv[6] if len(sys.argv) > 6 else "/usr/share/datasets/fashion-mnist"))
