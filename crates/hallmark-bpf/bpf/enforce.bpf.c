// SPDX-License-Identifier: GPL-2.0
/*
 * Identity policy enforcement for the Hallmark agent.
 *
 * Egress: cgroup/connect4|6 (TCP connects, connected UDP) and
 * cgroup/sendmsg4|6 (unconnected UDP) decide before the first packet and
 * return 0 (the caller gets EPERM) on deny. Ingress: cgroup_skb/ingress
 * decides new inbound TCP connections (SYN without ACK) and inbound UDP for
 * the receiving socket's cgroup and drops the packet on deny.
 *
 * Every map but the exemptions carries a generation in its key; a program
 * reads hm_enf_config once and uses only that generation, so userspace can
 * fill the inactive generation, flip it with one array write and clear the
 * old one: a decision never sees half a policy.
 *
 * Addresses in map keys are 16 bytes with IPv4 as v4-mapped
 * (::ffff:a.b.c.d), so a v6 socket talking to a v4 peer through a mapped
 * address is decided as that v4 peer. The layouts below are mirrored byte
 * for byte in src/enforce_records.rs.
 */
#include "hallmark_vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>

char LICENSE[] SEC("license") = "GPL";

/* UAPI: the socket view cgroup programs get (exact layout). */
struct bpf_sock {
	__u32 bound_dev_if;
	__u32 family;
	__u32 type;
	__u32 protocol;
	__u32 mark;
	__u32 priority;
	__u32 src_ip4;
	__u32 src_ip6[4];
	__u32 src_port; /* host byte order */
	__be16 dst_port; /* network byte order */
	__u16 :16;
	__u32 dst_ip4;
	__u32 dst_ip6[4];
	__u32 state;
	__s32 rx_queue_mapping;
};

/* UAPI: the context of cgroup/connect* and cgroup/sendmsg* (exact layout). */
struct bpf_sock_addr {
	__u32 user_family;
	__u32 user_ip4; /* network byte order */
	__u32 user_ip6[4]; /* network byte order */
	__u32 user_port; /* network byte order */
	__u32 family;
	__u32 type;
	__u32 protocol;
	__u32 msg_src_ip4;
	__u32 msg_src_ip6[4];
	union {
		struct bpf_sock *sk;
		__u64 :64;
	} __attribute__((aligned(8)));
};

#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17

#define MODE_OFF 0
#define MODE_WATCH 1
#define MODE_ON 2

#define VERDICT_ALLOW 0
#define VERDICT_DENY 1
#define VERDICT_WOULD_DENY 2
#define VERDICTS 3

#define DIR_EGRESS 0
#define DIR_INGRESS 1

#define MAX_SEGS 64

/* Decisions are counted per (rule id, verdict); ids from RULE_COUNTERS up
 * share the last slot. */
#define RULE_COUNTERS 4096

#define DROP_RINGBUF_FULL 0
#define DROP_REASONS 1

/* Map capacities: twice what one policy image may use, because the next
 * generation is written while the current one is still in force. */
#define LOCAL_MAX (2 * 4096)
#define PEER4_MAX (2 * 32768)
#define PEER6_MAX (2 * 32768)
#define PAIRS_MAX (2 * 262144)
#define TABLES_MAX (2 * 32768)
#define EXEMPT_MAX 1024
#define UDP_OK_MAX 65536

struct config {
	u32 mode;
	u32 generation; /* 0 or 1 */
	u8 default_verdict[2]; /* per generation */
	u8 pad[6];
};

struct local_key {
	u64 cgroup_id;
	u32 generation;
	u32 pad;
};

struct peer4_key {
	u32 prefixlen; /* 32 (the generation) + the address prefix */
	u32 generation;
	u8 addr[4];
};

struct peer6_key {
	u32 prefixlen; /* 32 (the generation) + the address prefix */
	u32 generation;
	u8 addr[16];
};

struct pair_key {
	u32 generation;
	u32 local;
	u32 remote;
	u8 protocol;
	u8 direction;
	u16 pad;
};

/* A pair names its port table: pairs are many (local identities × remote
 * identities) and most share one of a few tables. */
struct table_key {
	u32 generation;
	u32 id;
};

/* Port segments: segment i covers start[i] .. start[i+1]-1 (the last one up
 * to 65535); start[] strictly increases. A port below start[0] takes the
 * default verdict. */
struct table_val {
	u16 n;
	u16 start[MAX_SEGS];
	u8 verdict[MAX_SEGS];
	u32 rule[MAX_SEGS];
};

/* Egress: the remote address and port. Ingress: the local ones. */
struct exempt_key {
	u8 addr[16];
	u16 port; /* 0: any port */
	u8 protocol;
	u8 direction;
};

/* A UDP exchange the egress side allowed, as seen from the local socket:
 * replies from raddr:rport to lport pass ingress. lport is 0 when the
 * socket was not bound yet (connect() before the first send). */
struct udp_ok_key {
	u64 cgroup_id;
	u8 raddr[16];
	u16 lport;
	u16 rport;
	u32 pad;
};

/* A deny or would-deny (ring buffer record), 72 bytes. */
struct enf_event {
	u64 ts_ns;
	u64 cgroup_id;
	u32 local;
	u32 remote;
	u32 rule;
	u8 verdict;
	u8 protocol;
	u8 direction;
	u8 family; /* 4 or 6; a v4 address is in the first 4 bytes */
	u16 local_port;
	u16 remote_port;
	u8 local_addr[16];
	u8 remote_addr[16];
};

#define OFF(t, f, o) _Static_assert(__builtin_offsetof(struct t, f) == (o), #t "." #f)
_Static_assert(sizeof(struct config) == 16, "config size");
OFF(config, generation, 4);
OFF(config, default_verdict, 8);
_Static_assert(sizeof(struct local_key) == 16, "local_key size");
_Static_assert(sizeof(struct peer4_key) == 12, "peer4_key size");
_Static_assert(sizeof(struct peer6_key) == 24, "peer6_key size");
_Static_assert(sizeof(struct pair_key) == 16, "pair_key size");
OFF(pair_key, local, 4);
OFF(pair_key, remote, 8);
OFF(pair_key, protocol, 12);
OFF(pair_key, direction, 13);
_Static_assert(sizeof(struct table_key) == 8, "table_key size");
OFF(table_key, id, 4);
_Static_assert(sizeof(struct table_val) == 452, "table_val size");
OFF(table_val, start, 2);
OFF(table_val, verdict, 130);
OFF(table_val, rule, 196);
_Static_assert(sizeof(struct exempt_key) == 20, "exempt_key size");
OFF(exempt_key, port, 16);
OFF(exempt_key, protocol, 18);
OFF(exempt_key, direction, 19);
_Static_assert(sizeof(struct udp_ok_key) == 32, "udp_ok_key size");
OFF(udp_ok_key, raddr, 8);
OFF(udp_ok_key, lport, 24);
OFF(udp_ok_key, rport, 26);
_Static_assert(sizeof(struct enf_event) == 72, "enf_event size");
OFF(enf_event, cgroup_id, 8);
OFF(enf_event, local, 16);
OFF(enf_event, remote, 20);
OFF(enf_event, rule, 24);
OFF(enf_event, verdict, 28);
OFF(enf_event, protocol, 29);
OFF(enf_event, direction, 30);
OFF(enf_event, family, 31);
OFF(enf_event, local_port, 32);
OFF(enf_event, remote_port, 34);
OFF(enf_event, local_addr, 36);
OFF(enf_event, remote_addr, 52);

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct config);
} hm_enf_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, LOCAL_MAX);
	__type(key, struct local_key);
	__type(value, u32);
} hm_enf_local SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, PEER4_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct peer4_key);
	__type(value, u32);
} hm_enf_peer4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, PEER6_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct peer6_key);
	__type(value, u32);
} hm_enf_peer6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PAIRS_MAX);
	/* Allocated as pairs are written, not up front. */
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct pair_key);
	__type(value, u32); /* the table's id */
} hm_enf_pairs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TABLES_MAX);
	/* 452-byte values: allocated as tables are written, not up front. */
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct table_key);
	__type(value, struct table_val);
} hm_enf_tables SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, EXEMPT_MAX);
	__type(key, struct exempt_key);
	__type(value, u8);
} hm_enf_exempt SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, UDP_OK_MAX);
	__type(key, struct udp_ok_key);
	__type(value, u64);
} hm_enf_udp_ok SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1024 * 1024);
} hm_enf_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DROP_REASONS);
	__type(key, u32);
	__type(value, u64);
} hm_enf_drops SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, VERDICTS);
	__type(key, u32);
	__type(value, u64);
} hm_enf_decisions SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, RULE_COUNTERS * VERDICTS);
	__type(key, u32);
	__type(value, u64);
} hm_enf_rule_hits SEC(".maps");

/* One connection or datagram to decide. Addresses are v4-mapped for v4. */
struct flow {
	u64 cgroup_id;
	u8 laddr[16];
	u8 raddr[16];
	u16 lport;
	u16 rport;
	u8 protocol;
	u8 direction;
	u8 v4;
};

static __always_inline void count(void *map, u32 idx)
{
	u64 *n = bpf_map_lookup_elem(map, &idx);

	if (n)
		*n += 1; /* per-CPU slot: no atomics needed */
}

static __always_inline bool is_v4_mapped(const u32 *a)
{
	return a[0] == 0 && a[1] == 0 && a[2] == bpf_htonl(0xffff);
}

static __always_inline void set_v4(u8 *addr, u32 be)
{
	u32 *a = (u32 *)addr;

	a[0] = 0;
	a[1] = 0;
	a[2] = bpf_htonl(0xffff);
	a[3] = be;
}

static __always_inline bool exempt(const struct flow *f)
{
	struct exempt_key k = {};

	/* Egress names the far end, ingress the local service. */
	__builtin_memcpy(k.addr, f->direction == DIR_EGRESS ? f->raddr : f->laddr, 16);
	k.port = f->direction == DIR_EGRESS ? f->rport : f->lport;
	k.protocol = f->protocol;
	k.direction = f->direction;
	if (bpf_map_lookup_elem(&hm_enf_exempt, &k))
		return 1;
	k.port = 0;
	if (bpf_map_lookup_elem(&hm_enf_exempt, &k))
		return 1;
	/* The unspecified address (::) with a port: that port on any address. */
	__builtin_memset(k.addr, 0, 16);
	k.port = f->direction == DIR_EGRESS ? f->rport : f->lport;
	return bpf_map_lookup_elem(&hm_enf_exempt, &k) != 0;
}

static __always_inline u32 peer_ident(const struct flow *f, u32 gen)
{
	u32 *id;

	if (f->v4) {
		struct peer4_key k = { .prefixlen = 64, .generation = gen };

		__builtin_memcpy(k.addr, f->raddr + 12, 4);
		id = bpf_map_lookup_elem(&hm_enf_peer4, &k);
	} else {
		struct peer6_key k = { .prefixlen = 160, .generation = gen };

		__builtin_memcpy(k.addr, f->raddr, 16);
		id = bpf_map_lookup_elem(&hm_enf_peer6, &k);
	}
	return id ? *id : 0;
}

/* The last segment whose start is <= port, by binary search over at most
 * MAX_SEGS entries (7 rounds). Returns -1 when port is below start[0]. */
static __always_inline int find_segment(const struct table_val *v, u16 port)
{
	u32 n = v->n;
	u32 lo = 0, hi;
	int i;

	if (n == 0 || n > MAX_SEGS)
		return -1;
	if (port < v->start[0])
		return -1;
	hi = n; /* invariant: start[lo] <= port, and start[hi] > port or hi == n */
	for (i = 0; i < 7; i++) {
		u32 mid;

		if (hi - lo <= 1)
			break;
		mid = (lo + hi) / 2;
		if (v->start[mid & (MAX_SEGS - 1)] <= port)
			lo = mid;
		else
			hi = mid;
	}
	return lo & (MAX_SEGS - 1);
}

static __always_inline void emit(const struct flow *f, u32 local, u32 remote, u32 rule,
				 u8 verdict)
{
	struct enf_event *e = bpf_ringbuf_reserve(&hm_enf_events, sizeof(*e), 0);

	if (!e) {
		count(&hm_enf_drops, DROP_RINGBUF_FULL);
		return;
	}
	__builtin_memset(e, 0, sizeof(*e));
	e->ts_ns = bpf_ktime_get_ns();
	e->cgroup_id = f->cgroup_id;
	e->local = local;
	e->remote = remote;
	e->rule = rule;
	e->verdict = verdict;
	e->protocol = f->protocol;
	e->direction = f->direction;
	e->local_port = f->lport;
	e->remote_port = f->rport;
	if (f->v4) {
		e->family = 4;
		__builtin_memcpy(e->local_addr, f->laddr + 12, 4);
		__builtin_memcpy(e->remote_addr, f->raddr + 12, 4);
	} else {
		e->family = 6;
		__builtin_memcpy(e->local_addr, f->laddr, 16);
		__builtin_memcpy(e->remote_addr, f->raddr, 16);
	}
	bpf_ringbuf_submit(e, 0);
}

/* Whether to let the flow through. *enforced says whether the cgroup is
 * one the agent enforces for (and the mode is not off). */
static __always_inline bool decide(const struct flow *f, bool *enforced)
{
	u32 zero = 0, gen, local, remote, rule = 0;
	struct local_key lk = {};
	struct pair_key pk = {};
	struct table_key tk = {};
	struct table_val *tv = 0;
	struct config *cfg;
	u32 *lid, *table;
	u8 verdict;

	*enforced = 0;
	cfg = bpf_map_lookup_elem(&hm_enf_config, &zero);
	if (!cfg)
		return 1;
	/* One read of the config: mode and generation stay consistent for
	 * this decision whatever userspace writes meanwhile. */
	u32 mode = cfg->mode;
	gen = cfg->generation & 1;
	verdict = cfg->default_verdict[gen];
	if (mode == MODE_OFF)
		return 1;

	lk.cgroup_id = f->cgroup_id;
	lk.generation = gen;
	lid = bpf_map_lookup_elem(&hm_enf_local, &lk);
	if (!lid)
		return 1; /* not a managed workload (the agent itself, say) */
	local = *lid;
	*enforced = 1;
	if (exempt(f)) {
		count(&hm_enf_decisions, VERDICT_ALLOW);
		return 1;
	}
	remote = peer_ident(f, gen);

	pk.generation = gen;
	pk.local = local;
	pk.remote = remote;
	pk.protocol = f->protocol;
	pk.direction = f->direction;
	table = bpf_map_lookup_elem(&hm_enf_pairs, &pk);
	if (table) {
		tk.generation = gen;
		tk.id = *table;
		tv = bpf_map_lookup_elem(&hm_enf_tables, &tk);
	}
	if (tv) {
		int i = find_segment(tv, f->direction == DIR_EGRESS ? f->rport : f->lport);

		if (i >= 0) {
			verdict = tv->verdict[i & (MAX_SEGS - 1)];
			rule = tv->rule[i & (MAX_SEGS - 1)];
		}
	}
	if (verdict > VERDICT_WOULD_DENY)
		verdict = VERDICT_DENY; /* unknown values fail closed */
	if (verdict == VERDICT_DENY && mode == MODE_WATCH)
		verdict = VERDICT_WOULD_DENY;
	count(&hm_enf_decisions, verdict);
	count(&hm_enf_rule_hits,
	      (rule < RULE_COUNTERS ? rule : RULE_COUNTERS - 1) * VERDICTS + verdict);
	if (verdict != VERDICT_ALLOW)
		emit(f, local, remote, rule, verdict);
	return verdict != VERDICT_DENY;
}

/* The cgroup of the socket itself. No helper returns it for sock_addr
 * programs (bpf_sk_cgroup_id is not allowed there), and the socket pointer
 * may not take pointer arithmetic: copy its value through the stack with
 * bpf_probe_read_kernel so it becomes a plain number, then read
 * sk->sk_cgrp_data.cgroup->kn->id with CO-RE. Needs CAP_PERFMON (root). */
static __always_inline u64 addr_sock_cgroup(struct bpf_sock_addr *ctx)
{
	struct bpf_sock *sk = ctx->sk;
	u64 raw, ptr = 0;

	if (!sk)
		return 0;
	raw = (u64)sk;
	if (bpf_probe_read_kernel(&ptr, sizeof(ptr), &raw))
		return 0;
	return BPF_CORE_READ((struct sock *)ptr, sk_cgrp_data.cgroup, kn, id);
}

static __always_inline void remember_udp(const struct flow *f)
{
	struct udp_ok_key k = {};
	u64 now = bpf_ktime_get_ns();

	k.cgroup_id = f->cgroup_id;
	__builtin_memcpy(k.raddr, f->raddr, 16);
	k.lport = f->lport;
	k.rport = f->rport;
	/* LRU: a full map evicts the oldest exchange, never fails. */
	bpf_map_update_elem(&hm_enf_udp_ok, &k, &now, BPF_ANY);
}

static __always_inline int egress(struct bpf_sock_addr *ctx, bool v6)
{
	struct flow f = {};
	struct bpf_sock *sk;
	bool enforced;
	u32 proto = ctx->protocol;

	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return 1;
	f.protocol = proto;
	f.direction = DIR_EGRESS;
	f.rport = bpf_ntohs(ctx->user_port);
	if (v6) {
		u32 r[4];

		r[0] = ctx->user_ip6[0];
		r[1] = ctx->user_ip6[1];
		r[2] = ctx->user_ip6[2];
		r[3] = ctx->user_ip6[3];
		__builtin_memcpy(f.raddr, r, 16);
		f.v4 = is_v4_mapped(r);
	} else {
		set_v4(f.raddr, ctx->user_ip4);
		f.v4 = 1;
	}
	sk = ctx->sk;
	if (sk) {
		f.lport = sk->src_port;
		if (f.v4 && !v6) {
			set_v4(f.laddr, sk->src_ip4);
		} else {
			u32 l[4];

			l[0] = sk->src_ip6[0];
			l[1] = sk->src_ip6[1];
			l[2] = sk->src_ip6[2];
			l[3] = sk->src_ip6[3];
			__builtin_memcpy(f.laddr, l, 16);
			if (f.v4 && !is_v4_mapped(l))
				set_v4(f.laddr, 0);
		}
	}
	f.cgroup_id = addr_sock_cgroup(ctx);
	if (!decide(&f, &enforced))
		return 0;
	if (enforced && proto == IPPROTO_UDP)
		remember_udp(&f);
	return 1;
}

SEC("cgroup/connect4")
int hm_enf_connect4(struct bpf_sock_addr *ctx)
{
	return egress(ctx, 0);
}

SEC("cgroup/connect6")
int hm_enf_connect6(struct bpf_sock_addr *ctx)
{
	return egress(ctx, 1);
}

SEC("cgroup/sendmsg4")
int hm_enf_sendmsg4(struct bpf_sock_addr *ctx)
{
	return egress(ctx, 0);
}

SEC("cgroup/sendmsg6")
int hm_enf_sendmsg6(struct bpf_sock_addr *ctx)
{
	return egress(ctx, 1);
}

/* Minimal headers, read with bpf_skb_load_bytes. */
struct ip4_hdr {
	u8 ver_ihl;
	u8 tos;
	__be16 tot_len;
	__be16 id;
	__be16 frag_off;
	u8 ttl;
	u8 protocol;
	__sum16 check;
	__be32 saddr;
	__be32 daddr;
};

struct ip6_hdr {
	__be32 ver_tc_flow;
	__be16 payload_len;
	u8 nexthdr;
	u8 hop_limit;
	u8 saddr[16];
	u8 daddr[16];
};

#define TCP_FLAG_SYN 0x02
#define TCP_FLAG_ACK 0x10

/* Ports (4 bytes) and, for TCP, the flags byte at offset 13. */
struct l4_head {
	__be16 sport;
	__be16 dport;
	u8 rest[10];
};

SEC("cgroup_skb/ingress")
int hm_enf_ingress(struct __sk_buff *skb)
{
	struct l4_head l4 = {};
	struct flow f = {};
	struct bpf_sock *sk;
	u32 hdr_len;
	bool enforced;

	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		struct ip4_hdr ip;

		if (bpf_skb_load_bytes(skb, 0, &ip, sizeof(ip)))
			return 1;
		/* Non-first fragments carry no ports: the first one decided. */
		if (ip.frag_off & bpf_htons(0x1fff))
			return 1;
		hdr_len = (ip.ver_ihl & 0x0f) * 4;
		if (hdr_len < 20)
			return 1;
		f.protocol = ip.protocol;
		set_v4(f.raddr, ip.saddr);
		set_v4(f.laddr, ip.daddr);
		f.v4 = 1;
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		struct ip6_hdr ip6;
		u32 *r = (u32 *)f.raddr;

		if (bpf_skb_load_bytes(skb, 0, &ip6, sizeof(ip6)))
			return 1;
		/* Only a transport header right after the fixed header is
		 * decided; extension headers pass (not parsed here). */
		f.protocol = ip6.nexthdr;
		hdr_len = sizeof(ip6);
		__builtin_memcpy(f.raddr, ip6.saddr, 16);
		__builtin_memcpy(f.laddr, ip6.daddr, 16);
		f.v4 = is_v4_mapped(r);
	} else {
		return 1;
	}
	if (f.protocol != IPPROTO_TCP && f.protocol != IPPROTO_UDP)
		return 1;
	if (bpf_skb_load_bytes(skb, hdr_len, &l4, f.protocol == IPPROTO_TCP ? 14 : 4))
		return 1;
	/* Replies of allowed TCP connections are never SYNs: only a new
	 * inbound connection is decided. */
	if (f.protocol == IPPROTO_TCP &&
	    (l4.rest[9] & (TCP_FLAG_SYN | TCP_FLAG_ACK)) != TCP_FLAG_SYN)
		return 1;
	f.rport = bpf_ntohs(l4.sport);
	f.lport = bpf_ntohs(l4.dport);
	f.direction = DIR_INGRESS;

	/* The receiving socket's cgroup (the listener for a SYN). */
	sk = skb->sk;
	if (!sk)
		return 1;
	sk = bpf_sk_fullsock(sk);
	if (!sk)
		return 1;
	f.cgroup_id = bpf_sk_cgroup_id(sk);

	if (f.protocol == IPPROTO_UDP) {
		struct udp_ok_key k = {};

		k.cgroup_id = f.cgroup_id;
		__builtin_memcpy(k.raddr, f.raddr, 16);
		k.rport = f.rport;
		k.lport = f.lport;
		if (bpf_map_lookup_elem(&hm_enf_udp_ok, &k))
			return 1;
		k.lport = 0;
		if (bpf_map_lookup_elem(&hm_enf_udp_ok, &k))
			return 1;
	}
	return decide(&f, &enforced) ? 1 : 0;
}
