#!/usr/bin/env python3
"""Flower FedAvg, deployed as separate processes over gRPC on loopback: the peer that
bench/flower.sh measures against `artificien serve` + `artificien worker`.

  server  one Flower server (flwr.server.start_server: the gRPC bidirectional-stream Fleet
          API, no Ray): FedAvg over all N connected clients per round, R rounds, the global
          model evaluated on the 10k test set once, after the last round, in this process.
  client  one Flower client (flwr.client.start_client + NumPyClient) holding shard I of N:
          1 local epoch of plain SGD (batch B, lr, no momentum) per round on the tutorial
          CNN of common.py, with Debian's torch, 1 thread.
  local   the clients' training alone: one process trains every shard once, one after the
          other, with the same code as `client` (no Flower, no network): the training cost of
          one round, to tell it apart from the federation's.

Shards are the very samples our workers hold: af_partition.py ports our partitioner
(`--partition dirichlet:0.5 --seed 1 --heldout 0` here gives what `artificien worker` gets).
--init starts from a safetensors checkpoint (our project's round 0), so both sides also start
from the same weights. The server prints per-round timings and ends with one line
"JSON {...}"; a client prints "CLIENT {...}" (its peak RSS, its training seconds) when the
server lets it go. Needs flwr (a venv, see bench/flower.sh), numpy and torch; never downloads.

  flower_fedavg.py server --port 8080 --clients 10 --rounds 5 [--init round0.safetensors]
  flower_fedavg.py client --port 8080 --shard 3/10
  flower_fedavg.py local --clients 10
"""
import argparse
import gzip
import json
import os
import resource
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import af_partition  # noqa: E402
import common  # noqa: E402

# the order of the tutorial CNN's state_dict: the order of Flower's parameter list
PARAM_NAMES = ["conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "fc1.weight",
               "fc1.bias", "fc2.weight", "fc2.bias", "out.weight", "out.bias"]


def vm_hwm_kib():
    """Peak resident set of this process (VmHWM of /proc/self/status), KiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def cpu_s():
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def read_safetensors(np, path):
    """The F32 tensors of a safetensors file, as numpy arrays in PARAM_NAMES order."""
    buf = open(path, "rb").read()
    n = struct.unpack("<Q", buf[:8])[0]
    header = json.loads(buf[8:8 + n])
    out = []
    for name in PARAM_NAMES:
        h = header[name]
        if h["dtype"] != "F32":
            raise ValueError(f"{path}: {name} is {h['dtype']}, expected F32")
        b, e = h["data_offsets"]
        a = np.frombuffer(buf, dtype="<f4", count=(e - b) // 4, offset=8 + n + b)
        out.append(a.reshape(h["shape"]).astype(np.float32))
    return out


def read_idx_u8(np, name):
    """An IDX uint8 file of Fashion-MNIST (gz or raw), decompressed straight into one numpy
    array: no second copy of the 47 MB of training images (common._read_idx holds both the
    bytes and the array), so a client's peak RSS is not inflated by the loader."""
    path = common._find(name)
    with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
        head = f.read(4)
        ndim = head[3]
        if head[2] != 0x08:
            raise ValueError(f"{path}: IDX type 0x{head[2]:02x}, expected 0x08 (uint8)")
        dims = struct.unpack(">%dI" % ndim, f.read(4 * ndim))
        a = np.empty(dims, dtype=np.uint8)
        if f.readinto(memoryview(a.reshape(-1))) != a.size:
            raise ValueError(f"{path}: truncated, expected {a.size} bytes of data")
    return a


def load_shard(np, shard, spec, seed, heldout):
    """Training images (normalised float32 [n,1,28,28]) and labels of device I of N, as
    `artificien worker --shard I/N --partition SPEC --seed S --heldout H` holds them. Only
    the shard becomes float; the uint8 images are dropped afterwards (as our worker does)."""
    i, n_dev = (int(v) for v in shard.split("/"))
    ytr = read_idx_u8(np, "train-labels-idx1-ubyte")
    train, _ = af_partition.partition(ytr.tobytes(), n_dev, spec, seed, heldout)[i]
    idx = np.array(train, dtype=np.int64)
    x = normalise(np, read_idx_u8(np, "train-images-idx3-ubyte")[idx])
    return x, ytr[idx].astype(np.int64)


def load_test(np):
    """The 10k test images (normalised float32 [n,1,28,28]) and labels."""
    x = normalise(np, read_idx_u8(np, "t10k-images-idx3-ubyte"))
    return x, read_idx_u8(np, "t10k-labels-idx1-ubyte").astype(np.int64)


def normalise(np, img):
    """uint8 [n,28,28] -> float32 [n,1,28,28], (p/255 - mean)/std as common.load_fmnist, in place
    after the one conversion."""
    x = img.astype(np.float32)
    x /= 255.0
    x -= common.MEAN
    x /= common.STD
    return x.reshape(-1, 1, 28, 28)


class Trainer:
    """The client's local training: E epochs of SGD over the shard, batch B, shuffled each
    epoch; --loader as in torch_fedavg.py."""

    def __init__(self, torch, x, y, args, seed):
        self.torch = torch
        self.x, self.y = torch.from_numpy(x), torch.from_numpy(y)
        self.args = args
        self.model = common.make_network(torch)()
        self.g = torch.Generator().manual_seed(seed)

    def set_weights(self, arrays):
        t = self.torch
        self.model.load_state_dict({k: t.from_numpy(a.copy()) for k, a in zip(PARAM_NAMES, arrays)},
                                   strict=True)

    def weights(self):
        sd = self.model.state_dict()
        return [sd[k].detach().numpy().copy() for k in PARAM_NAMES]

    def train(self):
        """Returns (samples, steps, mean loss of the last epoch, wall s, thread CPU s)."""
        t = self.torch
        F = t.nn.functional
        a = self.args
        t0, c0 = time.perf_counter(), time.thread_time()
        self.model.train()
        opt = t.optim.SGD(self.model.parameters(), lr=a.lr)
        n = self.x.shape[0]
        steps = 0
        for _ in range(a.epochs):
            if a.loader == "dataloader":
                batches = t.utils.data.DataLoader(t.utils.data.TensorDataset(self.x, self.y),
                                                  batch_size=a.batch, shuffle=True, generator=self.g)
            else:
                perm = t.randperm(n, generator=self.g)
                batches = ((self.x[i], self.y[i]) for i in
                           (perm[j:j + a.batch] for j in range(0, n, a.batch)))
            loss_sum, nb = 0.0, 0
            for xb, yb in batches:
                opt.zero_grad()
                loss = F.cross_entropy(self.model(xb), yb)
                loss.backward()
                opt.step()
                loss_sum += loss.item()
                nb += 1
                steps += 1
        return n, steps, loss_sum / max(1, nb), time.perf_counter() - t0, time.thread_time() - c0


def import_torch(threads):
    common.pin_threads(threads)
    import numpy as np
    import torch
    torch.set_num_threads(threads)
    return np, torch


def cmd_client(args):
    np, torch = import_torch(args.threads)
    import flwr
    from flwr.client import NumPyClient, start_client

    t0 = time.perf_counter()
    x, y = load_shard(np, args.shard, args.partition, args.seed, args.heldout)
    i = int(args.shard.split("/")[0])
    tr = Trainer(torch, x, y, args, args.seed * 1000 + i)
    print(f"client {args.shard}: {x.shape[0]} training samples ({args.partition}, seed {args.seed}) "
          f"loaded in {time.perf_counter() - t0:.2f} s; flwr {flwr.__version__}", flush=True)
    stats = {"rounds": 0, "train_s": 0.0, "train_cpu_s": 0.0}

    class Client(NumPyClient):
        def get_parameters(self, config):
            return tr.weights()

        def fit(self, parameters, config):
            if stats["rounds"] == 0:
                stats["cpu_first_fit_s"] = cpu_s()
            tr.set_weights(parameters)
            n, steps, loss, wall, cpu = tr.train()
            stats["rounds"] += 1
            stats["train_s"] += wall
            stats["train_cpu_s"] += cpu
            w = tr.weights()
            stats["cpu_rounds_s"] = cpu_s() - stats["cpu_first_fit_s"]  # to this fit's end
            return w, n, {"train_s": wall, "train_cpu_s": cpu, "loss": loss}

    start_client(server_address=f"127.0.0.1:{args.port}", client=Client().to_client(),
                 insecure=True, max_wait_time=args.connect_timeout)
    stats.update({"shard": args.shard, "samples": int(x.shape[0]), "vm_hwm_kib": vm_hwm_kib(),
                  "cpu_s": cpu_s()})
    print("CLIENT " + json.dumps(stats), flush=True)


def cmd_local(args):
    """Every shard trained once, one after the other, in this process: one round's training."""
    np, torch = import_torch(args.threads)
    init = read_safetensors(np, args.init) if args.init else None
    per = []
    for i in range(args.clients):
        x, y = load_shard(np, f"{i}/{args.clients}", args.partition, args.seed, args.heldout)
        tr = Trainer(torch, x, y, args, args.seed * 1000 + i)
        if init:
            tr.set_weights(init)
        n, steps, loss, wall, cpu = tr.train()
        per.append({"samples": n, "steps": steps, "train_s": wall, "train_cpu_s": cpu})
    tot = sum(p["train_s"] for p in per)
    samples = sum(p["samples"] for p in per)
    out = {"script": "flower_fedavg local", "torch": torch.__version__, "clients": args.clients,
           "samples": samples, "train_s": tot, "train_cpu_s": sum(p["train_cpu_s"] for p in per),
           "train_img_per_s": samples * args.epochs / tot, "per_client": per}
    print(f"local training of {args.clients} shards ({samples} samples, {args.epochs} epoch, "
          f"batch {args.batch}, loader {args.loader}): {tot:.2f} s, "
          f"{out['train_img_per_s']:.0f} img/s", flush=True)
    print("JSON " + json.dumps(out), flush=True)


def cmd_server(args):
    # the server needs numpy only (FedAvg); torch is imported for the final evaluation, after
    # the rounds' peak RSS was read, so that the peak is the federation's alone
    common.pin_threads(1)
    import numpy as np
    import flwr
    import grpc
    from flwr.common import ndarrays_to_parameters
    from flwr.server import ServerConfig, start_server
    from flwr.server.strategy import FedAvg

    rec = {"rounds": [], "cpu_first_round_s": None, "cpu_rounds_s": None,
           "vm_hwm_rounds_kib": None}
    R = args.rounds

    class TimedFedAvg(FedAvg):
        def configure_fit(self, server_round, parameters, client_manager):
            # sample() waits until N clients are connected: the round starts after it
            ins = super().configure_fit(server_round, parameters, client_manager)
            if server_round == 1:
                rec["cpu_first_round_s"] = cpu_s()
                rec["busy_first_round_s"] = common.cpu_snapshot()[0]
            rec["rounds"].append({"round": server_round, "start": time.time(), "clients": len(ins)})
            return ins

        def aggregate_fit(self, server_round, results, failures):
            out = super().aggregate_fit(server_round, results, failures)
            r = rec["rounds"][-1]
            r["end"] = time.time()
            r["round_s"] = r["end"] - r["start"]
            r["reports"] = len(results)
            r["failures"] = len(failures)
            ts = [res.metrics["train_s"] for _, res in results]
            r["client_train_s_max"] = max(ts) if ts else 0.0
            r["client_train_s_mean"] = sum(ts) / len(ts) if ts else 0.0
            r["client_train_cpu_s_sum"] = sum(res.metrics["train_cpu_s"] for _, res in results)
            print(f"round {server_round}: {len(results)} reports, {len(failures)} failures, "
                  f"{r['round_s']:.2f} s (slowest client trained {r['client_train_s_max']:.2f} s)",
                  flush=True)
            if server_round == R:
                rec["cpu_to_last_round_s"] = cpu_s()
                rec["cpu_rounds_s"] = rec["cpu_to_last_round_s"] - rec["cpu_first_round_s"]
                rec["machine_busy_rounds_s"] = common.cpu_snapshot()[0] - rec["busy_first_round_s"]
                rec["vm_hwm_rounds_kib"] = vm_hwm_kib()
            return out

    def evaluate_fn(server_round, arrays, config):
        if server_round < R:
            return None  # like our coordinator: no evaluation during the rounds
        import torch
        torch.set_num_threads(1)
        t0 = time.perf_counter()
        xte, yte = load_test(np)
        model = common.make_network(torch)()
        model.load_state_dict({k: torch.from_numpy(a.copy()) for k, a in zip(PARAM_NAMES, arrays)})
        acc, loss, _ = common.evaluate(torch, model, torch.from_numpy(xte), torch.from_numpy(yte))
        rec["final_acc"], rec["final_loss"] = acc, loss
        rec["eval_s"] = time.perf_counter() - t0
        rec["torch"] = torch.__version__
        return loss, {"accuracy": acc}

    init = ndarrays_to_parameters(read_safetensors(np, args.init)) if args.init else None
    strategy = TimedFedAvg(fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=args.clients,
                           min_evaluate_clients=0, min_available_clients=args.clients,
                           evaluate_fn=evaluate_fn, initial_parameters=init)
    print(f"flwr {flwr.__version__} grpcio {grpc.__version__} server on 127.0.0.1:{args.port}, "
          f"{args.clients} clients, {R} rounds", flush=True)
    start_server(server_address=f"127.0.0.1:{args.port}", strategy=strategy,
                 config=ServerConfig(num_rounds=R, round_timeout=args.round_timeout))
    rs = rec["rounds"]
    done = [r for r in rs if "end" in r]
    wall = done[-1]["end"] - done[0]["start"] if done else None
    import google.protobuf
    out = {"script": "flower_fedavg server", "flwr": flwr.__version__, "grpcio": grpc.__version__,
           "protobuf": google.protobuf.__version__, "numpy": np.__version__,
           "torch": rec.get("torch"), "python": sys.version.split()[0],
           "clients": args.clients, "rounds_planned": R, "rounds_done": len(done),
           "wall_s": wall, "s_per_round": wall / len(done) if done else None,
           "final_acc": rec.get("final_acc"), "final_loss": rec.get("final_loss"),
           "eval_s": rec.get("eval_s"), "cpu_rounds_s": rec["cpu_rounds_s"],
           "cpu_to_last_round_s": rec.get("cpu_to_last_round_s"), "cpu_total_s": cpu_s(),
           "machine_busy_rounds_s": rec.get("machine_busy_rounds_s"),
           "vm_hwm_rounds_kib": rec["vm_hwm_rounds_kib"], "vm_hwm_kib": vm_hwm_kib(),
           "init": args.init, "rounds": rs}
    print("JSON " + json.dumps(out), flush=True)
    return 0 if len(done) == R and rec.get("final_acc") is not None else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mode", choices=["server", "client", "local"])
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--clients", type=int, default=10, help="N: clients, all of them every round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--shard", default="0/1", help="client: I/N")
    ap.add_argument("--partition", default="dirichlet:0.5", help="iid or dirichlet:ALPHA")
    ap.add_argument("--seed", type=int, default=1, help="partition seed, as `worker --seed`")
    ap.add_argument("--heldout", type=float, default=0.0, help="as `worker --heldout`")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch", type=int, default=10)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--threads", type=int, default=1, help="torch threads of a client")
    ap.add_argument("--loader", choices=["tensor", "dataloader"], default="tensor",
                    help="tensor: shuffled index slices; dataloader: DataLoader(TensorDataset)")
    ap.add_argument("--init", default=None, help="initial weights (.safetensors, F32)")
    ap.add_argument("--round-timeout", type=float, default=300.0)
    ap.add_argument("--connect-timeout", type=float, default=60.0,
                    help="client: give up when the server cannot be reached for this long")
    args = ap.parse_args()
    if args.mode == "server":
        sys.exit(cmd_server(args))
    if args.mode == "client":
        cmd_client(args)
    else:
        cmd_local(args)


if __name__ == "__main__":
    main()
