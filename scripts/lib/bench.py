"""Benchmarks for scripts/bench. Each peer is measured in the same run; medians of 3; ratios."""
import os, shutil, statistics, subprocess, sys, tempfile, time

BIN = os.environ["BIN"]
SHIP_TREE = os.environ["SHIP_TREE"]
SERVER = os.environ["SERVER_DIR"]
CLIENT_PREFIX = os.environ.get("CLIENT_PREFIX", "").split()
HOST = os.environ.get("BENCH_HOST", "127.0.0.1")
PORT = os.environ["SSHD_PORT"]
RUNS = int(os.environ.get("RUNS", "3"))
PREVIOUS_BIN = os.environ.get("PREVIOUS_BIN")
PREVIOUS_SHIP_TREE = os.environ.get("PREVIOUS_SHIP_TREE")
LINK_MBIT = float(os.environ.get("LINK_MBIT", "0"))
# Quick passes: PROFILES=small (some of large,realistic,small), PEERS=none (or some of sftp,lftp).
PROFILES = os.environ.get("PROFILES", "large,realistic,small").split(",")
PEERS = os.environ.get("PEERS", "sftp,lftp").split(",")
HERE = os.path.dirname(os.path.abspath(__file__))
WORK = tempfile.mkdtemp(prefix="jumio-bench-")


def run(cmd, **kw):
    """Runs cmd; returns (seconds, peak RSS in MB of the process tree's largest child)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kw)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    err = proc.stderr.read().decode(errors="replace")
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"benchmark command failed: {' '.join(cmd)}\n{err}")
    return elapsed, usage.ru_maxrss / 1024


def clear_home():
    home = os.path.join(SERVER, "home")
    for entry in os.listdir(home):
        shutil.rmtree(os.path.join(home, entry))


def median_of(fn):
    times, rss = [], []
    for _ in range(RUNS):
        clear_home()
        t, r = fn()
        times.append(t)
        rss.append(r)
    return statistics.median(times), max(rss)


def make_profile(name, rows, image_bytes):
    path = os.path.join(WORK, name)
    subprocess.run([sys.executable, os.path.join(HERE, "make_batch.py"), path, str(rows), str(image_bytes)], check=True)
    return path


def make_large():
    path = os.path.join(WORK, "large")
    os.makedirs(path)
    for i in range(40):
        with open(os.path.join(path, f"doc{i:02}.bin"), "wb") as f:
            f.write(os.urandom(25 * 1000 * 1000))
    return path


def sftp_put(batch):
    script = os.path.join(WORK, "sftp-batch")
    done = os.path.join(WORK, "DONE")
    open(done, "w").close()
    folder = f"bench-{time.time_ns()}"
    with open(script, "w") as f:
        f.write(f"put -r {batch} {folder}\nput {done} {folder}/DONE\n")
    cmd = CLIENT_PREFIX + ["sftp", "-q", "-b", script, "-i", f"{SERVER}/client_key", "-o", f"UserKnownHostsFile={SERVER}/known_hosts",
                           "-o", "StrictHostKeyChecking=yes", "-P", PORT, f"{os.environ['USER_NAME']}@{HOST}"]
    return run(cmd)


def lftp_mirror(batch):
    """lftp's mirror with 4 parallel transfers, then DONE: the best common client."""
    done = os.path.join(WORK, "DONE")
    open(done, "w").close()
    folder = f"bench-{time.time_ns()}"
    ssh = (f"ssh -a -x -i {SERVER}/client_key -o UserKnownHostsFile={SERVER}/known_hosts "
           f"-o StrictHostKeyChecking=yes -o BatchMode=yes")
    script = (f"set sftp:connect-program '{ssh}'; set net:max-retries 1; open -p {PORT} sftp://{os.environ['USER_NAME']}:@{HOST}; "
              f"mirror -R --parallel=4 {batch} {folder}; put {done} -o {folder}/DONE")
    return run(CLIENT_PREFIX + ["lftp", "-c", script])


def config_for(binary):
    """The server's config; an earlier build gets a state database of its own (older schema)."""
    if binary is None:
        return f"{SERVER}/config.toml"
    path = os.path.join(WORK, "config-previous.toml")
    text = open(f"{SERVER}/config.toml").read()
    db = text.split('database = "', 1)[1].split('"', 1)[0]
    open(path, "w").write(text.replace(db, os.path.join(WORK, "previous-state.db")))
    return path


def jumio_send(batch, binary=None):
    return run(CLIENT_PREFIX + [binary or BIN, "--config", config_for(binary), "send", "--allow-duplicate", batch])


def jumio_ship_tree(batch, binary=None):
    return run(CLIENT_PREFIX + [binary or SHIP_TREE, config_for(binary), batch])


def tree_bytes(path):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def bench_validate():
    batch = make_profile("validate-10k", 10000, 0)
    times = []
    for _ in range(RUNS):
        t, _ = run([BIN, "validate", batch])
        times.append(t)
    ours = statistics.median(times)
    # Peer: the least any validator must do: read the CSV and stat every image it names.
    peer = []
    for _ in range(RUNS):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import csv,os,sys\nr=csv.DictReader(open(sys.argv[1]+'/input.csv'))\n"
                        "[os.stat(os.path.join(sys.argv[1],row[c])) for row in r for c in ('frontImage','backImage','faceImage')]", batch], check=True)
        peer.append(time.perf_counter() - start)
    print(f"validate 10,000 rows / 30,000 images: {ours:.3f} s (target < 1 s); "
          f"python csv+stat only: {statistics.median(peer):.3f} s")
    shutil.rmtree(batch)


def bench_ship():
    wan = bool(CLIENT_PREFIX)
    profiles = [
        ("large 40 x 25 MB", make_large, jumio_ship_tree, PREVIOUS_SHIP_TREE),
        ("realistic 500 rows x 3 x 400 KB", lambda: make_profile("realistic", 500, 400_000), jumio_send, PREVIOUS_BIN),
        ("small 1,000 rows x 3 x 8 KB", lambda: make_profile("small", 1000, 8_000), jumio_send, PREVIOUS_BIN),
    ]
    profiles = [p for p in profiles if p[0].split()[0] in PROFILES]
    has_lftp = shutil.which("lftp") is not None and "lftp" in PEERS
    header = f"{'profile':34} {'jumio-batchd':>13} {'previous':>9} {'sftp -b':>9} {'lftp -P4':>9} {'vs sftp':>8} {'vs lftp':>8} {'vs prev':>8}"
    print(header + (f" {'link floor':>11} {'x floor':>8}" if LINK_MBIT else "") + f" {'peak RSS':>9}")
    for name, make, ours_fn, previous in profiles:
        batch = make()
        ours, rss = median_of(lambda: ours_fn(batch))
        prev = median_of(lambda: ours_fn(batch, previous))[0] if previous else float("nan")
        theirs = median_of(lambda: sftp_put(batch))[0] if "sftp" in PEERS else float("nan")
        lftp = median_of(lambda: lftp_mirror(batch))[0] if has_lftp else float("nan")
        line = f"{name:34} {ours:12.2f}s {prev:8.2f}s {theirs:8.2f}s {lftp:8.2f}s {theirs / ours:7.2f}x {lftp / ours:7.2f}x {prev / ours:7.2f}x"
        if LINK_MBIT:
            floor = tree_bytes(batch) * 8 / (LINK_MBIT * 1e6)
            line += f" {floor:10.2f}s {ours / floor:7.2f}x"
        print(line + f" {rss:7.1f}MB", flush=True)
        shutil.rmtree(batch)
    print("ratios: vs sftp / vs lftp / vs prev = their time / ours (higher is faster); x floor = ours / (bytes / bandwidth)")


def daemon_config(root, events, poll):
    base = open(f"{SERVER}/config.toml").read()
    text = base + f"""
[paths]
inbox = "{root}/inbox"
work = "{root}/work"
done = "{root}/done"
rejected = "{root}/rejected"
failed = "{root}/failed"

[watch]
poll_secs = {poll}
events = {"true" if events else "false"}
"""
    path = os.path.join(root, "config.toml")
    with open(path, "w") as f:
        f.write(text)
    return path


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stage_batch(path, rows, image_bytes, tag):
    """A sample batch whose references start with `tag`, so no two are duplicates."""
    subprocess.run([sys.executable, os.path.join(HERE, "make_batch.py"), path, str(rows), str(image_bytes)], check=True)
    csv = os.path.join(path, "input.csv")
    text = open(csv).read().replace("demo-", tag)
    open(csv, "w").write(text)
    return path


def new_done_folders(before):
    """Folders on the server, not in `before`, that hold DONE."""
    home = os.path.join(SERVER, "home")
    return len([d for d in set(os.listdir(home)) - before if os.path.exists(os.path.join(home, d, "DONE"))])


def marker_to_done(root, proc, n):
    """Drops n one-row batches one at a time; seconds from writing the marker to DONE on the server."""
    latencies = []
    home = os.path.join(SERVER, "home")
    for i in range(n):
        staged = stage_batch(os.path.join(root, "staging", f"lat-{time.time_ns()}"), 1, 0, f"lat-{time.time_ns()}-")
        before = set(os.listdir(home))
        target = os.path.join(root, "inbox", os.path.basename(staged))
        os.rename(staged, target)
        time.sleep(0.2)
        start = time.perf_counter()
        open(os.path.join(target, "DONE"), "w").close()
        while True:
            if new_done_folders(before):
                break
            if proc.poll() is not None:
                sys.exit("daemon died")
            time.sleep(0.002)
        latencies.append(time.perf_counter() - start)
    return latencies


def many_small_batches(n=100):
    """n two-row batches dropped at once (markers last); seconds from the first marker to the last DONE."""
    root = tempfile.mkdtemp(prefix="jumio-many-", dir=WORK)
    os.makedirs(os.path.join(root, "inbox"))
    os.makedirs(os.path.join(root, "staging"))
    config = daemon_config(root, True, 5)
    staged = []
    for i in range(n):
        staged.append(stage_batch(os.path.join(root, "staging", f"many-{i:03}"), 2, 20000, f"many-{i:03}-"))
    home = os.path.join(SERVER, "home")
    before = set(os.listdir(home))
    log = open(os.path.join(root, "log"), "w")
    proc = subprocess.Popen(CLIENT_PREFIX + [BIN, "--config", config, "run"], stdout=log, stderr=log)
    time.sleep(1.0)
    for path in staged:
        os.rename(path, os.path.join(root, "inbox", os.path.basename(path)))
    start = time.perf_counter()
    for path in staged:
        open(os.path.join(root, "inbox", os.path.basename(path), "DONE"), "w").close()
    while new_done_folders(before) < n:
        if proc.poll() is not None or time.perf_counter() - start > 900:
            sys.exit("daemon died or took over 15 minutes")
        time.sleep(0.05)
    took = time.perf_counter() - start
    proc.terminate()
    proc.wait()
    print(f"daemon, {n} batches of 2 rows dropped at once, first marker -> last DONE: {took:.2f} s = {n / took:.1f} batches/s")


def bench_daemon():
    many_small_batches()
    poll = 5
    for events in (True, False):
        root = tempfile.mkdtemp(prefix="jumio-daemon-", dir=WORK)
        os.makedirs(os.path.join(root, "inbox"))
        os.makedirs(os.path.join(root, "staging"))
        config = daemon_config(root, events, poll)
        log = open(os.path.join(root, "log"), "w")
        proc = subprocess.Popen(CLIENT_PREFIX + [BIN, "--config", config, "run"], stdout=log, stderr=log)
        time.sleep(1.0)
        lat = marker_to_done(root, proc, 5)
        mode = "events" if events else f"poll only (poll_secs = {poll})"
        target = "< 1 s" if events else f"< {poll + 1} s"
        print(f"daemon, marker written -> DONE on the server, {mode}: median {statistics.median(lat):.3f} s, "
              f"max {max(lat):.3f} s (target {target})")
        if events:
            idle = 10
            time.sleep(2)  # let the last batch be filed
            before = cpu_seconds(proc.pid)
            time.sleep(idle)
            used = cpu_seconds(proc.pid) - before
            print(f"daemon idle CPU: {used / idle * 100:.2f} % of one core over {idle} s (poll_secs = {poll})")
        proc.terminate()
        proc.wait()


if __name__ == "__main__":
    try:
        what = sys.argv[1:] or ["validate", "ship", "daemon"]
        if "validate" in what:
            bench_validate()
        if "ship" in what:
            bench_ship()
        if "daemon" in what:
            bench_daemon()
    finally:
        shutil.rmtree(WORK, ignore_errors=True)
