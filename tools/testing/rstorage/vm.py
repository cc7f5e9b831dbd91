#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Boot an rstorage kernel under QEMU and run one command in it as root.

The guest sees the host's root file system (virtme-ng over 9p), so tools
installed on the host (fio, vblade, targetcli, iscsiadm) and the project's
build tree are usable inside. KVM is used when it can run a guest, TCG
otherwise.

With --interactive SHELL there is no command: the guest's console is a root
shell on the terminal, started as SHELL (which sets the guest up and then
runs an interactive shell); nothing is logged or scanned then.

Exit status: the command's own status; 124 if the timeout expired; 125 if
the command succeeded but the kernel log shows a splat (WARNING, BUG, Oops,
KASAN, lockdep, hung task, panic). The whole console log is kept in --log.
"""

import argparse
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import tempfile
import threading
import time

# Lines that make a run fail even when the command succeeded.
SPLAT = re.compile(
    r"WARNING:|BUG:|Oops|general protection fault|KASAN:|UBSAN:"
    r"|possible circular locking|possible recursive locking|inconsistent lock state"
    r"|INFO: task .* blocked for more than|rcu: INFO: .* stall"
    r"|Kernel panic|kernel BUG at|Call Trace:"
)

# A kernel console line (printk time stamp) or virtme-ng's own chatter.
KERNEL_LINE = re.compile(r"^\[\s*\d+\.\d+\]|^virtme|^fuse:")


def kvm_usable():
    """True when KVM can run a normal guest here.

    A /dev/kvm without hardware virtualisation in the CPU flags (for example a
    nested "kvm-pvm") hangs at boot, so both are required. RSTORAGE_KVM=0/1
    overrides the guess.
    """
    if os.environ.get("RSTORAGE_KVM") in ("0", "1"):
        return os.environ["RSTORAGE_KVM"] == "1"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    with open("/proc/cpuinfo") as f:
        flags = f.read()
    return re.search(r"^flags\s*:.*\b(vmx|svm)\b", flags, re.M) is not None


def scan(log_text):
    return [l for l in log_text.splitlines() if SPLAT.search(l)]


class QmpBridge(threading.Thread):
    """Lets the guest drive QEMU's monitor (QMP), for hot-plug tests.

    The guest writes a QMP command as JSON to DIR/NAME.req; the bridge runs it
    and writes QEMU's answer to DIR/NAME.resp (QMP events are skipped)."""

    def __init__(self, sock, qdir):
        super().__init__(daemon=True)
        self.sock_path, self.qdir = sock, qdir

    def run(self):
        for _ in range(600):
            try:
                s = socket.socket(socket.AF_UNIX)
                s.connect(self.sock_path)
                break
            except OSError:
                time.sleep(0.5)
        else:
            return
        f = s.makefile("rw")
        f.readline()  # greeting
        self.call(f, {"execute": "qmp_capabilities"})
        while True:
            for name in sorted(os.listdir(self.qdir)):
                if not name.endswith(".req"):
                    continue
                path = os.path.join(self.qdir, name)
                with open(path) as r:
                    req = json.load(r)
                os.unlink(path)
                resp = self.call(f, req)
                tmp = path[:-4] + ".tmp"
                with open(tmp, "w") as w:
                    json.dump(resp, w)
                os.rename(tmp, path[:-4] + ".resp")
            time.sleep(0.2)

    @staticmethod
    def call(f, req):
        f.write(json.dumps(req) + "\n")
        f.flush()
        while True:
            msg = json.loads(f.readline())
            if "event" not in msg:
                return msg


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kernel", required=True, help="kernel build directory")
    ap.add_argument("--log", required=True, help="file for the full console log")
    ap.add_argument("--timeout", type=int, default=900, help="seconds (default 900)")
    ap.add_argument("--cpus", default="2")
    ap.add_argument("--memory", default="2G")
    ap.add_argument("--qemu-opts", default="", help="extra QEMU arguments")
    ap.add_argument("--append", default="", help="extra kernel command line")
    ap.add_argument("--rwdir", action="append", default=[], help="host directory the guest may write")
    ap.add_argument("--show-output", action="store_true",
                    help="echo the command's output (not the kernel's) while it runs")
    ap.add_argument("--status", help="write the outcome as JSON to this file")
    ap.add_argument("--qmp-dir", help="directory (inside an --rwdir) through which the guest "
                    "sends QMP commands (see QmpBridge)")
    ap.add_argument("--interactive", metavar="SHELL",
                    help="no command: a root shell on the console, started as SHELL")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="-- command to run as root")
    a = ap.parse_args()
    cmd = a.command[1:] if a.command[:1] == ["--"] else a.command
    if not cmd and not a.interactive:
        ap.error("no command given")

    # RSTORAGE_VNG replaces virtme-ng, for the harness's own tests of this runner.
    vng = [os.environ.get("RSTORAGE_VNG", "vng"), "--run", a.kernel, "--user", "root",
           "--cpus", a.cpus, "--memory", a.memory, "--cwd", "/tmp"]
    if a.interactive:
        vng += ["--shell", os.path.abspath(a.interactive)]
    else:
        vng += ["--verbose", "--exec", shlex.join(cmd)]
    if not kvm_usable():
        vng.append("--disable-kvm")
    for d in a.rwdir:
        vng.append(f"--rwdir={os.path.abspath(d)}")
    qemu_opts = a.qemu_opts
    if a.qmp_dir:
        os.makedirs(a.qmp_dir, exist_ok=True)
        for n in os.listdir(a.qmp_dir):
            os.unlink(os.path.join(a.qmp_dir, n))
        sock = os.path.join(tempfile.mkdtemp(prefix="rstorage-qmp-"), "qmp.sock")
        qemu_opts = f"{qemu_opts} -qmp unix:{sock},server=on,wait=off".strip()
        QmpBridge(sock, a.qmp_dir).start()
    if qemu_opts:
        vng += ["--qemu-opts=" + qemu_opts]
    append = ("panic_on_warn=0 oops=panic panic=-1 " + a.append).strip()
    vng += ["--append", append]
    if a.interactive:
        os.execvp(vng[0], vng)

    start = time.time()
    with open(a.log, "w") as log:
        p = subprocess.Popen(vng, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, errors="replace",
                             start_new_session=True)
        # The limit is wall-clock time: a guest that hangs without printing
        # anything is killed by this timer, not by the next line it prints.
        expired = threading.Event()

        def expire():
            expired.set()
            os.killpg(p.pid, 9)

        timer = threading.Timer(a.timeout, expire)
        timer.daemon = True
        timer.start()
        for line in p.stdout:
            log.write(line)
            log.flush()
            if a.show_output and not KERNEL_LINE.match(line):
                sys.stdout.write(line)
                sys.stdout.flush()
        rc = p.wait()
        timer.cancel()
        if expired.is_set():
            rc = 124
            log.write(f"\n[vm] timeout after {a.timeout} s\n")
    with open(a.log, errors="replace") as f:
        splats = scan(f.read())
    took = time.time() - start
    if rc == 124:
        print(f"[vm] TIMEOUT after {a.timeout} s (log: {a.log})", file=sys.stderr)
    elif splats:
        print(f"[vm] kernel splat in the log ({a.log}):", file=sys.stderr)
        for l in splats[:10]:
            print(f"[vm]   {l.strip()}", file=sys.stderr)
        if rc == 0:
            rc = 125
    print(f"[vm] exit status {rc} after {took:.0f} s", file=sys.stderr)
    if a.status:
        with open(a.status, "w") as f:
            json.dump({"rc": rc, "timeout": rc == 124, "splats": splats[:50],
                       "seconds": round(took)}, f, indent=1)
    sys.exit(rc)


if __name__ == "__main__":
    main()
