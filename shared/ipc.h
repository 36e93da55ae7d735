#ifndef GW_IPC_H
#define GW_IPC_H

/* nng REQ/REP with timeouts, for the control plane (gatewayd's control.c and gatectl). */

#include <stddef.h>

#include <nng/nng.h>

#define IPC_SCHEME "ipc://"

/*
 * Opens a REP socket listening on url with a receive timeout of recv_ms (so that its
 * thread can look up to stop). For ipc:// a stale socket file is removed first (a live
 * one is an error: another daemon answers there) and the file is made mode 0600.
 * 0, or -1 with a message in err.
 */
int ipc_rep_open(const char *url, int recv_ms, nng_socket *out, char *err, size_t errlen);

/* Opens a PUB socket listening on url (the same ipc:// handling). 0, or -1 with err. */
int ipc_pub_open(const char *url, nng_socket *out, char *err, size_t errlen);

/*
 * Sends req to url over a REQ socket and waits up to timeout_ms for the reply, which is
 * returned NUL-terminated in *reply (the caller frees it with free()). 0, or -1 with a
 * message in err.
 */
int ipc_call(const char *url, const char *req, int timeout_ms, char **reply, size_t *replylen,
             char *err, size_t errlen);

#endif
