#ifndef GW_CONTROL_H
#define GW_CONTROL_H

/*
 * The control plane's daemon side (SPEC section 7): an nng REP socket on cfg->control,
 * served by a thread of its own, dispatching by proto.c's command table.
 */

#include <stddef.h>

#include "config.h"

/* Opens cfg->control and starts the control thread. 0, or -1 with a message in err. */
int control_start(const struct config *cfg, char *err, size_t errlen);
/* Stops the thread and closes the socket (and its store). Safe when not started. */
void control_stop(void);

#endif
