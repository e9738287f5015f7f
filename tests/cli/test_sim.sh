#!/bin/sh
# test_sim.sh — command-line tests of `artificien sim` ($AF_BIN): the run folder and its files,
# the --json summary line, report.html (a complete, self-contained document with the charts),
# a same-seed rerun, the 2-rank MPI run against the single-process one (bitwise: per-round
# numbers and the saved model), refusal of bad input with one line, and the scale check
# (10,000 devices, quantity skew, in under 1 GB). Needs Fashion-MNIST, python3 (to read JSON
# and the report) and Open MPI's mpirun (make test installs them). Prints one line per check
# and "N passed, N failed"; exits 1 on any failure.
set -u
BIN=${AF_BIN:-build/artificien}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
pass=0
fail=0
ok() { pass=$((pass + 1)); echo "ok   $1"; }
ko() { fail=$((fail + 1)); echo "FAIL $1"; }
check() { # check NAME CMD...: passes when CMD succeeds
    name=$1
    shift
    if "$@"; then ok "$name"; else ko "$name"; fi
}
# report_check FILE PYTHON-EXPR: evaluates EXPR over FILE (a report.html) read with Python's
# html.parser: text (the raw file), doc (1 if it opens with <!doctype html> and every element
# closes in order up to </html>), svgs (the titles of its <svg> charts, in order), tags (a count
# per tag name), kv (the settings tables: header cell -> value cell), rows (heat-map rows).
report_check() {
    python3 -c 'import collections, re, sys
from html.parser import HTMLParser
VOID = {"meta", "br", "hr", "img", "input", "link"}
class P(HTMLParser):
    def __init__(s):
        super().__init__(convert_charrefs=True)
        s.stack, s.ok, s.doctype, s.ended = [], True, False, False
        s.tags, s.svgs, s.kv, s.cell, s.th, s.text_in_svg = collections.Counter(), [], {}, None, None, None
    def handle_decl(s, d):
        s.doctype = s.doctype or d.lower() == "doctype html"
    def handle_starttag(s, t, a):
        s.tags[t] += 1
        if s.ended: s.ok = False
        if t == "svg": s.text_in_svg = ""
        if t in ("th", "td"): s.cell = ""
        if t not in VOID: s.stack.append(t)
    def handle_startendtag(s, t, a):
        s.tags[t] += 1
    def handle_endtag(s, t):
        if not s.stack or s.stack.pop() != t: s.ok = False
        if t == "html": s.ended = True
        if t == "th": s.th = s.cell
        if t == "td" and s.th is not None: s.kv[s.th] = s.cell; s.th = None
        if t == "text" and s.text_in_svg is not None and s.text_in_svg.strip():
            s.svgs.append(s.text_in_svg.strip()); s.text_in_svg = None
    def handle_data(s, d):
        if s.cell is not None: s.cell += d
        if s.text_in_svg is not None: s.text_in_svg += d
text = open(sys.argv[1]).read()
p = P(); p.feed(text); p.close()
doc = int(p.doctype and p.ok and p.ended and not p.stack and text.rstrip().endswith("</html>"))
svgs, tags, kv = p.svgs, p.tags, p.kv
rows = len(re.findall(r">device [0-9]+</text>", text))
sys.exit(0 if eval(sys.argv[2]) else 1)' "$1" "$2"
}
# no_external FILE: nothing a browser would fetch (no src/href, url(), @import) and no http(s)
# address but the SVG namespace name in xmlns, which is an identifier, never loaded
no_external() {
    [ -s "$1" ] && ! sed "s|xmlns='http://www.w3.org/2000/svg'||g" "$1" | grep -Eqi "https?://|src=|href=|url\\(|@import"
}

# json_check FILE PYTHON-EXPR: evaluates EXPR with j = FILE's JSON (the whole file, or else
# the object on its last line, as after --json)
json_check() {
    python3 -c 'import json, sys
t = open(sys.argv[1]).read().strip()
try:
    j = json.loads(t)
except ValueError:
    j = json.loads(t.splitlines()[-1])
sys.exit(0 if eval(sys.argv[2]) else 1)' "$1" "$2" 2>/dev/null
}

# ---- a small run and its files ----
R1="$TMP/run1"
"$BIN" sim --limit 3000 --clients 20 --rounds 2 --seed 3 --out "$R1" --json >"$TMP/r1.out" 2>"$TMP/r1.err"
check "sim exits 0" [ $? = 0 ]
for f in rounds.csv partition.csv balance.json model.safetensors config.json report.html; do
    check "RUN_DIR has $f" [ -s "$R1/$f" ]
done
header=$(head -n 1 "$R1/rounds.csv")
cols_ok=1
for col in round selected reported dropped train_loss test_loss test_accuracy device_acc_mean \
    device_acc_p10 device_acc_min seconds bytes_down bytes_up; do
    case ",$header," in *",$col,"*) ;; *) cols_ok=0; echo "  rounds.csv lacks column $col" ;; esac
done
check "rounds.csv has every column" [ "$cols_ok" = 1 ]
check "rounds.csv has a header and 2 rows" [ "$(wc -l <"$R1/rounds.csv")" = 3 ]
check "rounds.csv rows have as many fields as the header" python3 -c '
import csv, sys
rows = list(csv.reader(open(sys.argv[1])))
sys.exit(0 if all(len(r) == len(rows[0]) for r in rows) and rows[2][0] == "2" else 1)' "$R1/rounds.csv"
check "partition.csv has a header and 20 devices" [ "$(wc -l <"$R1/partition.csv")" = 21 ]
check "balance.json is JSON with 20 device skews" json_check "$R1/balance.json" \
    'len(j["device_skew"]) == 20 and j["devices"] == 20 and 0 <= j["skew"]["max"] <= 1'
check "config.json is JSON with the run's options" python3 -c '
import json, sys
j = json.load(open(sys.argv[1]))
sys.exit(0 if j["clients"] == 20 and j["rounds"] == 2 and j["seed"] == 3 and j["limit"] == 3000 else 1)' "$R1/config.json"
check "last stdout line is the JSON summary" json_check "$TMP/r1.out" \
    'len(j["rounds"]) == 2 and j["rounds"][1]["round"] == 2 and all(k in j["rounds"][0] for k in ("test_accuracy", "test_loss", "seconds")) and 0 <= j["final_accuracy"] <= 1 and j["clients"] == 20 and j["seconds_per_round"] > 0 and j["peak_rss_mb"] > 0'
check "a progress line per round on stderr" [ "$(grep -c '^round [12]/2: ' "$TMP/r1.err")" = 2 ]
check "safetensors header names conv1.weight" grep -q 'conv1.weight' "$R1/model.safetensors"

# ---- report.html: a complete document with the charts, self-contained ----
check "report.html is a complete HTML document (doctype, every element closed, ends with </html>)" \
    report_check "$R1/report.html" 'doc == 1'
check "report.html draws the round charts and the label balance as inline SVG" \
    report_check "$R1/report.html" 'svgs == ["Accuracy", "Loss", "Devices per round", "Population label histogram", "Device skew", "Label mix per device"] and tags["svg"] == 6 and tags["polyline"] >= 9 and tags["circle"] >= 18'
check "report.html names the strategy, partition and devices" \
    report_check "$R1/report.html" 'kv["strategy"] == "fedavg" and kv["partition"].startswith("iid ") and kv["devices"] == "20" and kv["rounds"] == "2"'
check "report.html has the skew numbers of balance.json" python3 -c '
import json, re, sys
b = json.load(open(sys.argv[1]))["skew"]
m = re.search(r"skew mean, median, p90, max</th><td class=.k.>([^<]*)<", open(sys.argv[2]).read())
sys.exit(0 if m and all(abs(float(v) - b[k]) < 1e-4 for v, k in zip(m.group(1).split(","), ("mean", "p50", "p90", "max"))) else 1)' \
    "$R1/balance.json" "$R1/report.html"
check "report.html: a heat-map row per device (20 devices)" report_check "$R1/report.html" 'rows == 20'
check "report.html has no external reference (no http(s)://, src, href, url())" no_external "$R1/report.html"

# more devices than the heat map shows: sampled evenly, and the report says so; DP and
# secure aggregation on: their settings and the epsilon chart
R2="$TMP/run2"
"$BIN" sim --limit 3000 --clients 120 --rounds 2 --per-round 12 --eval-every 0 --partition shards:2 \
    --strategy fedprox --strategy-opts mu=0.01 --dp-clip 1 --dp-noise 1 --dp-adaptive-quantile 0.5 --secagg \
    --seed 4 --quiet --out "$R2" >/dev/null 2>"$TMP/r2.err"
rc=$?
check "sim with DP and secagg exits 0 and writes report.html" [ $rc = 0 -a -s "$R2/report.html" ]
[ $rc = 0 ] || { echo "  sim stderr:"; tail -n 5 "$TMP/r2.err"; }
check "report.html under DP: epsilon and clip charts, settings named" report_check "$R2/report.html" \
    'doc == 1 and svgs[:5] == ["Accuracy", "Loss", "Devices per round", "Privacy spent", "Clip norm"] and kv["strategy"] == "fedprox mu=0.01" and kv["partition"].startswith("shards:2") and kv["devices per round"] == "12" and "quantile 0.5" in kv["differential privacy"] and kv["secure aggregation"].startswith("threshold") and kv["evaluation"] == "the last round only"'
check "report.html with 120 devices: 50 heat-map rows, sampling said" report_check "$R2/report.html" \
    'rows == 50 and "50 of the 120 devices" in text and ">device 0<" in text and ">device 117<" in text'
check "report.html under DP has no external reference" no_external "$R2/report.html"

# same command, same seed: the same model, byte for byte
"$BIN" sim --limit 3000 --clients 20 --rounds 2 --seed 3 --out "$TMP/run1b" --json >"$TMP/r1b.out" 2>/dev/null
check "same seed reruns to the same model bytes" cmp -s "$R1/model.safetensors" "$TMP/run1b/model.safetensors"

# ---- MPI: 2 ranks give bitwise what 1 process gives ----
# plm isolated: launch locally without ssh (containers have none); btl self,vader: shared
# memory only; single_copy none: CMA/ptrace is often forbidden in containers. Leak checking
# is off for this run: Open MPI's own allocations at exit are not ours (ASan builds).
MPIRUN=$(command -v mpirun || true)
SIMARGS="--limit 3000 --clients 20 --frac 0.3 --rounds 3 --strategy scaffold --dropout 0.2 --seed 5 --json --quiet"
"$BIN" sim $SIMARGS --threads 2 --out "$TMP/single" >"$TMP/single.out" 2>"$TMP/single.err"
if [ -z "$MPIRUN" ]; then
    ko "mpirun -n 2 matches 1 process (mpirun not found: apt-get install openmpi-bin libopenmpi-dev, then rebuild)"
else
    fail0=$fail
    ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0 timeout 300 \
        "$MPIRUN" --allow-run-as-root --oversubscribe --mca plm isolated --mca btl self,vader \
        --mca btl_vader_single_copy_mechanism none -n 2 \
        "$BIN" sim $SIMARGS --out "$TMP/mpi" >"$TMP/mpi.out" 2>"$TMP/mpi.err"
    rc=$?
    check "mpirun -n 2 sim exits 0" [ $rc = 0 ]
    check "mpirun -n 2 runs as 2 ranks (binary built with MPI)" json_check "$TMP/mpi.out" 'j["mpi_ranks"] == 2'
    check "only rank 0 prints the summary" [ "$(grep -c final_accuracy "$TMP/mpi.out")" = 1 ]
    check "mpirun -n 2: same per-round numbers as 1 process" python3 -c '
import json, sys
a, b = (json.loads(open(f).read().strip().splitlines()[-1]) for f in sys.argv[1:3])
strip = lambda j: [{k: v for k, v in r.items() if k != "seconds"} for r in j["rounds"]]
sys.exit(0 if strip(a) == strip(b) and a["final_accuracy"] == b["final_accuracy"] and a["rounds"][-1]["reported"] > 0 else 1)' \
        "$TMP/single.out" "$TMP/mpi.out"
    check "mpirun -n 2: bitwise the same model.safetensors" cmp -s "$TMP/single/model.safetensors" "$TMP/mpi/model.safetensors"
    [ "$fail" = "$fail0" ] || { echo "  mpirun stderr:"; tail -n 20 "$TMP/mpi.err"; }
fi

# ---- Byzantine devices: 20% sign flippers wreck FedAvg, not the coordinate-wise median ----
BYZ="--limit 6000 --clients 20 --per-round 10 --rounds 8 --local-epochs 2 --eval-every 0 --threads 2 --quiet --json"
"$BIN" sim $BYZ --strategy fedavg >"$TMP/byz0.out" 2>"$TMP/byz0.err"
"$BIN" sim $BYZ --strategy fedavg --byzantine 0.2 --out "$TMP/byz1" >"$TMP/byz1.out" 2>"$TMP/byz1.err"
"$BIN" sim $BYZ --strategy fedmedian --byzantine 0.2:signflip >"$TMP/byz2.out" 2>"$TMP/byz2.err"
check "--byzantine 0.2: FedAvg falls far below the clean run, fedmedian stays near it" python3 -c '
import json, sys
acc = [json.loads(open(f).read().strip().splitlines()[-1])["final_accuracy"] for f in sys.argv[1:4]]
print("  clean fedavg %.4f, attacked fedavg %.4f, attacked fedmedian %.4f" % tuple(acc))
sys.exit(0 if acc[0] > 0.6 and acc[1] < 0.3 and acc[2] > acc[0] - 0.12 else 1)' \
    "$TMP/byz0.out" "$TMP/byz1.out" "$TMP/byz2.out"
check "--byzantine is in config.json" python3 -c '
import json, sys
j = json.load(open(sys.argv[1]))
sys.exit(0 if j["byzantine"] == 0.2 and j["byzantine_mode"] == "signflip" else 1)' "$TMP/byz1/config.json"

# ---- bad input: non-zero exit, one line, nothing written ----
bad() { # bad NAME ARGS...
    name=$1
    shift
    "$BIN" sim --limit 3000 --clients 20 --rounds 1 "$@" --out "$TMP/bad" >"$TMP/bad.out" 2>"$TMP/bad.err"
    rc=$?
    if [ $rc -ne 0 ] && [ $rc -lt 128 ] && [ "$(wc -l <"$TMP/bad.err")" = 1 ] && [ ! -s "$TMP/bad.out" ] &&
        [ ! -e "$TMP/bad" ]; then
        ok "refuses $name: $(cat "$TMP/bad.err")"
    else
        ko "refuses $name (exit $rc): $(cat "$TMP/bad.err")"
    fi
}
bad "more devices than samples" --clients 3001
bad "dirichlet:0" --partition dirichlet:0
bad "labels:11" --partition labels:11
bad "an unknown partition" --partition zipf:1
bad "an unknown strategy" --strategy fedfoo
bad "an unknown strategy option" --strategy fedprox --strategy-opts nu=1
bad "--frac 0" --frac 0
bad "--frac 1.5" --frac 1.5
bad "an unknown option" --bogus 1
bad "a non-number" --rounds x
bad "--byzantine 1" --byzantine 1
bad "--byzantine with an unknown mode" --byzantine 0.2:flip
bad "krum with f too large for the round (m <= 2f+2)" --strategy krum --strategy-opts f=1 --per-round 4
bad "fedtrimmedavg beta=0.5" --strategy fedtrimmedavg --strategy-opts beta=0.5
bad "fedmedian with DP" --strategy fedmedian --dp-clip 1
bad "krum with secure aggregation" --strategy krum --per-round 5 --secagg

# ---- scale: 10,000 devices (quantity skew) over the whole training set in under 1 GB ----
start=$(date +%s)
"$BIN" sim --clients 10000 --partition quantity:1 --per-round 100 --rounds 5 --eval-every 0 \
    --quiet --json >"$TMP/scale.out" 2>"$TMP/scale.err"
check "10,000 devices, 100 per round, 5 rounds: exits 0" [ $? = 0 ]
check "10,000 devices: peak RSS < 1024 MB ($(sed -n 's/.*"peak_rss_mb": \([0-9.]*\).*/\1/p' "$TMP/scale.out") MB, $(($(date +%s) - start)) s)" \
    json_check "$TMP/scale.out" 'j["clients"] == 10000 and len(j["rounds"]) == 5 and all(r["reported"] == 100 for r in j["rounds"]) and 0 < j["peak_rss_mb"] < 1024 and 0 <= j["final_accuracy"] <= 1'

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
