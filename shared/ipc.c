#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "ipc.h"

#include <nng/protocol/reqrep0/rep.h>
#include <nng/protocol/reqrep0/req.h>
#include <nng/protocol/pubsub0/pub.h>

#include "util.h"

/*
 * A socket file left by a daemon that died is removed; one that still accepts a
 * connection belongs to a running daemon and is left alone. 0, or -1 with err.
 */
static int
ipc_clear_stale(const char *path, char *err, size_t errlen)
{
	struct sockaddr_un sun;
	struct stat sb;
	int fd, r;

	if (lstat(path, &sb) != 0)
		return 0;
	if (!S_ISSOCK(sb.st_mode)) {
		snprintf(err, errlen, "%s exists and is not a socket", path);
		return -1;
	}
	if (strlen(path) >= sizeof(sun.sun_path)) {
		snprintf(err, errlen, "%s: path too long", path);
		return -1;
	}
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	util_strlcpy(sun.sun_path, path, sizeof(sun.sun_path));
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd == -1) {
		snprintf(err, errlen, "socket: %s", strerror(errno));
		return -1;
	}
	r = connect(fd, (struct sockaddr *)&sun, sizeof(sun));
	close(fd);
	if (r == 0) {
		snprintf(err, errlen, "%s is in use by another process", path);
		return -1;
	}
	if (unlink(path) != 0 && errno != ENOENT) {
		snprintf(err, errlen, "unlink %s: %s", path, strerror(errno));
		return -1;
	}
	return 0;
}

/*
 * Listens on url with the open socket s: a stale ipc socket file is removed first (a live
 * one is an error: another daemon answers there) and the file is made mode 0600. On
 * failure s is closed. 0, or -1 with a message in err.
 */
static int
ipc_listen(nng_socket s, const char *url, const char *what, char *err, size_t errlen)
{
	const char *path = NULL;
	nng_listener l;
	int rv;

	if (strncmp(url, IPC_SCHEME, strlen(IPC_SCHEME)) == 0) {
		path = url + strlen(IPC_SCHEME);
		if (ipc_clear_stale(path, err, errlen) != 0) {
			nng_close(s);
			return -1;
		}
	}
	if ((rv = nng_listener_create(&l, s, url)) != 0)
		goto fail;
	if (path != NULL && (rv = nng_listener_set_int(l, NNG_OPT_IPC_PERMISSIONS, 0600)) != 0)
		goto fail;
	if ((rv = nng_listener_start(l, 0)) != 0)
		goto fail;
	/* the permission option is applied by nng; make sure whatever the umask was */
	if (path != NULL && chmod(path, 0600) != 0) {
		snprintf(err, errlen, "%s %s: chmod: %s", what, url, strerror(errno));
		nng_close(s);
		return -1;
	}
	return 0;
fail:
	snprintf(err, errlen, "%s %s: %s", what, url, nng_strerror(rv));
	nng_close(s);
	return -1;
}

int
ipc_rep_open(const char *url, int recv_ms, nng_socket *out, char *err, size_t errlen)
{
	int rv;

	if ((rv = nng_rep0_open(out)) != 0) {
		snprintf(err, errlen, "control: %s", nng_strerror(rv));
		return -1;
	}
	if ((rv = nng_socket_set_ms(*out, NNG_OPT_RECVTIMEO, recv_ms)) != 0) {
		snprintf(err, errlen, "control: %s", nng_strerror(rv));
		nng_close(*out);
		return -1;
	}
	return ipc_listen(*out, url, "control", err, errlen);
}

int
ipc_pub_open(const char *url, nng_socket *out, char *err, size_t errlen)
{
	int rv;

	if ((rv = nng_pub0_open(out)) != 0) {
		snprintf(err, errlen, "publish: %s", nng_strerror(rv));
		return -1;
	}
	return ipc_listen(*out, url, "publish", err, errlen);
}

int
ipc_call(const char *url, const char *req, int timeout_ms, char **reply, size_t *replylen,
         char *err, size_t errlen)
{
	nng_socket s;
	char *buf = NULL;
	size_t len = 0;
	int rv;

	*reply = NULL;
	if ((rv = nng_req0_open(&s)) != 0) {
		snprintf(err, errlen, "%s", nng_strerror(rv));
		return -1;
	}
	if ((rv = nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, timeout_ms)) != 0 ||
	    (rv = nng_socket_set_ms(s, NNG_OPT_SENDTIMEO, timeout_ms)) != 0 ||
	    (rv = nng_dial(s, url, NULL, 0)) != 0 ||
	    (rv = nng_send(s, (void *)(uintptr_t)req, strlen(req), 0)) != 0 ||
	    (rv = nng_recv(s, &buf, &len, NNG_FLAG_ALLOC)) != 0) {
		snprintf(err, errlen, "%s: %s", url, nng_strerror(rv));
		nng_close(s);
		return -1;
	}
	*reply = malloc(len + 1);
	if (*reply == NULL) {
		nng_free(buf, len);
		nng_close(s);
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	memcpy(*reply, buf, len);
	(*reply)[len] = '\0';
	*replylen = len;
	nng_free(buf, len);
	nng_close(s);
	return 0;
}
