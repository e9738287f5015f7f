#!/bin/sh
# test_e2e.sh — federated learning end to end over HTTP on loopback: a coordinator
# (`artificien serve`, port 0, fresh database) and 10 worker processes on a Dirichlet(0.5)
# split of Fashion-MNIST run the CNN project for 10 rounds (FedAvg, 2 local epochs, batch 10,
# SGD lr 0.05); the pulled model must reach >= 0.80 test accuracy and load in plain Python
# (struct + json), and in PyTorch when /usr/bin/python3 has torch. Also: federated
# evaluation adds up, tokens are kept 0600, everything stops cleanly on SIGTERM.
# POSIX sh; AF_BIN is the binary (tests/run.sh sets it). One line per check, then
# "N passed, N failed"; exits 1 on any failure. Every process it starts is stopped on exit.
cd "$(dirname "$0")/../.." || exit 1
. tests/cli/fl_lib
trap fl_cleanup EXIT
trap 'exit 1' INT TERM
fl_watchdog 600
FL_DB="$FL_DIR/a.db"
N=10
MIN_ACC=0.80
WOPTS=""
if [ "$FL_SLOW" = 1 ]; then
    # a sanitizer build: 1,000 training samples per device; the accuracy bar follows
    MIN_ACC=0.70
    WOPTS="--max-samples 1000"
    echo "note sanitizer build: each device keeps 1,000 training samples, accuracy bar $MIN_ACC"
fi

check "coordinator listens on a free loopback port" fl_serve "$FL_DB" 127.0.0.1:0 "$FL_DIR/serve.log"
case "$FL_URL" in http://127.0.0.1:[0-9]*) ok "URL is $FL_URL" ;; *) ko "URL '$FL_URL'"; finish; exit 1 ;; esac
id=$(fl_project e2e '{"strategy": "fedavg", "rounds": 10, "devices_per_round": 10, "min_reports": 8,
  "over_selection": 1.3, "round_deadline_s": 60, "local_epochs": 2, "batch": 10,
  "optimizer": "sgd", "lr": 0.05, "dataset": "fashion-mnist"}')
check "owner and project created (id '$id')" test -n "$id"
[ -n "$id" ] || { tail -n 20 "$FL_DIR/serve.log"; finish; exit 1; }

i=0
# shellcheck disable=SC2086
while [ $i -lt $N ]; do fl_worker w$i $i/$N dirichlet:0.5 $WOPTS; i=$((i + 1)); done
t0=$(date +%s)
check "the project is done within 400 s" fl_wait_for 400 "$id" 's["status"] == "done"'
echo "     10 rounds took $(($(date +%s) - t0)) s with $N workers"
st=$FL_ST
check "10 committed rounds" test "$(printf '%s' "$st" | jget 'sum(r["state"] == "committed" for r in s["rounds"])')" = 10
check "every committed round had >= 8 reports" test "$(printf '%s' "$st" | jget 'all(r["reports"] >= 8 for r in s["rounds"] if r["state"] == "committed")')" = True
check "federated evaluation improves (round 10 vs round 1)" test "$(printf '%s' "$st" | jget '[r for r in s["rounds"] if r["state"] == "committed"][-1]["eval_accuracy"] > [r for r in s["rounds"] if r["state"] == "committed"][0]["eval_accuracy"] + 0.3')" = True
check "every committed round reports the devices' own accuracy spread (min <= p10 <= mean <= max, >= 8 devices)" test "$(printf '%s' "$st" | jget 'all(r["device_accuracy"]["devices"] >= 8 and r["device_accuracy"]["min"] <= r["device_accuracy"]["p10"] <= r["device_accuracy"]["mean"] <= r["device_accuracy"]["max"] for r in s["rounds"] if r["state"] == "committed")')" = True
check "population confusion matrix counts the last round's held-out samples" test "$(printf '%s' "$st" | jget 'sum(map(sum, s["population_confusion"])) == [r for r in s["rounds"] if r["state"] == "committed"][-1]["eval_samples"] > 0')" = True

model="$FL_DIR/model.safetensors"
check "project pull writes the model" "$AF_BIN" project pull --server "$FL_URL" --key-file "$FL_DIR/owner.key" "$id" --out "$model"
check "pull leaves no temporary file" test -z "$(ls "$FL_DIR" | grep '\.tmp')"
acc=$("$AF_BIN" eval --model "$model" --data fashion-mnist --json | sed -n 's/.*"accuracy": *\([0-9.]*\).*/\1/p')
echo "     test accuracy after 10 rounds: $acc"
check "test accuracy >= $MIN_ACC (got $acc)" awk -v a="$acc" -v m="$MIN_ACC" 'BEGIN { exit !(a != "" && a >= m) }'
check "the round-10 checkpoint is the latest one" "$AF_BIN" project pull --server "$FL_URL" --key-file "$FL_DIR/owner.key" "$id" --round 10 --out "$FL_DIR/r10.safetensors"
check "  ... byte for byte" cmp -s "$model" "$FL_DIR/r10.safetensors"

# plain Python: the PyTorch state_dict names and shapes, F32, finite values
check "the pulled safetensors loads in plain Python (struct + json)" python3 - "$model" <<'EOF'
import json, math, struct, sys
buf = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", buf[:8])[0]
header = json.loads(buf[8:8 + n])
meta = header.pop("__metadata__", {})
want = {"conv1.weight": [6, 1, 5, 5], "conv1.bias": [6], "conv2.weight": [12, 6, 5, 5],
        "conv2.bias": [12], "fc1.weight": [120, 192], "fc1.bias": [120], "fc2.weight": [60, 120],
        "fc2.bias": [60], "out.weight": [10, 60], "out.bias": [10]}
assert {k: v["shape"] for k, v in header.items()} == want, header
total = 0
for k, v in header.items():
    assert v["dtype"] == "F32"
    b, e = v["data_offsets"]
    vals = struct.unpack("<%df" % ((e - b) // 4), buf[8 + n + b: 8 + n + e])
    assert all(math.isfinite(x) for x in vals), k
    total += len(vals)
assert total == 32998, total
assert 8 + n + max(v["data_offsets"][1] for v in header.values()) == len(buf)
json.loads(meta["spec"])
EOF

# PyTorch, when this machine has it: the tutorial CNN loads the state_dict and classifies the
# test set as well as our evaluation said
if /usr/bin/python3 -c 'import torch' 2>/dev/null; then
    check "the pulled model loads in PyTorch and scores within 0.005 of ours" /usr/bin/python3 - "$model" "$acc" <<'EOF'
import gzip, json, os, struct, sys
import torch, torch.nn as nn, torch.nn.functional as F
buf = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", buf[:8])[0]
header = json.loads(buf[8:8 + n]); header.pop("__metadata__", None)
state = {k: torch.frombuffer(bytearray(buf[8 + n + v["data_offsets"][0]: 8 + n + v["data_offsets"][1]]),
                             dtype=torch.float32).reshape(v["shape"]) for k, v in header.items()}
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5); self.conv2 = nn.Conv2d(6, 12, 5)
        self.fc1 = nn.Linear(192, 120); self.fc2 = nn.Linear(120, 60); self.out = nn.Linear(60, 10)
    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2, 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2, 2)
        return self.out(F.relu(self.fc2(F.relu(self.fc1(x.flatten(1))))))
net = Net(); net.load_state_dict(state, strict=True)
d = os.environ.get("ARTIFICIEN_DATA") or "/usr/share/datasets/fashion-mnist"
def idx(name):
    p = os.path.join(d, name)
    raw = gzip.open(p + ".gz").read() if os.path.exists(p + ".gz") else open(p, "rb").read()
    nd = raw[3]; dims = struct.unpack(">%dI" % nd, raw[4:4 + 4 * nd])
    return torch.frombuffer(bytearray(raw[4 + 4 * nd:]), dtype=torch.uint8).reshape(dims)
x = (idx("t10k-images-idx3-ubyte").float() / 255 - 0.2860) / 0.3530
y = idx("t10k-labels-idx1-ubyte").long()
with torch.no_grad():
    acc = (net(x.unsqueeze(1)).argmax(1) == y).float().mean().item()
print("     PyTorch test accuracy %.4f" % acc)
assert abs(acc - float(sys.argv[2])) <= 0.005, acc
EOF
else
    echo "note PyTorch check not run: /usr/bin/python3 has no torch (apt-get install python3-torch)"
fi

perms=$(for i in 0 1 2; do stat -c %a "$FL_DIR/w$i.token"; done | sort -u)
check "device tokens are kept in 0600 files" test "$perms" = 600
rss=$(cat "$FL_DIR"/w*.log | sed -n 's/.*rss \([0-9]*\) MiB (peak \([0-9]*\)).*/\1 \2/p' | sort -n | tail -n 1)
echo "     largest worker RSS during a round: ${rss%% *} MiB (peak since start ${rss##* } MiB)"
[ "$FL_SLOW" = 1 ] || check "worker RSS during a round < 100 MiB" test -n "$rss" -a "${rss%% *}" -lt 100

# clean shutdown: workers and the coordinator exit 0 on SIGTERM
kill $FL_WPIDS 2>/dev/null
st_all=0
for p in $FL_WPIDS; do
    n=0; while kill -0 "$p" 2>/dev/null && [ $n -lt 100 ]; do sleep 0.1; n=$((n + 1)); done
    wait "$p"; s=$?; [ "$s" = 0 ] || st_all=$s
done
check "workers exit 0 on SIGTERM" test "$st_all" = 0
check "workers said they stopped" test "$(grep -l 'stopped after' "$FL_DIR"/w*.log | wc -l)" = $N
kill "$FL_SPID"
n=0; while kill -0 "$FL_SPID" 2>/dev/null && [ $n -lt 100 ]; do sleep 0.1; n=$((n + 1)); done
wait "$FL_SPID"; s=$?
check "coordinator exits 0 on SIGTERM" test "$s" = 0
check "no sanitizer report in any log" test -z "$(grep -l 'Sanitizer\|runtime error' "$FL_DIR"/*.log)"
[ "$fail" = 0 ] || { echo "--- coordinator log"; tail -n 20 "$FL_DIR/serve.log"; echo "--- worker 0"; tail -n 5 "$FL_DIR/w0.log"; }
finish
