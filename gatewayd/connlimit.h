#ifndef GW_CONNLIMIT_H
#define GW_CONNLIMIT_H

#include <stddef.h>
#include <stdint.h>

/*
 * Open client connections per peer address, for `limits conns_per_ip=N`. Counted once
 * when a connection is accepted and once when it closes, never per request. The table
 * is sharded (a mutex per shard, held for a short probe) and fixed in size: an address
 * takes a slot while it has at least one connection and gives it back at zero, so a
 * flood of addresses cannot grow memory. A full shard makes connlimit_acquire answer
 * CONNLIMIT_UNTRACKED: the connection is let in without being counted (the per-worker
 * cap and the global `conns` still bound it).
 */

struct connlimit;

enum connlimit_verdict {
	CONNLIMIT_COUNTED,   /* counted: call connlimit_release when it closes */
	CONNLIMIT_OVER,      /* the address already has max connections: refuse */
	CONNLIMIT_UNTRACKED, /* the table is full: let it in, do not release */
};

/* A table of at most `slots` addresses (rounded up to a power of two, at least 64).
 * Owned by the caller: connlimit_free. */
struct connlimit *connlimit_new(size_t slots);
void connlimit_free(struct connlimit *cl);
/* Counts one more connection of addr (16-byte form, cidr.h) unless it has max already. */
enum connlimit_verdict connlimit_acquire(struct connlimit *cl, const uint8_t addr[16],
                                         uint32_t max);
/* One connection of addr closed (it was CONNLIMIT_COUNTED). */
void connlimit_release(struct connlimit *cl, const uint8_t addr[16]);
/* Connections of addr now; addresses tracked now (tests, stats). */
uint32_t connlimit_get(struct connlimit *cl, const uint8_t addr[16]);
size_t connlimit_tracked(struct connlimit *cl);

/* The process-wide table the workers share (made on first use; 64k addresses). */
struct connlimit *connlimit_global(void);

#endif
