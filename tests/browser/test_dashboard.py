#!/usr/bin/env python3
"""test_dashboard.py — the web dashboard in a real browser (headless Debian chromium driven by
Playwright): starts `build/artificien serve` on a temporary database, creates an owner and
projects through the HTTP API (one with DP and two committed rounds with federated
evaluation, one with an abandoned round, one whose name is an HTML injection attempt), runs
devices' reports from Python (a strong and a weak device, so that the coordinator's per-device
accuracy spread differs from the pooled accuracy), then loads the page and checks what a model
owner sees: sign-in errors, the project list, progress, open round, charts (pooled accuracy
with the devices' mean, p10 and min), rounds table, confusion matrix, live refresh, network
errors, sign-out, a phone-width layout, and (with mocked API replies) the secure-aggregation
phases, a secure round without per-device accuracies, and label statistics. Fails on any
console error it did not expect.

Not part of `make test`: run tests/browser/run.sh (installs chromium and playwright first).
Never downloads a browser: it launches /usr/bin/chromium (or $CHROMIUM).
"""
import json
import os
import re
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

from playwright.sync_api import sync_playwright, expect

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("ARTIFICIEN", os.path.join(ROOT, "build", "artificien"))
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
SHOTS = os.environ.get("DASH_SCREENSHOTS")  # a folder: save screenshots there to look at

SPEC = {"name": "toy", "input": [4], "classes": 3,
        "layers": [{"type": "linear", "name": "fc", "in_features": 4, "out_features": 3}]}
EVIL = "<img src=x onerror=\"document.title='pwned'\"> & <b>bold</b>"


# ---- a tiny HTTP client for the API --------------------------------------------------------

class Api:
    def __init__(self, base):
        self.base = base

    def call(self, method, path, token=None, body=None, ctype="application/json"):
        data = None
        headers = {}
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            headers["Content-Type"] = ctype
        if token:
            headers["Authorization"] = "Bearer " + token
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")


def update_body(attempt, n, loss, correct, total, confusion, delta=0.01):
    """A safetensors update for SPEC: fc.weight [3,4] and fc.bias [3], F32, with metadata."""
    w = struct.pack("<12f", *([delta] * 12))
    b = struct.pack("<3f", *([delta] * 3))
    header = {
        "__metadata__": {"attempt": str(attempt), "num_samples": str(n), "loss": str(loss),
                         "eval_samples": str(total), "eval_correct": str(correct),
                         "eval_loss": str(loss * 1.1), "eval_confusion": json.dumps(confusion)},
        "fc.weight": {"dtype": "F32", "shape": [3, 4], "data_offsets": [0, 48]},
        "fc.bias": {"dtype": "F32", "shape": [3], "data_offsets": [48, 60]},
    }
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + w + b


def start_server(tmp):
    db = os.path.join(tmp, "dash.db")
    proc = subprocess.Popen([BIN, "serve", "--db", db, "--listen", "127.0.0.1:0",
                             "--retry-after", "0.2"],
                            stdout=subprocess.PIPE, stderr=open(os.path.join(tmp, "serve.log"), "w"),
                            text=True)
    deadline = time.time() + 20
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        m = re.match(r"listening on (http://\S+)", line.strip())
        if m:
            return proc, m.group(1), db
    proc.kill()
    raise RuntimeError("serve did not start; see " + os.path.join(tmp, "serve.log"))


def read1(path):
    with open(path) as f:
        return f.readline().strip()


def device(api, secret, dataset):
    st, j = api.call("POST", "/v1/devices", body={
        "secret": secret,
        "dataset": {"name": dataset, "kind": "tabular", "shape": [4], "classes": 3}})
    assert st == 201, (st, j)
    return j["token"]


def checkin(api, token):
    st, j = api.call("POST", "/v1/checkin", token, {})
    assert st == 200 and j.get("action") == "train", (st, j)
    return j["task"]


# Even-numbered devices are strong (24 of 30 right, 80 %), odd ones weak (6 of 10, 60 %): each
# committed round of project A has one of each, so pooled accuracy is 30/40 = 75 % while the
# devices' own accuracies are 80 % and 60 % (mean 70 %, p10 62 % interpolated, min 60 %).
STRONG = [[9, 1, 0], [2, 7, 1], [1, 1, 8]]
WEAK = [[2, 1, 1], [1, 2, 0], [0, 1, 2]]


def report(api, token, task, i):
    conf = WEAK if i % 2 else STRONG
    correct = sum(conf[k][k] for k in range(3))
    total = sum(map(sum, conf))
    body = update_body(task["attempt"], 50 + i, 1.0 / (1 + i), correct, total, conf)
    st, j = api.call("POST", task["report"], token, body, "application/octet-stream")
    assert st == 200, (st, j)


def setup(api, admin, secret):
    st, j = api.call("POST", "/v1/owners", admin, {"name": "acme"})
    assert st == 201, (st, j)
    key = j["api_key"]
    plan = {"rounds": 3, "devices_per_round": 2, "min_reports": 2, "over_selection": 1,
            "round_deadline_s": 600, "dataset": "toy", "dp_clip": 1.0, "dp_noise": 1.0,
            "dp_population": 100}
    st, j = api.call("POST", "/v1/projects", key, {"name": "cnn-dp", "spec": SPEC, "plan": plan})
    assert st == 201, (st, j)
    pa = j["id"]
    plan_b = {"rounds": 2, "devices_per_round": 2, "min_reports": 2, "over_selection": 1,
              "round_deadline_s": 0.5, "dataset": "toy2"}
    st, j = api.call("POST", "/v1/projects", key, {"name": "short-deadline", "spec": SPEC, "plan": plan_b})
    assert st == 201, (st, j)
    pb = j["id"]
    st, j = api.call("POST", "/v1/projects", key,
                     {"name": EVIL, "spec": SPEC, "plan": {"rounds": 1, "dataset": "none"}})
    assert st == 201, (st, j)
    pc = j["id"]
    devs = [device(api, secret, "toy") for _ in range(3)]
    # two committed rounds of project A
    for rnd in range(2):
        for i, d in enumerate(devs[:2]):
            task = checkin(api, d)
            assert task["project"] == pa and task["round"] == rnd + 1, task
            report(api, d, task, i + rnd)
    # the coordinator computed each round's spread of device accuracies from the reports
    st, j = api.call("GET", "/v1/projects/%d" % pa, key)
    assert st == 200 and len(j["rounds"]) == 2, (st, j)
    for r in j["rounds"]:
        da = r["device_accuracy"]
        assert da and da["devices"] == 2 and abs(da["min"] - 0.6) < 1e-9 and \
            abs(da["mean"] - 0.7) < 1e-9 and abs(da["p10"] - 0.62) < 1e-9 and \
            abs(r["eval_accuracy"] - 0.75) < 1e-9, r
    # round 3 open: one device selected, no report yet
    live = checkin(api, devs[2])
    # project B: one device selected, nobody reports before the deadline: abandoned
    d2 = device(api, secret, "toy2")
    t2 = checkin(api, d2)
    assert t2["project"] == pb, t2
    for _ in range(100):
        st, j = api.call("GET", "/v1/projects/%d" % pb, key)
        if j["rounds"]:
            break
        time.sleep(0.1)
    assert j["rounds"] and j["rounds"][0]["state"] == "abandoned", j
    return key, pa, pb, pc, devs[2], live


# ---- mocked replies for what needs device crypto (secure aggregation, label statistics) -----

MOCK_LIST = {"projects": [{"id": 77, "name": "labels", "status": "done", "round": None, "version": 0},
                          {"id": 78, "name": "secure", "status": "running", "round": 2, "version": 1}]}
MOCK_STATS = {"id": 77, "name": "labels", "status": "done", "spec": SPEC, "params": 15, "version": 0,
              "plan": {"strategy": "fedavg", "rounds": 1, "devices_per_round": 20, "min_reports": 16,
                       "over_selection": 1.3, "round_deadline_s": 60, "dataset": "toy", "seed": 1,
                       "kind": "label_stats", "stats_bound": 100, "stats_noise": 1, "dp_delta": 1e-5,
                       "secagg": True, "secagg_threshold": 16},
              "epsilon": None, "round": None, "population_confusion": None,
              "rounds": [{"number": 1, "attempt": 1, "state": "committed", "version": 0, "selected": 26,
                          "reports": 20, "refused": 0, "opened_at": 1.7e9, "deadline_at": 1.7e9 + 60,
                          "train_loss": None, "eval_accuracy": None, "eval_loss": None,
                          "eval_samples": 0, "closed_at": 1.7e9 + 30}],
              "label_stats": {"devices": 20, "count": [1800.5, 2100.2, 1500.3],
                              "share": [0.333, 0.389, 0.278], "share_std": [0.006, 0.0061, 0.0059],
                              "count_std": 31.6, "total": 5401, "tv_uniform": 0.056, "tv_noise": 0.005,
                              "epsilon": 4.3, "delta": 1e-5, "z": 1, "bound": 100}}
MOCK_SECURE = {"id": 78, "name": "secure", "status": "running", "spec": SPEC, "params": 15, "version": 0,
               "plan": {"strategy": "fedavg", "rounds": 5, "devices_per_round": 10, "min_reports": 8,
                        "over_selection": 1.3, "round_deadline_s": 60, "dataset": "toy", "seed": 1,
                        "local_epochs": 1, "batch": 10, "optimizer": "sgd", "lr": 0.05, "momentum": 0,
                        "eval_every": 1, "secagg": True, "secagg_threshold": 9},
               "epsilon": None, "population_confusion": None,
               "rounds": [{"number": 1, "attempt": 1, "state": "committed", "version": 0, "selected": 13,
                           "reports": 10, "refused": 0, "opened_at": 1.7e9, "deadline_at": 1.7e9 + 60,
                           "train_loss": 0.9, "eval_accuracy": 0.81, "eval_loss": 0.95,
                           "eval_samples": 300, "closed_at": 1.7e9 + 40, "device_accuracy": None}],
               "round": {"number": 2, "attempt": 1, "state": "open", "version": 0, "selected": 13,
                         "reports": 0, "refused": 0, "opened_at": time.time() - 5,
                         "deadline_at": time.time() + 55, "phase": "masked_input",
                         "secagg": {"u1": 13, "u2": 12, "u3": 4, "unmasked": 0}}}


def table_cells(page, row):
    """{header: cell text} of the rounds table's row-th body row (0 = newest)."""
    t = page.locator("#detail table:not(.heat)")
    heads = [h.strip() for h in t.locator("thead th").all_inner_texts()]
    cells = [c.strip() for c in t.locator("tbody tr").nth(row).locator("td").all_inner_texts()]
    assert len(heads) == len(cells), (heads, cells)
    return dict(zip(heads, cells))


def shot(page, name):
    if SHOTS:
        os.makedirs(SHOTS, exist_ok=True)
        page.screenshot(path=os.path.join(SHOTS, name + ".png"), full_page=True)


def main():
    if not os.path.exists(BIN):
        print("missing %s: run `make` first" % BIN)
        return 1
    tmp = tempfile.mkdtemp(prefix="dash-browser-")
    proc, base, db = start_server(tmp)
    api = Api(base)
    failures = []

    def step(name, fn):
        try:
            fn()
            print("ok   " + name)
        except Exception as e:  # one failed step does not hide the others
            failures.append(name)
            print("FAIL %s: %s" % (name, " | ".join(str(e).splitlines()[:4]) if str(e) else repr(e)))

    try:
        key, pa, pb, pc, live_dev, live_task = setup(api, read1(db + ".admin-key"), read1(db + ".enroll-secret"))
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
            ctx = browser.new_context(viewport={"width": 1280, "height": 900})
            page = ctx.new_page()
            errors, expected = [], []
            allow = {"on": False}

            def on_console(m):
                if m.type == "error":
                    (expected if allow["on"] else errors).append(m.text)
            page.on("console", on_console)
            page.on("pageerror", lambda e: errors.append("uncaught: %s" % e))
            page.on("dialog", lambda d: (errors.append("dialog: " + d.message), d.dismiss()))

            page.goto(base + "/")

            def login_wrong_key():
                expect(page.locator("#login")).to_be_visible()
                allow["on"] = True  # the browser logs the 401 itself
                page.fill("#key", "f" * 64)
                page.click("#loginForm button")
                expect(page.locator("#loginErr")).to_contain_text("401")
                expect(page.locator("#app")).to_be_hidden()
                allow["on"] = False
                page.fill("#key", "not a key")
                page.click("#loginForm button")
                expect(page.locator("#loginErr")).to_contain_text("no spaces")
            step("a wrong key gets a clear 401 message", login_wrong_key)

            def login_admin_key():
                allow["on"] = True
                page.fill("#key", read1(db + ".admin-key"))
                page.click("#loginForm button")
                expect(page.locator("#loginErr")).to_contain_text("403")
                allow["on"] = False
            step("the admin key is told it is not an owner key (403)", login_admin_key)

            def login_and_list():
                page.fill("#key", key)
                page.click("#loginForm button")
                expect(page.locator("#plist li")).to_have_count(3)
                names = page.locator("#plist .pname").all_inner_texts()
                assert names == ["cnn-dp", "short-deadline", EVIL], names
                assert page.locator("#plist img, #detail img, #plist b").count() == 0
                assert page.title() == "Artificien dashboard", page.title()
                assert page.evaluate("sessionStorage.getItem('artificien.dashboard.key')") == key
                expect(page.locator("#connText")).to_contain_text("Live")
            step("the owner key lists the projects, names as plain text", login_and_list)

            def project_a():
                expect(page.locator("#detail h1")).to_have_text("cnn-dp")
                assert page.url.endswith("#project=%d" % pa), page.url
                expect(page.locator("#detail .big").first).to_have_text("2 / 3")
                expect(page.locator("#detail")).to_contain_text("Round 3, attempt 1")
                expect(page.locator("#detail")).to_contain_text("0 of 2")
                expect(page.locator(".countdown")).to_contain_text("closes in")
                expect(page.locator("#detail")).to_contain_text("Privacy spent: ε =")
                # accuracy, loss (two series) and ε charts, two points each series
                expect(page.locator("svg.chart")).to_have_count(3)
                # accuracy: pooled and the devices' mean, p10 and min, two points each
                acc = page.locator("#detail figure").nth(0)
                assert acc.locator("path.line").count() == 4
                assert acc.locator("circle").count() == 8
                for k in ("s0", "sm", "sp", "sn"):
                    assert acc.locator("path.line." + k).count() == 1, k
                legend = [x.strip() for x in acc.locator(".legend span").all_inner_texts()]
                assert legend == ["pooled", "device mean", "worst 10 % (p10)", "min device"], legend
                expect(acc.locator("figcaption")).to_contain_text("latest 75.0 %")
                # the worst-device lines are secondary: thinner than pooled, dashed or dotted
                style = page.evaluate("""() => {
                    const f = document.querySelectorAll('#detail figure')[0], out = {};
                    for (const k of ['s0', 'sm', 'sp', 'sn']) {
                        const cs = getComputedStyle(f.querySelector('path.line.' + k));
                        out[k] = [parseFloat(cs.strokeWidth), cs.strokeDasharray];
                    }
                    return out; }""")
                for k in ("sm", "sp", "sn"):
                    assert style[k][0] < style["s0"][0], style
                assert style["s0"][1] == "none" and style["sp"][1] != "none" and \
                    style["sn"][1] != "none" and style["sp"][1] != style["sn"][1], style
                tips = acc.locator("circle.sp title").all_text_contents()
                assert any("worst 10 % (p10), round 2: 62.0 %" in x for x in tips), tips
                expect(acc.locator("xpath=..")).to_contain_text(  # the chart's card
                    "pooled: all held-out samples together; p10/min: the devices\u2019 own "
                    "accuracies \u2014 a model can look good pooled and fail some devices")
                assert page.locator("svg.chart").nth(1).locator("path.line").count() == 2
                assert page.locator("svg.chart").nth(2).locator("circle").count() == 2
                rows = page.locator("#detail table:not(.heat) tbody tr")
                expect(rows).to_have_count(2)
                assert "committed" in rows.nth(0).inner_text()
                for r in (0, 1):
                    c = table_cells(page, r)
                    assert c["Eval acc."] == "75.0 %" and c["Worst 10 %"] == "62.0 %" and \
                        c["Min device"] == "60.0 %", c
                # all its columns (ε and duration too) fit a 1280 px window without scrolling
                fit = page.evaluate("""() => { const t = document.querySelector('table.rounds');
                    return [t.parentNode.clientWidth, t.parentNode.scrollWidth]; }""")
                assert fit[1] <= fit[0], "rounds table %d px wide in %d" % (fit[1], fit[0])
                heat = page.locator("table.heat tbody td")
                expect(heat).to_have_count(4 * 5)  # 3 class rows and the totals row, 5 cells each
                text = page.locator("table.heat").inner_text()
                assert "recall" in text and "count" in text, text
                plan = page.locator("#detail").inner_text()
                for want in ("fedavg", "clip S = 1", "Secure aggregation", "off"):
                    assert want in plan, want
                shot(page, "project-dp")
            step("project A: progress, open round, charts, table, confusion matrix", project_a)

            def live_refresh():
                report(api, live_dev, live_task, 7)
                expect(page.locator("#detail")).to_contain_text("1 of 2", timeout=6000)
            step("a new report shows up within one refresh", live_refresh)

            def project_b():
                page.click("#plist li:nth-child(2) button")
                expect(page.locator("#detail h1")).to_have_text("short-deadline")
                expect(page.locator("tr.abandoned")).to_have_count(1)
                expect(page.locator("tr.abandoned")).to_contain_text("abandoned")
                expect(page.locator("#detail")).to_contain_text("No committed round has reported this yet")
                c = table_cells(page, 0)
                assert c["Worst 10 %"] == "\u2014" and c["Min device"] == "\u2014", c
                assert page.locator("#detail .legend").count() == 0
                assert "p10/min" not in page.locator("#detail").inner_text()
                shot(page, "abandoned")
            step("project B: the abandoned round is marked", project_b)

            def project_c():
                page.click("#plist li:nth-child(3) button")
                expect(page.locator("#detail h1")).to_have_text(EVIL)
                assert page.locator("#detail img, #detail b").count() == 0
                assert page.title() == "Artificien dashboard"
            step("a project name with HTML is shown as text", project_c)

            def reload_keeps_state():
                page.reload()
                expect(page.locator("#detail h1")).to_have_text(EVIL)
                expect(page.locator("#app")).to_be_visible()
            step("a reload keeps the key (this tab) and the selection", reload_keeps_state)

            def network_error():
                allow["on"] = True
                page.route("**/v1/**", lambda r: r.abort())
                expect(page.locator("#banner")).to_contain_text("Network error", timeout=6000)
                expect(page.locator("#connText")).to_contain_text("Offline")
                shot(page, "offline")
                expect(page.locator("#detail h1")).to_have_text(EVIL)  # last data stays
                page.unroute("**/v1/**")
                expect(page.locator("#banner")).to_be_hidden(timeout=6000)
                allow["on"] = False
            step("a network failure shows a banner and recovers", network_error)

            def phone_width():
                page.set_viewport_size({"width": 375, "height": 800})
                page.click("#plist li:nth-child(1) button")
                expect(page.locator("svg.chart")).to_have_count(3)
                sw = page.evaluate("document.documentElement.scrollWidth")
                shot(page, "phone")
                assert sw <= 376, "page is %d px wide at 375" % sw
                page.set_viewport_size({"width": 1280, "height": 900})
            step("no horizontal overflow at phone width", phone_width)

            def sign_out():
                page.click("#signout")
                expect(page.locator("#login")).to_be_visible()
                shot(page, "login")
                assert page.evaluate("sessionStorage.getItem('artificien.dashboard.key')") is None
                assert page.locator("#plist li").count() == 0
            step("sign out forgets the key", sign_out)

            # mocked API: secure aggregation phases and label statistics
            mp = ctx.new_page()
            mp.on("console", on_console)
            mp.on("pageerror", lambda e: errors.append("uncaught: %s" % e))

            def mock(route):
                url = route.request.url
                body = MOCK_STATS if url.endswith("/77") else MOCK_SECURE if url.endswith("/78") else MOCK_LIST
                route.fulfill(status=200, content_type="application/json", body=json.dumps(body))
            mp.route("**/v1/projects**", mock)
            mp.goto(base + "/dashboard#project=77")
            mp.fill("#key", "a" * 64)
            mp.click("#loginForm button")

            def label_stats():
                expect(mp.locator("#detail h1")).to_have_text("labels")
                expect(mp.locator("rect.barv")).to_have_count(3)
                assert mp.locator("line.errb").count() == 9
                assert mp.locator("line.unif").count() == 1
                text = mp.locator("#detail").inner_text()
                for want in ("ε = 4.3", "38.9 %", "± 0.6 %", "population label statistics"):
                    assert want in text, want
                assert mp.locator("svg.chart").count() == 1  # no training charts
                shot(mp, "label-stats")
            step("label statistics: bars with noise std and the release's ε", label_stats)

            def secagg_phase():
                mp.click("#plist li:nth-child(2) button")
                expect(mp.locator("#detail h1")).to_have_text("secure")
                expect(mp.locator("ol.phases li")).to_have_count(4)
                expect(mp.locator("ol.phases li.cur")).to_contain_text("Masked input")
                assert mp.locator("ol.phases li.past").count() == 2
                expect(mp.locator("#detail")).to_contain_text("t = 9")
                expect(mp.locator("#detail")).to_contain_text("13 of 13 tasks")
                # a committed secure round: pooled accuracy only, no spread, a note says why
                acc = mp.locator("#detail figure").nth(0)
                assert acc.locator("path.line").count() == 1 and acc.locator(".legend").count() == 0
                expect(mp.locator("#detail")).to_contain_text("Secure aggregation reveals only sums")
                c = table_cells(mp, 0)
                assert c["Eval acc."] == "81.0 %" and c["Worst 10 %"] == "\u2014" and \
                    c["Min device"] == "\u2014", c
                shot(mp, "secagg")
            step("secure aggregation: the phase and its device counts", secagg_phase)

            def console_clean():
                assert not errors, errors
            step("no unexpected console errors", console_clean)
            browser.close()
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
    if failures:
        print("%d failed: %s (server log: %s/serve.log)" % (len(failures), ", ".join(failures), tmp))
        return 1
    print("all passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
