// SPDX-License-Identifier: GPL-2.0
/*
 * Flow capture for the Hallmark agent.
 *
 * TCP: inet_sock_set_state (tp_btf, raw_tp fallback) tracks connections this
 * host opens or accepts, keyed by the struct sock address, and emits one
 * record per connection to a ring buffer when it closes or fails. An
 * iter/tcp program snapshots open tracked connections and listening sockets.
 * UDP: cgroup_skb ingress/egress aggregate per (cgroup, 5-tuple) in a hash
 * map that userspace sweeps. Every record carries the cgroup id of the
 * socket itself, never of the current task (on the passive side and on
 * egress the current task can be another process entirely).
 *
 * The record layouts below are mirrored byte for byte in src/records.rs.
 */
#include "hallmark_vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>

char LICENSE[] SEC("license") = "GPL";

#define AF_INET 2
#define AF_INET6 10
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17

#define TCP_ESTABLISHED 1
#define TCP_SYN_SENT 2
#define TCP_SYN_RECV 3
#define TCP_FIN_WAIT1 4
#define TCP_FIN_WAIT2 5
#define TCP_CLOSE 7
#define TCP_LAST_ACK 9
#define TCP_LISTEN 10
#define TCP_CLOSING 11

#define SOCK_DONE 1 /* enum sock_flags: set when the peer's FIN was received */

#define EPIPE 32
#define ETIMEDOUT 110
#define ECONNREFUSED 111
#define ECONNRESET 104

#define KIND_CLOSED 1
#define KIND_FAILED 2
#define KIND_OPEN 3
#define KIND_LISTEN 4

#define OUTCOME_ESTABLISHED 0
#define OUTCOME_REFUSED 1
#define OUTCOME_RESET 2
#define OUTCOME_TIMED_OUT 3

#define DROP_RINGBUF_FULL 0
#define DROP_CONN_MAP_FULL 1
#define DROP_UDP_MAP_FULL 2
#define DROP_REASONS 3

/* Family in records: 4 or 6 (not AF_*), so userspace needs no libc constants. */
struct tuple {
	u8 laddr[16];
	u8 raddr[16];
	u16 lport; /* host order */
	u16 rport; /* host order */
	u8 family;
};

/* One tracked TCP connection (value of `conns`), 56 bytes. */
struct conn {
	u64 start_ns;
	u64 cgroup_id;
	u8 laddr[16];
	u8 raddr[16];
	u16 lport;
	u16 rport;
	u8 family;
	u8 initiated;
	u8 established;
	u8 pad;
};

/* A TCP record (ring buffer and iterator output), 112 bytes. */
struct flow_event {
	u64 sock;
	u64 cgroup_id;
	u64 start_ns;
	u64 end_ns;
	u64 bytes_sent;
	u64 bytes_received;
	u64 packets_sent;
	u64 packets_received;
	u32 retransmits;
	u32 srtt_us;
	u8 kind;
	u8 outcome;
	u8 initiated;
	u8 family;
	u16 lport;
	u16 rport;
	u8 laddr[16];
	u8 raddr[16];
};

/* UDP aggregation key, 48 bytes. */
struct udp_key {
	u64 cgroup_id;
	u8 laddr[16];
	u8 raddr[16];
	u16 lport;
	u16 rport;
	u8 family;
	u8 pad[3];
};

/* UDP aggregation value, 56 bytes. Bytes are UDP payload bytes. */
struct udp_val {
	u64 first_ns;
	u64 last_ns;
	u64 bytes_out;
	u64 packets_out;
	u64 bytes_in;
	u64 packets_in;
	u8 initiated;
	u8 pad[7];
};

/* The layouts src/records.rs reads; a change here must change it too. */
#define OFF(t, f, o) _Static_assert(__builtin_offsetof(struct t, f) == (o), #t "." #f)
_Static_assert(sizeof(struct flow_event) == 112, "flow_event size");
OFF(flow_event, cgroup_id, 8);
OFF(flow_event, start_ns, 16);
OFF(flow_event, end_ns, 24);
OFF(flow_event, bytes_sent, 32);
OFF(flow_event, bytes_received, 40);
OFF(flow_event, packets_sent, 48);
OFF(flow_event, packets_received, 56);
OFF(flow_event, retransmits, 64);
OFF(flow_event, srtt_us, 68);
OFF(flow_event, kind, 72);
OFF(flow_event, outcome, 73);
OFF(flow_event, initiated, 74);
OFF(flow_event, family, 75);
OFF(flow_event, lport, 76);
OFF(flow_event, rport, 78);
OFF(flow_event, laddr, 80);
OFF(flow_event, raddr, 96);
_Static_assert(sizeof(struct conn) == 56, "conn size");
_Static_assert(sizeof(struct udp_key) == 48, "udp_key size");
OFF(udp_key, laddr, 8);
OFF(udp_key, raddr, 24);
OFF(udp_key, lport, 40);
OFF(udp_key, rport, 42);
OFF(udp_key, family, 44);
_Static_assert(sizeof(struct udp_val) == 56, "udp_val size");
OFF(udp_val, last_ns, 8);
OFF(udp_val, bytes_out, 16);
OFF(udp_val, packets_out, 24);
OFF(udp_val, bytes_in, 32);
OFF(udp_val, packets_in, 40);
OFF(udp_val, initiated, 48);

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144);
	__type(key, u64);
	__type(value, struct conn);
} conns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct udp_key);
	__type(value, struct udp_val);
} udp_flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 * 1024 * 1024);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DROP_REASONS);
	__type(key, u32);
	__type(value, u64);
} drops SEC(".maps");

static __always_inline void count_drop(u32 reason)
{
	u64 *n = bpf_map_lookup_elem(&drops, &reason);

	if (n)
		*n += 1; /* per-CPU slot: no atomics needed */
}

static __always_inline void read_tuple(struct sock *sk, struct tuple *t)
{
	u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
	u16 lport = BPF_CORE_READ(sk, __sk_common.skc_num);

	if (lport == 0) {
		/* inet_put_port() has already cleared skc_num on the way to
		 * CLOSE; inet_sport still holds the bound port. */
		struct inet_sock *inet = (struct inet_sock *)sk;

		lport = bpf_ntohs(BPF_CORE_READ(inet, inet_sport));
	}
	t->lport = lport;
	t->rport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	__builtin_memset(t->laddr, 0, sizeof(t->laddr));
	__builtin_memset(t->raddr, 0, sizeof(t->raddr));
	if (family == AF_INET6) {
		BPF_CORE_READ_INTO(&t->laddr, sk, __sk_common.skc_v6_rcv_saddr);
		BPF_CORE_READ_INTO(&t->raddr, sk, __sk_common.skc_v6_daddr);
		u32 *l = (u32 *)t->laddr;
		u32 *r = (u32 *)t->raddr;
		/* v4-mapped (::ffff:a.b.c.d) on both ends: an IPv4 connection
		 * made through a dual-stack socket. */
		if (l[0] == 0 && l[1] == 0 && l[2] == bpf_htonl(0xffff) &&
		    r[0] == 0 && r[1] == 0 && r[2] == bpf_htonl(0xffff)) {
			l[0] = l[3];
			r[0] = r[3];
			l[1] = l[2] = l[3] = 0;
			r[1] = r[2] = r[3] = 0;
			t->family = 4;
		} else {
			t->family = 6;
		}
	} else {
		u32 *l = (u32 *)t->laddr;
		u32 *r = (u32 *)t->raddr;

		l[0] = BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr);
		r[0] = BPF_CORE_READ(sk, __sk_common.skc_daddr);
		t->family = 4;
	}
}

static __always_inline void tuple_to_conn(const struct tuple *t, struct conn *c)
{
	__builtin_memcpy(c->laddr, t->laddr, 16);
	__builtin_memcpy(c->raddr, t->raddr, 16);
	c->lport = t->lport;
	c->rport = t->rport;
	c->family = t->family;
}

static __always_inline void conn_to_event(const struct conn *c, struct flow_event *e)
{
	__builtin_memcpy(e->laddr, c->laddr, 16);
	__builtin_memcpy(e->raddr, c->raddr, 16);
	e->lport = c->lport;
	e->rport = c->rport;
	e->family = c->family;
	e->start_ns = c->start_ns;
	e->cgroup_id = c->cgroup_id;
	e->initiated = c->initiated;
}

/* Live counters of the socket. `state` is the state the socket is in (or
 * was in just before CLOSE).
 *
 * Bytes are payload bytes: the kernel's bytes_acked and bytes_received
 * count sequence space, which includes one for the SYN this side sent and
 * had acknowledged (active side only: the passive child starts with its
 * SYN-ACK already acknowledged) and one for each FIN, which are taken off
 * here. Packets are segments each way, including pure ACKs. */
static __always_inline void read_counters(struct sock *sk, struct flow_event *e, u8 initiated,
					  int state)
{
	struct tcp_sock *tp = (struct tcp_sock *)sk;
	u64 acked = BPF_CORE_READ(tp, bytes_acked);
	u64 received = BPF_CORE_READ(tp, bytes_received);
	unsigned long flags = BPF_CORE_READ(sk, __sk_common.skc_flags);
	bool fin_sent = state == TCP_FIN_WAIT1 || state == TCP_FIN_WAIT2 ||
			state == TCP_CLOSING || state == TCP_LAST_ACK;
	/* write_seq includes a queued FIN, so all of it acknowledged means the
	 * FIN was too. */
	bool fin_acked = fin_sent && BPF_CORE_READ(tp, snd_una) == BPF_CORE_READ(tp, write_seq);
	u64 seq_extra = (initiated ? 1 : 0) + (fin_acked ? 1 : 0);

	e->bytes_sent = acked > seq_extra ? acked - seq_extra : 0;
	if ((flags & (1UL << SOCK_DONE)) && received > 0)
		received -= 1;
	e->bytes_received = received;
	e->packets_sent = BPF_CORE_READ(tp, segs_out);
	e->packets_received = BPF_CORE_READ(tp, segs_in);
	e->retransmits = BPF_CORE_READ(tp, total_retrans);
	e->srtt_us = BPF_CORE_READ(tp, srtt_us) >> 3;
}

static __always_inline u64 sock_cgroup_id(struct sock *sk)
{
	return BPF_CORE_READ(sk, sk_cgrp_data.cgroup, kn, id);
}

static __always_inline void track(struct sock *sk, u64 key, u8 initiated)
{
	struct conn c = {};
	struct tuple t = {};

	c.start_ns = bpf_ktime_get_ns();
	c.cgroup_id = sock_cgroup_id(sk);
	c.initiated = initiated;
	read_tuple(sk, &t);
	tuple_to_conn(&t, &c);
	/* BPF_ANY: a new socket at a reused address replaces a stale entry. */
	if (bpf_map_update_elem(&conns, &key, &c, BPF_ANY))
		count_drop(DROP_CONN_MAP_FULL);
}

static __always_inline void emit_close(struct sock *sk, u64 key, struct conn *c, int oldstate)
{
	struct flow_event *e;
	int err;

	if (!c->established && oldstate != TCP_SYN_SENT)
		return; /* an accepted socket that never completed: no flow */

	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count_drop(DROP_RINGBUF_FULL);
		return;
	}
	__builtin_memset(e, 0, sizeof(*e));
	conn_to_event(c, e);
	e->sock = key;
	e->end_ns = bpf_ktime_get_ns();
	err = BPF_CORE_READ(sk, sk_err);
	if (c->established) {
		e->kind = KIND_CLOSED;
		read_counters(sk, e, c->initiated, oldstate);
		e->outcome = (err == ECONNRESET || err == EPIPE) ? OUTCOME_RESET
								 : OUTCOME_ESTABLISHED;
	} else {
		struct tuple t = {};

		e->kind = KIND_FAILED;
		e->outcome = err == ECONNREFUSED ? OUTCOME_REFUSED : OUTCOME_TIMED_OUT;
		/* The tuple as of now; fields still unset fall back to the entry. */
		read_tuple(sk, &t);
		if (t.lport)
			e->lport = t.lport;
		if (t.rport)
			e->rport = t.rport;
		if (t.rport || t.lport) {
			__builtin_memcpy(e->laddr, t.laddr, 16);
			__builtin_memcpy(e->raddr, t.raddr, 16);
			e->family = t.family;
		}
	}
	bpf_ringbuf_submit(e, 0);
}

static __always_inline int on_state(struct sock *sk, int oldstate, int newstate)
{
	u64 key = (u64)sk;
	struct conn *c;

	if (BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return 0;

	if (newstate == TCP_SYN_SENT && oldstate == TCP_CLOSE) {
		track(sk, key, 1);
	} else if (newstate == TCP_SYN_RECV && oldstate == TCP_LISTEN) {
		track(sk, key, 0);
	} else if (newstate == TCP_ESTABLISHED) {
		struct tuple t = {};

		c = bpf_map_lookup_elem(&conns, &key);
		if (!c)
			return 0;
		read_tuple(sk, &t);
		tuple_to_conn(&t, c);
		c->established = 1;
	} else if (newstate == TCP_CLOSE) {
		c = bpf_map_lookup_elem(&conns, &key);
		if (!c)
			return 0;
		emit_close(sk, key, c, oldstate);
		bpf_map_delete_elem(&conns, &key);
	}
	return 0;
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(hm_tcp_btf, struct sock *sk, int oldstate, int newstate)
{
	return on_state(sk, oldstate, newstate);
}

SEC("raw_tp/inet_sock_set_state")
int BPF_PROG(hm_tcp_raw, struct sock *sk, int oldstate, int newstate)
{
	return on_state(sk, oldstate, newstate);
}

SEC("iter/tcp")
int hm_tcp_iter(struct bpf_iter__tcp *ctx)
{
	struct sock_common *skc = ctx->sk_common;
	struct seq_file *seq = ctx->meta->seq;
	struct flow_event e = {};
	struct tcp_sock *tp;
	struct sock *sk;
	struct conn *c;
	u64 key;

	if (!skc)
		return 0;
	/* NULL for time-wait and request sockets, which are not full sockets
	 * and are never tracked. */
	tp = bpf_skc_to_tcp_sock(skc);
	if (!tp)
		return 0;
	sk = (struct sock *)tp;
	key = (u64)sk;

	if (BPF_CORE_READ(sk, __sk_common.skc_state) == TCP_LISTEN) {
		struct tuple t = {};

		read_tuple(sk, &t);
		e.kind = KIND_LISTEN;
		e.sock = key;
		e.cgroup_id = sock_cgroup_id(sk);
		e.family = t.family;
		e.lport = t.lport;
		__builtin_memcpy(e.laddr, t.laddr, 16);
		bpf_seq_write(seq, &e, sizeof(e));
		return 0;
	}

	c = bpf_map_lookup_elem(&conns, &key);
	if (!c || !c->established)
		return 0;
	conn_to_event(c, &e);
	e.kind = KIND_OPEN;
	e.sock = key;
	e.end_ns = bpf_ktime_get_ns();
	e.outcome = OUTCOME_ESTABLISHED;
	read_counters(sk, &e, c->initiated, BPF_CORE_READ(sk, __sk_common.skc_state));
	bpf_seq_write(seq, &e, sizeof(e));
	return 0;
}

/* Minimal IPv4/IPv6 headers, read with bpf_skb_load_bytes. */
struct iphdr4 {
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

struct iphdr6 {
	__be32 ver_tc_flow;
	__be16 payload_len;
	u8 nexthdr;
	u8 hop_limit;
	u8 saddr[16];
	u8 daddr[16];
};

struct udphdr {
	__be16 source;
	__be16 dest;
	__be16 len;
	__sum16 check;
};

static __always_inline void udp_account(struct __sk_buff *skb, bool egress)
{
	struct udp_key k = {};
	struct udp_val *v;
	struct udphdr uh;
	u8 src[16] = {}, dst[16] = {};
	u32 hdr_len, len = skb->len;
	u64 now, packets;

	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		struct iphdr4 ip;

		if (bpf_skb_load_bytes(skb, 0, &ip, sizeof(ip)))
			return;
		if (ip.protocol != IPPROTO_UDP)
			return;
		/* Non-first fragments carry no UDP header. */
		if (ip.frag_off & bpf_htons(0x1fff))
			return;
		hdr_len = (ip.ver_ihl & 0x0f) * 4;
		if (hdr_len < 20)
			return;
		__builtin_memcpy(src, &ip.saddr, 4);
		__builtin_memcpy(dst, &ip.daddr, 4);
		k.family = 4;
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		struct iphdr6 ip6;

		if (bpf_skb_load_bytes(skb, 0, &ip6, sizeof(ip6)))
			return;
		if (ip6.nexthdr != IPPROTO_UDP)
			return;
		hdr_len = sizeof(ip6);
		__builtin_memcpy(src, ip6.saddr, 16);
		__builtin_memcpy(dst, ip6.daddr, 16);
		k.family = 6;
	} else {
		return;
	}
	if (bpf_skb_load_bytes(skb, hdr_len, &uh, sizeof(uh)))
		return;
	if (len < hdr_len + sizeof(uh))
		return;
	/* Payload: the packet (a GSO super-packet on egress counts as its
	 * segments) less one IP and one UDP header. */
	len -= hdr_len + sizeof(uh);
	packets = skb->gso_segs ? skb->gso_segs : 1;

	k.cgroup_id = bpf_skb_cgroup_id(skb);
	if (egress) {
		__builtin_memcpy(k.laddr, src, 16);
		__builtin_memcpy(k.raddr, dst, 16);
		k.lport = bpf_ntohs(uh.source);
		k.rport = bpf_ntohs(uh.dest);
	} else {
		__builtin_memcpy(k.laddr, dst, 16);
		__builtin_memcpy(k.raddr, src, 16);
		k.lport = bpf_ntohs(uh.dest);
		k.rport = bpf_ntohs(uh.source);
	}

	now = bpf_ktime_get_ns();
	v = bpf_map_lookup_elem(&udp_flows, &k);
	if (!v) {
		struct udp_val nv = {};
		int err;

		nv.first_ns = now;
		nv.last_ns = now;
		nv.initiated = egress;
		if (egress) {
			nv.bytes_out = len;
			nv.packets_out = packets;
		} else {
			nv.bytes_in = len;
			nv.packets_in = packets;
		}
		err = bpf_map_update_elem(&udp_flows, &k, &nv, BPF_NOEXIST);
		if (!err)
			return;
		/* Lost a race with another CPU creating it: update that one. */
		v = bpf_map_lookup_elem(&udp_flows, &k);
		if (!v) {
			count_drop(DROP_UDP_MAP_FULL);
			return;
		}
	}
	if (egress) {
		__sync_fetch_and_add(&v->bytes_out, len);
		__sync_fetch_and_add(&v->packets_out, packets);
	} else {
		__sync_fetch_and_add(&v->bytes_in, len);
		__sync_fetch_and_add(&v->packets_in, packets);
	}
	v->last_ns = now;
}

static __always_inline bool is_udp(struct __sk_buff *skb)
{
	u8 proto;

	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		if (bpf_skb_load_bytes(skb, 9, &proto, 1))
			return 0;
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		if (bpf_skb_load_bytes(skb, 6, &proto, 1))
			return 0;
	} else {
		return 0;
	}
	return proto == IPPROTO_UDP;
}

SEC("cgroup_skb/egress")
int hm_udp_egress(struct __sk_buff *skb)
{
	if (is_udp(skb))
		udp_account(skb, 1);
	return 1;
}

SEC("cgroup_skb/ingress")
int hm_udp_ingress(struct __sk_buff *skb)
{
	if (is_udp(skb))
		udp_account(skb, 0);
	return 1;
}
