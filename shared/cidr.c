/*
 * IP prefixes in one 16-byte space and a path-compressed binary radix tree of them.
 *
 * The tree answers "which block/trusted-proxy/admin prefix holds this address" on every
 * request, so a lookup is a loop over at most 129 nodes (in practice a handful: path
 * compression keeps the depth near log2 of the prefix count) with two masked XORs per
 * node, and allocates nothing. Writers are rare (config load, admin commands) and are
 * serialised by the caller, so the tree itself has no locking.
 */

#include <arpa/inet.h>
#include <endian.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cidr.h"
#include "xmalloc.h"

/* An IPv4 address a.b.c.d is ::ffff:a.b.c.d, so IPv4 prefix lengths are shifted by 96. */
#define CIDR_V4_SHIFT 96
#define CIDR_MAX_PREFIX 128

static const uint8_t cidr_v4_mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

/*
 * A node is one prefix: its bits as two host-order words (zero past plen) and the mask
 * of its first plen bits, so that "does this node's prefix hold the address" is
 * ((a ^ key) & mask) == 0 without recomputing masks on the lookup path. A node with a
 * NULL value is glue, created where two prefixes diverge; glue always has two children
 * (remove collapses it), so the tree holds at most 2 * count - 1 nodes. 64 bytes.
 */
struct cidr_node {
	struct cidr_node *child[2];
	uint64_t hi, lo;
	uint64_t mhi, mlo;
	void *value;
	unsigned plen;
};

struct cidr_tree {
	struct cidr_node *root;
	size_t count;
};

static inline uint64_t
cidr_load64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, sizeof v);
	return be64toh(v);
}

static inline void
cidr_store64(uint8_t *p, uint64_t v)
{
	v = htobe64(v);
	memcpy(p, &v, sizeof v);
}

/* Mask of the first plen (0..128) bits of a 128-bit value held as hi:lo. */
static inline void
cidr_mask(unsigned plen, uint64_t *mhi, uint64_t *mlo)
{
	if (plen == 0) {
		*mhi = 0;
		*mlo = 0;
	} else if (plen <= 64) {
		*mhi = ~0ULL << (64 - plen);
		*mlo = 0;
	} else {
		*mhi = ~0ULL;
		*mlo = ~0ULL << (128 - plen);
	}
}

/* Bit i (0 = most significant, i < 128) of hi:lo. */
static inline unsigned
cidr_bit(uint64_t hi, uint64_t lo, unsigned i)
{
	return i < 64 ? (unsigned)(hi >> (63 - i)) & 1 : (unsigned)(lo >> (127 - i)) & 1;
}

/* Index of the first bit where two 128-bit values differ; 128 when equal. */
static inline unsigned
cidr_first_diff(uint64_t ahi, uint64_t alo, uint64_t bhi, uint64_t blo)
{
	uint64_t x = ahi ^ bhi;

	if (x != 0)
		return (unsigned)__builtin_clzll(x);
	x = alo ^ blo;
	if (x != 0)
		return 64 + (unsigned)__builtin_clzll(x);
	return 128;
}

static inline unsigned
cidr_min(unsigned a, unsigned b)
{
	return a < b ? a : b;
}

int
cidr_is_v4(const uint8_t addr[16])
{
	return memcmp(addr, cidr_v4_mapped, sizeof cidr_v4_mapped) == 0;
}

int
cidr_parse_addr(const char *s, size_t len, uint8_t out[16])
{
	char buf[INET6_ADDRSTRLEN];

	/*
	 * inet_pton wants a C string: copy the counted bytes out. An embedded NUL would make
	 * inet_pton stop early and accept "1.2.3.4\0junk", so it is refused first.
	 */
	if (s == NULL || len == 0 || len >= sizeof buf || memchr(s, '\0', len) != NULL)
		return -1;
	memcpy(buf, s, len);
	buf[len] = '\0';
	if (memchr(buf, ':', len) != NULL) {
		struct in6_addr a6;

		if (inet_pton(AF_INET6, buf, &a6) != 1)
			return -1;
		memcpy(out, &a6, 16);
	} else {
		struct in_addr a4;

		/* glibc's inet_pton is strict: four decimal parts, no leading zeros or octal */
		if (inet_pton(AF_INET, buf, &a4) != 1)
			return -1;
		memcpy(out, cidr_v4_mapped, sizeof cidr_v4_mapped);
		memcpy(out + 12, &a4, 4);
	}
	return 0;
}

/* Decimal prefix length: 1-3 digits, no sign, no leading zero, nothing after. */
static int
cidr_parse_prefix(const char *s, unsigned max, unsigned *out)
{
	unsigned v = 0;
	size_t n;

	for (n = 0; s[n] >= '0' && s[n] <= '9'; n++) {
		if (n == 3)
			return -1;
		v = v * 10 + (unsigned)(s[n] - '0');
	}
	if (n == 0 || s[n] != '\0' || (n > 1 && s[0] == '0') || v > max)
		return -1;
	*out = v;
	return 0;
}

static void
cidr_clear_host_bits(struct cidr *c)
{
	uint64_t mhi, mlo;

	cidr_mask(c->prefix, &mhi, &mlo);
	cidr_store64(c->addr, cidr_load64(c->addr) & mhi);
	cidr_store64(c->addr + 8, cidr_load64(c->addr + 8) & mlo);
}

int
cidr_parse(const char *s, struct cidr *out)
{
	const char *slash;
	struct cidr c;
	size_t alen;
	unsigned plen, max;
	int v6text;

	if (s == NULL)
		return -1;
	slash = strchr(s, '/');
	alen = slash != NULL ? (size_t)(slash - s) : strlen(s);
	if (cidr_parse_addr(s, alen, c.addr) == -1)
		return -1;
	/*
	 * The family of the text, not of the result, sets the prefix range: "::ffff:10.0.0.0/104"
	 * is IPv6 notation (0..128) for the same prefix as "10.0.0.0/8" (0..32).
	 */
	v6text = memchr(s, ':', alen) != NULL;
	max = v6text ? CIDR_MAX_PREFIX : 32;
	if (slash == NULL)
		plen = max;
	else if (cidr_parse_prefix(slash + 1, max, &plen) == -1)
		return -1;
	c.prefix = (uint8_t)(v6text ? plen : plen + CIDR_V4_SHIFT);
	cidr_clear_host_bits(&c);
	*out = c;
	return 0;
}

int
cidr_from_sockaddr(const struct sockaddr *sa, struct cidr *out)
{
	if (sa == NULL)
		return -1;
	if (sa->sa_family == AF_INET) {
		struct sockaddr_in sin;

		memcpy(&sin, sa, sizeof sin);
		memcpy(out->addr, cidr_v4_mapped, sizeof cidr_v4_mapped);
		memcpy(out->addr + 12, &sin.sin_addr, 4);
	} else if (sa->sa_family == AF_INET6) {
		struct sockaddr_in6 sin6;

		memcpy(&sin6, sa, sizeof sin6);
		memcpy(out->addr, &sin6.sin6_addr, 16);
	} else
		return -1;
	out->prefix = CIDR_MAX_PREFIX;
	return 0;
}

char *
cidr_format_addr(const uint8_t addr[16], char *buf, size_t len)
{
	const char *r;

	if (len == 0)
		return buf;
	if (cidr_is_v4(addr) && len >= INET_ADDRSTRLEN) {
		/* the common case, by hand: inet_ntop goes through sprintf (the access log
		 * formats one address a request) */
		char *p = buf;

		for (int i = 12; i < 16; i++) {
			unsigned v = addr[i];

			if (v >= 100)
				*p++ = (char)('0' + v / 100);
			if (v >= 10)
				*p++ = (char)('0' + v / 10 % 10);
			*p++ = (char)('0' + v % 10);
			*p++ = i < 15 ? '.' : '\0';
		}
		return buf;
	}
	if (cidr_is_v4(addr))
		r = inet_ntop(AF_INET, addr + 12, buf, (socklen_t)len);
	else
		r = inet_ntop(AF_INET6, addr, buf, (socklen_t)len);
	if (r == NULL)
		buf[0] = '\0';
	return buf;
}

char *
cidr_format(const struct cidr *c, char *buf, size_t len)
{
	char a[INET6_ADDRSTRLEN];
	unsigned plen = c->prefix, full = CIDR_MAX_PREFIX;

	if (len == 0)
		return buf;
	if (cidr_is_v4(c->addr) && plen >= CIDR_V4_SHIFT) {
		plen -= CIDR_V4_SHIFT;
		full = 32;
		cidr_format_addr(c->addr, a, sizeof a);
	} else if (inet_ntop(AF_INET6, c->addr, a, sizeof a) == NULL) {
		/* Not reachable with a 46-byte buffer; keeps the output defined. */
		a[0] = '\0';
	}
	/* a host prefix prints as the bare address, which parses back to the same /32 or /128 */
	if (plen >= full)
		snprintf(buf, len, "%s", a);
	else
		snprintf(buf, len, "%s/%u", a, plen);
	return buf;
}

int
cidr_contains(const struct cidr *c, const uint8_t addr[16])
{
	uint64_t mhi, mlo;

	cidr_mask(cidr_min(c->prefix, CIDR_MAX_PREFIX), &mhi, &mlo);
	return (((cidr_load64(addr) ^ cidr_load64(c->addr)) & mhi) |
	        ((cidr_load64(addr + 8) ^ cidr_load64(c->addr + 8)) & mlo)) == 0;
}

/* --- radix tree ---------------------------------------------------------------------- */

struct cidr_tree *
cidr_tree_new(void)
{
	return xcalloc(1, sizeof(struct cidr_tree));
}

static struct cidr_node *
cidr_node_new(uint64_t hi, uint64_t lo, unsigned plen, void *value)
{
	struct cidr_node *n = xmalloc(sizeof *n);

	n->child[0] = n->child[1] = NULL;
	cidr_mask(plen, &n->mhi, &n->mlo);
	n->hi = hi & n->mhi;
	n->lo = lo & n->mlo;
	n->plen = plen;
	n->value = value;
	return n;
}

static void
cidr_node_free(struct cidr_node *n, void (*free_value)(void *))
{
	/* depth is bounded by 129 (one level per bit at worst), so recursion is safe */
	if (n == NULL)
		return;
	cidr_node_free(n->child[0], free_value);
	cidr_node_free(n->child[1], free_value);
	if (n->value != NULL && free_value != NULL)
		free_value(n->value);
	free(n);
}

void
cidr_tree_free(struct cidr_tree *t, void (*free_value)(void *))
{
	if (t == NULL)
		return;
	cidr_node_free(t->root, free_value);
	free(t);
}

/* The key of c as masked hi:lo words and its prefix length clamped to 128. */
static void
cidr_key(const struct cidr *c, uint64_t *hi, uint64_t *lo, unsigned *plen)
{
	uint64_t mhi, mlo;

	*plen = cidr_min(c->prefix, CIDR_MAX_PREFIX);
	cidr_mask(*plen, &mhi, &mlo);
	*hi = cidr_load64(c->addr) & mhi;
	*lo = cidr_load64(c->addr + 8) & mlo;
}

int
cidr_tree_insert(struct cidr_tree *t, const struct cidr *c, void *value, void **old)
{
	struct cidr_node **link = &t->root, *n, *leaf;
	uint64_t hi, lo;
	unsigned plen;

	if (old != NULL)
		*old = NULL;
	if (value == NULL)
		return -1; /* NULL marks glue nodes; see struct cidr_node */
	cidr_key(c, &hi, &lo, &plen);
	while ((n = *link) != NULL) {
		unsigned common =
		    cidr_min(cidr_first_diff(hi, lo, n->hi, n->lo), cidr_min(plen, n->plen));

		if (common == n->plen) {
			if (n->plen == plen) {
				if (n->value != NULL) {
					if (old != NULL)
						*old = n->value;
					n->value = value;
					return 1;
				}
				n->value = value; /* glue becomes a real prefix */
				t->count++;
				return 0;
			}
			/* n is a shorter prefix of the new one: go down */
			link = &n->child[cidr_bit(hi, lo, n->plen)];
			continue;
		}
		leaf = cidr_node_new(hi, lo, plen, value);
		if (common == plen) {
			/* the new prefix covers n: it takes n's place and n hangs below it */
			leaf->child[cidr_bit(n->hi, n->lo, plen)] = n;
			*link = leaf;
		} else {
			/* they diverge at bit `common`: join them under a glue node */
			struct cidr_node *glue = cidr_node_new(hi, lo, common, NULL);

			glue->child[cidr_bit(hi, lo, common)] = leaf;
			glue->child[cidr_bit(n->hi, n->lo, common)] = n;
			*link = glue;
		}
		t->count++;
		return 0;
	}
	*link = cidr_node_new(hi, lo, plen, value);
	t->count++;
	return 0;
}

/*
 * Finds the node holding exactly hi:lo/plen. Returns the link that points to it and, in
 * *parent_link, the link that points to its parent (NULL at the root), for remove.
 */
static struct cidr_node **
cidr_tree_find(struct cidr_node **link, uint64_t hi, uint64_t lo, unsigned plen,
               struct cidr_node ***parent_link)
{
	struct cidr_node *n;

	*parent_link = NULL;
	while ((n = *link) != NULL) {
		if (n->plen > plen || ((hi ^ n->hi) & n->mhi) != 0 || ((lo ^ n->lo) & n->mlo) != 0)
			return NULL;
		if (n->plen == plen)
			return link;
		*parent_link = link;
		link = &n->child[cidr_bit(hi, lo, n->plen)];
	}
	return NULL;
}

void *
cidr_tree_remove(struct cidr_tree *t, const struct cidr *c)
{
	struct cidr_node **link, **plink, *n, *p;
	uint64_t hi, lo;
	unsigned plen;
	void *value;

	cidr_key(c, &hi, &lo, &plen);
	link = cidr_tree_find(&t->root, hi, lo, plen, &plink);
	if (link == NULL || (*link)->value == NULL)
		return NULL;
	n = *link;
	value = n->value;
	t->count--;
	if (n->child[0] != NULL && n->child[1] != NULL) {
		n->value = NULL; /* still a branch point: keep it as glue */
		return value;
	}
	*link = n->child[0] != NULL ? n->child[0] : n->child[1];
	free(n);
	/*
	 * A glue parent that just lost a child has one left and no reason to exist: splice
	 * the survivor into its place so that glue always has two children.
	 */
	if (*link == NULL && plink != NULL && (p = *plink)->value == NULL) {
		*plink = p->child[0] != NULL ? p->child[0] : p->child[1];
		free(p);
	}
	return value;
}

void *
cidr_tree_get(const struct cidr_tree *t, const struct cidr *c)
{
	const struct cidr_node *n = t->root;
	uint64_t hi, lo;
	unsigned plen;

	cidr_key(c, &hi, &lo, &plen);
	while (n != NULL && n->plen <= plen && ((hi ^ n->hi) & n->mhi) == 0 &&
	       ((lo ^ n->lo) & n->mlo) == 0) {
		if (n->plen == plen)
			return n->value; /* NULL for glue: not a stored prefix */
		n = n->child[cidr_bit(hi, lo, n->plen)];
	}
	return NULL;
}

void *
cidr_tree_match(const struct cidr_tree *t, const uint8_t addr[16], struct cidr *match)
{
	const struct cidr_node *n = t->root, *best = NULL;
	uint64_t hi = cidr_load64(addr), lo = cidr_load64(addr + 8);

	/*
	 * Every node on the path must hold the address (path compression skips bits, so a
	 * node can differ from the address inside its skipped span); the deepest one with a
	 * value is the longest match.
	 */
	while (n != NULL) {
		if ((((hi ^ n->hi) & n->mhi) | ((lo ^ n->lo) & n->mlo)) != 0)
			break;
		if (n->value != NULL)
			best = n;
		if (n->plen == CIDR_MAX_PREFIX)
			break;
		n = n->child[cidr_bit(hi, lo, n->plen)];
	}
	if (best == NULL)
		return NULL;
	if (match != NULL) {
		cidr_store64(match->addr, best->hi);
		cidr_store64(match->addr + 8, best->lo);
		match->prefix = (uint8_t)best->plen;
	}
	return best->value;
}

size_t
cidr_tree_count(const struct cidr_tree *t)
{
	return t->count;
}

/* Pre-order is address order: a prefix sorts before everything inside it. */
static int
cidr_node_walk(const struct cidr_node *n, int (*fn)(const struct cidr *, void *, void *), void *arg)
{
	if (n == NULL)
		return 0;
	if (n->value != NULL) {
		struct cidr c;

		cidr_store64(c.addr, n->hi);
		cidr_store64(c.addr + 8, n->lo);
		c.prefix = (uint8_t)n->plen;
		if (fn(&c, n->value, arg) != 0)
			return 1;
	}
	if (cidr_node_walk(n->child[0], fn, arg) != 0)
		return 1;
	return cidr_node_walk(n->child[1], fn, arg);
}

void
cidr_tree_walk(const struct cidr_tree *t, int (*fn)(const struct cidr *, void *value, void *arg),
               void *arg)
{
	cidr_node_walk(t->root, fn, arg);
}
