#!/usr/bin/env bash
# Regenerates the NetFlow v5/v9 and IPFIX fixtures of the collector tests
# (crates/hallmark-flows/tests/data/netflow/) from a real exporter.
#
# 1. Known traffic on the loopback interface is captured with tcpdump: TCP
#    and UDP over IPv4 (one conversation, then 60 one-datagram flows), TCP
#    over IPv6, and a TCP connection refused.
# 2. The capture is replayed through Debian's softflowd once per export
#    format; every datagram it sends is saved as <format>-<n>.bin.
# 3. expected.json lists each direction of each conversation as the capture
#    itself counts it (packets, IP bytes), and nfdump-<format>.csv is what
#    nfdump's collector (nfcapd) decoded from the same datagrams, so the
#    tests compare Hallmark with the traffic and with another collector.
# 4. fuzz/seeds/collector_datagram/<format> holds each format's datagrams.
#
# Needs root (tcpdump on lo), python3, softflowd, tcpdump and nfdump:
#     apt-get install -y softflowd tcpdump nfdump
# Usage: bash scripts/netflow-fixtures.sh
#        KEEP_WORK=1 bash scripts/netflow-fixtures.sh   # keeps the capture and logs
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
out="$root/crates/hallmark-flows/tests/data/netflow"
work=$(mktemp -d)
if [ -n "${KEEP_WORK:-}" ]; then
    echo "capture and logs kept in $work"
else
    trap 'rm -rf "$work"' EXIT
fi

for tool in softflowd tcpdump nfcapd nfdump python3; do
    command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install -y softflowd tcpdump nfdump)" >&2; exit 1; }
done

# Ports used only by this script, so the capture filter sees nothing else.
filter='port 47001 or port 47002 or port 47003 or port 47009'

tcpdump -i lo -U -w "$work/traffic.pcap" "$filter" 2>"$work/tcpdump.log" &
tcpdump_pid=$!
sleep 1

python3 - <<'EOF'
import socket, threading, time

def tcp_server(family, addr, port, reply):
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port))
    s.listen(1)
    def run():
        c, _ = s.accept()
        got = 0
        while True:
            b = c.recv(65536)
            if not b:
                break
            got += len(b)
        c.sendall(b"r" * reply)
        c.close()
        s.close()
    t = threading.Thread(target=run)
    t.start()
    return t

def tcp_client(family, addr, port, send):
    c = socket.socket(family, socket.SOCK_STREAM)
    c.connect((addr, port))
    c.sendall(b"s" * send)
    c.shutdown(socket.SHUT_WR)
    while c.recv(65536):
        pass
    c.close()

t = tcp_server(socket.AF_INET, "127.0.0.1", 47001, 2000)
tcp_client(socket.AF_INET, "127.0.0.1", 47001, 10000)
t.join()

u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.bind(("127.0.0.1", 47002))
c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
c.bind(("127.0.0.1", 47102))
for _ in range(5):
    c.sendto(b"u" * 100, ("127.0.0.1", 47002))
    u.recvfrom(2048)
c.close()
# Many small flows, so each export format needs several datagrams and the
# later ones carry data whose templates came in an earlier one.
for port in range(47200, 47260):
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    c.bind(("127.0.0.1", port))
    c.sendto(b"m" * 50, ("127.0.0.1", 47002))
    u.recvfrom(2048)
    c.close()
u.close()

t = tcp_server(socket.AF_INET6, "::1", 47003, 700)
tcp_client(socket.AF_INET6, "::1", 47003, 3000)
t.join()

r = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
try:
    r.connect(("127.0.0.1", 47009))
except ConnectionRefusedError:
    pass
r.close()
time.sleep(0.5)
EOF

sleep 1
kill "$tcpdump_pid"
wait "$tcpdump_pid" || true

mkdir -p "$out"
rm -f "$out"/*.bin "$out"/nfdump-*.csv

# Each direction of each conversation, counted from the capture itself.
python3 - "$work/traffic.pcap" "$out/expected.json" <<'EOF'
import json, socket, struct, sys
data = open(sys.argv[1], "rb").read()
magic = struct.unpack("<I", data[:4])[0]
endian = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
linktype = struct.unpack(endian + "I", data[20:24])[0]
assert linktype == 1, f"expected an Ethernet capture of lo, linktype {linktype}"
flows, off = {}, 24
while off + 16 <= len(data):
    sec, usec, incl, orig = struct.unpack(endian + "IIII", data[off:off + 16])
    pkt = data[off + 16:off + 16 + incl]
    off += 16 + incl
    ethertype = struct.unpack(">H", pkt[12:14])[0]
    ip = pkt[14:]
    if ethertype == 0x0800:
        ihl = (ip[0] & 0x0F) * 4
        length = struct.unpack(">H", ip[2:4])[0]
        proto = ip[9]
        src, dst = socket.inet_ntop(socket.AF_INET, ip[12:16]), socket.inet_ntop(socket.AF_INET, ip[16:20])
        l4 = ip[ihl:]
    elif ethertype == 0x86DD:
        length = 40 + struct.unpack(">H", ip[4:6])[0]
        proto = ip[6]
        src, dst = socket.inet_ntop(socket.AF_INET6, ip[8:24]), socket.inet_ntop(socket.AF_INET6, ip[24:40])
        l4 = ip[40:]
    else:
        continue
    sport, dport = struct.unpack(">HH", l4[:4])
    key = (proto, src, sport, dst, dport)
    f = flows.setdefault(key, {"protocol": proto, "src": src, "src_port": sport, "dst": dst,
                               "dst_port": dport, "packets": 0, "bytes": 0,
                               "first_ms": sec * 1000 + usec // 1000})
    f["packets"] += 1
    f["bytes"] += length
    f["last_ms"] = sec * 1000 + usec // 1000
json.dump(sorted(flows.values(), key=lambda f: (f["first_ms"], f["src_port"])), open(sys.argv[2], "w"), indent=1)
print(f"{len(flows)} flows in the capture")
EOF

# A receiver that saves each datagram it gets until told to stop.
cat >"$work/receive.py" <<'EOF'
import socket, sys
port, prefix = int(sys.argv[1]), sys.argv[2]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", port))
s.settimeout(3)
n = 0
open(prefix + ".ready", "w").close()
while True:
    try:
        d, _ = s.recvfrom(65535)
    except socket.timeout:
        break
    n += 1
    open(f"{prefix}-{n}.bin", "wb").write(d)
print(f"{prefix}: {n} datagrams")
EOF

export_format() {
    local name=$1 port=$2
    shift 2
    python3 "$work/receive.py" "$port" "$out/$name" &
    local rx=$!
    while [ ! -e "$out/$name.ready" ]; do sleep 0.1; done
    rm -f "$out/$name.ready"
    # -c none: given a control socket path, softflowd 1.1 replaying a
    # capture here never got past startup.
    softflowd -r "$work/traffic.pcap" -n "127.0.0.1:$port" -d \
        -p "$work/$name.pid" -c none "$@" >"$work/$name.log" 2>&1
    wait "$rx"
}

export_format v5 47101 -v 5
export_format v9 47101 -v 9 -6
export_format ipfix 47101 -v 10 -6
export_format ipfix-milli 47101 -v 10 -6 -A milli
export_format ipfix-sec 47101 -v 10 -6 -A sec
export_format ipfix-micro 47101 -v 10 -6 -A micro
export_format ipfix-nano 47101 -v 10 -6 -A nano
export_format ipfix-bidir 47101 -v 10 -6 -b

# The same datagrams through nfdump's collector, for a second opinion.
for name in v5 v9 ipfix ipfix-milli; do
    mkdir -p "$work/nf-$name"
    nfcapd -b 127.0.0.1 -p 47201 -w "$work/nf-$name" -t 60 >"$work/nfcapd.log" 2>&1 &
    nf=$!
    sleep 1
    python3 - "$out" "$name" <<'EOF'
import glob, re, socket, sys
out, name = sys.argv[1], sys.argv[2]
files = sorted(glob.glob(f"{out}/{name}-[0-9]*.bin"), key=lambda p: int(re.search(r"-(\d+)\.bin$", p).group(1)))
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for p in files:
    s.sendto(open(p, "rb").read(), ("127.0.0.1", 47201))
EOF
    sleep 1
    kill -TERM "$nf"
    wait "$nf" || true
    nfdump -R "$work/nf-$name" -q -o 'fmt:%pr,%sa,%sp,%da,%dp,%pkt,%byt' -6 \
        | sed 's/ //g' | sort >"$out/nfdump-$name.csv"
done

# Seeds for the collector's fuzz target: each format's datagrams in order,
# each after its length (two bytes, big-endian).
seeds="$root/fuzz/seeds/collector_datagram"
mkdir -p "$seeds"
python3 - "$out" "$seeds" <<'EOF'
import glob, os, re, struct, sys
out, seeds = sys.argv[1], sys.argv[2]
names = sorted({re.sub(r"-\d+\.bin$", "", os.path.basename(p)) for p in glob.glob(f"{out}/*.bin")})
for name in names:
    files = sorted(glob.glob(f"{out}/{name}-[0-9]*.bin"), key=lambda p: int(re.search(r"-(\d+)\.bin$", p).group(1)))
    with open(f"{seeds}/{name}", "wb") as f:
        for p in files:
            d = open(p, "rb").read()
            f.write(struct.pack(">H", len(d)) + d)
print(f"{len(names)} collector_datagram seeds")
EOF

ls -l "$out"
