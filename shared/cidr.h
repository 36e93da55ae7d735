#ifndef GW_CIDR_H
#define GW_CIDR_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/*
 * IP addresses and prefixes. Every address is kept as 16 bytes: IPv4 as the
 * IPv4-mapped IPv6 address ::ffff:a.b.c.d, its prefix length plus 96. One representation
 * means one radix tree for both families and no family checks on the hot path.
 */
struct cidr {
	uint8_t addr[16]; /* network address, host bits zeroed */
	uint8_t prefix;   /* 0..128 in the 16-byte space */
};

/* "10.0.0.0/8", "192.0.2.7" (/32), "::1", "2001:db8::/32". 0 ok, -1 malformed or host bits set
 * beyond the prefix are cleared (not an error). */
int cidr_parse(const char *s, struct cidr *out);
/* A single address (/32 or /128) from a socket address (AF_INET or AF_INET6). */
int cidr_from_sockaddr(const struct sockaddr *sa, struct cidr *out);
/* Parses a bare address (no prefix) into 16 bytes; 0 ok, -1 bad. */
int cidr_parse_addr(const char *s, size_t len, uint8_t out[16]);
/* Writes "a.b.c.d" / "a.b.c.d/n" or the IPv6 form into buf (>= 50 bytes); returns buf. */
char *cidr_format(const struct cidr *c, char *buf, size_t len);
/* Address only, no prefix, into buf (>= 46 bytes); returns buf. */
char *cidr_format_addr(const uint8_t addr[16], char *buf, size_t len);
/* 1 when addr (16 bytes) lies inside c. */
int cidr_contains(const struct cidr *c, const uint8_t addr[16]);
/* 1 when the address is an IPv4-mapped one. */
int cidr_is_v4(const uint8_t addr[16]);

/*
 * Binary radix (patricia-style) tree of prefixes with a value each; longest-prefix match.
 * Not thread-safe for writers: callers build a tree, then share it read-only, or
 * guard it. Values are owned by the caller unless a free function is given to
 * cidr_tree_free().
 */
struct cidr_tree;

struct cidr_tree *cidr_tree_new(void);
void cidr_tree_free(struct cidr_tree *t, void (*free_value)(void *));
/* Inserts or replaces; value must not be NULL. Returns 0, or 1 when it replaced (the old
 * value is returned in *old when old is not NULL). */
int cidr_tree_insert(struct cidr_tree *t, const struct cidr *c, void *value, void **old);
/* Removes the exact prefix; returns its value, or NULL when absent. */
void *cidr_tree_remove(struct cidr_tree *t, const struct cidr *c);
/* Longest prefix containing addr; its value, or NULL. When match is not NULL the matched
 * prefix is copied there. */
void *cidr_tree_match(const struct cidr_tree *t, const uint8_t addr[16], struct cidr *match);
/* Exact prefix lookup. */
void *cidr_tree_get(const struct cidr_tree *t, const struct cidr *c);
size_t cidr_tree_count(const struct cidr_tree *t);
/* Calls fn for every prefix in address order; stops early when fn returns non-zero. */
void cidr_tree_walk(const struct cidr_tree *t, int (*fn)(const struct cidr *, void *value, void *arg),
		    void *arg);

#endif
