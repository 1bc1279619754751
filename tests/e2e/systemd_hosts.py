#!/usr/bin/env python3
"""The installer against real systemd and real firewalls: three Debian hosts, each a
systemd-nspawn container booting its own systemd, with its own hostname, network
namespace, /tmp and firewall.

Run it through scripts/e2e-systemd.sh (as root), which installs what it needs and
builds the binary. What it does, in order (docs/OPERATIONS.md describes the same steps):

 1. A Debian bookworm root file system (mmdebstrap, cached in --cache by the hash of its
    package list) with systemd, sshd, python3 and the three firewalls.
 2. A lab network namespace with a bridge, and per host a network namespace joined to
    it by a veth pair (10.231.0.11-13), then each host booted with systemd-nspawn
    --boot. Every host filters its input: core-1 with nftables (`inet filter input`,
    policy drop), core-2 with ufw (default deny), core-3 with firewalld (zone public);
    only ssh is open.
 3. deploy/install.sh over SSH against the three hosts with the previous release's
    binary (--old-binary): the first core service is a systemd unit on core-1, the
    peers are prepared; a second run changes nothing.
 4. Two services created over REST (POST /api/v1/services on core-1), each host given
    its certificate and running the printed install command: a cluster of 3 voters,
    every unit enabled and active.
 5. deploy/upgrade.sh to --binary while a client writes through all three: the leader
    last, every acknowledged write on every host, a second run restarts nothing.
 6. `journalctl -u` shows the service; writes; `systemctl restart` of a follower keeps its data; a host reboot (its
    container powered off and booted again) brings its service back with the data.
 7. A service removed over REST: its unit stops and is disabled, nothing of it runs;
    `sqlraft-core uninstall` takes the unit and the binary away and keeps the data; the
    server comes back as a new service.
 8. A lost majority (two hosts powered off) recovered with `.reset` on the survivor,
    the lost services wiped, new ones joined: docs/OPERATIONS.md's runbook.

Everything it starts is stopped at the end, whatever happens: containers powered off
(killed after a timeout), namespaces deleted, the work directory removed (unless
--keep).
"""

import argparse
import base64
import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.parse

# Debian packages of a host's root file system.
PACKAGES = [
    "systemd", "systemd-sysv", "dbus", "openssh-server", "python3", "iproute2",
    "procps", "curl", "ca-certificates", "nftables", "ufw", "firewalld",
]
SUITE = "bookworm"
LAB = "sqlraft-e2e-lab"
BRIDGE = "br0"
SUBNET = "10.231.0"
DOMAIN = "sqlraft.test"
FIRST_ID = "00000000-0000-0000-0000-000000000000"
ROOT = "/opt/sqlraft"
RAFT_PORT = 7209
HTTP_PORT = 7220
REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
STARTED = time.monotonic()


def say(msg):
    print(f"[{time.monotonic() - STARTED:6.1f}s] {msg}", flush=True)


class Failed(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Failed(what)
    say(f"ok: {what}")


def run(argv, *, input=None, timeout=120, ok=True, quiet=False):
    """Runs argv; returns CompletedProcess (text). Fails on a non-zero exit when ok."""
    try:
        done = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise Failed(f"timed out after {timeout}s: {shlex.join(argv)}") from e
    if ok and done.returncode != 0:
        raise Failed(
            f"exit {done.returncode}: {shlex.join(argv)}\nstdout: {done.stdout[-3000:]}\n"
            f"stderr: {done.stderr[-3000:]}")
    if not quiet and done.returncode != 0:
        say(f"(exit {done.returncode}) {shlex.join(argv)}: {done.stderr.strip()[-300:]}")
    return done


def eventually(what, fn, timeout=60, every=1.0):
    """Calls fn until it returns a true value (returned) or timeout (Failed)."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            value = fn()
            if value:
                return value
            last = value
        except Failed as e:
            last = e
        if time.monotonic() > deadline:
            raise Failed(f"{what}: not within {timeout}s (last: {str(last)[-600:]})")
        time.sleep(every)


# ---------------------------------------------------------------------------- rootfs


def rootfs_tarball(cache):
    """The cached root file system tarball, built with mmdebstrap when missing."""
    key = hashlib.sha256(json.dumps([SUITE, PACKAGES]).encode()).hexdigest()[:16]
    path = os.path.join(cache, f"rootfs-{SUITE}-{key}.tar")
    if os.path.exists(path):
        say(f"root file system: cached {path}")
        return path
    os.makedirs(cache, exist_ok=True)
    say(f"root file system: mmdebstrap {SUITE} ({len(PACKAGES)} packages) -> {path}")
    tmp = path + ".part"
    run(["mmdebstrap", "--variant=minbase", "--format=tar", "--include=" + ",".join(PACKAGES), SUITE, tmp],
        timeout=900)
    os.rename(tmp, path)
    return path


# ---------------------------------------------------------------------------- hosts


class Host:
    def __init__(self, lab, n, firewall):
        self.lab = lab
        self.n = n
        self.name = f"core-{n}"
        self.fqdn = f"core-{n}.{DOMAIN}"
        self.ip = f"{SUBNET}.{10 + n}"
        self.netns = f"sqlraft-e2e-h{n}"
        self.root = os.path.join(lab.work, self.name)
        self.firewall = firewall
        self.nspawn = None
        self.console = None

    @property
    def raft_addr(self):
        return f"{self.fqdn}:{RAFT_PORT}"

    @property
    def url(self):
        return f"http://{self.ip}:{HTTP_PORT}"

    def create(self, tarball, pubkey):
        os.makedirs(self.root)
        run(["tar", "-C", self.root, "-xf", tarball], timeout=300)
        write(os.path.join(self.root, "etc/hostname"), self.fqdn + "\n")
        # Resolves its own name; the installer writes the others (generate_etc_hosts).
        write(os.path.join(self.root, "etc/hosts"),
              f"127.0.0.1 localhost\n{self.ip} {self.fqdn} {self.name}\n")
        ssh_dir = os.path.join(self.root, "root/.ssh")
        os.makedirs(ssh_dir, mode=0o700, exist_ok=True)
        write(os.path.join(ssh_dir, "authorized_keys"), pubkey, mode=0o600)
        units = os.path.join(self.root, "etc/systemd/system")
        # Only this host's own firewall runs.
        if self.firewall != "firewalld":
            mask(units, "firewalld.service")
        if self.firewall == "nftables":
            # A host that filters its input: only ssh (and what it asked for) gets in.
            write(os.path.join(self.root, "etc/nftables.conf"), NFTABLES_CONF)
            enable(units, "nftables.service", "sysinit.target")
        # Nothing else in the image does daily work during the test.
        for timer in ["apt-daily.timer", "apt-daily-upgrade.timer", "dpkg-db-backup.timer",
                      "e2scrub_all.timer", "fstrim.timer"]:
            mask(units, timer)
        run(["ip", "netns", "add", self.netns])
        self.lab.netns_made.append(self.netns)
        run(["ip", "-n", self.netns, "link", "set", "lo", "up"])
        veth = f"e2e-v{self.n}"
        run(["ip", "link", "add", veth, "netns", LAB, "type", "veth", "peer", "name", "eth0",
             "netns", self.netns])
        run(["ip", "-n", LAB, "link", "set", veth, "master", BRIDGE, "up"])
        run(["ip", "-n", self.netns, "addr", "add", f"{self.ip}/24", "dev", "eth0"])
        run(["ip", "-n", self.netns, "link", "set", "eth0", "up"])

    def boot(self):
        log = open(os.path.join(self.lab.work, f"{self.name}.console"), "a")
        self.console = log
        self.nspawn = subprocess.Popen(
            ["systemd-nspawn", "--quiet", "--boot", "--register=no", "--keep-unit",
             # Its own firewall needs CAP_NET_ADMIN in its own network namespace.
             "--capability=CAP_NET_ADMIN",
             f"--machine={self.name}", f"--directory={self.root}",
             f"--network-namespace-path=/run/netns/{self.netns}"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
            # The container gets its own cgroup v2 tree, whatever the host mounts.
            env=dict(os.environ, SYSTEMD_NSPAWN_UNIFIED_HIERARCHY="1"))
        say(f"{self.name}: booting (systemd-nspawn pid {self.nspawn.pid})")

    def init_pid(self):
        if self.nspawn is None or self.nspawn.poll() is not None:
            raise Failed(f"{self.name}: the container is not running")
        out = run(["pgrep", "-P", str(self.nspawn.pid)], ok=False, quiet=True).stdout.split()
        if not out:
            raise Failed(f"{self.name}: no init process yet")
        return out[0]

    def wait_booted(self):
        def state():
            done = run(["nsenter", "-t", self.init_pid(), "-a", "systemctl",
                        "is-system-running"], ok=False, quiet=True)
            return done.stdout.strip() in ("running", "degraded") and done.stdout.strip()
        state = eventually(f"{self.name} boots", state, timeout=90)
        failed = self.sh("systemctl --failed --no-legend --plain").stdout.strip()
        say(f"{self.name}: booted ({state}){'; failed units: ' + failed if failed else ''}")
        eventually(f"{self.name}: sshd answers", lambda: self.ssh("true", ok=False).returncode == 0,
                   timeout=60)

    def poweroff(self, timeout=60):
        """Shuts the container down (SIGTERM to nspawn: a clean poweroff), killed after
        timeout."""
        if self.nspawn is None:
            return
        if self.nspawn.poll() is None:
            self.nspawn.send_signal(signal.SIGTERM)
            try:
                self.nspawn.wait(timeout)
            except subprocess.TimeoutExpired:
                say(f"{self.name}: did not power off in {timeout}s; killing it")
                os.killpg(self.nspawn.pid, signal.SIGKILL)
                self.nspawn.wait(30)
        self.nspawn = None
        if self.console:
            self.console.close()
            self.console = None

    def ssh(self, command, *, ok=True, timeout=120, input=None):
        """Runs a shell command on the host over SSH, from the lab network."""
        return run(["ip", "netns", "exec", LAB, "ssh", "-i", self.lab.key, "-o", "BatchMode=yes",
                    "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                    "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=5", f"root@{self.ip}", command],
                   ok=ok, timeout=timeout, input=input, quiet=not ok)

    def sh(self, command, ok=True):
        """Runs a shell command in the host through nsenter (before sshd is up)."""
        return run(["nsenter", "-t", self.init_pid(), "-a", "sh", "-c", command], ok=ok)

    def unit(self, service_id):
        return f"sqlraft-core-{service_id}.service"

    def unit_state(self, service_id):
        unit = self.unit(service_id)
        active = self.ssh(f"systemctl is-active {unit}", ok=False).stdout.strip()
        enabled = self.ssh(f"systemctl is-enabled {unit}", ok=False).stdout.strip()
        return active, enabled


NFTABLES_CONF = """#!/usr/sbin/nft -f
flush ruleset
table inet filter {
  chain input {
    type filter hook input priority filter; policy drop;
    iif lo accept
    ct state established,related accept
    ip protocol icmp accept
    tcp dport 22 accept
  }
  chain forward { type filter hook forward priority filter; policy drop; }
  chain output { type filter hook output priority filter; policy accept; }
}
"""


def write(path, text, mode=0o644):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)


def mask(unit_dir, unit):
    path = os.path.join(unit_dir, unit)
    if os.path.lexists(path):
        os.remove(path)
    os.symlink("/dev/null", path)


def enable(unit_dir, unit, target):
    wants = os.path.join(unit_dir, f"{target}.wants")
    os.makedirs(wants, exist_ok=True)
    link = os.path.join(wants, unit)
    if not os.path.lexists(link):
        os.symlink(f"/lib/systemd/system/{unit}", link)


class Lab:
    def __init__(self, work):
        self.work = work
        self.key = os.path.join(work, "id_ed25519")
        self.netns_made = []
        self.hosts = []

    def setup(self, tarball):
        os.makedirs(self.work)
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", self.key])
        pubkey = open(self.key + ".pub").read()
        run(["ip", "netns", "add", LAB])
        self.netns_made.append(LAB)
        run(["ip", "-n", LAB, "link", "set", "lo", "up"])
        run(["ip", "-n", LAB, "link", "add", BRIDGE, "type", "bridge"])
        run(["ip", "-n", LAB, "addr", "add", f"{SUBNET}.1/24", "dev", BRIDGE])
        run(["ip", "-n", LAB, "link", "set", BRIDGE, "up"])
        for n, firewall in [(1, "nftables"), (2, "ufw"), (3, "firewalld")]:
            host = Host(self, n, firewall)
            host.create(tarball, pubkey)
            self.hosts.append(host)
        for host in self.hosts:
            host.boot()
        for host in self.hosts:
            host.wait_booted()
        # ufw is enabled by hand, as an operator would: deny incoming, allow ssh.
        ufw = self.host(2)
        ufw.ssh("ufw default deny incoming >/dev/null && ufw allow 22/tcp >/dev/null && "
                "ufw --force enable")
        fw = self.host(3)
        check(fw.ssh("firewall-cmd --state", ok=False).stdout.strip() == "running",
              "core-3: firewalld runs")

    def host(self, n):
        return self.hosts[n - 1]

    def teardown(self, keep):
        for host in self.hosts:
            try:
                host.poweroff(timeout=60)
            except Exception as e:  # noqa: BLE001 - best effort: go on with the others
                say(f"{host.name}: stopping failed: {e}")
            run(["rm", "-rf", f"/run/systemd/nspawn/propagate/{host.name}"], ok=False)
        for ns in reversed(self.netns_made):
            run(["ip", "netns", "del", ns], ok=False)
        if not keep:
            shutil.rmtree(self.work, ignore_errors=True)


# ---------------------------------------------------------------------------- HTTP


class Api:
    """curl from the lab network, with the administrator's password."""

    def __init__(self, lab):
        self.lab = lab
        self.password = None

    def request(self, method, url, body=None, timeout=30):
        argv = ["ip", "netns", "exec", LAB, "curl", "-sS", "-m", str(timeout), "-X", method,
                "-o", "-", "-w", "\n%{http_code}"]
        if self.password is not None:
            argv += ["-u", f"admin:{self.password}"]
        if body is not None:
            argv += ["-H", "Content-Type: application/json", "--data-binary", "@-"]
        done = run(argv + [url], input=None if body is None else json.dumps(body),
                   ok=False, timeout=timeout + 10, quiet=True)
        if done.returncode != 0:
            raise Failed(f"{method} {url}: curl exit {done.returncode}: {done.stderr.strip()}")
        text, _, code = done.stdout.rpartition("\n")
        try:
            parsed = json.loads(text) if text.strip() else None
        except json.JSONDecodeError:
            parsed = text
        return int(code), parsed

    def get(self, url):
        return self.request("GET", url)

    def ok(self, method, url, body=None, want=(200,)):
        code, parsed = self.request(method, url, body)
        if code not in want:
            raise Failed(f"{method} {url}: HTTP {code}: {str(parsed)[:600]}")
        return parsed


def voters(api, host, *others):
    """The voters `host` knows of; None while `host` or one of `others` is in a change
    of voters (a binary without `voters_outgoing` cannot tell, and counts as settled)."""
    statuses = []
    for h in (host, *others):
        code, status = api.get(f"{h.url}/status")
        if code != 200 or not isinstance(status, dict) or status.get("voters_outgoing"):
            return None
        statuses.append(status)
    return statuses[0].get("voters")


def count_rows(api, host, level="none", where="1"):
    url = f"{host.url}/db/query?level={level}&q=" + urllib.parse.quote(
        f"SELECT COUNT(*) FROM e2e WHERE {where}")
    code, body = api.get(url)
    if code != 200:
        raise Failed(f"{host.name}: count: HTTP {code}: {body}")
    result = body["results"][0]
    if "error" in result:
        raise Failed(f"{host.name}: count: {result['error']}")
    return result["values"][0][0]


def insert(api, host, first, count):
    statements = [["INSERT INTO e2e(n, host) VALUES(?, ?)", i, host.name]
                  for i in range(first, first + count)]
    body = api.ok("POST", f"{host.url}/db/execute", statements)
    errors = [r["error"] for r in body["results"] if "error" in r]
    if errors:
        raise Failed(f"insert through {host.name}: {errors[:3]}")


# ---------------------------------------------------------------------------- the test


def inventory(lab):
    core, peers = lab.host(1), lab.hosts[1:]
    peer_lines = "".join(f"            {h.fqdn}:\n              ansible_host: {h.ip}\n"
                         for h in peers)
    return (
        "all:\n"
        "  vars:\n"
        "    ansible_connection: ssh\n"
        "    ansible_user: root\n"
        f"    ansible_ssh_private_key_file: {lab.key}\n"
        "    ansible_ssh_common_args: >-\n"
        "      -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR\n"
        "    generate_etc_hosts: true\n"
        "    no_firewall_actions: false\n"
        "  children:\n"
        "    kuma:\n"
        "      children:\n"
        "        kuma_core:\n"
        "          hosts:\n"
        f"            {core.fqdn}:\n"
        f"              ansible_host: {core.ip}\n"
        f"              raft_node_addr: {core.raft_addr}\n"
        "        kuma_core_peers:\n"
        "          hosts:\n"
        + peer_lines
    )


def recap(output, host):
    tail = output.rsplit("PLAY RECAP", 1)[-1]
    for line in tail.splitlines():
        if line.startswith(host.fqdn):
            return line
    return ""


def install_sh(lab, script, inv_path, venv, binary):
    env = dict(os.environ, SQLRAFT_BIN=binary, SQLRAFT_VENV=venv, ANSIBLE_NOCOLOR="1",
               ANSIBLE_FORCE_COLOR="0", ANSIBLE_LOCAL_TEMP=os.path.join(lab.work, "ansible-tmp"))
    argv = ["ip", "netns", "exec", LAB, "bash", os.path.join(REPO, "deploy", script), inv_path]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=900, env=env)
    output = done.stdout + done.stderr
    with open(os.path.join(lab.work, "install.log"), "a") as f:
        f.write(output)
    if done.returncode != 0:
        raise Failed(f"{script} failed (exit {done.returncode}):\n{output[-6000:]}")
    return output


def firewall_rules(host):
    if host.firewall == "nftables":
        out = host.ssh("nft list chain inet filter input").stdout
        return sorted(line.strip() for line in out.splitlines() if "sqlraft" in line)
    if host.firewall == "ufw":
        out = host.ssh("ufw status").stdout
        return sorted(line.strip() for line in out.splitlines() if "sqlraft" in line)
    out = host.ssh("firewall-cmd --list-ports").stdout
    return sorted(out.split())


def port_open(src, dst, port):
    """Whether src reaches dst:port (a TCP connect from src's host)."""
    done = src.ssh(f"timeout 3 bash -c 'exec 3<>/dev/tcp/{dst.ip}/{port}' && echo open || "
                   f"echo closed", ok=False)
    return done.stdout.strip() == "open"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--binary", required=True, help="the sqlraft-core binary to upgrade to")
    parser.add_argument("--old-binary", required=True,
                        help="the previous release's binary, installed first")
    parser.add_argument("--cache", required=True, help="where the root file system is cached")
    parser.add_argument("--work", required=True, help="a new directory for the hosts")
    parser.add_argument("--venv", required=True, help="the installer's virtualenv (made)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("systemd_hosts.py: must run as root (namespaces, containers)")
    if os.path.exists(args.work):
        sys.exit(f"systemd_hosts.py: {args.work} exists; give a new directory")
    for ns in [LAB] + [f"sqlraft-e2e-h{n}" for n in (1, 2, 3)]:
        if os.path.exists(f"/run/netns/{ns}"):
            sys.exit(f"systemd_hosts.py: network namespace {ns} exists: another run is going "
                     f"on, or one was killed (ip netns del {ns})")
    binary = os.path.abspath(args.binary)
    tarball = rootfs_tarball(args.cache)
    lab = Lab(os.path.abspath(args.work))
    ok = False
    try:
        lab.setup(tarball)
        scenario(lab, binary, os.path.abspath(args.old_binary), args.venv)
        ok = True
    except Failed as e:
        say(f"FAILED: {e}")
        for host in lab.hosts:
            if host.nspawn is not None and host.nspawn.poll() is None:
                out = host.ssh("journalctl -u 'sqlraft-core-*' --no-pager -n 40", ok=False)
                say(f"{host.name} journal:\n{out.stdout[-4000:]}")
    finally:
        lab.teardown(args.keep)
    say("PASSED" if ok else "FAILED")
    sys.exit(0 if ok else 1)


class Load:
    """Writes one row at a time through the three hosts in turn, from a thread, and
    keeps the ids the cluster acknowledged (HTTP 200 without an error)."""

    def __init__(self, api, hosts):
        self.api = api
        self.hosts = hosts
        self.acked = []
        self.failed = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        n = 1_000_000
        while not self.stop.is_set() and n < 1_000_000 + 20_000:
            host = self.hosts[n % len(self.hosts)]
            try:
                code, body = self.api.request(
                    "POST", f"{host.url}/db/execute",
                    [["INSERT INTO e2e(n, host) VALUES(?, ?)", n, host.name]], timeout=10)
                if code == 200 and not any("error" in r for r in body["results"]):
                    self.acked.append(n)
                else:
                    self.failed += 1
            except Failed:
                self.failed += 1
            n += 1
            time.sleep(0.02)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(60)


def all_ns(api, host):
    url = f"{host.url}/db/query?level=none&q=" + urllib.parse.quote(
        "SELECT n FROM e2e WHERE n >= 1000000")
    code, body = api.get(url)
    if code != 200:
        raise Failed(f"{host.name}: HTTP {code}: {body}")
    return {row[0] for row in body["results"][0].get("values", [])}


def versions(api, host):
    nodes = api.ok("GET", f"{host.url}/nodes")
    return sorted(n.get("version", "?") for n in nodes.values())


def join_service(lab, api, host, expect_new_command):
    """Creates a service for host over REST on core-1, gives the host its certificate
    and runs the printed install command there. Returns the service id."""
    core1 = lab.host(1)
    created = api.ok("POST", f"{core1.url}/api/v1/services",
                     {"fqdn": host.fqdn, "raft_addr": host.raft_addr}, want=(201,))
    sid = created["id"]
    cert = created["certificate"]
    for name, text, mode in [("ca.crt", cert["ca"], "0644"), (f"{sid}.crt", cert["cert"], "0644"),
                             (f"{sid}.key", cert["key"], "0600")]:
        host.ssh(f"install -m {mode} /dev/stdin {ROOT}/tls/{name}", input=text)
    command = created["install_command"]
    say(f"{host.name}: {command}")
    if expect_new_command:
        check(command.startswith(f"{ROOT}/bin/sqlraft-core run ") and "--user sqlraft" in command,
              f"{host.name}: the printed command runs the installed binary as the service user")
        host.ssh(f"chown sqlraft {ROOT}/tls/{sid}.key")
    elif command.startswith("sqlraft-core "):
        # 0.1.0 printed the bare name; the binary is where the installer put it.
        command = f"{ROOT}/bin/{command}"
    out = host.ssh(command, timeout=180).stdout
    say(f"{host.name}: {out.strip()}")
    eventually(f"{host.name} ready", lambda: api.get(f"{host.url}/readyz")[0] == 200, timeout=90)
    check(host.unit_state(sid) == ("active", "enabled"), f"{host.name}: unit enabled and active")
    return sid


def scenario(lab, binary, old_binary, venv):
    core1, core2, core3 = lab.hosts
    api = Api(lab)
    new_version = run([binary, "--version"]).stdout.split()[-1]
    old_version = run([old_binary, "--version"]).stdout.split()[-1]
    say(f"installing sqlraft {old_version}, then upgrading to {new_version}")

    # Before: each host lets in ssh only.
    check(not port_open(core2, core1, HTTP_PORT) and not port_open(core1, core3, RAFT_PORT),
          "before the installer, the firewalls keep the core ports closed")

    inv_path = os.path.join(lab.work, "distributed.inventory.yml")
    write(inv_path, inventory(lab))
    say(f"install.sh with sqlraft {old_version} (first run)")
    out = install_sh(lab, "install.sh", inv_path, venv, old_binary)
    for host in lab.hosts:
        check("failed=0" in recap(out, host), f"{host.name}: install.sh: {recap(out, host)}")
    check(lab.host(1).unit_state(FIRST_ID) == ("active", "enabled"),
          f"core-1: {core1.unit(FIRST_ID)} enabled and active")
    for host in lab.hosts[1:]:
        check(host.ssh(f"test -x {ROOT}/bin/sqlraft-core && test -f {ROOT}/tls/ca.crt && "
                       f"test -f {ROOT}/auth.json && ! ls /etc/systemd/system/sqlraft-core-*",
                       ok=False).returncode == 0,
              f"{host.name}: prepared (binary, CA certificate, users file), no service")
    # Firewalls: the installer opened the two ports with each host's own firewall.
    rules = {h.name: firewall_rules(h) for h in lab.hosts}
    say(f"firewall rules: {rules}")
    check(all(len(r) >= 2 for r in rules.values()) and
          "7209/tcp" in rules["core-3"] and "7220/tcp" in rules["core-3"],
          "every host's firewall opened 7209 and 7220")
    check(port_open(core2, core1, HTTP_PORT), "core-2 reaches core-1's HTTP port")
    check(not port_open(core2, core1, 7300), "a port nobody opened stays closed on core-1")
    hosts_block = core2.ssh("cat /etc/hosts").stdout
    check(all(f"{h.ip} {h.fqdn}" in hosts_block for h in lab.hosts),
          "core-2: /etc/hosts names every core host (generate_etc_hosts)")

    api.password = core1.ssh(f"cat {ROOT}/admin.password").stdout.strip()
    check(api.get(f"{core1.url}/readyz")[0] == 200, "core-1 ready")

    say("install.sh (second run: changes nothing)")
    out = install_sh(lab, "install.sh", inv_path, venv, old_binary)
    for host in lab.hosts:
        check("changed=0" in recap(out, host) and "failed=0" in recap(out, host),
              f"{host.name}: second run: {recap(out, host)}")
    check({h.name: firewall_rules(h) for h in lab.hosts} == rules,
          "the second run added no firewall rule")

    api.ok("POST", f"{core1.url}/db/execute",
           ["CREATE TABLE e2e (id INTEGER PRIMARY KEY, n INTEGER, host TEXT)"])
    insert(api, core1, 0, 50)

    # Further services: created over REST, installed with the printed command.
    ids = {"core-2": join_service(lab, api, core2, False),
           "core-3": join_service(lab, api, core3, False)}
    three = eventually("3 voters",
                       lambda: (v := voters(api, core1, core2, core3)) and len(v) == 3 and v,
                       timeout=90)
    check(len(three) == 3, f"a cluster of 3 voters: {three}")
    check(versions(api, core1) == [old_version] * 3, f"every member runs {old_version}")
    insert(api, core2, 50, 50)  # through a follower
    eventually("100 rows on core-3", lambda: count_rows(api, core3) == 100)

    # The rolling upgrade, under load.
    leader_before = api.ok("GET", f"{core1.url}/status")["leader_raft_id"]
    say(f"upgrade.sh to sqlraft {new_version} while a client writes (leader: raft id "
        f"{leader_before})")
    with Load(api, lab.hosts) as load:
        time.sleep(2)
        out = install_sh(lab, "upgrade.sh", inv_path, venv, binary)
        time.sleep(2)
    say(f"upgrade.sh: {len(load.acked)} writes acknowledged during it, {load.failed} not")
    check(len(load.acked) > 0, "writes were acknowledged during the upgrade")
    leader_host = next(h for h in lab.hosts
                       if api.ok("GET", f"{h.url}/status")["raft_id"] == leader_before)
    upgraded = [line for line in out.splitlines()
                if f"now sqlraft {new_version} (was {old_version})" in line]
    say("upgraded: " + "; ".join(u.strip().strip('",') for u in upgraded))
    followers_turn = out.split("PLAY [Upgrade the followers", 1)[-1].split("PLAY [Upgrade the leader", 1)[0]
    leader_turn = out.split("PLAY [Upgrade the leader last]", 1)[-1]
    followers = [h for h in lab.hosts if h is not leader_host]
    check(len(upgraded) == 3
          and all(f"changed: [{h.fqdn}]" in followers_turn for h in followers)
          and f"changed: [{leader_host.fqdn}]" in leader_turn
          and f"[{leader_host.fqdn}]" not in followers_turn,
          f"three services upgraded one by one, the leader ({leader_host.name}) last")
    for host in lab.hosts:
        eventually(f"{host.name} ready after the upgrade",
                   lambda h=host: api.get(f"{h.url}/readyz")[0] == 200, timeout=60)
    check(eventually("every member reports the new version",
                     lambda: versions(api, core1) == [new_version] * 3, timeout=30),
          f"every member runs {new_version}")
    final = count_rows(api, core1, "linearizable")
    for host in lab.hosts:
        eventually(f"{host.name} applied everything",
                   lambda h=host: count_rows(api, h) == final, timeout=60)
        present = all_ns(api, host)
        lost = [n for n in load.acked if n not in present]
        check(not lost, f"{host.name}: every acknowledged write is there "
                        f"({len(load.acked)} acknowledged, {len(lost)} missing)")
    unit_text = core2.ssh(f"cat /etc/systemd/system/{core2.unit(ids['core-2'])}").stdout
    check("ExecStopPost=+" in unit_text, "core-2's unit was written again by the new version")
    check(core2.ssh(f"test -x {ROOT}/bin/sqlraft-core.previous && "
                    f"{ROOT}/bin/sqlraft-core.previous --version").stdout.split()[-1]
          == old_version, "core-2 keeps the old binary as sqlraft-core.previous")
    fmt = core2.ssh(f"cat {ROOT}/core/{ids['core-2']}/format").stdout
    check(f"written_by={new_version}" in fmt, f"core-2's data directory records {new_version}")

    # Again: nothing restarts.
    pids = {h.name: h.ssh("pgrep -x sqlraft-core").stdout.split() for h in lab.hosts}
    out = install_sh(lab, "upgrade.sh", inv_path, venv, binary)
    after = {h.name: h.ssh("pgrep -x sqlraft-core").stdout.split() for h in lab.hosts}
    said = [line.strip() for line in out.splitlines() if "already" in line]
    # (Ansible's output wraps long lines.)
    check(" ".join(out.split()).count("already; nothing changed") == 3 and after == pids,
          f"a second upgrade.sh restarts nothing (pids {pids} then {after}; said {said})")

    # journald has the service's log.
    journal = core1.ssh(f"journalctl -u {core1.unit(FIRST_ID)} --no-pager").stdout
    check("starting core service" in journal, "journalctl -u shows core-1's service log")

    # systemctl restart keeps the data.
    rows = count_rows(api, core1, "linearizable")
    sid2 = ids["core-2"]
    core2.ssh(f"systemctl restart {core2.unit(sid2)}")
    eventually("core-2 ready after restart", lambda: api.get(f"{core2.url}/readyz")[0] == 200,
               timeout=90)
    check(count_rows(api, core2) == rows, f"core-2: systemctl restart kept its {rows} rows")
    insert(api, core1, 100, 20)

    # A host reboot: its container powered off and booted again.
    say("core-3: reboot (container powered off and booted again)")
    core3.poweroff()
    insert(api, core1, 120, 30)  # the cluster goes on with 2 of 3
    core3.boot()
    core3.wait_booted()
    sid3 = ids["core-3"]
    check(core3.unit_state(sid3) == ("active", "enabled"), "core-3: after reboot its unit is active")
    rows = count_rows(api, core1, "linearizable")
    eventually("core-3 caught up after reboot", lambda: count_rows(api, core3) == rows, timeout=90)
    check(set(voters(api, core1) or []) == set(three), "still the same 3 voters")

    # Removal: the unit stops and is disabled; nothing of it runs.
    code, removed = api.request("DELETE", f"{core1.url}/api/v1/services/{sid3}")
    check(code == 200, f"core-3's service removed over REST: {removed}")
    eventually("core-3's unit stops and is disabled",
               lambda: core3.unit_state(sid3) == ("inactive", "disabled"), timeout=60)
    check(core3.ssh("pgrep -x sqlraft-core", ok=False).returncode == 1,
          "core-3: no sqlraft-core process left")
    check(core3.ssh(f"systemctl show -p Result --value {core3.unit(sid3)}").stdout.strip()
          == "success", "core-3: the unit ended cleanly (not failed)")
    insert(api, core1, 150, 10)
    # Started by hand, a removed service says so and exits cleanly.
    core3.ssh(f"systemctl start {core3.unit(sid3)}")
    eventually("core-3's removed service ends again",
               lambda: core3.unit_state(sid3) == ("inactive", "disabled"), timeout=30)
    journal = core3.ssh(f"journalctl -u {core3.unit(sid3)} --no-pager -n 20").stdout
    check("not starting" in journal and core3.ssh("pgrep -x sqlraft-core", ok=False).returncode == 1,
          "core-3: started by hand, the removed service refuses to start (journal says why)")

    # uninstall: unit and binary gone, data kept.
    out = core3.ssh(f"{ROOT}/bin/sqlraft-core uninstall --id {sid3} --root {ROOT}").stdout
    say(f"core-3: uninstall: {out.strip()}")
    check(core3.ssh(f"test ! -e /etc/systemd/system/{core3.unit(sid3)} && "
                    f"test ! -e {ROOT}/bin/sqlraft-core && test -d {ROOT}/core/{sid3}/db",
                    ok=False).returncode == 0,
          "core-3: uninstall removed the unit and the binary and kept the data")
    known = core3.ssh(f"systemctl list-unit-files --no-legend {core3.unit(sid3)}", ok=False)
    check(known.stdout.strip() == "", "core-3: systemd no longer knows the unit")
    left = core3.ssh(f"ls {ROOT}/core/{sid3}").stdout.split()
    check("removed" in left and "db" in left and "raft" in left,
          f"core-3: the data directory is kept with its removal note: {left}")

    # The server comes back as a new service: the installer puts the binary back, the
    # new version's printed command installs it.
    say("core-3 back as a new service (install.sh with the new binary, then the web's command)")
    out = install_sh(lab, "install.sh", inv_path, venv, binary)
    for host in lab.hosts:
        check("failed=0" in recap(out, host), f"{host.name}: install.sh: {recap(out, host)}")
    core3.ssh(f"rm -rf {ROOT}/core/{sid3}")
    ids["core-3 again"] = join_service(lab, api, core3, True)
    check(core3.ssh("ps -o user= -C sqlraft-core | sort -u").stdout.split() == ["sqlraft"],
          "core-3: the new service runs as the user sqlraft")
    back = eventually("3 voters again",
                      lambda: (v := voters(api, core1, core2, core3)) and len(v) == 3 and v,
                      timeout=90)
    rows = count_rows(api, core1, "linearizable")
    eventually("core-3 has every row", lambda: count_rows(api, core3) == rows, timeout=60)
    check(len(back) == 3, f"3 voters again: {back}, {rows} rows on core-3")

    # A lost majority, recovered as docs/OPERATIONS.md says.
    say("core-2 and core-3 lost (their hosts powered off); recovering from core-1")
    lost = {core2.name: ids["core-2"], core3.name: ids["core-3 again"]}
    insert(api, core1, 200, 10)
    survivor_rows = count_rows(api, core1, "linearizable")
    core2.poweroff()
    core3.poweroff()
    code, body = api.request("POST", f"{core1.url}/db/execute",
                             ["INSERT INTO e2e(n, host) VALUES(-1, 'lost')"], timeout=15)
    # Not acknowledged; it stays in core-1's log, and may be committed after the reset
    # (the client was told the outcome is unknown).
    check(code != 200, f"without a majority core-1 acknowledges no write (HTTP {code})")
    # 1. Stop the survivor. 3. Mark it for reset. 4. Start it.
    core1.ssh(f"systemctl stop {core1.unit(FIRST_ID)}")
    core1.ssh(f"touch {ROOT}/core/{FIRST_ID}/raft/.reset")
    core1.ssh(f"systemctl start {core1.unit(FIRST_ID)}")
    def leads_alone():
        code, status = api.get(f"{core1.url}/status")
        return code == 200 and status.get("role") == "leader" and status.get("voters") == [1]
    eventually("core-1 leads alone", leads_alone, timeout=60)
    check(count_rows(api, core1, "linearizable", "n >= 0") == survivor_rows,
          f"core-1 leads alone with its {survivor_rows} rows")
    insert(api, core1, 300, 5)
    check(core1.ssh(f"test ! -e {ROOT}/core/{FIRST_ID}/raft/.reset", ok=False).returncode == 0,
          "core-1: .reset was consumed")
    # 2. Wipe the lost ones when their hosts come back (keep the binary for step 5).
    for host in (core2, core3):
        host.boot()
    for host in (core2, core3):
        host.wait_booted()
        out = host.ssh(f"{ROOT}/bin/sqlraft-core uninstall --id {lost[host.name]} --root {ROOT} "
                       f"--force --purge --keep-binary").stdout
        say(f"{host.name}: {out.strip()}")
        check(host.ssh(f"test ! -e {ROOT}/core/{lost[host.name]} && test -x {ROOT}/bin/sqlraft-core"
                       " && ! pgrep -x sqlraft-core", ok=False).returncode == 0,
              f"{host.name}: the lost service is wiped, nothing runs, the binary stays")
    # 5. Fresh services for the wiped servers.
    join_service(lab, api, core2, True)
    join_service(lab, api, core3, True)
    final = eventually("3 voters after the recovery",
                       lambda: (v := voters(api, core1, core2, core3)) and len(v) == 3 and v,
                       timeout=90)
    rows = count_rows(api, core1, "linearizable")
    for host in (core2, core3):
        eventually(f"{host.name} has every row", lambda h=host: count_rows(api, h) == rows,
                   timeout=60)
    check(count_rows(api, core1, "linearizable", "n >= 0") == survivor_rows + 5,
          f"recovered: voters {final}, {rows} rows on every host")


if __name__ == "__main__":
    main()
