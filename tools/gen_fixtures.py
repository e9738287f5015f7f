#!/usr/bin/python3
"""gen_fixtures.py: dumps small PyTorch float32 reference fixtures as safetensors files
into tests/fixtures/, the parity oracle for the C layers, loss, CNN and optimizers.

Sits in tools/ and runs only at development time with Debian's python3 + torch + numpy;
nothing in the build or the C tests runs it. It writes safetensors with struct + json
(no `safetensors` package) and never touches anything outside tests/fixtures/.
Everything is computed in float32 exactly as PyTorch does by default, on one thread,
with fixed seeds, so two runs give byte-identical files.

  /usr/bin/python3 tools/gen_fixtures.py            regenerate all fixtures
  /usr/bin/python3 tools/gen_fixtures.py --check    load every file, print names/shapes
  /usr/bin/python3 tools/gen_fixtures.py --precision  error table behind the README tolerances
"""
import argparse
import array
import gzip
import json
import os
import struct
import sys

# OpenMP and OpenBLAS read their thread counts once, at load time: pin before importing.
for _k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_k] = "1"

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_DIR = os.path.join(ROOT, "tests", "fixtures")
DATA_DIR = os.environ.get("FMNIST_DIR") or "/usr/share/datasets/fashion-mnist"
MEAN, STD = 0.2860, 0.3530  # Fashion-MNIST training-set pixel mean/std (as in peers/common.py)
GENERATOR = "tools/gen_fixtures.py"

# ---------------------------------------------------------------------------------------
# safetensors I/O in plain Python
# ---------------------------------------------------------------------------------------


def st_encode(tensors, metadata):
    """tensors: list of (name, shape, little-endian float32 bytes); returns file bytes.
    Layout: u64 LE header length, JSON header padded with spaces to a multiple of 8,
    then the tensors back to back in list order."""
    header = {}
    off = 0
    for name, shape, raw in tensors:
        n = 1
        for d in shape:
            n *= d
        assert len(raw) == 4 * n, name
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [off, off + len(raw)]}
        off += len(raw)
    header["__metadata__"] = {k: str(v) for k, v in metadata.items()}
    hb = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hb += b" " * (-len(hb) % 8)
    return struct.pack("<Q", len(hb)) + hb + b"".join(raw for _, _, raw in tensors)


def st_load(path):
    """Returns (metadata dict, {name: (shape, list of floats)}, names in file order).
    Validates the header the way a strict reader should; raises ValueError."""
    with open(path, "rb") as f:
        buf = f.read()
    if len(buf) < 8:
        raise ValueError(f"{path}: shorter than the 8-byte header length")
    (hlen,) = struct.unpack_from("<Q", buf, 0)
    if 8 + hlen > len(buf):
        raise ValueError(f"{path}: header length {hlen} past end of file")
    header = json.loads(buf[8:8 + hlen].decode("utf-8"))
    meta = header.pop("__metadata__", {})
    data = buf[8 + hlen:]
    spans = []
    out = {}
    for name, h in header.items():
        if h["dtype"] != "F32":
            raise ValueError(f"{path}: {name}: dtype {h['dtype']}, expected F32")
        b, e = h["data_offsets"]
        n = 1
        for d in h["shape"]:
            n *= d
        if e - b != 4 * n or e > len(data):
            raise ValueError(f"{path}: {name}: offsets [{b},{e}] do not fit shape {h['shape']}")
        vals = array.array("f")
        vals.frombytes(data[b:e])
        if sys.byteorder != "little":
            vals.byteswap()
        out[name] = (h["shape"], vals)
        spans.append((b, e))
    spans.sort()
    pos = 0
    for b, e in spans:
        if b != pos:
            raise ValueError(f"{path}: hole or overlap in data at byte {pos}")
        pos = e
    if pos != len(data):
        raise ValueError(f"{path}: {len(data) - pos} trailing bytes after the last tensor")
    return meta, out, list(header.keys())


# ---------------------------------------------------------------------------------------
# fixture builders: each returns (tensors as [(name, torch.Tensor)], metadata dict)
# ---------------------------------------------------------------------------------------


def read_idx(name):
    import numpy as np
    with gzip.open(os.path.join(DATA_DIR, name + ".gz"), "rb") as f:
        raw = f.read()
    magic = int.from_bytes(raw[0:4], "big")
    ndim = magic & 0xFF
    assert (magic >> 8) & 0xFF == 0x08, f"{name}: not a uint8 IDX file"
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def fmnist_train(n):
    """First n training images normalised as (p/255 - MEAN)/STD in float32, labels int64."""
    import numpy as np
    import torch
    x = read_idx("train-images-idx3-ubyte")[:n].astype(np.float32) / 255.0
    x = (x - MEAN) / STD  # numpy float32 arithmetic, same as peers/common.py
    y = read_idx("train-labels-idx1-ubyte")[:n].astype(np.int64)
    return (torch.from_numpy(np.ascontiguousarray(x.reshape(n, 1, 28, 28))),
            torch.from_numpy(y.copy()))


def make_cnn(torch):
    """The tutorial CNN of peers/common.py make_network, default init with manual_seed(1)."""
    nn = torch.nn

    class Network(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(in_channels=1, out_channels=6, kernel_size=5)
            self.conv2 = nn.Conv2d(in_channels=6, out_channels=12, kernel_size=5)
            self.fc1 = nn.Linear(in_features=12 * 4 * 4, out_features=120)
            self.fc2 = nn.Linear(in_features=120, out_features=60)
            self.out = nn.Linear(in_features=60, out_features=10)

        def stages(self, t):
            """Forward pass returning every intermediate the fixture records."""
            F = torch.nn.functional
            a = {}
            a["act.conv1"] = self.conv1(t)
            a["act.pool1"] = F.max_pool2d(F.relu(a["act.conv1"]), kernel_size=2, stride=2)
            a["act.conv2"] = self.conv2(a["act.pool1"])
            a["act.pool2"] = F.max_pool2d(F.relu(a["act.conv2"]), kernel_size=2, stride=2)
            a["act.fc1"] = self.fc1(a["act.pool2"].reshape(-1, 12 * 4 * 4))
            a["act.fc2"] = self.fc2(F.relu(a["act.fc1"]))
            return self.out(F.relu(a["act.fc2"])), a

        def forward(self, t):
            return self.stages(t)[0]

    torch.manual_seed(1)
    return Network()


def layer_fixture(torch, layer, x, seed, meta, dtype):
    """Forward layer(x), backward a random dy; returns tensors incl. parameter grads.
    dy is drawn in float32 from `seed` so float32 and float64 runs see the same values."""
    layer = layer.to(dtype)
    x = x.to(dtype).clone().requires_grad_(True)
    y = layer(x)
    g = torch.Generator().manual_seed(seed + 7)
    dy = torch.randn(y.shape, generator=g, dtype=torch.float32).to(dtype)
    y.backward(dy)
    t = [("x", x.detach())]
    params = dict(layer.named_parameters())
    if "weight" in params:
        t += [("weight", params["weight"].detach()), ("bias", params["bias"].detach())]
    t += [("y", y.detach()), ("dy", dy), ("dx", x.grad)]
    if "weight" in params:
        t += [("dweight", params["weight"].grad), ("dbias", params["bias"].grad)]
    return t, meta


def fx_conv(torch, dtype, seed, cin, cout, k, stride, pad, xshape):
    torch.manual_seed(seed)
    conv = torch.nn.Conv2d(cin, cout, k, stride=stride, padding=pad)
    x = torch.randn(xshape)
    meta = {"layer": "conv2d", "in": cin, "out": cout, "kernel": k, "stride": stride, "padding": pad}
    return layer_fixture(torch, conv, x, seed, meta, dtype)


def fx_maxpool(torch, dtype, seed, xshape):
    torch.manual_seed(seed)
    x = torch.randn(xshape)
    # The C backward routes each gradient to one argmax; ties would make that ambiguous.
    assert torch.unique(x).numel() == x.numel(), "tie in max-pool input"
    meta = {"layer": "maxpool2d", "kernel": 2, "stride": 2, "ceil_mode": "false"}
    return layer_fixture(torch, torch.nn.MaxPool2d(2, 2), x, seed, meta, dtype)


def fx_relu(torch, dtype, seed):
    torch.manual_seed(seed)
    x = torch.randn(4, 7)
    assert bool((x != 0).all()), "exact zero in relu input (derivative undefined)"
    return layer_fixture(torch, torch.nn.ReLU(), x, seed, {"layer": "relu"}, dtype)


def fx_linear(torch, dtype, seed):
    torch.manual_seed(seed)
    lin = torch.nn.Linear(7, 5)
    x = torch.randn(3, 7)
    return layer_fixture(torch, lin, x, seed, {"layer": "linear", "in": 7, "out": 5}, dtype)


def fx_xent(torch, dtype, seed):
    torch.manual_seed(seed)
    logits = (torch.randn(6, 10) * 3).to(dtype).requires_grad_(True)
    labels = torch.randint(0, 10, (6,))
    loss = torch.nn.functional.cross_entropy(logits, labels)  # mean over the batch
    loss.backward()
    t = [("logits", logits.detach()), ("labels", labels.to(torch.float32)),
         ("loss", loss.detach().reshape(1)), ("dlogits", logits.grad)]
    return t, {"loss": "cross_entropy", "reduction": "mean", "classes": 10}


def fx_cnn(torch, dtype, data):
    x, y = data[0][:4], data[1][:4]
    net = make_cnn(torch).to(dtype)
    t = [(k, v.detach().clone()) for k, v in net.state_dict().items()]
    logits, acts = net.stages(x.to(dtype))
    ref = net(x.to(dtype))
    assert torch.equal(logits, ref), "stages() differs from forward()"
    loss = torch.nn.functional.cross_entropy(logits, y)
    loss.backward()
    t += [("x", x), ("labels", y.to(torch.float32)), ("logits", logits.detach()),
          ("loss", loss.detach().reshape(1))]
    t += [(k, v.detach()) for k, v in acts.items()]
    t += [("grad." + k, p.grad) for k, p in net.named_parameters()]
    return t, {"model": "tutorial_cnn", "init_seed": 1, "batch": 4, "images": "train[0:4]",
               "loss": "cross_entropy mean"}


def fx_train(torch, dtype, data, opt_name, opt_kw):
    steps, batch = 5, 4
    x, y = data[0][:steps * batch], data[1][:steps * batch]
    net = make_cnn(torch).to(dtype)
    init = [("init." + k, v.detach().clone()) for k, v in net.state_dict().items()]
    opt = getattr(torch.optim, opt_name)(net.parameters(), **opt_kw)
    losses = []
    for s in range(steps):
        xb, yb = x[s * batch:(s + 1) * batch].to(dtype), y[s * batch:(s + 1) * batch]
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(xb), yb)
        loss.backward()
        opt.step()
        losses.append(loss.detach().reshape(1))
    final = [("final." + k, v.detach().clone()) for k, v in net.state_dict().items()]
    t = init + final + [("x", x), ("labels", y.to(torch.float32)), ("losses", torch.cat(losses))]
    meta = {"model": "tutorial_cnn", "init_seed": 1, "optimizer": opt_name, "steps": steps,
            "batch": batch, "images": f"train[0:{steps * batch}], step s uses 4s..4s+3",
            "loss": "cross_entropy mean"}
    for k, v in opt_kw.items():
        meta[k] = ("true" if v else "false") if isinstance(v, bool) else repr(v)
    # Spell out the defaults the C optimizer must match.
    if opt_name == "Adam":
        meta.setdefault("weight_decay", "0")
        meta.update({"beta1": "0.9", "beta2": "0.999", "eps": "1e-08", "amsgrad": "false"})
    else:
        meta.setdefault("weight_decay", "0")
        meta.setdefault("nesterov", "false")
        meta["dampening"] = "0"
    return t, meta


def fixtures(torch, dtype, data):
    """name -> thunk building that fixture in `dtype` (float32 for the files)."""
    return {
        "layer_conv2d": lambda: fx_conv(torch, dtype, 101, 3, 4, 3, 1, 1, (2, 3, 9, 8)),
        "layer_conv2d_s2": lambda: fx_conv(torch, dtype, 102, 2, 3, 3, 2, 0, (2, 2, 11, 10)),
        "layer_conv1": lambda: fx_conv(torch, dtype, 103, 1, 6, 5, 1, 0, (3, 1, 28, 28)),
        "layer_maxpool2d": lambda: fx_maxpool(torch, dtype, 104, (2, 3, 8, 6)),
        "layer_maxpool2d_odd": lambda: fx_maxpool(torch, dtype, 105, (1, 2, 7, 5)),
        "layer_relu": lambda: fx_relu(torch, dtype, 106),
        "layer_linear": lambda: fx_linear(torch, dtype, 107),
        "loss_xent": lambda: fx_xent(torch, dtype, 108),
        "cnn": lambda: fx_cnn(torch, dtype, data),
        "cnn_adam": lambda: fx_train(torch, dtype, data, "Adam", {"lr": 0.01}),
        "cnn_sgd": lambda: fx_train(torch, dtype, data, "SGD", {
            "lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-3}),
        "cnn_sgd_plain": lambda: fx_train(torch, dtype, data, "SGD", {"lr": 0.1, "momentum": 0.9}),
        "cnn_adam_wd": lambda: fx_train(torch, dtype, data, "Adam", {"lr": 0.001, "weight_decay": 0.01}),
    }


# ---------------------------------------------------------------------------------------
# modes
# ---------------------------------------------------------------------------------------


def setup_torch():
    import torch
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    return torch


def to_bytes(tensor):
    import numpy as np
    a = tensor.detach().to("cpu").contiguous().numpy()
    assert a.dtype == np.float32, a.dtype
    assert np.isfinite(a).all()
    return a.astype("<f4", copy=False).tobytes()


def generate(torch):
    data = fmnist_train(20)
    os.makedirs(OUT_DIR, exist_ok=True)
    total = 0
    for name, build in fixtures(torch, torch.float32, data).items():
        tensors, meta = build()
        names = [n for n, _ in tensors]
        assert len(set(names)) == len(names), f"{name}: duplicate tensor name"
        meta = {"generator": GENERATOR, "torch": torch.__version__, **meta}
        enc = [(n, list(t.shape), to_bytes(t)) for n, t in tensors]
        blob = st_encode(enc, meta)
        path = os.path.join(OUT_DIR, name + ".safetensors")
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(blob)
        os.replace(tmp, path)
        # Read back with the plain reader: every tensor must round-trip bit for bit.
        _, back, order = st_load(path)
        assert order == names
        for n, shape, raw in enc:
            assert back[n][0] == shape and back[n][1].tobytes() == raw, f"{name}:{n} round trip"
        total += len(blob)
        print(f"wrote {os.path.relpath(path, ROOT)} ({len(blob)} bytes, {len(tensors)} tensors)")
    print(f"total {total} bytes")


def check():
    files = sorted(f for f in os.listdir(OUT_DIR) if f.endswith(".safetensors"))
    if not files:
        print(f"no fixtures in {OUT_DIR}", file=sys.stderr)
        return 1
    for f in files:
        try:
            meta, tensors, order = st_load(os.path.join(OUT_DIR, f))
        except (ValueError, KeyError, UnicodeDecodeError) as e:
            print(f"{f}: unreadable: {e}", file=sys.stderr)
            return 1
        print(f"{f}  ({os.path.getsize(os.path.join(OUT_DIR, f))} bytes)")
        print("  metadata: " + ", ".join(f"{k}={v}" for k, v in meta.items()))
        for n in order:
            shape, vals = tensors[n]
            bad = sum(1 for v in vals if v != v or v in (float("inf"), float("-inf")))
            if bad:
                print(f"{f}: {n}: {bad} non-finite values", file=sys.stderr)
                return 1
            print(f"  {n:22s} {shape}")
    return 0


def tolerance(fixture, tensor, meta):
    """The (rtol, atol) tests/fixtures/README.md recommends for one tensor, plus whether
    the check is |a-b| <= atol + rtol*|b| elementwise (always) and ||a-b||/||b|| <= 1e-4."""
    if fixture.startswith("cnn_adam") and tensor.startswith("final."):
        # Adam divides by sqrt(v)+eps: an element whose gradient is ~eps (or where
        # weight decay cancels it) moves by up to lr for a 1e-9 change of that gradient.
        return 1e-3, 0.1 * float(meta["lr"])
    if fixture.startswith("cnn"):
        if tensor.startswith("act.") or tensor in ("logits", "loss"):
            return 1e-4, 1e-5
        return 1e-3, 1e-5  # gradients, final SGD weights, losses
    return 1e-4, 1e-5  # single layers and the loss; atol is scaled by max(1, max|ref|)


def precision(torch):
    """Recompute every fixture (a) in float64 from the same float32 inputs and initial
    weights and (b) in float32 with oneDNN off (convolutions then use im2col + GEMM, a
    different summation order, the closest stand-in for the C engine), and report how
    far the fixture is from each, as the worst |d|/(atol + rtol|ref|) under the README
    tolerance (must stay well below 1) and the relative L2 error."""
    data = fmnist_train(20)
    f32 = fixtures(torch, torch.float32, data)
    f64 = fixtures(torch, torch.float64, data)
    with torch.backends.mkldnn.flags(enabled=False):
        alt = {name: dict(build()[0]) for name, build in f32.items()}
    inputs = {"x", "labels", "dy", "weight", "bias"} | set(make_cnn(torch).state_dict())
    print(f"{'fixture':20s} {'tensor':19s} {'rtol':>5s} {'atol':>7s} | {'f64 max|d|':>10s} "
          f"{'ratio':>6s} {'relL2':>8s} | {'alt max|d|':>10s} {'ratio':>6s} {'relL2':>8s}")
    for name, build in f32.items():
        t32, meta = build()
        t64 = dict(f64[name]()[0])
        for n, a in t32:
            if n in inputs or n.startswith("init.") or (name == "loss_xent" and n == "logits"):
                continue  # identical by construction
            rtol, atol = tolerance(name, n, meta)
            if not name.startswith("cnn"):
                atol *= max(1.0, a.abs().max().item())
            cols = []
            for b in (t64[n], alt[name][n].double()):
                d = (a.double() - b).abs()
                ratio = (d / (atol + rtol * b.abs())).max().item()
                rel = ((a.double() - b).norm() / b.norm().clamp_min(1e-30)).item()
                cols.append(f"{d.max().item():10.2e} {ratio:6.3f} {rel:8.1e}")
            print(f"{name:20s} {n:19s} {rtol:5.0e} {atol:7.1e} | " + " | ".join(cols))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--check", action="store_true", help="load every fixture and print names/shapes")
    g.add_argument("--precision", action="store_true", help="float32 vs float64 / reordered-sum error table")
    args = ap.parse_args()
    if args.check:
        return check()
    torch = setup_torch()
    if args.precision:
        precision(torch)
    else:
        generate(torch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
