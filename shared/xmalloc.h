#ifndef GW_XMALLOC_H
#define GW_XMALLOC_H

#include <stddef.h>

/* Allocation that cannot fail: out of memory is fatal (as in OpenSSH and tmux). */
void *xmalloc(size_t size);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t size);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);

#endif
